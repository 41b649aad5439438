"""The Ray backend: one long-lived actor per slot, on a local or remote Ray cluster.

An actor builds its :class:`~nas.workers._backends.WorkerSetup` once (the data
set, the evaluators, the CUDA context) and keeps it: Ray's GPU *tasks* would start
a fresh process per call. ``cpus_per_trial`` and ``gpus_per_trial`` are the
actor's resource request, so ``gpus_per_trial=0.25`` puts four actors on a GPU.

Connecting: ``address=None`` joins the cluster ``RAY_ADDRESS`` names (what ``ray job
submit`` sets) or starts a private one on this machine; ``"auto"`` joins the one
``ray start`` runs here; ``"ray://host:10001"`` is Ray Client. Ray >= 2.59 turns
token authentication on for local clusters: a cluster Ray starts itself makes its
token (``~/.ray/auth_token``); for ``ray start`` make one first with ``ray
get-auth-token --generate``, and give remote drivers the same token
(``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``). A connection refused for want of
the token is a one-line :class:`~nas.NasError` saying so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from nas._errors import NasError
from nas.workers._backends import Backend, Done, Task, WorkerSetup, WorkerSetupError, run_task

if TYPE_CHECKING:
    from nas.evaluators import Reporter


class _Actor:
    """Runs tasks in a Ray worker process with the setup built once."""

    def __init__(self, setup: WorkerSetup) -> None:
        self._error: str | None = None
        try:
            self._evaluators, self._ctx = setup.build()
        except Exception as exc:
            from nas.workers._local import failure_reason

            self._error = f"Ray actor (pid {os.getpid()}) could not start: {failure_reason(exc)}"

    def run(self, task: Task) -> Done | str:
        if self._error is not None:
            return self._error
        return Done(task.key, run_task(self._evaluators, self._ctx, task))

    def pid(self) -> int:
        return os.getpid()


@dataclass
class _Slot:
    actor: Any = None
    ref: Any = None
    task: Task | None = None
    attempts: int = 0
    deaths: int = 0


class RayBackend(Backend):
    """``actors`` Ray actors, each evaluating one task at a time."""

    def __init__(
        self,
        setup: WorkerSetup,
        actors: int,
        max_retries: int = 2,
        *,
        address: str | None = None,
        cpus_per_trial: float = 1.0,
        gpus_per_trial: float = 0.0,
    ) -> None:
        import ray

        self.slots = actors
        self.max_retries = max_retries
        self._started = False
        if not ray.is_initialized():
            _connect(address)
            self._started = True
        self._setup = replace(setup, threads=setup.threads or max(1, int(cpus_per_trial)))
        self._actor_class = ray.remote(
            num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_restarts=0
        )(_Actor)
        self._pool = [_Slot() for _ in range(actors)]

    def submit(self, task: Task, reporter: Reporter | None = None) -> None:
        del reporter  # intermediate values do not cross processes
        slot = next((s for s in self._pool if s.task is None), None)
        if slot is None:
            raise RuntimeError(f"all {self.slots} Ray actors are busy")
        slot.task, slot.attempts, slot.deaths = task, 0, 0
        self._start(slot)

    def _start(self, slot: _Slot) -> None:
        if slot.actor is None:
            slot.actor = self._actor_class.remote(self._setup)
        slot.attempts += 1
        slot.ref = slot.actor.run.remote(slot.task)

    def wait(self, timeout: float | None = None) -> list[Done]:
        import ray

        busy = {s.ref: s for s in self._pool if s.task is not None}
        if not busy:
            return []
        ready, _ = ray.wait(list(busy), num_returns=1, timeout=timeout)
        done = []
        for ref in ready:
            slot = busy[ref]
            try:
                message = ray.get(ref)
            except ray.exceptions.OutOfMemoryError:  # Ray's memory monitor killed the worker
                done.append(self._lost(slot, "out of memory (the host's: Ray killed the actor)"))
                continue
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
                lost = self._died(slot)
                if lost is not None:
                    done.append(lost)
                continue
            if isinstance(message, str):
                self.close()
                raise WorkerSetupError(message)
            slot.task = slot.ref = None
            done.append(replace(message, attempts=slot.attempts))
        return done

    def _died(self, slot: _Slot) -> Done | None:
        """Retry the task on a fresh actor, or give it up as lost."""
        import ray

        ray.kill(slot.actor, no_restart=True)
        slot.actor = None
        slot.deaths += 1
        if slot.attempts <= self.max_retries:
            self._start(slot)
            return None
        return self._lost(slot, f"Ray actor died {slot.attempts} times")

    def _lost(self, slot: _Slot, reason: str) -> Done:
        """Give the slot's task up (the candidate's trial fails with ``reason``)."""
        import ray

        assert slot.task is not None
        if slot.actor is not None:
            ray.kill(slot.actor, no_restart=True)
            slot.actor = None
        done = Done(slot.task.key, lost=reason, attempts=slot.attempts)
        slot.task = slot.ref = None
        return done

    def pids(self) -> list[int]:
        """The actors' process ids (for tests and monitoring)."""
        import ray

        actors = [s.actor for s in self._pool if s.actor is not None]
        return list(ray.get([a.pid.remote() for a in actors]))

    def close(self) -> None:
        import ray

        for slot in self._pool:
            if slot.actor is not None:
                ray.kill(slot.actor, no_restart=True)
            slot.actor = slot.ref = slot.task = None
        if self._started:
            ray.shutdown()
            self._started = False


def _connect(address: str | None) -> None:
    """``ray.init`` on ``address``, with a one-line error for what commonly goes wrong."""
    import ray

    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        if "auth" in text.lower() or "token" in text.lower():
            hint = (
                "; the cluster uses token authentication: set RAY_AUTH_TOKEN or "
                "RAY_AUTH_TOKEN_PATH to its token (ray get-auth-token on the head node)"
            )
        raise NasError(
            f"ray_address: cannot connect to Ray at {address or 'a new local cluster'}: "
            f"{text}{hint}"
        ) from None
