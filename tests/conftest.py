from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'nas.db'}"


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `nas search` with no --storage writes ./nas.db: never into the checkout.
    monkeypatch.chdir(tmp_path)
    os.environ.setdefault("COLUMNS", "200")
