"""`nas worker`: drivers on several processes (machines) sharing one study through SQL."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_helpers import run_cli
from optuna.trial import TrialState

import nas
from nas.storage import Store

WORKERS, EACH = 4, 49


@pytest.mark.slow
def test_four_workers_record_every_trial_once_and_lose_no_evaluation(store_url: str) -> None:
    created = nas.search(
        {"trials": 4, "storage": store_url, "study": "shared", "sampler": "random"}
    )
    command = [sys.executable, "-m", "nas.cli", "worker", "shared", "--storage", store_url]
    workers = [
        subprocess.Popen(
            [*command, "--trials", str(EACH), "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
    study = nas.load_study("shared", store_url)
    trials = study.trials
    assert len(trials) == 4 + WORKERS * EACH == 200
    assert sorted(t.number for t in trials) == list(range(200))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    drivers = {t.user_attrs["driver"] for t in trials}
    assert len(drivers) == 1 + WORKERS  # the creating search and each worker
    fingerprint = created.plan.evaluators[0].fingerprint(created.plan.context)
    with Store(store_url) as store:
        for t in trials:
            stored = store.get_evaluation(t.user_attrs["arch_id"], "naswot", fingerprint)
            assert stored is not None and stored.metrics["naswot"] == t.values[0]
        evaluations = store.list_evaluations(evaluator="naswot")
    assert not [e for e in evaluations if e.error]
    assert len(evaluations) == len({t.user_attrs["arch_id"] for t in trials})


def test_a_worker_joins_with_the_study_s_own_search(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    nas.search(
        {
            "trials": 2,
            "storage": db_url,
            "study": "s",
            "sampler": "random",
            "objectives": ["maximize:naswot", "bytes"],
            "constraints": {"bytes": 1e9},
        }
    )
    code, _, err = run_cli(["worker", "s", "--storage", db_url, "-n", "3", "-q"], capsys)
    assert code == 0, err
    study = nas.load_study("s", db_url)
    assert len(study.trials) == 5 and study.metric_names == ["naswot", "bytes"]
    assert all(t.user_attrs["feasible"] for t in study.trials)  # the study's constraint
    result = nas.join("s", db_url)  # without trials: until the study has its 2 (it has 5)
    assert result.summary.complete == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["worker", "nope"], "error: study: no study 'nope'"),
        (["worker", "s", "-n", "x"], "error: trials: expected a whole number, got 'x'"),
        (["worker", "s", "--parallel", "2", "--backend", "local"], "error: parallel: the local"),
    ],
)
def test_worker_errors_are_one_line(
    db_url: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    nas.search({"trials": 1, "storage": db_url, "study": "s"})
    code, _, err = run_cli([*args, "--storage", db_url], capsys)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1
    assert len(nas.load_study("s", db_url).trials) == 1
