"""A rank ensemble of zero-cost proxies.

"Ensemble" ranks candidates by the mean of their normalized ranks over a chosen
set of proxies *within the study*. An evaluator is a pure function of (arch,
ctx) and cannot see the study, so the ensemble comes in two parts:

* the evaluator :class:`Ensemble` (``ensemble``) runs each component proxy and
  returns every component score as a metric ``ensemble.<metric>`` — not the
  ensemble value, which depends on the other candidates;
* the pure functions :func:`rank_ensemble` (a whole population) and
  :func:`ensemble_of` (one candidate within the population so far, itself included) turn
  those scores into the ensemble value; the driver calls them at tell time.

Example:
    >>> from nas.evaluators._ensemble import rank_ensemble
    >>> population = [{"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 2.0}, {"a": 3.0, "b": 9.0}]
    >>> rank_ensemble(population, ["a", "b"])
    [0.25, 0.25, 1.0]
    >>> rank_ensemble([{"a": 1.0}, {"a": 2.0}, {"a": float("nan")}], ["a"])
    [0.5, 1.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from nas._errors import ConfigError, UnknownNameError

# The default components must be registered before the class below is.
from nas.evaluators import _proxies, _proxies_extra  # noqa: F401
from nas.evaluators._base import (
    EVALUATORS,
    Direction,
    EvalContext,
    Evaluator,
    get_evaluator,
    register_evaluator,
)
from nas.evaluators._settings import sha256_json

if TYPE_CHECKING:
    from nas.search_space import AnyArchitecture

#: The default components: the three proxies whose vote Abdelfattah et al. 2021 ("Zero-cost
#: proxies for lightweight NAS") found best, one of each kind: synflow (data-free, weight
#: magnitudes and topology), snip (loss-gradient saliency on data), jacob_cov (input-Jacobian
#: correlations on data). On 120 cnn-small networks trained on digits (8 epochs) their rank
#: ensemble reached Kendall tau 0.35 with validation accuracy, within noise of the best of all
#: 2- to 4-proxy subsets (0.39) and above sets with naswot or zico (0.29-0.31).
DEFAULT_PROXIES: tuple[str, ...] = ("synflow", "jacob_cov", "snip")
PREFIX = "ensemble."


class EnsembleSettings(BaseModel):
    """``proxies``: the registered evaluators whose scores are ranked (at least one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    proxies: tuple[str, ...] = Field(default=DEFAULT_PROXIES, min_length=1)


@register_evaluator
class Ensemble(Evaluator):
    """The component scores of a rank ensemble of proxies (see the module docstring).

    ``__call__`` runs each evaluator in the ``proxies`` setting at its default
    settings on the same (arch, ctx) and returns each of its metrics ``m`` as
    ``ensemble.m``, with that metric's direction. The ensemble value itself is
    :func:`rank_ensemble` over the study's candidates (or :meth:`rank`).

    ``metrics``, ``directions`` and ``uses_batch`` depend on the settings, so
    they are set per instance in ``__init__``; the class attributes describe the
    default components (what ``nas evaluators`` lists and what
    :func:`register_evaluator` checks). The fingerprint also covers each
    component's fingerprint, so a new version of a component invalidates stored
    ensemble results.
    """

    name = "ensemble"
    description = "component scores of a proxy rank ensemble (default synflow, jacob_cov, snip)"
    metrics = tuple(PREFIX + p for p in DEFAULT_PROXIES)
    directions: ClassVar[dict[str, Direction]] = {PREFIX + p: "maximize" for p in DEFAULT_PROXIES}
    uses_batch = True
    study_metrics: ClassVar[dict[str, Direction]] = {"ensemble": "maximize"}
    Settings = EnsembleSettings

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        proxies: tuple[str, ...] = self._settings.proxies  # type: ignore[attr-defined]
        known = [n for n in EVALUATORS.names() if n != self.name]
        for i, proxy in enumerate(proxies):
            if proxy == self.name:
                raise ConfigError(f"proxies.{i}", "an ensemble cannot contain itself")
            if proxy not in known:
                raise UnknownNameError("evaluator", proxy, known, f"proxies.{i}")
            if proxy in proxies[:i]:
                raise ConfigError(f"proxies.{i}", f"{proxy!r} is listed twice")
        self.components: tuple[Evaluator, ...] = tuple(get_evaluator(p) for p in proxies)
        directions = {PREFIX + m: d for c in self.components for m, d in c.directions.items()}
        # Per-instance values of what the base class declares as class attributes.
        vars(self).update(
            metrics=tuple(PREFIX + m for c in self.components for m in c.metrics),
            directions=directions,
            uses_batch=any(c.uses_batch for c in self.components),
        )

    def fingerprint(self, ctx: EvalContext) -> str:
        """The base fingerprint combined with every component's."""
        parts = [super().fingerprint(ctx), *(c.fingerprint(ctx) for c in self.components)]
        return sha256_json(parts)

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        scores: dict[str, float] = {}
        for component in self.components:
            scores.update({PREFIX + k: v for k, v in component(arch, ctx).items()})
        return scores

    def rank(self, population: Sequence[Mapping[str, float]]) -> list[float]:
        """:func:`rank_ensemble` of ``population`` over this ensemble's metrics."""
        return rank_ensemble(population, self.metrics, self.directions)

    def study_values(
        self, own: Mapping[str, float], population: Sequence[Mapping[str, float]]
    ) -> dict[str, float]:
        """``ensemble``: ``own``'s mean normalized rank among ``population`` and itself."""
        return {"ensemble": self.rank([*population, own])[-1]}


def rank_ensemble(
    scores: Sequence[Mapping[str, float]],
    proxies: Sequence[str],
    directions: Mapping[str, Direction] | None = None,
) -> list[float]:
    """The ensemble value of each candidate: its mean normalized rank over ``proxies``.

    ``scores[i]`` maps metric names to candidate ``i``'s values; ``proxies`` are
    the keys to rank on (e.g. ``Ensemble().metrics``, or plain proxy names);
    ``directions`` says which way each key is better (default: maximize). Per
    key, candidates are ranked 1..n from worst to best, tied values share their
    average rank, and the rank is scaled to [0, 1] as ``(rank - 1) / (n - 1)``
    (1.0 for a population of one). A NaN or missing value counts as the worst
    possible value, tied with the others that are and with ``-inf`` (``+inf``
    for a minimized key). The result is the mean over keys, in the order of
    ``scores``: the best candidate on every key gets 1.0, the worst 0.0.
    """
    keys = list(proxies)
    if not keys:
        raise ValueError("rank_ensemble needs at least one proxy")
    directions = directions or {}
    n = len(scores)
    totals = [0.0] * n
    for key in keys:
        sign = -1.0 if directions.get(key, "maximize") == "minimize" else 1.0
        values = [_oriented(candidate.get(key), sign) for candidate in scores]
        for i, rank in enumerate(_normalized_ranks(values)):
            totals[i] += rank
    return [total / len(keys) for total in totals]


def ensemble_of(
    own: Mapping[str, float],
    population: Sequence[Mapping[str, float]],
    proxies: Sequence[str],
    directions: Mapping[str, Direction] | None = None,
) -> float:
    """The ensemble value of ``own`` within ``population``, the candidates so far.

    ``population`` must include ``own`` (any entry equal to it: equal scores
    have equal ranks); the result is ``rank_ensemble(population, ...)`` at that
    entry. ValueError if no entry equals ``own``.
    """
    candidates = list(population)
    try:
        index = candidates.index(own)
    except ValueError:
        raise ValueError("ensemble_of: the population must include the candidate") from None
    return rank_ensemble(candidates, proxies, directions)[index]


def _oriented(value: float | None, sign: float) -> float:
    if value is None or math.isnan(value):
        return -math.inf
    return sign * float(value)


def _normalized_ranks(values: list[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions), scaled to [0, 1]."""
    n = len(values)
    if n == 1:
        return [1.0]
    order = sorted(range(n), key=values.__getitem__)
    ranks = [0.0] * n
    start = 0
    while start < n:
        stop = start
        while stop + 1 < n and values[order[stop + 1]] == values[order[start]]:
            stop += 1
        for position in range(start, stop + 1):
            ranks[order[position]] = (start + stop) / 2 / (n - 1)
        start = stop + 1
    return ranks
