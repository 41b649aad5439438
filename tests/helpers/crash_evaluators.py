"""Evaluators that misbehave on purpose, for the scheduler's failure tests.

They live in an importable module (on ``sys.path`` through pytest's ``pythonpath``)
because worker processes are spawned: a worker unpickles an evaluator's class by
its module, which a test file (imported by pytest's importlib mode) is not.
Each appends a line to ``log`` (a file) per call, ``<arch_id> <pid> <node>``, so a
test can count attempts across processes (``node`` is the Ray node's id inside a Ray
actor, ``-`` elsewhere). Register them with :func:`registered`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import BaseModel

from nas.evaluators import EVALUATORS, EvalContext, Evaluator, register_evaluator

if TYPE_CHECKING:
    from nas.search_space import AnyArchitecture


class _Settings(BaseModel):
    log: str
    #: Sleep this long before scoring (to keep several evaluations in flight).
    seconds: float = 0.0
    #: kill: SIGKILL the worker the first time a candidate is seen (retry succeeds);
    #: kill_always: on every attempt; raise; oom; none.
    mode: str = "none"
    #: Misbehave only on candidates whose arch_id ends with one of these hex digits
    #: (all if empty).
    digits: str = ""


class _Misbehaves(Evaluator):
    name = "test-misbehaves"
    description = "sleeps, then scores an architecture by its id; misbehaves as told"
    metrics = ("score",)
    directions: ClassVar = {"score": "maximize"}
    Settings = _Settings

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        s = self._settings
        assert isinstance(s, _Settings)
        log = Path(s.log)
        seen = log.exists() and any(
            line.split()[0] == arch.arch_id for line in log.read_text().splitlines()
        )
        with log.open("a") as f:
            f.write(f"{arch.arch_id} {os.getpid()} {_ray_node()}\n")
        time.sleep(s.seconds)
        targeted = not s.digits or arch.arch_id[-1] in s.digits
        if targeted and (s.mode == "kill_always" or (s.mode == "kill" and not seen)):
            os.kill(os.getpid(), signal.SIGKILL)
        if targeted and s.mode == "raise":
            raise ValueError("this candidate is broken")
        if targeted and s.mode == "oom":
            held = torch.empty(1_000_000)  # what the evaluation holds when memory runs out
            del held
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 1.00 GiB free)"
            )
        return {"score": int(arch.arch_id[:6], 16) / 0xFFFFFF}


def _ray_node() -> str:
    """The Ray node this process runs on, or ``-`` outside Ray."""
    import sys

    ray = sys.modules.get("ray")  # imported only where Ray runs this evaluator
    if ray is None or not ray.is_initialized():
        return "-"
    return str(ray.get_runtime_context().get_node_id())


@contextmanager
def registered() -> Iterator[type[Evaluator]]:
    """``test-misbehaves`` registered in this process for the duration."""
    register_evaluator(_Misbehaves)
    try:
        yield _Misbehaves
    finally:
        EVALUATORS.unregister(_Misbehaves.name)


def attempts(log: Path) -> dict[str, list[int]]:
    """arch_id -> the pids of the processes that evaluated it, in order."""
    out: dict[str, list[int]] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            arch_id, pid = line.split()[:2]
            out.setdefault(arch_id, []).append(int(pid))
    return out


def nodes(log: Path) -> set[str]:
    """The Ray nodes that evaluated anything (``-``: outside Ray)."""
    return {line.split()[2] for line in log.read_text().splitlines()} if log.exists() else set()
