"""nas: hardware-aware neural architecture search.

Example:
    >>> import nas
    >>> result = nas.search({"trials": 3, "storage": "sqlite:///example.db"})
    >>> len(nas.pareto(result.study)) >= 1
    True
"""

from __future__ import annotations

from nas._api import SearchResult, join, load_study, pareto, search, studies, study_status
from nas._config import SearchConfig, load_config
from nas._errors import (
    ConfigError,
    EvaluationError,
    NasError,
    Pruned,
    StorageError,
    UnknownNameError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EvaluationError",
    "NasError",
    "Pruned",
    "SearchConfig",
    "SearchResult",
    "StorageError",
    "UnknownNameError",
    "join",
    "load_config",
    "load_study",
    "pareto",
    "search",
    "studies",
    "study_status",
]
