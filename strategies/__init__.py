"""How the next candidates are chosen: Optuna samplers and pruners by name, Pareto utilities."""

from __future__ import annotations

from nas.strategies._evolution import RegularizedEvolutionSampler
from nas.strategies._pareto import hypervolume, non_dominated
from nas.strategies._pruners import PRUNERS, PrunerInfo, make_pruner
from nas.strategies._samplers import SAMPLERS, SamplerInfo, make_sampler

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "PrunerInfo",
    "RegularizedEvolutionSampler",
    "SamplerInfo",
    "hypervolume",
    "make_pruner",
    "make_sampler",
    "non_dominated",
]
