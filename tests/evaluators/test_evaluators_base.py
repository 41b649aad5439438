from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch
from pydantic import BaseModel, ConfigDict

from nas._errors import ConfigError, EvaluationError, UnknownNameError
from nas.evaluators import (
    EVALUATORS,
    Direction,
    EvalContext,
    Evaluator,
    evaluator_infos,
    get_evaluator,
    load_dataset,
    register_evaluator,
)

BUILT_INS = [
    "synflow",
    "naswot",
    "grad_norm",
    "snip",
    "grasp",
    "fisher",
    "jacob_cov",
    "zen",
    "zico",
    "ensemble",
    "latency",
    "nb201",
    "zc_suite",
    "params",
    "macs",
    "train",
]
#: Evaluators whose one metric is not named after them.
MANY_METRICS = {"ensemble", "train", "latency", "nb201", "zc_suite"}


class _Scaled(Evaluator):
    """A test evaluator with one setting, returning whatever ``value`` says."""

    class Settings(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")
        value: float = 1.0

    name = "scaled"
    description = "test"
    metrics = ("score",)
    directions: ClassVar[dict[str, Direction]] = {"score": "maximize"}

    def _evaluate(self, arch, ctx) -> dict[str, float]:
        return {"score": self._settings.value}  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def ctx() -> EvalContext:
    return EvalContext(load_dataset("synthetic", n_train=100, n_val=10), seed=0, batch_size=16)


def test_builtins_are_registered_with_directions() -> None:
    assert EVALUATORS.names() == BUILT_INS
    for info in evaluator_infos():
        assert info["description"]
        assert set(info["directions"]) == set(info["metrics"])
        if info["name"] not in MANY_METRICS:
            assert set(info["metrics"]) == {info["name"]}
        assert set(info["directions"].values()) <= {"maximize", "minimize"}


def test_get_evaluator_rejects_unknown_names_and_settings() -> None:
    with pytest.raises(UnknownNameError, match="known: synflow, naswot"):
        get_evaluator("nope")
    with pytest.raises(ConfigError) as info:
        get_evaluator("naswot", batch=3)
    assert info.value.field == "batch"


def test_register_rejects_a_metric_without_direction() -> None:
    class Bad(_Scaled):
        name = "bad"
        directions: ClassVar[dict[str, Direction]] = {}

    with pytest.raises(ValueError, match="needs a direction"):
        register_evaluator(Bad)
    assert "bad" not in EVALUATORS


def test_fingerprint_follows_settings_version_data_and_seed(ctx: EvalContext) -> None:
    base = _Scaled().fingerprint(ctx)
    assert len(base) == 64 and base == _Scaled(value=1.0).fingerprint(ctx)
    assert _Scaled(value=2.0).fingerprint(ctx) != base
    assert _Scaled().fingerprint(EvalContext(ctx.dataset, seed=1)) != base
    other_data = load_dataset("synthetic", n_train=100, n_val=10, seed=1)
    assert _Scaled().fingerprint(EvalContext(other_data)) != base

    class Scaled2(_Scaled):
        version = 2

    assert Scaled2().fingerprint(ctx) != base


def test_fingerprint_includes_batch_size_only_for_batch_evaluators(ctx: EvalContext) -> None:
    bigger = EvalContext(ctx.dataset, seed=ctx.seed, batch_size=ctx.batch_size * 2)
    naswot, synflow = get_evaluator("naswot"), get_evaluator("synflow")
    assert naswot.fingerprint(bigger) != naswot.fingerprint(ctx)
    assert synflow.fingerprint(bigger) == synflow.fingerprint(ctx)
    assert naswot.fingerprint(ctx) != get_evaluator("snip").fingerprint(ctx)


def test_call_rejects_nan_and_wrong_metrics(ctx: EvalContext) -> None:
    assert _Scaled(value=3.0)(None, ctx) == {"score": 3.0}  # type: ignore[arg-type]
    with pytest.raises(EvaluationError, match=r"^score: score is NaN$"):
        _Scaled(value=math.nan)(None, ctx)  # type: ignore[arg-type]

    class Wrong(_Scaled):
        metrics = ("other",)

    with pytest.raises(EvaluationError, match="expected"):
        Wrong()(None, ctx)  # type: ignore[arg-type]


def test_batch_is_deterministic_per_seed(ctx: EvalContext) -> None:
    x1, y1 = ctx.batch()
    x2, y2 = ctx.batch()
    assert x1.shape == (16, 1, 8, 8) and torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = EvalContext(ctx.dataset, seed=1, batch_size=16).batch()
    assert not torch.equal(x1, x3)
    assert len(ctx.batch(n=1000)[1]) == 100  # capped at the split's size


def test_batch_reshapes_to_the_architecture_input(ctx: EvalContext) -> None:
    x, _ = ctx.batch(n=4, shape=(64,))
    assert x.shape == (4, 64)
    assert torch.equal(x, ctx.batch(n=4)[0].flatten(1))
    with pytest.raises(ConfigError, match="63 != 64"):
        ctx.batch(shape=(63,))


def test_context_rejects_a_nonpositive_batch_size(ctx: EvalContext) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        EvalContext(ctx.dataset, batch_size=0)
