"""Search spaces, architectures, the model builder and the analytic cost model.

Layer spaces (:class:`SearchSpace` -> :class:`Architecture`) and NAS-Bench-201's
cell space (:class:`CellSpace` -> :class:`CellArchitecture`) offer the same
methods to the rest of nas; :data:`AnySpace` / :data:`AnyArchitecture` name either.

This package knows nothing of Optuna's samplers, Ray or SQL: ``sample`` takes
anything with ``suggest_int`` / ``suggest_categorical``.
"""

from __future__ import annotations

from nas.search_space._architecture import ALLOWED_BITS, Architecture, LayerSpec
from nas.search_space._builder import build_model
from nas.search_space._cost import Cost, compute_cost
from nas.search_space._layers import LAYER_TYPES, LayerType, layer_type
from nas.search_space._load import (
    SPACES,
    AnyArchitecture,
    AnySpace,
    architecture_from_json,
    dump_space,
    get_space,
    space_from_dict,
    space_infos,
)
from nas.search_space._nb201 import NB201_EDGES, NB201_OPS, CellArchitecture, CellSpace
from nas.search_space._random import RandomTrial, sample_random
from nas.search_space._space import SearchSpace, TrialLike
from nas.search_space._spec import DepthRange, HeadSpec, InputSpec, StageSpec, StemSpec

__all__ = [
    "ALLOWED_BITS",
    "LAYER_TYPES",
    "NB201_EDGES",
    "NB201_OPS",
    "SPACES",
    "AnyArchitecture",
    "AnySpace",
    "Architecture",
    "CellArchitecture",
    "CellSpace",
    "Cost",
    "DepthRange",
    "HeadSpec",
    "InputSpec",
    "LayerSpec",
    "LayerType",
    "RandomTrial",
    "SearchSpace",
    "StageSpec",
    "StemSpec",
    "TrialLike",
    "architecture_from_json",
    "build_model",
    "compute_cost",
    "dump_space",
    "get_space",
    "layer_type",
    "sample_random",
    "space_from_dict",
    "space_infos",
]
