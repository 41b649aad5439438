"""Optuna pruners by name: how ``--pruner`` becomes an object.

A pruner acts on the values an evaluation reports while it runs (training's
validation accuracy after every epoch); evaluations that report nothing, such
as zero-cost proxies, are never pruned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna

from nas._registry import Registry


@dataclass(frozen=True)
class PrunerInfo:
    """A registered pruner: a factory ``(max_steps) -> BasePruner`` and a line of help."""

    factory: Callable[[int | None], optuna.pruners.BasePruner]
    description: str


PRUNERS: Registry[PrunerInfo] = Registry("pruner")

PRUNERS.register("none", PrunerInfo(lambda _: optuna.pruners.NopPruner(), "never prune"))
PRUNERS.register(
    "median",
    PrunerInfo(
        lambda _: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        "stop a trial whose value is worse than the median of earlier trials at that epoch",
    ),
)
PRUNERS.register(
    "sha",
    PrunerInfo(
        lambda _: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
        "asynchronous successive halving: keep the top third at epochs 1, 3, 9, ...",
    ),
)
PRUNERS.register(
    "hyperband",
    PrunerInfo(
        lambda steps: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=steps or "auto", reduction_factor=3
        ),
        "Hyperband: successive halving over several brackets",
    ),
)


def make_pruner(name: str, max_steps: int | None = None) -> optuna.pruners.BasePruner:
    """The pruner registered as ``name``; ``max_steps`` is the most epochs a trial trains.

    Example:
        >>> from nas.strategies import make_pruner
        >>> type(make_pruner("median")).__name__
        'MedianPruner'
    """
    return PRUNERS.get(name, "pruner").factory(max_steps)
