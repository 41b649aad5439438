"""What a candidate is worth: data sets, the evaluator contract, zero-cost proxies.

Example:
    >>> from nas.evaluators import EvalContext, get_evaluator, load_dataset
    >>> ctx = EvalContext(load_dataset("digits"), seed=0)
    >>> naswot = get_evaluator("naswot")
    >>> len(naswot.fingerprint(ctx))
    64
"""

from __future__ import annotations

from nas.evaluators._base import (
    EVALUATORS,
    Direction,
    EvalContext,
    Evaluator,
    evaluator_infos,
    get_evaluator,
    register_evaluator,
)
from nas.evaluators._datasets import (
    DATASETS,
    Dataset,
    DatasetFactory,
    Splits,
    dataset_infos,
    load_dataset,
    register_dataset,
)

# Importing the proxy modules registers the built-in evaluators, in this order.
from nas.evaluators._proxies import NASWOT, SNIP, GradNorm, SynFlow
from nas.evaluators._size_proxies import MACs, Params

__all__ = [
    "DATASETS",
    "EVALUATORS",
    "NASWOT",
    "SNIP",
    "Dataset",
    "DatasetFactory",
    "Direction",
    "EvalContext",
    "Evaluator",
    "GradNorm",
    "MACs",
    "Params",
    "Splits",
    "SynFlow",
    "dataset_infos",
    "evaluator_infos",
    "get_evaluator",
    "load_dataset",
    "register_dataset",
    "register_evaluator",
]
