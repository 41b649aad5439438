"""Heartbeats of in-flight trials, and the recovery of trials whose driver stopped.

Optuna records heartbeats only inside ``study.optimize``; an ask/tell driver has
none of its own. The driver therefore records one for every trial it has in
flight, from a thread, in Optuna's own heartbeat table (the database's clock, so
machines with skewed clocks agree), and writes its ``host:pid`` to the trial's
user attr ``driver``.

A driver asks with :func:`ask`, never ``study.ask()``: a new trial is created
RUNNING with its ``driver`` attr in one storage call, and an enqueued one gets its
first heartbeat before it is popped, so a driver killed at any moment leaves no
RUNNING trial that cannot be traced to it.

A RUNNING trial is *stale* when its driver is a process on this host that no
longer exists (found at once), when its last heartbeat is older than the
storage's grace period (a driver on another machine), or when it has a driver
but no heartbeat at all and started longer than the grace period ago (a driver
on another machine killed before its first beat; this compares the trial's start
with this machine's clock). :func:`recover_stale` fails such a trial with the
reason and enqueues its architecture again, so the next ``ask`` runs it first;
its evaluations already stored are reused, not run again.
"""

from __future__ import annotations

import datetime
import os
import socket
import threading
from collections.abc import Iterable
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState, create_trial

from nas.workers._local import failure_reason

#: User attr of a trial failed because its driver stopped (it does not count as run).
STALE_ATTR = "stale"
#: User attr of a re-queued trial: the number of the stale one it repeats.
RETRY_ATTR = "retry_of"
#: User attr naming the driver process of a trial, ``host:pid``.
DRIVER_ATTR = "driver"


def driver_id() -> str:
    """This process as trials record it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Records a heartbeat for each trial in :meth:`add`, every ``interval`` seconds.

    A context manager around the driver loop; does nothing on a storage without
    heartbeats (anything but Optuna's RDB storage, which a study wraps in a cache).
    """

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        interval = heartbeat_interval(storage)
        self._storage = (
            storage if isinstance(storage, BaseHeartbeat) and interval is not None else None
        )
        #: Seconds between beats (10 where the storage has no heartbeats).
        self.interval: float = interval or 10
        self._trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nas-heartbeat", daemon=True)

    def add(self, trial_id: int) -> None:
        """Beat for ``trial_id`` now and from now on."""
        with self._lock:
            self._trial_ids.add(trial_id)
        self._beat([trial_id])

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.discard(trial_id)

    def _beat(self, trial_ids: Iterable[int]) -> None:
        if self._storage is None:
            return
        for trial_id in trial_ids:
            try:
                self._storage.record_heartbeat(trial_id)
            except Exception:  # a missed beat is retried at the next interval
                continue

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = list(self._trial_ids)
            self._beat(ids)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def ask(study: optuna.Study, heartbeat: Heartbeat) -> optuna.Trial:
    """``study.ask()`` for a driver: the trial is traceable to it from the moment it runs.

    As ``study.ask()``, pops the oldest enqueued (WAITING) trial, else creates a
    new one, and the sampler's ``before_trial`` sees it. A new trial is created
    RUNNING with the ``driver`` attr in the same storage call. An enqueued one
    gets its heartbeat before it is popped (the attr cannot go first: a driver
    losing the race for that trial would write its name on another's), so a
    driver killed before it writes the attr leaves a heartbeat that goes stale.
    Either way the trial is in ``heartbeat`` from then on.
    """
    storage = study._storage  # Optuna has no public handle on a study's storage or id
    study_id = study._study_id
    # As study.ask(): the sampler must see every trial stored, not the last ask's.
    study._thread_local.cached_all_trials = None
    me = driver_id()
    for waiting in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        heartbeat.add(waiting._trial_id)
        try:
            popped = storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
        except UpdateFinishedTrialError:
            popped = False
        if popped:
            storage.set_trial_user_attr(waiting._trial_id, DRIVER_ATTR, me)
            return _opened(study, waiting._trial_id, heartbeat)
        heartbeat.discard(waiting._trial_id)  # another driver popped it first
    template = create_trial(state=TrialState.RUNNING, user_attrs={DRIVER_ATTR: me})
    trial_id = storage.create_new_trial(study_id, template_trial=template)
    heartbeat.add(trial_id)
    return _opened(study, trial_id, heartbeat)


def _opened(study: optuna.Study, trial_id: int, heartbeat: Heartbeat) -> optuna.Trial:
    """The RUNNING trial as an ``optuna.Trial``; failed and re-queued if the sampler raises."""
    try:
        return optuna.Trial(study, trial_id)  # calls the sampler's before_trial
    except BaseException as exc:
        heartbeat.discard(trial_id)
        storage = study._storage
        try:
            if _fail_as_stale(storage, trial_id, failure_reason(exc)):
                requeue(study, storage.get_trial(trial_id))
        except Exception:  # the storage itself may be what failed; recovery will find it
            pass
        raise


def _fail_as_stale(storage: optuna.storages.BaseStorage, trial_id: int, reason: str) -> bool:
    """Fail a RUNNING trial as not run (user attrs ``error``, ``stale``); False if it had ended."""
    try:
        storage.set_trial_user_attr(trial_id, "error", reason)
        storage.set_trial_user_attr(trial_id, STALE_ATTR, True)
        return storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:  # another driver got there first
        return False


def heartbeat_interval(storage: optuna.storages.BaseStorage) -> int | None:
    """Seconds between a trial's heartbeats on ``storage``; None if it has none."""
    return storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None


def recover_stale(study: optuna.Study) -> list[int]:
    """Fail the study's stale RUNNING trials and enqueue their architectures again.

    Returns the numbers of the trials failed. A trial another driver recovers (or
    finishes) first is left to it. Each failed trial has user attrs ``error`` (the
    reason) and ``stale``; each re-queued one has ``retry_of``.
    """
    storage = study._storage  # Optuna has no public handle on a study's storage or id
    study_id = study._study_id
    stale_ids: set[int] = set()
    unbeaten_ids: set[int] = set()
    grace = 0
    interval = heartbeat_interval(storage)
    if isinstance(storage, BaseHeartbeat) and interval is not None:
        stale_ids = set(storage._get_stale_trial_ids(study_id))
        backend = getattr(storage, "_backend", storage)  # under the study's cache
        grace = getattr(backend, "grace_period", None) or 2 * interval
        unbeaten_ids = _unbeaten_trial_ids(backend, study_id)
    now = datetime.datetime.now()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason: str | None
        if trial._trial_id in stale_ids:
            reason = f"its driver stopped: no heartbeat for over {grace} s"
        elif (
            trial._trial_id in unbeaten_ids
            and DRIVER_ATTR in trial.user_attrs
            and trial.datetime_start is not None
            and (now - trial.datetime_start).total_seconds() > grace
        ):
            reason = f"its driver stopped: no heartbeat in the {grace} s since it started"
        else:
            reason = _dead_driver(trial.user_attrs.get(DRIVER_ATTR))
        if reason is None or not _fail_as_stale(storage, trial._trial_id, reason):
            continue
        failed.append(trial.number)
        requeue(study, trial)
    return failed


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Enqueue the candidate of a trial that was stopped, as a retry (user attr ``retry_of``).

    Its params, or those it was enqueued with if it stopped before sampling them
    (nothing if it had neither); a warm-up pick keeps its ``warmup_rank`` and
    ``warmup_score``.
    """
    params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
    if not params:
        return
    attrs: dict[str, Any] = {
        k: trial.user_attrs[k] for k in ("warmup_rank", "warmup_score") if k in trial.user_attrs
    }
    study.enqueue_trial(params, user_attrs={**attrs, RETRY_ATTR: trial.number})


def _unbeaten_trial_ids(storage: object, study_id: int) -> set[int]:
    """The study's RUNNING trials that have no heartbeat at all (Optuna's query skips them)."""
    if not isinstance(storage, RDBStorage):
        return set()
    from optuna.storages._rdb import models

    query = (
        sqlalchemy.select(models.TrialModel.trial_id)
        .outerjoin(
            models.TrialHeartbeatModel,
            models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id,
        )
        .where(
            models.TrialModel.study_id == study_id,
            models.TrialModel.state == TrialState.RUNNING,
            models.TrialHeartbeatModel.trial_heartbeat_id.is_(None),
        )
    )
    session = storage.scoped_session()
    try:
        return set(session.scalars(query))
    finally:
        session.close()


def _dead_driver(driver: object) -> str | None:
    """Why a trial's driver is known to be gone: a process of this host that has exited."""
    if not isinstance(driver, str) or ":" not in driver:
        return None
    host, _, pid_text = driver.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if pid == os.getpid():
        return None  # this very process: a trial it has in flight is not stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"its driver stopped: process {pid} on {host} no longer exists"
    except PermissionError:
        return None  # alive, someone else's
    return None


def counted_trials(study: optuna.Study) -> int:
    """Trials that count toward a search's total: asked and not stale.

    A RUNNING trial counts (its driver is alive, or it would have been recovered);
    a WAITING one (enqueued, not asked yet) does not.
    """
    return sum(
        not t.user_attrs.get(STALE_ATTR) and t.state != TrialState.WAITING
        for t in study.get_trials(deepcopy=False)
    )
