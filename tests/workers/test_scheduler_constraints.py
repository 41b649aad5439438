"""Constraints: told to Optuna before ``tell``, kept as user attrs, and never on the front."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest
from optuna.trial import FrozenTrial, TrialState

import nas
from nas.evaluators import EVALUATORS, Evaluator, register_evaluator


def _search(db_url: str, **overrides: Any) -> nas.SearchResult:
    return nas.search({"trials": 10, "seed": 1, "storage": db_url, **overrides})


def _complete(study: Any) -> list[FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE,))


def _dominates(a: Sequence[float], b: Sequence[float], signs: Sequence[int]) -> bool:
    no_worse = all(s * x >= s * y for s, x, y in zip(signs, a, b, strict=True))
    return no_worse and list(a) != list(b)


def test_each_trial_carries_its_constraints_for_optuna_and_the_dashboard(db_url: str) -> None:
    limit = 30000.0
    study = _search(db_url, objectives=["maximize:naswot"], constraints={"bytes": limit}).study
    trials = _complete(study)
    assert len(trials) == 10
    for t in trials:
        excess = t.user_attrs["bytes"] - limit
        assert t.constraints == {"bytes": excess}  # what Optuna's samplers read
        assert t.user_attrs["constraints"] == {"bytes": excess}
        assert t.user_attrs["feasible"] is (excess <= 0)
    assert {t.user_attrs["feasible"] for t in trials} == {True, False}
    assert study.user_attrs["nas.constraints"] == {"bytes": limit}


def test_an_unconstrained_search_tells_no_constraints(db_url: str) -> None:
    study = _search(db_url, trials=2).study
    for t in study.trials:
        assert t.constraints == {} and "feasible" not in t.user_attrs
    assert study.user_attrs["nas.constraints"] == {}


def test_the_best_single_objective_candidate_is_left_out_when_infeasible(db_url: str) -> None:
    study = _search(db_url, objectives=["maximize:naswot"], constraints={"bytes": 30000}).study
    trials = _complete(study)
    best = max(trials, key=lambda t: t.values[0])
    assert not best.user_attrs["feasible"], "the case must have an infeasible best"
    feasible_best = max((t for t in trials if t.user_attrs["feasible"]), key=lambda t: t.values)
    [row] = nas.pareto(study)
    assert row["trial"] == feasible_best.number and row["naswot"] < best.values[0]
    assert nas.study_status(study)["pareto_size"] == 1


def test_infeasible_candidates_that_dominate_the_front_stay_off_it(db_url: str) -> None:
    # Random seed 1: trials 6 and 7 break the MACs limit and dominate feasible trials 0 and 9.
    limit = 600_000.0
    objectives = ["maximize:naswot", "bytes"]
    study = _search(
        db_url, sampler="random", objectives=objectives, constraints={"macs": limit}
    ).study
    trials, signs = _complete(study), (1, -1)
    feasible = [t for t in trials if t.user_attrs["macs"] <= limit]
    infeasible = [t for t in trials if t.user_attrs["macs"] > limit]
    rows = nas.pareto(study)
    front = {r["trial"] for r in rows}
    expected = {
        t.number
        for t in feasible
        if not any(_dominates(o.values, t.values, signs) for o in feasible)
    }
    assert front == expected
    assert all(r["macs"] <= limit for r in rows)  # the constrained metric is in each row
    on_front = [t for t in feasible if t.number in front]
    assert any(_dominates(i.values, f.values, signs) for i in infeasible for f in on_front), (
        "the case must have an infeasible trial that dominates the front"
    )
    status = nas.study_status(study)
    assert status["feasible"] == len(feasible) < status["complete"] == len(trials)
    assert status["constraints"] == {"macs": limit}
    assert status["pareto_size"] == len(front)


@pytest.mark.parametrize(("sampler", "trials"), [("tpe", 13), ("nsga2", 23), ("random", 13)])
def test_the_sampler_reads_the_constraints(db_url: str, sampler: str, trials: int) -> None:
    """Same seed, same values: a model-based sampler proposes otherwise once told constraints."""
    common = {"sampler": sampler, "trials": trials}
    free = _search(db_url, study="free", **common).study
    bound = _search(db_url, study="bound", constraints={"bytes": 30000}, **common).study
    same = [a.params == b.params for a, b in zip(free.trials, bound.trials, strict=True)]
    startup = 10 if sampler == "tpe" else 20 if sampler == "nsga2" else trials
    assert all(same[:startup])
    assert all(same) is (sampler == "random")


class _Risky(Evaluator):
    """A study metric ``risk`` that is NaN for deep candidates (evaluators never return NaN)."""

    name: ClassVar[str] = "test-risky"
    description: ClassVar[str] = "the depth, and a study metric that is NaN when deep"
    metrics: ClassVar[tuple[str, ...]] = ("depth",)
    directions: ClassVar[dict[str, Any]] = {"depth": "maximize"}
    study_metrics: ClassVar[dict[str, Any]] = {"risk": "minimize"}

    def _evaluate(self, arch: Any, ctx: Any) -> dict[str, float]:
        return {"depth": float(len(arch.layers))}

    def study_values(self, own: Any, population: Any) -> dict[str, float]:
        return {"risk": math.nan if own["depth"] > 6 else 0.5}


@pytest.fixture
def risky() -> Iterator[None]:
    register_evaluator(_Risky)
    yield
    EVALUATORS.unregister(_Risky.name)


@pytest.mark.usefixtures("risky")
def test_a_nan_constraint_metric_fails_the_trial(db_url: str) -> None:
    result = _search(
        db_url,
        trials=12,
        sampler="random",
        evaluators=["test-risky"],
        objectives=["maximize:depth"],
        constraints={"risk": 1.0},
    )
    failed = [t for t in result.study.trials if t.state == TrialState.FAIL]
    assert failed and len(failed) < 12
    for t in failed:
        assert t.user_attrs["depth"] > 6 and t.constraints == {}
        assert t.user_attrs["error"] == "constraint risk is NaN"
    for t in _complete(result.study):
        assert t.constraints == {"risk": -0.5} and t.user_attrs["feasible"] is True


def test_continuing_with_other_constraints_is_refused(db_url: str) -> None:
    _search(db_url, trials=1, constraints={"bytes": 30000})
    for other in ({}, {"bytes": 40000}, {"bytes": 30000, "params": 50000}):
        with pytest.raises(nas.ConfigError, match="another set of constraints"):
            _search(db_url, trials=1, constraints=other)
    again = _search(db_url, trials=1, constraints={"bytes": 30000.0})
    assert len(again.study.trials) == 2


def test_a_study_from_before_constraints_continues_without_them(db_url: str, tmp_path: Any) -> None:
    _search(db_url, trials=1)
    with sqlite3.connect(tmp_path / "nas.db") as db:  # as a study created before this change
        db.execute("DELETE FROM study_user_attributes WHERE key = 'nas.constraints'")
    assert "nas.constraints" not in nas.load_study("nas", db_url).user_attrs
    assert len(_search(db_url, trials=1).study.trials) == 2
    with pytest.raises(nas.ConfigError, match="another set of constraints"):
        _search(db_url, trials=1, constraints={"bytes": 30000})
