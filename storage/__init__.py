"""Where results live: nas's tables next to Optuna's, in one SQL database.

>>> from nas.storage import Store
>>> with Store("sqlite:///:memory:") as store:
...     store.count_architectures()
0
"""

from __future__ import annotations

from ._records import (
    ArchitectureRecord,
    EvaluationRecord,
    LatencyKernelRecord,
    LatencyPredictorRecord,
    LatencyProfileRecord,
    json_float,
    kernel_key_hash,
)
from ._store import Store
from ._url import check_url, mask_url

__all__ = [
    "ArchitectureRecord",
    "EvaluationRecord",
    "LatencyKernelRecord",
    "LatencyPredictorRecord",
    "LatencyProfileRecord",
    "Store",
    "check_url",
    "json_float",
    "kernel_key_hash",
    "mask_url",
]
