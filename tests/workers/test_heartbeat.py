"""A driver's trials can be traced to it from the moment they run, whenever it is killed."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from nas.storage import Store
from nas.workers._heartbeat import DRIVER_ATTR, Heartbeat, ask, driver_id, recover_stale

GRACE = 2


def _study(store_url: str, **kwargs: Any) -> tuple[Store, optuna.Study]:
    store = Store(store_url, heartbeat_grace=GRACE)
    study = optuna.create_study(
        study_name="beats", storage=store.optuna_storage(), load_if_exists=True, **kwargs
    )
    return store, study


def _killed_after(store_url: str, body: str) -> None:
    """Run ``body`` in a driver process that asks one trial and is SIGKILLed where it says."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import optuna
        from nas.storage import Store
        from nas.workers._heartbeat import Heartbeat, ask
        store = Store({store_url!r}, heartbeat_grace={GRACE})
        storage = store.optuna_storage()
        study = optuna.load_study(study_name="beats", storage=storage)
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        """
    ) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert done.returncode == -9, "the driver was not killed where the test put it"


def test_a_driver_killed_right_after_it_asks_leaves_a_trial_recovered_at_once(
    store_url: str,
) -> None:
    store, study = _study(store_url)
    with store:
        _killed_after(
            store_url,
            """
            with Heartbeat(storage) as heartbeat:
                ask(study, heartbeat)
                die()
            """,
        )
        [trial] = study.get_trials()
        assert trial.state == TrialState.RUNNING
        assert trial.user_attrs[DRIVER_ATTR].rpartition(":")[0] == driver_id().rpartition(":")[0]
        assert recover_stale(study) == [trial.number]  # its process is gone: no wait


def test_a_driver_killed_as_it_pops_an_enqueued_trial_leaves_a_heartbeat_that_goes_stale(
    store_url: str,
) -> None:
    store, study = _study(store_url)
    with store:
        study.enqueue_trial({"x": 3}, user_attrs={"warmup_rank": 0})
        # Killed after the trial is RUNNING and before it names its driver.
        _killed_after(
            store_url,
            """
            storage.set_trial_user_attr = die
            with Heartbeat(storage) as heartbeat:
                ask(study, heartbeat)
            """,
        )
        [trial] = study.get_trials()
        assert trial.state == TrialState.RUNNING and DRIVER_ATTR not in trial.user_attrs
        assert recover_stale(study) == []  # it beat a moment ago
        deadline = time.monotonic() + 15
        while not (failed := recover_stale(study)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert failed == [trial.number]
        [retry] = study.get_trials(states=(TrialState.WAITING,))
        assert retry.system_attrs["fixed_params"] == {"x": 3}
        assert retry.user_attrs == {"warmup_rank": 0, "retry_of": trial.number}


def _running(study: optuna.Study, started: datetime.datetime, **user_attrs: Any) -> int:
    template = create_trial(state=TrialState.RUNNING, user_attrs=user_attrs)
    template.datetime_start = started
    study._storage.create_new_trial(study._study_id, template_trial=template)
    return study.get_trials()[-1].number


def test_a_trial_of_a_driver_elsewhere_that_never_beat_is_stale_after_the_grace_period(
    store_url: str,
) -> None:
    store, study = _study(store_url)
    with store:
        now = datetime.datetime.now()
        minute_ago = now - datetime.timedelta(minutes=1)
        killed = _running(study, minute_ago, **{DRIVER_ATTR: "another-host:1"})
        _running(study, now, **{DRIVER_ATTR: "another-host:2"})  # may beat any moment now
        _running(study, minute_ago)  # no driver: not a nas driver's trial; left alone
        assert recover_stale(study) == [killed]
        assert study.get_trials()[killed].user_attrs["error"] == (
            f"its driver stopped: no heartbeat in the {GRACE} s since it started"
        )


class _Recording(optuna.samplers.RandomSampler):
    def __init__(self) -> None:
        super().__init__(seed=0)
        self.before: list[int] = []

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.before.append(trial.number)
        super().before_trial(study, trial)


def test_ask_gives_what_study_ask_gives(store_url: str) -> None:
    sampler = _Recording()
    store, study = _study(store_url, sampler=sampler)
    with store, Heartbeat(study._storage) as heartbeat:
        study.enqueue_trial({"x": 7}, user_attrs={"warmup_rank": 0})
        first = ask(study, heartbeat)  # the enqueued one first, with its parameters
        assert first.suggest_int("x", 0, 9) == 7
        second = ask(study, heartbeat)
        assert second.number == first.number + 1 and "x" not in second.params
        second.suggest_int("x", 0, 9)
        assert sampler.before == [first.number, second.number]
        study.tell(first, 1.0)
        study.tell(second, 2.0)
        trials = study.get_trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
        assert trials[0].user_attrs == {"warmup_rank": 0, DRIVER_ATTR: driver_id()}
        assert trials[1].user_attrs == {DRIVER_ATTR: driver_id()}
        assert trials[0].distributions == {"x": IntDistribution(0, 9)}
        assert recover_stale(study) == []
        assert os.getpid() == int(driver_id().rpartition(":")[2])


class _Broken(optuna.samplers.RandomSampler):
    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        raise RuntimeError("no sample today")


def test_a_sampler_that_raises_as_a_trial_opens_leaves_it_failed_and_its_candidate_queued(
    store_url: str,
) -> None:
    store, study = _study(store_url, sampler=_Broken())
    with store, Heartbeat(study._storage) as heartbeat:
        with pytest.raises(RuntimeError, match="no sample today"):
            ask(study, heartbeat)  # a new trial: nothing sampled, nothing to queue again
        study.enqueue_trial({"x": 5}, user_attrs={"warmup_rank": 2})
        with pytest.raises(RuntimeError, match="no sample today"):
            ask(study, heartbeat)  # the enqueued one: queued again
        new, popped, retry = study.get_trials()
        for failed in (new, popped):
            assert failed.state == TrialState.FAIL
            assert failed.user_attrs["error"] == "RuntimeError: no sample today"
            assert failed.user_attrs["stale"] is True  # not run: it does not count
        assert retry.state == TrialState.WAITING
        assert retry.system_attrs["fixed_params"] == {"x": 5}
        assert retry.user_attrs == {"warmup_rank": 2, "retry_of": popped.number}
        assert recover_stale(study) == []
