"""Estimates confirmed by measurement only where they decide something (latency mode auto)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from optuna.trial import TrialState

import nas
from nas.evaluators import EVALUATORS, EvalContext, Evaluator, register_evaluator
from nas.search_space import Architecture

CONFIRMED: list[str] = []


class _Estimated(Evaluator):
    """``cost`` estimated as params / 1000; "measured" as params / 1000 + 1 (so it shows)."""

    name = "estimated"
    description = "test: an estimate with a measurement behind it"
    metrics: ClassVar[tuple[str, ...]] = ("cost", "measured")
    directions: ClassVar[dict[str, Any]] = {"cost": "minimize", "measured": "maximize"}
    confirm_metrics = ("cost",)
    confirm_margin = 0.1

    def _evaluate(self, arch: Architecture, ctx: EvalContext) -> dict[str, float]:
        return {"cost": arch.cost().params / 1000, "measured": 0.0}

    def confirm(self, arch: Architecture, ctx: EvalContext) -> dict[str, float]:
        CONFIRMED.append(arch.arch_id)
        return {"cost": arch.cost().params / 1000 + 1, "measured": 1.0}


@pytest.fixture
def estimated() -> Iterator[None]:
    CONFIRMED.clear()
    register_evaluator(_Estimated)
    yield
    EVALUATORS.unregister(_Estimated.name)


def _dominated(values: list[float], others: list[list[float]]) -> bool:
    """Objectives (maximize naswot, minimize cost) as (-naswot, cost): smaller is better."""
    mine = [-values[0], values[1]]
    for o in others:
        theirs = [-o[0], o[1]]
        if all(a <= b for a, b in zip(theirs, mine, strict=True)) and theirs != mine:
            return True
    return False


@pytest.mark.usefixtures("estimated")
def test_only_candidates_that_would_enter_the_front_are_measured(db_url: str) -> None:
    study = nas.search(
        {
            "trials": 25,
            "sampler": "random",
            "evaluators": ["naswot", "estimated"],
            "objectives": ["maximize:naswot", "cost"],
            "storage": db_url,
        }
    ).study
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    measured = [t for t in trials if t.user_attrs["measured"] == 1.0]
    assert 0 < len(measured) < len(trials), "some estimates must be kept, some confirmed"
    for i, t in enumerate(trials):
        estimate = [t.user_attrs["naswot"], t.user_attrs["params"] / 1000]
        before = [list(o.values) for o in trials[:i]]
        # Confirmed exactly when the estimate was not dominated by the trials told before it.
        assert (t.user_attrs["measured"] == 1.0) == (not _dominated(estimate, before))
        if t.user_attrs["measured"] == 1.0:
            assert t.values[1] == pytest.approx(estimate[1] + 1)  # Optuna got the measurement
    assert len(CONFIRMED) == len(measured)


@pytest.mark.usefixtures("estimated")
def test_near_a_limit_is_measured_and_clearly_over_it_is_not(db_url: str) -> None:
    limit = 40.0  # cost (params / 1000) <= 40
    study = nas.search(
        {
            "trials": 25,
            "sampler": "random",
            "evaluators": ["estimated"],
            "objectives": ["minimize:params"],  # cost is only constrained, not an objective
            "constraints": {"cost": limit},
            "storage": db_url,
        }
    ).study
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    for t in trials:
        estimate = t.user_attrs["params"] / 1000
        near = abs(estimate - limit) <= 0.1 * limit
        assert (t.user_attrs["measured"] == 1.0) == near
    assert any(abs(t.user_attrs["params"] / 1000 - limit) > 4 for t in trials)
    assert any(t.user_attrs["measured"] == 1.0 for t in trials), "the case needs a near one"
