"""``nas search --max-* / --constraint``; what ``nas pareto`` and ``nas status`` show of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cli_helpers import assert_rejected, run_cli

import nas
from nas.evaluators import EVALUATORS, Evaluator, register_evaluator

LIMIT = 30000


@pytest.fixture
def constrained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    args = ["search", "-n", "10", "-q", "--seed", "1", "--max-bytes", str(LIMIT)]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert "10 trials complete (" in err and " feasible), 0 failed" in err
    return tmp_path / "nas.db"


def test_pareto_shows_only_feasible_rows(
    constrained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["pareto", "nas", "-f", "json"], capsys)
    rows = json.loads(out)
    assert code == 0 and rows
    assert all(r["bytes"] <= LIMIT for r in rows)
    study = nas.load_study("nas", f"sqlite:///{constrained}")
    trials = {t.number: t for t in study.trials}
    assert all(trials[r["trial"]].user_attrs["feasible"] for r in rows)
    assert any(not t.user_attrs["feasible"] for t in study.trials)


def test_status_counts_feasible_trials_and_shows_constraints(
    constrained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = nas.load_study("nas", f"sqlite:///{constrained}")
    feasible = sum(t.user_attrs["bytes"] <= LIMIT for t in study.trials)
    assert 0 < feasible < 10
    code, out, _ = run_cli(["status", "nas", "-f", "json"], capsys)
    status = json.loads(out)
    assert code == 0 and status["feasible"] == feasible and status["complete"] == 10
    assert status["constraints"] == {"bytes": LIMIT}
    code, out, _ = run_cli(["status", "-f", "json"], capsys)
    assert json.loads(out)[0]["feasible"] == feasible
    code, out, _ = run_cli(["status", "nas"], capsys)
    assert code == 0 and "feasible" in out and "bytes: 30,000" in out


def test_flags_extend_the_config_files_constraints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "search.yaml"
    config.write_text("trials: 2\nconstraints: {params: 50000, bytes: 1000}\n")
    args = ["search", str(config), "-q", "--max-bytes", "2e4", "-c", "bitops <= 1e9"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    code, out, _ = run_cli(["status", "nas", "-f", "json"], capsys)
    limits = {"bitops": 1e9, "bytes": 20000, "params": 50000}
    assert json.loads(out)["constraints"] == limits


class _Latency(Evaluator):
    name: ClassVar[str] = "test-latency"
    description: ClassVar[str] = "a pretend latency: 1 ms per 100k MACs"
    metrics: ClassVar[tuple[str, ...]] = ("latency_ms",)
    directions: ClassVar[dict[str, Any]] = {"latency_ms": "minimize"}

    def _evaluate(self, arch: Any, ctx: Any) -> dict[str, float]:
        return {"latency_ms": arch.cost().macs / 1e5}


@pytest.fixture
def latency() -> Iterator[None]:
    register_evaluator(_Latency)
    yield
    EVALUATORS.unregister(_Latency.name)


@pytest.mark.usefixtures("latency")
def test_max_latency_ms_limits_latency_ms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["search", "-n", "4", "-q", "-e", "naswot", "-e", "test-latency"]
    code, _, err = run_cli([*args, "--max-latency-ms", "6"], capsys)
    assert code == 0, err
    study = nas.load_study("nas", f"sqlite:///{tmp_path / 'nas.db'}")
    assert study.user_attrs["nas.constraints"] == {"latency_ms": 6.0}
    for t in study.trials:
        assert t.constraints == {"latency_ms": t.user_attrs["latency_ms"] - 6}


def _bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    syntax = "constraint: expected METRIC<=VALUE (e.g. params<=50000)"
    limit = "a limit must be finite and > 0"
    cases: dict[str, tuple[list[str], str]] = {
        "unknown metric": (["-c", "nope<=3"], "constraints.nope: unknown metric 'nope'; avail"),
        "zero": (["--max-bytes", "0"], f"constraints.bytes: {limit}, got 0.0"),
        "negative": (["-c", "params<=-5"], f"constraints.params: {limit}, got -5.0"),
        "infinite": (["-c", "bytes<=inf"], f"constraints.bytes: {limit}, got inf"),
        "nan": (["--max-bitops", "nan"], f"constraints.bitops: {limit}, got nan"),
        "not a number": (["--max-bytes", "abc"], "constraints.bytes: expected a number, got 'abc'"),
        "no operator": (["-c", "params"], f"{syntax}, got 'params'"),
        "other operator": (["-c", "params>=5"], syntax),
        "no metric": (["-c", "<=5"], syntax),
        "bad value": (["-c", "params<=lots"], syntax),
        "twice": (["--max-bytes", "5", "-c", "bytes<=7"], "constraints.bytes: limited twice"),
        "other constraints": (["--max-bytes", "99"], "another set of constraints"),
    }
    for name, text in {
        "file limit": "constraints: {bytes: -1}\n",
        "file metric": "constraints: {nope: 1}\n",
        "file type": "constraints: [bytes]\n",
        "file bool": "constraints: {bytes: yes}\n",
    }.items():
        path = tmp_path / f"{name.replace(' ', '-')}.yaml"
        path.write_text(text)
        cases[name] = ([str(path)], "error: constraints")
    return cases


def test_bad_constraints_are_one_line_exit_2_and_write_nothing(
    constrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_rejected(_bad_cases(tmp_path), ["search", "-q"], constrained, capsys)


def test_help_lists_the_constraint_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["search", "--help"], capsys)
    assert code == 0 and "Example: nas search" in out
    for flag in ("--max-latency-ms", "--max-bytes", "--max-bitops", "--constraint"):
        assert flag in out
