"""The rank ensemble: rank_ensemble / ensemble_of on hand-made populations, the evaluator."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import ClassVar

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nas._errors import ConfigError, UnknownNameError
from nas.evaluators import (
    EVALUATORS,
    Direction,
    Ensemble,
    EvalContext,
    Evaluator,
    ensemble_of,
    get_evaluator,
    rank_ensemble,
    register_evaluator,
)

NAN, INF = math.nan, math.inf


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only oversubscribe a small machine
    yield
    torch.set_num_threads(threads)


def _population(**columns: list[float]) -> list[dict[str, float]]:
    n = len(next(iter(columns.values())))
    return [{key: values[i] for key, values in columns.items()} for i in range(n)]


def test_ranks_are_scaled_to_zero_one_and_averaged_over_proxies() -> None:
    population = _population(a=[1.0, 2.0, 3.0], b=[30.0, 10.0, 20.0])
    # a: 0, 0.5, 1; b: 1, 0, 0.5
    assert rank_ensemble(population, ["a", "b"]) == [0.5, 0.25, 0.75]
    assert rank_ensemble(population, ["a"]) == [0.0, 0.5, 1.0]


def test_the_best_candidate_on_every_proxy_gets_one_and_the_worst_zero() -> None:
    population = _population(a=[5.0, 1.0, 3.0, 2.0], b=[0.5, -1.0, 0.2, 0.1], c=[9.0, 0, 1, 2])
    ranks = rank_ensemble(population, ["a", "b", "c"])
    assert ranks[0] == 1.0 and ranks[1] == 0.0


def test_ties_share_their_average_rank() -> None:
    assert rank_ensemble(_population(a=[1.0, 1.0, 2.0]), ["a"]) == [0.25, 0.25, 1.0]
    assert rank_ensemble(_population(a=[7.0, 7.0, 7.0]), ["a"]) == [0.5, 0.5, 0.5]
    assert rank_ensemble(_population(a=[1.0, 2.0, 2.0, 2.0]), ["a"]) == [0.0, 2 / 3, 2 / 3, 2 / 3]


def test_minus_infinity_nan_and_missing_values_are_the_worst_and_tie() -> None:
    assert rank_ensemble(_population(a=[-INF, 0.0, 1.0]), ["a"]) == [0.0, 0.5, 1.0]
    assert rank_ensemble(_population(a=[NAN, -INF, 1.0]), ["a"]) == [0.25, 0.25, 1.0]
    assert rank_ensemble([{"a": 1.0}, {}, {"a": -5.0}], ["a"]) == [1.0, 0.0, 0.5]
    # +inf is simply the best value of a maximized proxy.
    assert rank_ensemble(_population(a=[INF, 1e300, NAN]), ["a"]) == [1.0, 0.5, 0.0]


def test_directions_flip_minimized_proxies() -> None:
    population = _population(acc=[0.9, 0.8, 0.7], params=[300.0, 200.0, 100.0])
    directions = {"params": "minimize"}
    assert rank_ensemble(population, ["params"], directions) == [0.0, 0.5, 1.0]
    assert rank_ensemble(population, ["acc", "params"], directions) == [0.5, 0.5, 0.5]
    # For a minimized proxy NaN is the worst, tied with +inf.
    assert rank_ensemble(_population(p=[NAN, INF, 1.0]), ["p"], directions={"p": "minimize"}) == [
        0.25,
        0.25,
        1.0,
    ]


def test_edge_populations() -> None:
    assert rank_ensemble([], ["a"]) == []
    assert rank_ensemble([{"a": NAN}], ["a"]) == [1.0]
    with pytest.raises(ValueError, match="at least one proxy"):
        rank_ensemble([{"a": 1.0}], [])


def test_ensemble_of_is_the_rank_of_its_candidate_within_the_population() -> None:
    population = _population(a=[1.0, 3.0, 2.0], b=[3.0, 1.0, 2.0])
    full = rank_ensemble(population, ["a", "b"])
    for own, expected in zip(population, full, strict=True):
        assert ensemble_of(own, population, ["a", "b"]) == expected
        assert ensemble_of(dict(own), population, ["a", "b"]) == expected  # an equal copy
    newcomer = {"a": 10.0, "b": 10.0}
    assert ensemble_of(newcomer, [*population, newcomer], ["a", "b"]) == 1.0
    assert ensemble_of(newcomer, [newcomer], ["a", "b"]) == 1.0
    with pytest.raises(ValueError, match="must include the candidate"):
        ensemble_of(newcomer, population, ["a", "b"])


values = st.one_of(st.floats(allow_nan=True), st.sampled_from([1.0, 2.0, -INF, NAN]))


@given(
    st.lists(st.fixed_dictionaries({"a": values, "b": values}), min_size=1, max_size=12),
    st.data(),
)
def test_ensemble_of_agrees_with_rank_ensemble(population: list[dict[str, float]], data) -> None:
    ranks = rank_ensemble(population, ["a", "b"])
    assert all(0.0 <= r <= 1.0 for r in ranks)
    i = data.draw(st.integers(0, len(population) - 1))
    assert ensemble_of(population[i], population, ["a", "b"]) == ranks[i]


def test_evaluator_returns_each_component_score(models, synthetic_ctx: EvalContext) -> None:
    arch = models.mlp(width=16)
    ensemble = get_evaluator("ensemble")
    assert ensemble.settings() == {"proxies": ["synflow", "jacob_cov", "snip"]}
    expected = {
        f"ensemble.{name}": get_evaluator(name)(arch, synthetic_ctx)[name]
        for name in ("synflow", "jacob_cov", "snip")
    }
    assert ensemble(arch, synthetic_ctx) == expected
    assert "ensemble" not in ensemble(arch, synthetic_ctx)


class _Size(Evaluator):
    """A minimized test metric: the parameter count."""

    name = "size"
    description = "test"
    metrics = ("size",)
    directions: ClassVar[dict[str, Direction]] = {"size": "minimize"}

    def _evaluate(self, arch, ctx) -> dict[str, float]:
        return {"size": float(arch.cost().params)}


@pytest.fixture
def size_evaluator() -> Iterator[None]:
    register_evaluator(_Size)
    yield
    EVALUATORS.unregister(_Size.name)


def test_metrics_and_directions_follow_the_chosen_proxies(
    models, synthetic_ctx, size_evaluator
) -> None:
    ensemble = get_evaluator("ensemble", proxies=["params", "size"])
    assert ensemble.metrics == ("ensemble.params", "ensemble.size")
    assert ensemble.directions == {"ensemble.params": "maximize", "ensemble.size": "minimize"}
    assert Ensemble.metrics == ("ensemble.synflow", "ensemble.jacob_cov", "ensemble.snip")
    scores = [ensemble(models.mlp(width=w), synthetic_ctx) for w in (8, 64, 32)]
    assert set(scores[0]) == set(ensemble.metrics)
    # The same count, maximized once and minimized once: every candidate averages 0.5.
    assert ensemble.rank(scores) == [0.5, 0.5, 0.5]
    assert rank_ensemble(scores, ["ensemble.size"], ensemble.directions) == [1.0, 0.0, 0.5]


def test_fingerprint_covers_the_components_and_the_batch_only_when_used(synthetic_ctx) -> None:
    default = get_evaluator("ensemble")
    assert default.fingerprint(synthetic_ctx) != get_evaluator(
        "ensemble", proxies=["synflow", "snip"]
    ).fingerprint(synthetic_ctx)
    bigger = dataclasses.replace(synthetic_ctx, batch_size=64)
    assert default.fingerprint(bigger) != default.fingerprint(synthetic_ctx)
    data_free = get_evaluator("ensemble", proxies=["synflow", "params"])
    assert not data_free.uses_batch
    assert data_free.fingerprint(bigger) == data_free.fingerprint(synthetic_ctx)


def test_unknown_duplicate_recursive_or_no_proxies_are_config_errors() -> None:
    with pytest.raises(UnknownNameError, match="unknown evaluator 'nope'; known: synflow") as info:
        get_evaluator("ensemble", proxies=["synflow", "nope"])
    assert info.value.field == "proxies.1"
    assert "ensemble" not in info.value.known
    with pytest.raises(ConfigError, match="cannot contain itself") as info:
        get_evaluator("ensemble", proxies=["ensemble"])
    assert info.value.field == "proxies.0"
    with pytest.raises(ConfigError, match="listed twice") as info:
        get_evaluator("ensemble", proxies=["snip", "zen", "snip"])
    assert info.value.field == "proxies.2"
    with pytest.raises(ConfigError) as info:
        get_evaluator("ensemble", proxies=[])
    assert info.value.field == "proxies"
