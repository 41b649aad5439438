"""Where results live: nas's tables next to Optuna's, in one SQL database.

>>> from nas.storage import Store
>>> with Store("sqlite:///:memory:") as store:
...     store.count_architectures()
0
"""

from __future__ import annotations

from ._records import ArchitectureRecord, EvaluationRecord, json_float
from ._store import Store
from ._url import check_url, mask_url

__all__ = [
    "ArchitectureRecord",
    "EvaluationRecord",
    "Store",
    "check_url",
    "json_float",
    "mask_url",
]
