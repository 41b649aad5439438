from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_helpers import run_cli

import nas
from nas._api import front_hypervolume
from nas.strategies._pareto import hypervolume

REFERENCE = "0,1e7"  # maximize:params, minimize:macs
# the params proxy builds no network: a fast search
SEARCH = [
    "search",
    "-q",
    "--sampler",
    "random",
    "-e",
    "params",
    "-o",
    "maximize:params",
    "-o",
    "macs",
]


@pytest.fixture
def searched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    code, _, err = run_cli([*SEARCH, "-n", "12"], capsys)
    assert code == 0, err
    return tmp_path / "nas.db"


def _expected(rows: list[dict[str, float]]) -> float:
    points = [(r["params"], r["macs"]) for r in rows]
    return hypervolume(points, (0.0, 1e7), ["maximize", "minimize"])


@pytest.mark.usefixtures("searched")
def test_pareto_reference_keeps_stdout_and_adds_the_hypervolume_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, plain, _ = run_cli(["pareto", "nas", "-f", "json"], capsys)
    assert code == 0
    code, out, err = run_cli(["pareto", "nas", "-f", "json", "--reference", REFERENCE], capsys)
    assert code == 0 and out == plain  # scripts still get a list of rows
    rows = json.loads(out)
    match = re.fullmatch(
        rf"hypervolume of the {len(rows)}-trial front against \(0, 1e\+07\): (\S+)\n", err
    )
    assert match, err
    assert float(match.group(1)) == pytest.approx(_expected(rows), rel=1e-5)
    assert _expected(rows) > 0


@pytest.mark.usefixtures("searched")
def test_status_reference_adds_the_hypervolume(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["status", "nas", "-f", "json", "--reference", REFERENCE], capsys)
    status = json.loads(out)
    rows = nas.pareto(nas.load_study("nas"))
    assert code == 0 and status["reference"] == [0.0, 1e7]
    assert status["hypervolume"] == _expected(rows)
    code, out, _ = run_cli(["status", "nas", "-f", "json"], capsys)
    assert "hypervolume" not in json.loads(out)


@pytest.mark.usefixtures("searched")
def test_a_reference_beyond_the_front_gives_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert front_hypervolume(nas.load_study("nas"), (1e12, 0.0)) == 0.0


BAD_REFERENCES = {
    "too short": (["pareto", "nas", "--reference", "0"], "needs one value per objective"),
    "too long": (["status", "nas", "--reference", "0,1,2"], "but got 3: 0, 1, 2"),
    "not numbers": (["pareto", "nas", "--reference", "0,lots"], "expected finite numbers"),
    "infinite": (["pareto", "nas", "--reference", "0,inf"], "got '0,inf'"),
    "empty": (["pareto", "nas", "--reference", ""], "expected finite numbers"),
    "no study": (["status", "--reference", "0,1"], "reference: needs a STUDY"),
}


@pytest.mark.usefixtures("searched")
def test_bad_reference_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for case, (args, expected) in BAD_REFERENCES.items():
        code, out, err = run_cli(args, capsys)
        assert code == 2 and out == "", case
        assert err.startswith("error: reference: ") and expected in err, (case, err)
        assert len(err.strip().splitlines()) == 1, case


def test_front_agrees_with_optuna_best_trials_under_constraints(db_url: str) -> None:
    config = {
        "trials": 12,
        "sampler": "random",
        "evaluators": ["params"],
        "objectives": ["maximize:params", "macs"],
        "storage": db_url,
        "constraints": {"bytes": 40000},
    }
    study = nas.search(config).study
    feasible = [t for t in study.trials if t.user_attrs.get("feasible")]
    assert feasible and len(feasible) < len(study.trials), "want both kinds"
    assert sorted(r["trial"] for r in nas.pareto(study)) == sorted(
        t.number for t in study.best_trials
    )
