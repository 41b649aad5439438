"""Where evaluations run (in-process by default, a process pool, Ray) and the scheduler loop."""

from __future__ import annotations

from nas.workers._backends import (
    Backend,
    Done,
    LocalBackend,
    ProcessBackend,
    Task,
    WorkerSetup,
    WorkerSetupError,
)
from nas.workers._local import (
    EvalResult,
    LocalWorker,
    Worker,
    failure_reason,
    keep_freed_memory,
)
from nas.workers._scheduler import Scheduler, SearchSummary, TrialOutcome

__all__ = [
    "Backend",
    "Done",
    "EvalResult",
    "LocalBackend",
    "LocalWorker",
    "ProcessBackend",
    "Scheduler",
    "SearchSummary",
    "Task",
    "TrialOutcome",
    "Worker",
    "WorkerSetup",
    "WorkerSetupError",
    "failure_reason",
    "keep_freed_memory",
]
