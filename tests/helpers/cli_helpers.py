"""Helpers shared by the CLI tests (on ``sys.path`` through pytest's ``pythonpath``)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from nas.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``nas ARGS`` in this process: the exit code, standard output and standard error."""
    old, sys.argv = sys.argv, ["nas", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_rejected(
    cases: Mapping[str, tuple[Sequence[str], str]],
    command: Sequence[str],
    db: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each case, ``nas COMMAND ARGS``, exits 2 with one line ``error: ...EXPECTED...``, and
    leaves ``db`` byte for byte as it was."""
    before = digest(db)
    for name, (args, expected) in cases.items():
        code, out, err = run_cli([*command, *args], capsys)
        assert code == 2, (name, out, err)
        assert err.startswith("error: ") and expected in err, (name, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
        assert digest(db) == before, f"{name} wrote to the database"
