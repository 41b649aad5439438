"""What a candidate is worth: data sets, the evaluator contract, zero-cost proxies, tables.

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
    Reporter,
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

# Importing the proxy modules registers the built-in evaluators, in this order
# (_ensemble imports _proxies and _proxies_extra first: its defaults are among them).
from nas.evaluators._ensemble import Ensemble, ensemble_of, rank_ensemble
from nas.evaluators._export import ExportedModel, LayerExport, export_onnx
from nas.evaluators._files import WEIGHTS_FILE, onnx_bytes, restore, weights_bytes
from nas.evaluators._latency import Hardware, Latency, LatencySettings, Profile
from nas.evaluators._nb201 import NB201, nb201_table, nb201_test_accuracy
from nas.evaluators._proxies import NASWOT, SNIP, GradNorm, SynFlow
from nas.evaluators._proxies_extra import Fisher, GraSP, JacobCov, Zen, ZiCo
from nas.evaluators._proxy_suite import ZCSuite
from nas.evaluators._size_proxies import MACs, Params
from nas.evaluators._training import Train, TrainSettings

__all__ = [
    "DATASETS",
    "EVALUATORS",
    "NASWOT",
    "NB201",
    "SNIP",
    "WEIGHTS_FILE",
    "Dataset",
    "DatasetFactory",
    "Direction",
    "Ensemble",
    "EvalContext",
    "Evaluator",
    "ExportedModel",
    "Fisher",
    "GraSP",
    "GradNorm",
    "Hardware",
    "JacobCov",
    "Latency",
    "LatencySettings",
    "LayerExport",
    "MACs",
    "Params",
    "Profile",
    "Reporter",
    "Splits",
    "SynFlow",
    "Train",
    "TrainSettings",
    "ZCSuite",
    "Zen",
    "ZiCo",
    "dataset_infos",
    "ensemble_of",
    "evaluator_infos",
    "export_onnx",
    "get_evaluator",
    "load_dataset",
    "nb201_table",
    "nb201_test_accuracy",
    "onnx_bytes",
    "rank_ensemble",
    "register_dataset",
    "register_evaluator",
    "restore",
    "weights_bytes",
]
