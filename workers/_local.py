"""Where evaluations run. The default: in this process, one at a time."""

from __future__ import annotations

import abc
import ctypes
import functools
import os
import platform
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
    """Evaluates in the calling process; never starts Ray.

    The process keeps the host memory it frees for the next candidate
    (:func:`keep_freed_memory`).
    """

    def __init__(self) -> None:
        keep_freed_memory()

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
    evaluation's frames and tensors: collects them, empties CUDA's cache, and
    hands the free host memory that :func:`keep_freed_memory` keeps back to the system.
    """
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


#: Set to 0 to leave the C allocator's settings alone (see :func:`keep_freed_memory`).
KEEP_FREED_MEMORY_ENV = "NAS_KEEP_FREED_MEMORY"
# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's largest on 64-bit systems
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the host memory this process frees, for the next candidate.

    By default glibc hands freed memory back to the system: blocks over its mmap
    threshold are unmapped, and the heap is trimmed once its free top passes the
    trim threshold. An evaluation allocates and frees the same few hundred MB to
    GB of tensors for every candidate, so each one took its pages back from the
    system, zeroed, one page fault per 4 KiB: about 20,000 faults per cell for
    zc_suite on NB201 networks, 7% of its time on a 2-core machine. This sets the
    mmap threshold to glibc's largest (32 MiB: tensors under it come from the
    heap) and the trim threshold to 2 GiB, so the process keeps up to that much
    free memory and reuses it, as PyTorch's CUDA caching allocator keeps GPU
    memory (and as jemalloc or tcmalloc, which PyTorch's CPU tuning guide
    suggests preloading, would). :func:`free_memory` gives it back after an
    out-of-memory failure.

    Returns whether the settings were made: not where the C library is not
    glibc, nor with the environment variable ``NAS_KEEP_FREED_MEMORY=0``. Once
    per process; every :class:`LocalWorker` calls it.
    """
    if os.environ.get(KEEP_FREED_MEMORY_ENV, "1").strip() == "0":
        return False
    libc = _glibc()
    if libc is None:
        return False
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
        and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """This process's C library, if it is glibc (whose malloc has mallopt and malloc_trim)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(None)  # the symbols already loaded: the process's own libc
    for name in ("mallopt", "malloc_trim"):
        if not hasattr(libc, name):
            return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def failure_reason(exc: BaseException) -> str:
    """One line: the message of an :class:`EvaluationError`, else ``Type: message``."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, EvaluationError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
