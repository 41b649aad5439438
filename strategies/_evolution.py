"""Regularized (aging) evolution as an Optuna sampler (Real et al., AAAI 2019).

The sampler keeps no state of its own: the population, each child's parent and the
mutated parameter are read from and written to the study's storage, and every random
draw comes from a generator seeded by ``(seed, trial number, parameter name)``. So a
search resumed from storage by a new sampler goes on exactly as an uninterrupted one,
and several trials may be in flight at once (RUNNING trials are not in the population).
"""

from __future__ import annotations

import math
import secrets
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

#: Trial system attrs a child carries: its parent's number, the parameter it mutated, and
#: the numbers of the tournament sample its parent won.
PARENT_KEY = "evolution:parent"
MUTATED_KEY = "evolution:mutated"
SAMPLE_KEY = "evolution:sample"
_SELECTION = "\0evolution"  # the stream key of a trial's parent choice: no parameter's name


class RegularizedEvolutionSampler(BaseSampler):
    """Aging evolution: each child is its tournament winner with one parameter mutated.

    The population is the ``population_size`` most recent COMPLETE trials by number (so
    the oldest one ages out as a new one completes). For a new trial, ``sample_size``
    distinct members are drawn at random; the best of them is the parent, and the child
    copies the parent's parameters but one, chosen uniformly among those with more than
    one possible value, which takes a different value (uniform over the others).
    Parameters the parent never had (a mutated depth added a layer, a mutated layer type
    now has a width) are drawn at random. Until ``population_size`` trials are complete,
    and for enqueued trials, every parameter is random.

    "Best" puts feasible trials (every ``trial.set_constraint`` value ``<= 0``) before
    infeasible ones, and infeasible ones by their total violation. Among feasible ones, a
    single objective is compared by value and direction; several objectives by
    non-dominated rank within the sample, then by crowding distance within the sample's
    first front (larger wins: NSGA-II's crowded comparison). Remaining ties go to the
    member drawn first, which is random.

    Args:
        population_size: how many of the latest complete trials make up the population.
        sample_size: how many population members compete to be a parent.
        seed: seed of every random draw; ``None`` picks one.

    Raises:
        ValueError: ``1 <= sample_size <= population_size`` does not hold.

    Example:
        >>> import optuna
        >>> from nas.strategies import RegularizedEvolutionSampler
        >>> sampler = RegularizedEvolutionSampler(population_size=10, sample_size=3, seed=0)
        >>> study = optuna.create_study(sampler=sampler)
        >>> study.optimize(lambda t: t.suggest_int("x", 0, 9) ** 2, n_trials=30)
        >>> study.trials[-1].system_attrs["evolution:parent"] >= 0
        True
    """

    def __init__(
        self, *, population_size: int = 20, sample_size: int = 5, seed: int | None = None
    ) -> None:
        if not 1 <= sample_size <= population_size:
            raise ValueError(
                "`1 <= sample_size <= population_size` must hold, "
                f"but got ({sample_size=}, {population_size=})."
            )
        self.population_size = population_size
        self.sample_size = sample_size
        self._seed = secrets.randbits(63) if seed is None else seed % 2**63

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}  # every parameter goes through sample_independent

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if "fixed_params" in trial.system_attrs:
            return  # an enqueued trial is the user's choice, not a child
        population = self.population(study)
        if len(population) < self.population_size:
            return
        rng = self._rng(trial.number, _SELECTION)
        picks = rng.choice(len(population), size=self.sample_size, replace=False)
        sample = [population[i] for i in picks]
        parent = select_parent(sample, study.directions)
        mutable = sorted(n for n, d in parent.distributions.items() if not d.single())
        storage, trial_id = study._storage, trial._trial_id
        storage.set_trial_system_attr(trial_id, PARENT_KEY, parent.number)
        storage.set_trial_system_attr(trial_id, SAMPLE_KEY, [t.number for t in sample])
        if mutable:
            mutated = mutable[int(rng.integers(len(mutable)))]
            storage.set_trial_system_attr(trial_id, MUTATED_KEY, mutated)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        rng = self._rng(trial.number, param_name)
        attrs = trial.system_attrs
        if PARENT_KEY not in attrs:
            return random_value(rng, param_distribution)
        storage = study._storage
        parent_id = storage.get_trial_id_from_study_id_trial_number(
            study._study_id, attrs[PARENT_KEY]
        )
        parent = storage.get_trial(parent_id)
        value = parent.params.get(param_name)
        if param_name not in parent.params or not _contains(param_distribution, value):
            return random_value(rng, param_distribution)
        if param_name == attrs.get(MUTATED_KEY):
            return other_value(rng, param_distribution, value)
        return value

    def population(self, study: Study) -> list[FrozenTrial]:
        """The ``population_size`` most recent COMPLETE trials, oldest first."""
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return sorted(trials, key=lambda t: t.number)[-self.population_size :]

    def _rng(self, number: int, key: str) -> np.random.Generator:
        return np.random.default_rng([self._seed, number, zlib.crc32(key.encode())])


def select_parent(
    sample: Sequence[FrozenTrial], directions: Sequence[StudyDirection]
) -> FrozenTrial:
    """The best of ``sample`` by the rule in :class:`RegularizedEvolutionSampler`."""
    feasible = [t for t in sample if violation(t) == 0]
    if not feasible:
        return min(sample, key=violation)
    signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in directions]
    points = [[s * v for s, v in zip(signs, t.values, strict=True)] for t in feasible]
    if len(signs) == 1:
        return feasible[int(np.argmin([p[0] for p in points]))]
    front = [i for i, p in enumerate(points) if not any(_dominates(q, p) for q in points)]
    crowding = _crowding_distance([points[i] for i in front])
    return feasible[front[int(np.argmax(crowding))]]


def violation(trial: FrozenTrial) -> float:
    """Total constraint violation: the sum of the positive constraint values."""
    return sum(max(0.0, c) for c in trial.constraints.values())


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and list(a) != list(b)


def _crowding_distance(points: list[list[float]]) -> list[float]:
    distance = [0.0] * len(points)
    for m in range(len(points[0])):
        order = sorted(range(len(points)), key=lambda i: points[i][m])
        span = points[order[-1]][m] - points[order[0]][m]
        distance[order[0]] = distance[order[-1]] = math.inf
        if not math.isfinite(span) or span == 0:
            continue
        for k in range(1, len(order) - 1):
            gap = points[order[k + 1]][m] - points[order[k - 1]][m]
            distance[order[k]] += gap / span
    return distance


# -- values of a distribution ---------------------------------------------------------------


def random_value(rng: np.random.Generator, dist: BaseDistribution) -> Any:
    """A value drawn uniformly from ``dist`` (log-uniformly where it is on a log scale)."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(rng.integers(len(dist.choices)))]
    if isinstance(dist, IntDistribution) and dist.log:  # as Optuna's RandomSampler does
        x = math.exp(rng.uniform(math.log(dist.low - 0.5), math.log(dist.high + 0.5)))
        return min(dist.high, max(dist.low, round(x)))
    grid = _grid_size(dist)
    if grid is not None:
        return _grid_value(dist, int(rng.integers(grid)))
    assert isinstance(dist, FloatDistribution)
    if dist.log:
        return float(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high))))
    return float(rng.uniform(dist.low, dist.high))


def other_value(rng: np.random.Generator, dist: BaseDistribution, value: Any) -> Any:
    """A value of ``dist`` other than ``value``, uniformly among the others where they are few."""
    size = len(dist.choices) if isinstance(dist, CategoricalDistribution) else _grid_size(dist)
    if size == 1:
        return value
    if isinstance(dist, CategoricalDistribution):
        current = int(dist.to_internal_repr(value))
        k = int(rng.integers(len(dist.choices) - 1))
        return dist.choices[k + (k >= current)]
    if size is None:  # a continuous range: a fresh draw differs almost surely
        return random_value(rng, dist)
    assert isinstance(dist, IntDistribution | FloatDistribution)
    current = round((value - dist.low) / (dist.step or 1))
    k = int(rng.integers(size - 1))
    return _grid_value(dist, k + (k >= current))


def _grid_size(dist: BaseDistribution) -> int | None:
    """How many values an int or stepped float distribution holds; ``None`` if continuous."""
    if isinstance(dist, IntDistribution):
        return (dist.high - dist.low) // dist.step + 1
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        return round((dist.high - dist.low) / dist.step) + 1
    return None


def _grid_value(dist: BaseDistribution, k: int) -> Any:
    if isinstance(dist, IntDistribution):
        return dist.low + k * dist.step
    assert isinstance(dist, FloatDistribution) and dist.step is not None
    return float(min(dist.high, dist.low + k * dist.step))


def _contains(dist: BaseDistribution, value: Any) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False
