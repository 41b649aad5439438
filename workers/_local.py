"""Where evaluations run. The default: in this process, one at a time."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nas._errors import EvaluationError, Pruned

if TYPE_CHECKING:
    from nas.evaluators import EvalContext, Evaluator
    from nas.search_space import AnyArchitecture


@dataclass(frozen=True)
class EvalResult:
    """What one evaluation gave: metrics, or the one-line reason it failed.

    A pruned evaluation has ``pruned_at`` (the last step it reported), the metrics
    it had by then, and ``error`` saying so: it is stored, but never reused.
    """

    metrics: dict[str, float] | None
    seconds: float
    error: str | None = None
    pruned_at: int | None = None
    #: The files the evaluation made (the trained weights), by name; stored with it.
    files: dict[str, bytes] = field(default_factory=dict, repr=False)


class Worker(abc.ABC):
    """Runs evaluations somewhere and hands back results or failures.

    A candidate's own failure (an exception it raises) comes back as an
    :class:`EvalResult` with ``error`` set, never as an exception, so the search
    goes on. ``KeyboardInterrupt`` and ``SystemExit`` propagate.
    """

    @abc.abstractmethod
    def evaluate(self, arch: AnyArchitecture, evaluator: Evaluator, ctx: EvalContext) -> EvalResult:
        """Run ``evaluator`` on ``arch``."""

    def close(self) -> None:  # noqa: B027 (an optional hook, a concrete no-op)
        """Release what the worker holds."""


class LocalWorker(Worker):
    """Evaluates in the calling process; never starts Ray."""

    def evaluate(self, arch: AnyArchitecture, evaluator: Evaluator, ctx: EvalContext) -> EvalResult:
        start = time.perf_counter()
        try:
            metrics, files = evaluator.run(arch, ctx)
        except Pruned as stop:
            seconds = time.perf_counter() - start
            return EvalResult(stop.metrics, seconds, f"pruned at epoch {stop.step}", stop.step)
        except Exception as exc:  # the candidate's failure, reported, not raised
            reason, out_of_memory = failure_reason(exc), is_out_of_memory(exc)
        else:
            return EvalResult(metrics, time.perf_counter() - start, files=files)
        if out_of_memory:  # out of the except block: its traceback no longer holds tensors
            free_memory()
            reason = f"out of memory ({reason})"
        return EvalResult(None, time.perf_counter() - start, reason)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's out-of-memory error (or the host's MemoryError), however it was wrapped."""
    import torch

    if isinstance(exc, MemoryError | torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory() -> None:
    """Give back what a failed evaluation left behind, so that the next candidate fits.

    Called after the ``except`` block, whose exception's traceback held the failed
    evaluation's frames and tensors: collects them and empties CUDA's cache.
    """
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def failure_reason(exc: BaseException) -> str:
    """One line: the message of an :class:`EvaluationError`, else ``Type: message``."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, EvaluationError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
