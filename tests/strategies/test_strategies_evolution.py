"""Regularized (aging) evolution: children, parents, aging, resume, constraints, behaviour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial

from nas.search_space import get_space
from nas.strategies import RegularizedEvolutionSampler
from nas.strategies._evolution import (
    MUTATED_KEY,
    PARENT_KEY,
    SAMPLE_KEY,
    other_value,
    select_parent,
    violation,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

P, S = 10, 3
CNN = get_space("cnn-small")


def _cnn_objective(trial: optuna.Trial) -> float:
    cost = CNN.sample(trial).cost()
    return float(cost.params) / 1e3 - float(cost.bitops) / 1e7


def _constrained_objective(trial: optuna.Trial) -> float:
    cost = CNN.sample(trial).cost()
    trial.set_constraint("macs", cost.macs / 1e5 - 1.0)  # about half the space is over
    return float(cost.params)


def _evolve(n: int, seed: int = 0, objective: Any = _cnn_objective, **study: Any) -> optuna.Study:
    sampler = RegularizedEvolutionSampler(population_size=P, sample_size=S, seed=seed)
    s = optuna.create_study(direction="maximize", sampler=sampler, **study)
    s.optimize(objective, n_trials=n)
    return s


def _children(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.trials if PARENT_KEY in t.system_attrs]


def test_a_child_is_its_parent_with_one_mutation() -> None:
    study = _evolve(60)
    trials = study.trials
    assert [t.number for t in trials if PARENT_KEY not in t.system_attrs] == list(range(P))
    layout_changes = 0
    for child in _children(study):
        parent = trials[child.system_attrs[PARENT_KEY]]
        mutated = child.system_attrs[MUTATED_KEY]
        common = child.params.keys() & parent.params.keys()
        differ = {n for n in common if child.params[n] != parent.params[n]}
        assert differ == {mutated}, (child.number, differ, mutated)
        if child.params.keys() != parent.params.keys():  # a layer added, removed or retyped
            assert mutated.endswith((".depth", ".type")), (child.number, mutated)
            layout_changes += 1
    assert layout_changes > 0  # the check above was exercised


def test_the_parent_is_the_best_of_its_sample_among_the_latest_p() -> None:
    study = _evolve(60)
    trials = study.trials
    for child in _children(study):
        sample = child.system_attrs[SAMPLE_KEY]
        assert len(set(sample)) == S
        # Aging: run sequentially, the population is the P trials just before the child.
        assert all(child.number - P <= n < child.number for n in sample), (child.number, sample)
        best = max(trials[n].value for n in sample)  # type: ignore[type-var]
        assert trials[child.system_attrs[PARENT_KEY]].value == best


def test_a_resumed_search_continues_as_an_uninterrupted_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'evo.db'}"
    _evolve(30, seed=7, storage=url, study_name="evo")
    sampler = RegularizedEvolutionSampler(population_size=P, sample_size=S, seed=7)
    resumed = optuna.load_study(study_name="evo", storage=url, sampler=sampler)
    resumed.optimize(_cnn_objective, n_trials=30)
    whole = _evolve(60, seed=7)
    assert [t.params for t in resumed.trials] == [t.params for t in whole.trials]
    assert [t.system_attrs.get(PARENT_KEY) for t in resumed.trials] == [
        t.system_attrs.get(PARENT_KEY) for t in whole.trials
    ]
    assert any(t.system_attrs[PARENT_KEY] < 30 for t in resumed.trials[30:])


def test_an_infeasible_trial_never_wins_over_a_feasible_one() -> None:
    study = _evolve(80, objective=_constrained_objective)
    trials = study.trials
    feasible = [violation(t) == 0 for t in trials]
    assert 10 < sum(feasible) < 70  # both kinds are common
    mixed = 0
    for child in _children(study):
        sample = [trials[n] for n in child.system_attrs[SAMPLE_KEY]]
        parent = trials[child.system_attrs[PARENT_KEY]]
        if any(violation(t) == 0 for t in sample):
            mixed += any(violation(t) > 0 for t in sample)
            assert violation(parent) == 0
            assert parent.value == max(t.value for t in sample if violation(t) == 0)  # type: ignore[type-var]
        else:
            assert violation(parent) == min(violation(t) for t in sample)
    assert mixed > 5


def test_trials_in_flight_are_not_in_the_population() -> None:
    sampler = RegularizedEvolutionSampler(population_size=P, sample_size=S, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    complete_when_asked: dict[int, set[int]] = {}
    for _ in range(15):
        trials = [study.ask() for _ in range(4)]
        for t in trials:
            complete_when_asked[t.number] = {
                c.number for c in study.get_trials(states=(TrialState.COMPLETE,))
            }
        for t in reversed(trials):
            study.tell(t, _cnn_objective(t))
    children = _children(study)
    assert len(children) > 40
    for child in children:
        latest = sorted(complete_when_asked[child.number])[-P:]
        assert set(child.system_attrs[SAMPLE_KEY]) <= set(latest)


def test_a_multi_objective_parent_is_on_its_sample_front() -> None:
    sampler = RegularizedEvolutionSampler(population_size=P, sample_size=S, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(lambda t: (_cnn_objective(t), len(t.params)), n_trials=40)
    trials = study.trials
    for child in _children(study):
        parent = trials[child.system_attrs[PARENT_KEY]]
        for n in child.system_attrs[SAMPLE_KEY]:
            other = trials[n].values
            assert not (other[0] >= parent.values[0] and other[1] <= parent.values[1]) or (
                other == parent.values
            ), (child.number, n)


def _point(number: int, values: tuple[float, float], violation: float = 0.0) -> FrozenTrial:
    t = create_trial(
        values=list(values),
        params={"x": 0},
        distributions={"x": CategoricalDistribution([0, 1])},
        constraints={"c": violation},
    )
    t.number = number
    return t


def test_multi_objective_parent_rule() -> None:
    """Feasible first; then the sample's first front; then crowding (extremes are infinite)."""
    directions = [StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE]
    dominated = _point(0, (3.0, 1.0))  # dominated by every front member
    low, mid, high = _point(1, (0.0, 2.0)), _point(2, (1.0, 3.0)), _point(3, (5.0, 6.0))
    # The middle of the front has a finite crowding distance, the two ends an infinite one;
    # of the two ends, the one drawn first wins.
    assert select_parent([dominated, mid, high, low], directions) is high
    assert select_parent([dominated, mid, low, high], directions) is low
    assert select_parent([dominated, mid], directions) is mid  # a front of one
    cheater = _point(4, (-9.0, 9.0), violation=0.5)  # would dominate all, but is infeasible
    assert select_parent([cheater, dominated], directions) is dominated
    worse = _point(5, (-9.0, 9.0), violation=2.0)
    assert select_parent([worse, cheater], directions) is cheater  # smaller violation


def test_one_objective_and_its_direction() -> None:
    a, b = _point(0, (1.0, 0.0)), _point(1, (2.0, 0.0))
    a.values, b.values = [1.0], [2.0]
    assert select_parent([a, b], [StudyDirection.MINIMIZE]) is a
    assert select_parent([a, b], [StudyDirection.MAXIMIZE]) is b


def test_mutations_always_change_the_value() -> None:
    rng = np.random.default_rng(0)
    cat = CategoricalDistribution(["a", "b", "c"])
    assert {other_value(rng, cat, "b") for _ in range(50)} == {"a", "c"}
    ints = optuna.distributions.IntDistribution(1, 9, step=2)
    assert {other_value(rng, ints, 5) for _ in range(80)} == {1, 3, 7, 9}


def test_enqueued_and_warm_up_trials_have_no_parent() -> None:
    sampler = RegularizedEvolutionSampler(population_size=3, sample_size=2, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_int("x", 0, 9), n_trials=3)
    study.enqueue_trial({"x": 4})
    study.optimize(lambda t: t.suggest_int("x", 0, 9), n_trials=2)
    assert [PARENT_KEY in t.system_attrs for t in study.trials] == [False] * 4 + [True]
    assert study.trials[3].params == {"x": 4}


def test_sample_size_must_fit_the_population() -> None:
    with pytest.raises(ValueError, match=r"got \(sample_size=6, population_size=5\)"):
        RegularizedEvolutionSampler(population_size=5, sample_size=6)


def _best_matches(sampler: optuna.samplers.BaseSampler, n_trials: int) -> float:
    target = [i % 6 for i in range(8)]

    def objective(trial: optuna.Trial) -> int:
        picks = [trial.suggest_categorical(f"p{i}", list(range(6))) for i in range(8)]
        return sum(p == t for p, t in zip(picks, target, strict=True))

    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=n_trials)
    return float(study.best_value)


def test_evolution_beats_random_search() -> None:
    """8 params of 6 values each, 200 trials, 5 seeds: evolution climbs, random does not."""
    seeds = range(5)
    evolution = [_best_matches(RegularizedEvolutionSampler(seed=s), 200) for s in seeds]
    random = [_best_matches(optuna.samplers.RandomSampler(seed=s), 200) for s in seeds]
    assert np.mean(evolution) >= np.mean(random) + 2, (evolution, random)
    assert np.mean(evolution) >= 7
