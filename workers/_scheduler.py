"""The driver: asks Optuna for trials, evaluates (or reuses), tells.

The driver owns the study and is its only writer. Before an evaluation runs,
``(arch_id, evaluator, fingerprint)`` is looked up in storage: a network already
evaluated with the same settings is never evaluated again, in any study.

Constraints (metric -> limit) are told to Optuna with ``trial.set_constraint``
before ``study.tell``: a finished trial can no longer be changed, and Optuna 5's
samplers and ``study.best_trials`` read them from there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from nas.evaluators import WEIGHTS_FILE
from nas.storage import json_float
from nas.workers._artifacts import WEIGHTS_ATTR, TrialArtifacts
from nas.workers._backends import Backend, Done, LocalBackend, Task
from nas.workers._heartbeat import (
    STALE_ATTR,
    Heartbeat,
    ask,
    counted_trials,
    requeue,
)
from nas.workers._local import EvalResult, Worker, failure_reason

if TYPE_CHECKING:
    from nas._config import Objective
    from nas.evaluators import EvalContext, Evaluator, Reporter
    from nas.search_space import AnyArchitecture, AnySpace
    from nas.storage import Store


@dataclass(frozen=True)
class TrialOutcome:
    """One finished trial, as the progress display and the summary see it."""

    number: int
    arch: AnyArchitecture
    state: TrialState
    values: tuple[float, ...] | None
    metrics: dict[str, float]
    evaluated: int
    reused: int
    error: str | None = None
    feasible: bool = True


@dataclass
class SearchSummary:
    """What a run of the scheduler did."""

    study_name: str
    complete: int = 0
    failed: int = 0
    pruned: int = 0
    feasible: int = 0
    evaluations_run: int = 0
    evaluations_reused: int = 0
    seconds: float = 0.0
    outcomes: list[TrialOutcome] = field(default_factory=list)

    def add(self, outcome: TrialOutcome) -> None:
        self.outcomes.append(outcome)
        self.complete += outcome.state == TrialState.COMPLETE
        self.feasible += outcome.state == TrialState.COMPLETE and outcome.feasible
        self.failed += outcome.state == TrialState.FAIL
        self.pruned += outcome.state == TrialState.PRUNED
        self.evaluations_run += outcome.evaluated
        self.evaluations_reused += outcome.reused


@dataclass
class _Evaluated:
    """What the evaluators gave one candidate, and how it ended."""

    metrics: dict[str, float]
    evaluated: int = 0
    reused: int = 0
    error: str | None = None
    pruned_at: int | None = None
    #: The files the evaluations made here (the trained weights), by name.
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class _Job:
    """A trial between ask and tell: its architecture, what is known, what is still to run."""

    trial: optuna.Trial
    arch: AnyArchitecture
    done: _Evaluated
    #: Indices of the evaluators to run (not stored yet), in order.
    pending: tuple[int, ...] = ()


class Scheduler:
    """Runs the ask -> sample -> evaluate/reuse -> tell loop over one study.

    Up to ``backend.slots`` trials are in flight at once: the driver asks while a
    slot is free, sends the architecture (never the trial) to the backend, and
    tells each trial as its evaluations come back, in whatever order they finish.
    Every in-flight trial has a heartbeat; a trial whose driver stops is recovered
    by the next driver on the study (:func:`~nas.workers._heartbeat.recover_stale`).

    ``constraints`` maps a metric to the most it may be; a complete trial over
    any limit is infeasible: Optuna's samplers rank it below every feasible one
    and ``study.best_trials`` leaves it out.

    With ``artifacts``, every trial uploads its ``arch.json``, ``model.onnx``
    and trained weights as Optuna artifacts before it is told. A trained
    candidate's weights are stored with its evaluation either way, and the trial's
    user attr ``weights`` names that evaluation (``train/<fingerprint>``).
    """

    def __init__(
        self,
        study: optuna.Study,
        space: AnySpace,
        evaluators: Sequence[Evaluator],
        context: EvalContext,
        objectives: Sequence[Objective],
        store: Store,
        backend: Backend | None = None,
        constraints: Mapping[str, float] | None = None,
        artifacts: TrialArtifacts | None = None,
    ) -> None:
        self.study = study
        self.space = space
        self.evaluators = tuple(evaluators)
        self.context = context
        self.objectives = tuple(objectives)
        self.store = store
        self.backend = backend or LocalBackend(self.evaluators, context)
        self.constraints = dict(constraints or {})
        self.artifacts = artifacts
        self._fingerprints = {ev.name: ev.fingerprint(context) for ev in self.evaluators}

    def run(
        self,
        n_trials: int,
        timeout: float | None = None,
        callbacks: Sequence[Callable[[TrialOutcome], None]] = (),
        total: int | None = None,
    ) -> SearchSummary:
        """Run ``n_trials`` trials, or fewer if ``timeout`` seconds pass first.

        After the timeout no trial is asked; those in flight are finished and told.
        With ``total``, no trial is asked either once the study has that many
        (:func:`~nas.workers._heartbeat.counted_trials`, every driver's): drivers
        sharing a study stop together, at most one trial each past it.
        """
        summary = SearchSummary(self.study.study_name)
        start = time.perf_counter()
        storage = self.study._storage  # Optuna has no public handle on it
        inflight: dict[int, _Job] = {}
        asked = 0

        def finish(job: _Job) -> None:
            heartbeat.discard(job.trial._trial_id)
            outcome = self._finish(job)
            summary.add(outcome)
            for callback in callbacks:
                callback(outcome)

        with Heartbeat(storage) as heartbeat:
            try:
                while True:
                    while (
                        len(inflight) < self.backend.slots
                        and asked < n_trials
                        and (timeout is None or time.perf_counter() - start < timeout)
                        and (total is None or counted_trials(self.study) < total)
                    ):
                        asked += 1
                        job = self._ask(heartbeat)
                        if not job.pending:  # every evaluation reused
                            finish(job)
                            continue
                        task = Task(job.trial.number, job.arch, job.pending)
                        self.backend.submit(task, self._reporter(job.trial))
                        inflight[job.trial.number] = job
                    if not inflight:
                        break
                    for done in self.backend.wait(heartbeat.interval):
                        job = inflight.pop(done.key)
                        self._absorb(job, done)
                        finish(job)
            except BaseException as exc:  # never leave an asked trial RUNNING
                for job in inflight.values():
                    self._abandon(job.trial, _stop_reason(exc))
                raise
        summary.seconds = time.perf_counter() - start
        return summary

    def _ask(self, heartbeat: Heartbeat) -> _Job:
        """Ask a trial, sample its architecture and look up what is stored of it."""
        trial = ask(self.study, heartbeat)
        try:
            arch = self.space.sample(trial)
            cost = arch.cost()
            self.store.put_architecture(
                arch.arch_id, self.space.name, arch.to_json(), **cost.as_dict()
            )
            trial.set_user_attr("arch_id", arch.arch_id)
            trial.set_user_attr("arch", arch.summary())
            done = _Evaluated({k: float(v) for k, v in cost.as_dict().items()})
            pending = []
            for index, ev in enumerate(self.evaluators):
                fingerprint = self._fingerprints[ev.name]
                stored = self.store.get_evaluation(arch.arch_id, ev.name, fingerprint)
                if stored is None:
                    pending.append(index)
                else:
                    done.metrics.update(stored.metrics)
                    done.reused += 1
        except BaseException as exc:
            self._abandon(trial, _stop_reason(exc))
            raise
        return _Job(trial, arch, done, tuple(pending))

    def _absorb(self, job: _Job, done: Done) -> None:
        """Store what the backend gave back and merge it into the job's metrics."""
        if done.lost is not None:
            job.done.error = done.lost
            return
        for index, result in zip(job.pending, done.results, strict=False):
            ev = self.evaluators[index]
            self.store.put_evaluation(
                job.arch.arch_id,
                ev.name,
                self._fingerprints[ev.name],
                result.metrics or {},
                result.seconds,
                result.error,
                result.files if result.error is None else None,
            )
            if result.error is None:
                job.done.files.update(result.files)
            job.done.evaluated += 1
            job.done.metrics.update(result.metrics or {})
            if result.pruned_at is not None:
                job.done.pruned_at = result.pruned_at
                return
            if result.metrics is None:
                job.done.error = result.error or f"{ev.name}: failed"
                return
        if len(done.results) < len(job.pending):
            job.done.error = "the worker returned fewer results than evaluations asked"

    def _finish(self, job: _Job) -> TrialOutcome:
        """Confirm estimates where they decide something, set the metrics, tell Optuna."""
        trial, done = job.trial, job.done
        if done.error is None and done.pruned_at is None:
            done.metrics.update(self._study_values(done.metrics))
            self._confirm(job.arch, done.metrics, done)
        for key, value in done.metrics.items():
            trial.set_user_attr(key, json_float(value))
        files = self._weights(job) if done.error is None and done.pruned_at is None else {}
        if self.artifacts is not None:  # before tell: Optuna refuses uploads to a told trial
            self.artifacts.upload(trial, job.arch, files)
        state, values, feasible = self._tell(trial, done)
        return TrialOutcome(
            trial.number,
            job.arch,
            state,
            values,
            done.metrics,
            done.evaluated,
            done.reused,
            done.error,
            feasible,
        )

    def _weights(self, job: _Job) -> dict[str, bytes]:
        """The candidate's trained weights (made now or stored with a reused evaluation)."""
        for ev in self.evaluators:
            if WEIGHTS_FILE not in ev.files:
                continue
            fingerprint = self._fingerprints[ev.name]
            files = job.done.files or self.store.get_evaluation_files(
                job.arch.arch_id, ev.name, fingerprint
            )
            if WEIGHTS_FILE in files:
                job.trial.set_user_attr(WEIGHTS_ATTR, f"{ev.name}/{fingerprint}")
                return {WEIGHTS_FILE: files[WEIGHTS_FILE]}
        return {}

    def _abandon(self, trial: optuna.Trial, reason: str) -> None:
        """Fail a trial this driver cannot finish; its architecture is queued to run again.

        It counts as not run (user attr ``stale``), like a trial whose driver died.
        """
        try:
            trial.set_user_attr("error", reason)
            trial.set_user_attr(STALE_ATTR, True)
            frozen = self.study.tell(trial, state=TrialState.FAIL)
        except Exception:  # the storage itself may be what failed; recovery will find it
            return
        requeue(self.study, frozen)

    def _confirm(self, arch: AnyArchitecture, metrics: dict[str, float], done: _Evaluated) -> None:
        """Replace estimates by measurements where they decide something.

        An evaluator with ``confirm_metrics`` (latency in mode auto: predicted) is
        asked to :meth:`~nas.evaluators.Evaluator.confirm` a candidate whose
        objective values are not dominated by any feasible completed trial (it
        would enter the front), or whose estimate lies within ``confirm_margin``
        of a constraint's limit. Everything else keeps the estimate, and so does
        a candidate whose estimate is clearly over a limit.
        """
        for ev in self.evaluators:
            if not ev.confirm_metrics or not self._decides(ev, metrics):
                continue
            try:
                metrics.update(ev.confirm(arch, self.context))
                done.evaluated += 1
            except Exception as exc:  # the candidate's own failure, as in LocalWorker
                done.error = failure_reason(exc)
                return

    def _decides(self, ev: Evaluator, metrics: dict[str, float]) -> bool:
        for metric in ev.confirm_metrics:
            limit = self.constraints.get(metric)
            if limit is None:
                continue
            if abs(metrics[metric] - limit) <= ev.confirm_margin * limit:
                return True
            if metrics[metric] > limit:  # clearly infeasible: it cannot enter the front
                return False
        if not any(o.metric in ev.confirm_metrics for o in self.objectives):
            return False
        values = self._values(metrics)
        if isinstance(values, str):
            return False
        signs = [1.0 if o.direction == "minimize" else -1.0 for o in self.objectives]
        mine = [s * v for s, v in zip(signs, values, strict=True)]
        states = (TrialState.COMPLETE,)
        for t in self.study.get_trials(deepcopy=False, states=states):
            if t.user_attrs.get("feasible") is False or t.values is None:
                continue
            theirs = [s * v for s, v in zip(signs, t.values, strict=True)]
            if all(a <= b for a, b in zip(theirs, mine, strict=True)) and theirs != mine:
                return False  # dominated: the estimate is good enough
        return True

    def _tell(
        self, trial: optuna.Trial, done: _Evaluated
    ) -> tuple[TrialState, tuple[float, ...] | None, bool]:
        if done.pruned_at is not None:
            trial.set_user_attr("pruned_at_epoch", done.pruned_at)
            self.study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED, None, False
        values = None if done.error else self._values(done.metrics)
        if isinstance(values, str):
            done.error, values = values, None
        excess = None if done.error else self._excess(done.metrics)
        if isinstance(excess, str):
            done.error, excess = excess, None
        if done.error is not None:
            trial.set_user_attr("error", done.error)
            self.study.tell(trial, state=TrialState.FAIL)
            return TrialState.FAIL, None, False
        feasible = self._constrain(trial, excess or {})
        self.study.tell(trial, list(values or ()))
        return TrialState.COMPLETE, values, feasible

    def _excess(self, metrics: dict[str, float]) -> dict[str, float] | str:
        """``value - limit`` per constraint (<= 0 is satisfied), or why it cannot be known."""
        excess = {}
        for metric, limit in self.constraints.items():
            value = metrics.get(metric, math.nan)
            if math.isnan(value):
                return f"constraint {metric} is {'NaN' if metric in metrics else 'missing'}"
            excess[metric] = value - limit
        return excess

    def _constrain(self, trial: optuna.Trial, excess: dict[str, float]) -> bool:
        """Tell Optuna the constraints (before ``tell``); user attrs repeat them for the dashboard.

        optuna-dashboard 0.21 does not show Optuna 5's per-name constraints.
        """
        if not self.constraints:
            return True
        for metric, value in excess.items():
            trial.set_constraint(metric, value)
        feasible = all(v <= 0 for v in excess.values())
        trial.set_user_attr("constraints", {k: json_float(v) for k, v in excess.items()})
        trial.set_user_attr("feasible", feasible)
        return feasible

    def _study_values(self, metrics: dict[str, float]) -> dict[str, float]:
        """Study-relative metrics (the ensemble's rank) against the study's COMPLETE trials.

        The population is as of now: a value is fixed when its trial is told, as
        Optuna's values are.
        """
        out: dict[str, float] = {}
        for ev in self.evaluators:
            if ev.study_metrics:
                done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                population = [{k: float(t.user_attrs[k]) for k in ev.metrics} for t in done]
                out.update(ev.study_values(metrics, population))
        return out

    def _reporter(self, trial: optuna.Trial) -> Reporter | None:
        """Intermediate values of the (single) objective go to Optuna, which may prune.

        Optuna keeps intermediate values for single-objective studies only.
        """
        if len(self.objectives) != 1:
            return None
        metric = self.objectives[0].metric

        def report(step: int, metrics: Mapping[str, float]) -> bool:
            if metric not in metrics or math.isnan(metrics[metric]):
                return False
            trial.report(metrics[metric], step)
            return trial.should_prune()

        return report

    def _values(self, metrics: dict[str, float]) -> tuple[float, ...] | str:
        values = tuple(metrics[o.metric] for o in self.objectives)
        for objective, value in zip(self.objectives, values, strict=True):
            if math.isnan(value):
                return f"objective {objective.metric} is NaN"
        return values


def _stop_reason(exc: BaseException) -> str:
    """Why the driver stopped with trials in flight."""
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else failure_reason(exc)


def evaluate_cached(
    store: Store,
    worker: Worker,
    arch: AnyArchitecture,
    ev: Evaluator,
    ctx: EvalContext,
    fingerprint: str | None = None,
) -> tuple[EvalResult, bool]:
    """``ev``'s result on ``arch``, stored or fresh (then stored), and whether it was reused.

    The one place where the ``(arch_id, evaluator, fingerprint)`` cache is read and
    written: the scheduler and the warm-up share it. ``arch`` must already be in the
    store (``put_architecture``); a failure is stored too, but never reused.
    """
    fingerprint = fingerprint or ev.fingerprint(ctx)
    stored = store.get_evaluation(arch.arch_id, ev.name, fingerprint)
    if stored is not None:
        return EvalResult(dict(stored.metrics), stored.seconds), True
    result = worker.evaluate(arch, ev, ctx)
    store.put_evaluation(
        arch.arch_id,
        ev.name,
        fingerprint,
        result.metrics or {},
        result.seconds,
        result.error,
        result.files if result.error is None else None,
    )
    return result, False
