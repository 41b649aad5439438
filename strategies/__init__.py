"""How the next candidates are chosen: Optuna samplers by name."""

from __future__ import annotations

from nas.strategies._samplers import SAMPLERS, SamplerInfo, make_sampler

__all__ = ["SAMPLERS", "SamplerInfo", "make_sampler"]
