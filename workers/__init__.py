"""Where evaluations run (in-process by default) and the ask/tell scheduler loop."""

from __future__ import annotations

from nas.workers._local import EvalResult, LocalWorker, Worker, failure_reason
from nas.workers._scheduler import Scheduler, SearchSummary, TrialOutcome

__all__ = [
    "EvalResult",
    "LocalWorker",
    "Scheduler",
    "SearchSummary",
    "TrialOutcome",
    "Worker",
    "failure_reason",
]
