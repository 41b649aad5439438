"""How the next candidates are chosen: Optuna samplers and pruners by name."""

from __future__ import annotations

from nas.strategies._pruners import PRUNERS, PrunerInfo, make_pruner
from nas.strategies._samplers import SAMPLERS, SamplerInfo, make_sampler

__all__ = ["PRUNERS", "SAMPLERS", "PrunerInfo", "SamplerInfo", "make_pruner", "make_sampler"]
