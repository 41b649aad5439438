"""Where the scheduler's evaluations run: in this process, a local process pool, or Ray.

A backend takes :class:`Task` s (an architecture and which evaluators to run on
it, in order) and hands back :class:`Done` s, whichever finishes first. It knows
nothing of Optuna: the driver sends only the architecture, never a trial.

A worker that dies during an evaluation (killed, or its machine lost) takes the
evaluation with it: the backend runs it again on a fresh worker, at most
``max_retries`` times, and then reports it :attr:`Done.lost` with the reason. A
candidate's own failure (an exception, out of memory) is a result, not a death,
and is never retried.
"""

from __future__ import annotations

import abc
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from nas._errors import ConfigError, NasError
from nas.workers._local import EvalResult, LocalWorker, failure_reason

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from nas.evaluators import EvalContext, Evaluator, Reporter
    from nas.search_space import AnyArchitecture


@dataclass(frozen=True)
class Task:
    """One candidate's evaluations: ``evaluators`` are indices into the setup's, run in order."""

    key: int
    arch: AnyArchitecture
    evaluators: tuple[int, ...]


@dataclass(frozen=True)
class Done:
    """A task's results, one per evaluator run, up to the first failure or pruning.

    ``lost`` is set (and ``results`` empty) when the task died with its worker on
    every attempt; ``attempts`` counts the runs, retries included.
    """

    key: int
    results: tuple[EvalResult, ...] = ()
    lost: str | None = None
    attempts: int = 1


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker process builds once and keeps: the data set, the evaluators, the device.

    Picklable and small: the data set travels as its name and settings (a worker
    loads it itself), an evaluator as its class and settings, so a worker on
    another machine needs only the package and the files the data set names.
    """

    dataset: str
    dataset_settings: dict[str, Any]
    evaluators: tuple[tuple[type[Evaluator], dict[str, Any]], ...]
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 64
    #: The database the evaluators that keep records of their own (latency) write to.
    storage: str | None = None
    #: torch's intra-op threads in the worker (None: torch's default).
    threads: int | None = None

    def resolved_device(self) -> str:
        """``auto`` as this worker sees it; ``cuda`` where it sees none is an error."""
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "device",
                "'cuda' requested but this worker sees no CUDA device "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                "on Ray, ask for GPUs with --gpus-per-trial",
            )
        return self.device

    def build_or_reason(self, worker: str) -> tuple[tuple[Evaluator, ...], EvalContext] | str:
        """:meth:`build`, or (it raised) the one line the driver raises as WorkerSetupError."""
        try:
            return self.build()
        except Exception as exc:
            return f"{worker} could not start: {failure_reason(exc)}"

    def build(self) -> tuple[tuple[Evaluator, ...], EvalContext]:
        """The evaluators and the context, as the driver has them."""
        import torch

        from nas.evaluators import EvalContext, load_dataset
        from nas.storage import Store

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        data = load_dataset(self.dataset, **self.dataset_settings)
        ctx = EvalContext(data, self.seed, self.resolved_device(), self.batch_size)
        evaluators = tuple(cls(**settings) for cls, settings in self.evaluators)
        if self.storage is not None:
            store = Store(self.storage)  # kept open for the worker's life
            for ev in evaluators:
                ev.attach_store(store)
        return evaluators, ctx


def run_task(
    evaluators: Sequence[Evaluator],
    ctx: EvalContext,
    task: Task,
    reporter: Reporter | None = None,
) -> tuple[EvalResult, ...]:
    """Run the task's evaluators in order; stop after the first failure or pruning."""
    worker = LocalWorker()
    ctx = replace(ctx, reporter=reporter)
    results = []
    for index in task.evaluators:
        result = worker.evaluate(task.arch, evaluators[index], ctx)
        results.append(result)
        if result.metrics is None or result.pruned_at is not None:
            break
    return tuple(results)


class Backend(abc.ABC):
    """Runs up to :attr:`slots` tasks at once and hands back whichever finishes first."""

    #: How many tasks may be in flight at once.
    slots: int = 1
    #: Whether :meth:`submit`'s ``reporter`` is called (intermediate values, pruning).
    reports: bool = False

    @abc.abstractmethod
    def submit(self, task: Task, reporter: Reporter | None = None) -> None:
        """Start ``task``; at most :attr:`slots` may be in flight."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> list[Done]:
        """The tasks that finished, after at most ``timeout`` seconds ([] if none did)."""

    def close(self) -> None:  # noqa: B027 (an optional hook, a concrete no-op)
        """Stop the workers; tasks still in flight are dropped."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LocalBackend(Backend):
    """In the driver's process, one task at a time; never starts a process or Ray.

    The only backend that passes a reporter through, so pruning works here.
    """

    slots = 1
    reports = True

    def __init__(self, evaluators: Sequence[Evaluator], ctx: EvalContext) -> None:
        self._evaluators = tuple(evaluators)
        self._ctx = ctx
        self._pending: list[tuple[Task, Reporter | None]] = []

    def submit(self, task: Task, reporter: Reporter | None = None) -> None:
        if self._pending:
            raise RuntimeError("the local backend runs one task at a time")
        self._pending.append((task, reporter))

    def wait(self, timeout: float | None = None) -> list[Done]:
        done = []
        while self._pending:
            task, reporter = self._pending.pop(0)
            done.append(Done(task.key, run_task(self._evaluators, self._ctx, task, reporter)))
        return done


class WorkerSetupError(NasError):
    """A worker could not build what the setup names (its data set, say)."""


@dataclass
class _Slot:
    """One worker process and the task it runs, if any."""

    process: BaseProcess | None = None
    conn: Connection | None = None
    task: Task | None = None
    attempts: int = 0
    deaths: list[str] = field(default_factory=list)


class ProcessBackend(Backend):
    """A pool of ``processes`` local worker processes (spawned), each keeping its setup.

    Written here rather than taken from ``concurrent.futures``: a
    ``ProcessPoolExecutor`` whose worker is killed breaks as a whole and fails every
    task in flight, where one lost worker must cost one retried task.
    """

    def __init__(self, setup: WorkerSetup, processes: int, max_retries: int = 2) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.slots = processes
        self.max_retries = max_retries
        self._setup = setup
        self._mp = multiprocessing.get_context("spawn")
        self._pool = [_Slot() for _ in range(processes)]

    def submit(self, task: Task, reporter: Reporter | None = None) -> None:
        del reporter  # intermediate values do not cross processes
        slot = next((s for s in self._pool if s.task is None), None)
        if slot is None:
            raise RuntimeError(f"all {self.slots} worker processes are busy")
        slot.task, slot.attempts, slot.deaths = task, 0, []
        self._start(slot)

    def _start(self, slot: _Slot) -> None:
        """Send the slot's task, to its process or (none alive) to a fresh one."""
        assert slot.task is not None
        if slot.process is None or not slot.process.is_alive():
            parent, child = self._mp.Pipe()
            process = self._mp.Process(
                target=_worker_main, args=(child, self._setup), name="nas-worker", daemon=True
            )
            process.start()
            child.close()
            slot.process, slot.conn = process, parent
        assert slot.conn is not None
        slot.attempts += 1
        slot.conn.send(slot.task)

    def wait(self, timeout: float | None = None) -> list[Done]:
        busy = [s for s in self._pool if s.task is not None]
        if not busy:
            return []
        handles: list[Any] = [s.conn for s in busy]
        handles += [s.process.sentinel for s in busy if s.process is not None]
        ready = set(multiprocessing.connection.wait(handles, timeout))
        done = []
        for slot in busy:
            assert slot.conn is not None and slot.process is not None and slot.task is not None
            if slot.conn not in ready and slot.process.sentinel not in ready:
                continue
            message = self._receive(slot)
            if isinstance(message, Done):
                slot.task = None
                done.append(replace(message, attempts=slot.attempts))
            elif message is not None:
                self.close()
                raise WorkerSetupError(message)
            else:
                lost = self._died(slot)
                if lost is not None:
                    done.append(lost)
        return done

    def _receive(self, slot: _Slot) -> Done | str | None:
        """The slot's message (a Done, or a setup failure's reason), or None if it died."""
        assert slot.conn is not None
        try:
            if slot.conn.poll():
                message: Done | str = slot.conn.recv()
                return message
        except (EOFError, OSError):
            pass
        return None

    def _died(self, slot: _Slot) -> Done | None:
        """Retry the dead worker's task on a fresh one, or give it up as lost."""
        assert slot.process is not None and slot.task is not None
        slot.process.join(5)
        slot.deaths.append(_exit_reason(slot.process.exitcode))
        slot.process = slot.conn = None
        if slot.attempts <= self.max_retries:
            self._start(slot)
            return None
        task, attempts = slot.task, slot.attempts
        slot.task = None
        reason = f"worker died {attempts} times ({', '.join(sorted(set(slot.deaths)))})"
        return Done(task.key, lost=reason, attempts=attempts)

    def close(self) -> None:
        for slot in self._pool:
            if slot.conn is not None:
                with contextlib.suppress(OSError):
                    slot.conn.send(None)
            if slot.process is not None:
                if slot.task is not None:  # in the middle of an evaluation: no waiting
                    slot.process.kill()
                slot.process.join(10)
                if slot.process.is_alive():
                    slot.process.kill()
                    slot.process.join()
            slot.process = slot.conn = slot.task = None


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _worker_main(conn: Connection, setup: WorkerSetup) -> None:
    """A worker process: build the setup once, then run tasks until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    built = setup.build_or_reason(f"worker process {os.getpid()}")
    if isinstance(built, str):
        conn.send(built)
        return
    evaluators, ctx = built
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        if task is None:
            return
        try:
            conn.send(Done(task.key, run_task(evaluators, ctx, task)))
        except (BrokenPipeError, OSError):
            return
