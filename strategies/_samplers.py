"""Optuna samplers by name: how ``--sampler`` becomes an object.

Every strategy is an Optuna sampler, so it works with ask/tell, RDB storage,
the dashboard and resume alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import optuna

from nas._errors import ConfigError
from nas._registry import Registry
from nas.strategies._evolution import RegularizedEvolutionSampler


@dataclass(frozen=True)
class SamplerInfo:
    """A registered sampler: a factory and a line of help.

    The factory is called as ``factory(seed, n_objectives, **options)``, where
    ``options`` holds only names listed in ``options`` (integers, such as
    ``population_size``); one that cannot serve ``n_objectives`` raises ``ConfigError``
    on the field ``sampler``.
    """

    factory: Callable[..., optuna.samplers.BaseSampler]
    description: str
    options: tuple[str, ...] = ()


SAMPLERS: Registry[SamplerInfo] = Registry("sampler")


def _random(seed: int | None, n_objectives: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _tpe(seed: int | None, n_objectives: int) -> optuna.samplers.BaseSampler:
    # group=True splits the conditional space (layer params exist only up to the sampled depth)
    # into sub-spaces that multivariate TPE models jointly.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def _nsga2(
    seed: int | None, n_objectives: int, population_size: int = 20
) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=population_size)


def _nsga3(
    seed: int | None, n_objectives: int, population_size: int = 20
) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIIISampler(seed=seed, population_size=population_size)


def _gp(seed: int | None, n_objectives: int) -> optuna.samplers.BaseSampler:
    # The GP models the params every trial has (the intersection space); a layer's params
    # exist only up to its stage's sampled depth, so the rest are drawn at random by design,
    # which Optuna would otherwise warn about for every such param.
    return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)


def _evolution(
    seed: int | None, n_objectives: int, population_size: int = 20, sample_size: int = 5
) -> optuna.samplers.BaseSampler:
    return RegularizedEvolutionSampler(
        population_size=population_size, sample_size=sample_size, seed=seed
    )


SAMPLERS.register("random", SamplerInfo(_random, "uniform random search"))
SAMPLERS.register(
    "tpe", SamplerInfo(_tpe, "multivariate TPE (Optuna's default, single- and multi-objective)")
)
SAMPLERS.register(
    "nsga2",
    SamplerInfo(_nsga2, "NSGA-II genetic algorithm, population 20", ("population_size",)),
)
SAMPLERS.register(
    "nsga3",
    SamplerInfo(
        _nsga3,
        "NSGA-III (reference-point NSGA-II for many objectives), population 20",
        ("population_size",),
    ),
)
SAMPLERS.register(
    "gp",
    SamplerInfo(
        _gp,
        "Gaussian-process Bayesian optimization (logEI / logEHVI); models the params every "
        "candidate has, draws the others at random; slow past a few hundred trials",
    ),
)
SAMPLERS.register(
    "evolution",
    SamplerInfo(
        _evolution,
        "regularized (aging) evolution: one mutation of the best of 5 out of the latest 20; "
        "several objectives: non-dominated rank, then crowding distance",
        ("population_size", "sample_size"),
    ),
)


def make_sampler(
    name: str,
    seed: int | None = None,
    n_objectives: int = 1,
    options: Mapping[str, int] | None = None,
) -> optuna.samplers.BaseSampler:
    """The sampler registered as ``name``, seeded, with its ``options``.

    Raises:
        UnknownNameError: no sampler is registered as ``name``.
        ConfigError: an option the sampler does not take or a value it rejects
            (field ``sampler_options``), or a sampler that cannot serve
            ``n_objectives`` (field ``sampler``).

    Example:
        >>> from nas.strategies import make_sampler
        >>> type(make_sampler("tpe", seed=0)).__name__
        'TPESampler'
        >>> make_sampler("evolution", 0, 2, {"population_size": 10}).population_size
        10
    """
    info = SAMPLERS.get(name, "sampler")
    options = dict(options or {})
    for key in options:
        if key not in info.options:
            allowed = ", ".join(info.options) or "(none)"
            raise ConfigError(
                f"sampler_options.{key}",
                f"sampler {name!r} takes no option {key!r}; allowed: {allowed}",
            )
    try:
        return info.factory(seed, n_objectives, **options)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError("sampler_options", f"sampler {name!r}: {exc}") from None
