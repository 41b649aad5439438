"""Optuna samplers by name: how ``--sampler`` becomes an object.

Every strategy is an Optuna sampler, so it works with ask/tell, RDB storage,
the dashboard and resume alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna

from nas._registry import Registry


@dataclass(frozen=True)
class SamplerInfo:
    """A registered sampler: a factory ``(seed, n_objectives) -> sampler`` and a line of help."""

    factory: Callable[[int | None, int], optuna.samplers.BaseSampler]
    description: str


SAMPLERS: Registry[SamplerInfo] = Registry("sampler")


def _random(seed: int | None, n_objectives: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _tpe(seed: int | None, n_objectives: int) -> optuna.samplers.BaseSampler:
    # group=True splits the conditional space (layer params exist only up to the sampled depth)
    # into sub-spaces that multivariate TPE models jointly.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def _nsga2(seed: int | None, n_objectives: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)


SAMPLERS.register("random", SamplerInfo(_random, "uniform random search"))
SAMPLERS.register(
    "tpe", SamplerInfo(_tpe, "multivariate TPE (Optuna's default, single- and multi-objective)")
)
SAMPLERS.register("nsga2", SamplerInfo(_nsga2, "NSGA-II genetic algorithm, population 20"))


def make_sampler(
    name: str, seed: int | None = None, n_objectives: int = 1
) -> optuna.samplers.BaseSampler:
    """The sampler registered as ``name``, seeded.

    Example:
        >>> from nas.strategies import make_sampler
        >>> type(make_sampler("tpe", seed=0)).__name__
        'TPESampler'
    """
    return SAMPLERS.get(name, "sampler").factory(seed, n_objectives)
