"""Several evaluations in flight: the process backend, dead workers, failures, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from crash_evaluators import attempts, registered
from optuna.trial import TrialState

import nas
from nas.storage import Store
from nas.workers import WorkerSetupError
from nas.workers._heartbeat import recover_stale

HELPERS = Path(__file__).parents[1] / "helpers"


@pytest.fixture(autouse=True)
def misbehaves() -> Iterator[None]:
    with registered():
        yield


def _config(db_url: str, log: Path, **settings: Any) -> dict[str, Any]:
    """A random search scored by test-misbehaves, which logs every call to ``log``."""
    evaluator = {"name": "test-misbehaves", "settings": {"log": str(log), **settings}}
    return {
        "trials": 6,
        "seed": 3,
        "sampler": "random",
        "storage": db_url,
        "evaluators": [evaluator],
        "objectives": ["maximize:score"],
    }


def _search(db_url: str, log: Path, settings: dict[str, Any], **overrides: Any) -> nas.SearchResult:
    return nas.search({**_config(db_url, log, **settings), **overrides})


@pytest.fixture(params=["process", pytest.param("ray", marks=pytest.mark.ray)])
def backend(request: pytest.FixtureRequest) -> str:
    """Each remote backend in turn; Ray's tests share the session's cluster."""
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return str(request.param)


#: The candidates that misbehave: those whose arch_id ends in one of these (about half).
TARGETED = "01234567"


def _half_misbehave(
    db_url: str, log: Path, mode: str, backend: str, **overrides: Any
) -> nas.SearchResult:
    """8 trials, 2 in flight, on ``backend``; the TARGETED candidates misbehave in ``mode``."""
    run = {"parallel": 2, "trials": 8, "backend": backend, **overrides}
    return _search(db_url, log, {"mode": mode, "digits": TARGETED}, **run)


DIED = {"process": "worker died 2 times (killed by SIGKILL)", "ray": "Ray actor died 2 times"}


def test_the_process_backend_gives_what_the_local_one_gives(db_url: str, tmp_path: Path) -> None:
    local = _search(db_url, tmp_path / "local.log", {}, study="local")
    pool = _search(db_url, tmp_path / "pool.log", {}, study="pool", parallel=2)
    assert pool.plan.backend == "process"

    def scores(result: nas.SearchResult) -> set[tuple[str, float]]:
        return {(o.arch.arch_id, o.metrics["score"]) for o in result.summary.outcomes}

    assert scores(pool) == scores(local)  # the same candidates, the same values
    # (Each log is a setting: the fingerprints differ, so the pool ran its own evaluations.)
    assert pool.summary.evaluations_run == 6
    pool_pids = {pid for p in attempts(tmp_path / "pool.log").values() for pid in p}
    assert os.getpid() not in pool_pids
    assert set(attempts(tmp_path / "local.log")) == {a for a, _ in scores(pool)}
    assert {pid for p in attempts(tmp_path / "local.log").values() for pid in p} == {os.getpid()}


def test_two_workers_share_the_evaluations(db_url: str, tmp_path: Path, backend: str) -> None:
    log = tmp_path / "calls.log"
    result = _search(db_url, log, {"seconds": 0.3}, parallel=2, trials=8, backend=backend)
    s = result.summary
    assert (s.complete, s.failed) == (8, 0)
    calls = attempts(log)
    assert sum(len(p) for p in calls.values()) == s.evaluations_run
    pids = {pid for p in calls.values() for pid in p}
    assert len(pids) == 2 and os.getpid() not in pids
    states = [t.state for t in result.study.trials]
    assert states == [TrialState.COMPLETE] * 8


def test_a_killed_worker_is_replaced_and_its_evaluation_retried(
    db_url: str, tmp_path: Path, backend: str
) -> None:
    log = tmp_path / "calls.log"
    result = _search(db_url, log, {"mode": "kill"}, parallel=2, trials=4, backend=backend)
    assert result.summary.complete == 4
    for arch_id, pids in attempts(log).items():
        assert len(pids) == 2, arch_id  # killed once, then run again...
        assert pids[0] != pids[1]  # ...by a fresh worker process
    with Store(db_url) as store:
        assert not [e for e in store.list_evaluations(evaluator="test-misbehaves") if e.error]


def test_a_worker_killed_every_time_fails_the_trial_after_the_retries(
    db_url: str, tmp_path: Path, backend: str
) -> None:
    log = tmp_path / "calls.log"
    result = _half_misbehave(db_url, log, "kill_always", backend, max_retries=1)
    s = result.summary
    dying = {a for a in attempts(log) if a[-1] in TARGETED}
    assert dying and s.failed == len([o for o in s.outcomes if o.arch.arch_id in dying])
    assert s.complete == 8 - s.failed
    for outcome in s.outcomes:
        tries = attempts(log)[outcome.arch.arch_id]
        if outcome.arch.arch_id in dying:
            assert len(tries) == 2  # max_retries=1: one run, one retry
            assert outcome.error == DIED[backend]
        else:
            assert len(tries) == 1
    failed = [t for t in result.study.trials if t.state == TrialState.FAIL]
    assert failed[0].user_attrs["error"] == DIED[backend]


def test_a_candidate_that_raises_fails_at_once_without_a_retry(
    db_url: str, tmp_path: Path, backend: str
) -> None:
    log = tmp_path / "calls.log"
    result = _half_misbehave(db_url, log, "raise", backend)
    for outcome in result.summary.outcomes:
        assert len(attempts(log)[outcome.arch.arch_id]) == 1
        if outcome.arch.arch_id[-1] in TARGETED:
            assert outcome.state == TrialState.FAIL
            assert outcome.error == "ValueError: this candidate is broken"
        else:
            assert outcome.state == TrialState.COMPLETE
    assert result.summary.failed >= 1


@pytest.mark.parametrize("parallel", [1, 2])
def test_out_of_memory_fails_the_trial_and_the_worker_takes_the_next(
    db_url: str, tmp_path: Path, parallel: int, backend: str
) -> None:
    log = tmp_path / "calls.log"
    result = _half_misbehave(db_url, log, "oom", backend, parallel=parallel)
    oom = [o for o in result.summary.outcomes if o.arch.arch_id[-1] in TARGETED]
    assert oom and all(o.state == TrialState.FAIL for o in oom)
    assert all(o.error is not None and o.error.startswith("out of memory (") for o in oom)
    assert result.summary.complete == 8 - len(oom)
    # No worker died of it: as many processes as slots did every evaluation.
    pids = {pid for p in attempts(log).values() for pid in p}
    assert len(pids) == parallel
    assert all(len(p) == 1 for p in attempts(log).values())


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"parallel": 2, "backend": "local"}, "parallel"),
        ({"parallel": 2, "pruner": "median"}, "pruner"),
        ({"gpus_per_trial": 0.5}, "gpus_per_trial"),
        ({"ray_address": "auto", "backend": "process"}, "ray_address"),
    ],
)
def test_backend_options_that_do_not_fit_are_refused_before_anything_is_written(
    db_url: str, tmp_path: Path, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(nas.ConfigError) as info:
        _search(db_url, tmp_path / "calls.log", {}, **overrides)
    assert info.value.field == field
    assert not (tmp_path / "calls.log").exists()


_DRIVER = """
import sys
from crash_evaluators import registered
import nas
config = eval(sys.argv[1])
with registered():
    nas.search(config)
"""


def test_a_driver_killed_mid_search_is_resumed_without_losing_or_repeating_a_trial(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    config = _config(db_url, log, seconds=0.5) | {"trials": 10, "parallel": 2}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HELPERS), *sys.path])}
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_DRIVER), repr(config)], env=env
    )
    try:
        deadline = time.monotonic() + 120
        while sum(map(len, attempts(log).values())) < 5:  # a few done, two in flight
            assert driver.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait()
    before = nas.load_study("nas", db_url)
    running = [t for t in before.trials if t.state == TrialState.RUNNING]
    assert running, "the driver was killed between trials; nothing to recover"
    with Store(db_url) as store:
        stored = {e.arch_id for e in store.list_evaluations(evaluator="test-misbehaves")}
    calls_before = attempts(log)

    result = nas.search(config, resume=True)

    assert sorted(result.recovered) == sorted(t.number for t in running)
    trials = result.study.trials
    stale = [t for t in trials if t.user_attrs.get("stale")]
    assert {t.number for t in stale} == {t.number for t in running}
    assert all(t.state == TrialState.FAIL for t in stale)
    assert all("its driver stopped" in t.user_attrs["error"] for t in stale)
    counted = [t for t in trials if not t.user_attrs.get("stale")]
    assert len(counted) == 10 and all(t.state == TrialState.COMPLETE for t in counted)
    # The stale trials' architectures ran again, as retries...
    retried = {t.user_attrs.get("retry_of") for t in counted} - {None}
    assert retried == {t.number for t in running}
    # ...and nothing stored before the kill was evaluated again.
    for arch_id in stored:
        assert len(attempts(log)[arch_id]) == len(calls_before[arch_id]) == 1


def test_resume_needs_a_study_to_resume(db_url: str, tmp_path: Path) -> None:
    with pytest.raises(nas.ConfigError, match="resume: no study 'nas'"):
        nas.search(_config(db_url, tmp_path / "calls.log"), resume=True)


def test_a_trial_without_heartbeats_is_stale_after_the_grace_period(db_url: str) -> None:
    with Store(db_url, heartbeat_grace=2) as store:
        storage = store.optuna_storage()
        study = optuna.create_study(study_name="beats", storage=storage)
        elsewhere = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        elsewhere.set_user_attr("driver", "another-host:1")
        storage.record_heartbeat(elsewhere._trial_id)
        alive = study.ask()
        alive.set_user_attr("driver", "another-host:2")
        storage.record_heartbeat(alive._trial_id)
        assert recover_stale(study) == []  # both beat a moment ago
        deadline = time.monotonic() + 10
        while True:
            storage.record_heartbeat(alive._trial_id)
            failed = recover_stale(study)
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert failed == [elsewhere.number]
        trials = study.get_trials()
        assert trials[elsewhere.number].user_attrs["error"] == (
            "its driver stopped: no heartbeat for over 2 s"
        )
        assert trials[alive.number].state == TrialState.RUNNING
        [retry] = [t for t in trials if t.state == TrialState.WAITING]
        assert retry.user_attrs["retry_of"] == elsewhere.number


@pytest.mark.ray
@pytest.mark.skipif(torch.cuda.is_available(), reason="a worker that sees no GPU needs none here")
def test_cuda_on_ray_is_the_workers_to_resolve_and_one_without_a_gpu_says_so(
    db_url: str, tmp_path: Path, ray_cluster: None
) -> None:
    # The driver has no GPU either, but on Ray only the workers' count: the plan accepts it...
    config = _config(db_url, tmp_path / "calls.log") | {"backend": "ray", "device": "cuda"}
    # ...and the actor that cannot honour it stops the search in one line.
    with pytest.raises(WorkerSetupError, match="could not start: ConfigError: device: 'cuda' "
                       "requested but this worker sees no CUDA device") as info:  # fmt: skip
        nas.search(config)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "calls.log").exists()
    # The trial it had asked is not lost: it is failed as stale and queued again.
    trials = nas.load_study("nas", db_url).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["stale"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: cuda is valid")
def test_the_plan_still_refuses_cuda_without_a_gpu_for_local_workers(
    db_url: str, tmp_path: Path
) -> None:
    with pytest.raises(nas.ConfigError, match="device: 'cuda' requested but no CUDA device"):
        _search(db_url, tmp_path / "calls.log", {}, device="cuda", parallel=2)
