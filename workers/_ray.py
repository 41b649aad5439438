"""The Ray backend: one long-lived actor per slot, on a local or remote Ray cluster.

An actor builds its :class:`~nas.workers._backends.WorkerSetup` once (the data
set, the evaluators, the CUDA context) and keeps it: Ray's GPU *tasks* would start
a fresh process per call. ``cpus_per_trial`` and ``gpus_per_trial`` are the
actor's resource request, so ``gpus_per_trial=0.25`` puts four actors on a GPU.

Connecting: ``address=None`` joins the cluster ``RAY_ADDRESS`` names (what ``ray job
submit`` sets) or starts a private one on this machine; ``"auto"`` joins the one
``ray start`` runs here; ``"host:6379"`` or ``"ray://host:10001"`` (Ray Client)
name one. Ray >= 2.59 turns token authentication on for a cluster ``ray.init``
starts (it writes ``~/.ray/auth_token``), and ``ray start`` turns it on when it
finds a token; a driver or node joining such a cluster needs the same token
(``~/.ray/auth_token``, ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``) and, for an
explicit address, ``RAY_AUTH_MODE=token``, which :func:`_connect` sets when a token
is at hand. A connection that fails is a one-line :class:`~nas.ConfigError` on
``ray_address``, with a hint about the token where one may be missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._errors import ConfigError
from nas.workers._backends import Backend, Done, Task, WorkerSetup, WorkerSetupError, run_task

if TYPE_CHECKING:
    from nas.evaluators import Reporter


class _Actor:
    """Runs tasks in a Ray worker process with the setup built once."""

    def __init__(self, setup: WorkerSetup) -> None:
        self._built = setup.build_or_reason(f"Ray actor (pid {os.getpid()})")

    def run(self, task: Task) -> Done | str:
        if isinstance(self._built, str):
            return self._built
        evaluators, ctx = self._built
        return Done(task.key, run_task(evaluators, ctx, task))


@dataclass
class _Slot:
    actor: Any = None
    ref: Any = None
    task: Task | None = None
    attempts: int = 0


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
        slot.task, slot.attempts = task, 0
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
    """``ray.init`` on ``address``, with a one-line error for what commonly goes wrong.

    Ray enables token authentication by itself only for a cluster it starts or
    finds with ``"auto"``; joining an explicit address (or ``RAY_ADDRESS``) it
    sends no token unless ``RAY_AUTH_MODE=token``. So when a token is at hand and
    the mode is unset, it is set here: a cluster without authentication accepts a
    token too, and one with it would refuse the driver.
    """
    joining = address is not None or bool(os.environ.get("RAY_ADDRESS"))
    if joining and "RAY_AUTH_MODE" not in os.environ and auth_token_available():
        _enable_token_mode()
    try:
        _init(address)
    except Exception as exc:  # ConnectionError, AuthenticationError, ValueError...
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        text = lines[0] if lines else type(exc).__name__
        if len(lines) > 1 and _CLIENT_INIT_FAILED in text:  # the server's traceback follows
            text = f"{text.rstrip(':')}: {lines[-1]}"
        where = address or os.environ.get("RAY_ADDRESS") or "a new local cluster"
        hint = ""
        if (
            "auth" in text.lower()
            or "token" in text.lower()
            or (joining and not auth_token_available())
        ):
            hint = (
                "; if the cluster uses token authentication (Ray's default), give its token "
                "as ~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH "
                "(`ray get-auth-token` on the head node prints it)"
            )
        raise ConfigError(
            "ray_address", f"cannot connect to Ray at {where}: {text.rstrip('.')}{hint}"
        ) from None


#: What Ray Client says when the cluster could not start the server of this client.
_CLIENT_INIT_FAILED = "Initialization failure from server"
#: How often a Ray Client connection is tried when the cluster failed to start its server.
CLIENT_ATTEMPTS = 3


def _init(address: str | None) -> None:
    """``ray.init``; through Ray Client, tried again when the cluster failed to start the
    client's server (it starts one process per client and gives it 30 s: a loaded head
    node misses that now and then), with the last failure raised."""
    import time

    import ray

    attempts = CLIENT_ATTEMPTS if address is not None and address.startswith("ray://") else 1
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
            return
        except ConnectionAbortedError as exc:
            if attempt == attempts or _CLIENT_INIT_FAILED not in str(exc):
                raise
            ray.shutdown()
            time.sleep(2.0 * attempt)


def _enable_token_mode() -> None:
    """``RAY_AUTH_MODE=token`` for this process and its children, as Ray does it itself.

    Ray reads its config from the environment when it is imported; like Ray's own
    ``_enable_token_auth``, reload it so that this process sees the new mode.
    """
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]
    except ImportError:  # another Ray layout: the variable alone, read by a later import
        return
    Config.initialize("")


def auth_token_available() -> bool:
    """Whether Ray would find an authentication token: the variables or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return Path(path).expanduser().is_file()
    return (Path.home() / ".ray" / "auth_token").is_file()
