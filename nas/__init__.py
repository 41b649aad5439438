"""nas: hardware-aware neural architecture search.

Example:
    >>> import nas
    >>> result = nas.search({"trials": 3, "storage": "sqlite:///example.db"})
    >>> len(nas.pareto(result.study)) >= 1
    True
    >>> nas.plot_pareto(result.study, "pareto.png").suffix
    '.png'
    >>> sorted(nas.export(result.study, "model", trial=0).files)
    ['README.md', 'arch.json', 'metrics.json', 'model.onnx']
"""

from __future__ import annotations

from nas._api import SearchResult, join, load_study, pareto, search, studies, study_status
from nas._config import SearchConfig, load_config
from nas._dashboard import serve as dashboard
from nas._errors import (
    ConfigError,
    EvaluationError,
    NasError,
    Pruned,
    StorageError,
    UnknownNameError,
)
from nas._export import ExportResult, export
from nas._plots import write_pareto_plot as plot_pareto
from nas._report import write_report as report

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EvaluationError",
    "ExportResult",
    "NasError",
    "Pruned",
    "SearchConfig",
    "SearchResult",
    "StorageError",
    "UnknownNameError",
    "dashboard",
    "export",
    "join",
    "load_config",
    "load_study",
    "pareto",
    "plot_pareto",
    "report",
    "search",
    "studies",
    "study_status",
]
