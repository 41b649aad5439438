"""The search config a user writes (YAML), and its resolution into objects.

:class:`SearchConfig` holds names and numbers only; :func:`resolve` turns it into
a :class:`Plan` of objects (space, data set, evaluators, objectives, sampler),
checking everything *before* anything is written to a database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)

from nas._errors import ConfigError
from nas.search_space._cost import Cost
from nas.search_space._load import pydantic_error, read_mapping

#: The cost model's metrics (the fields of :class:`Cost`), minimized by default.
COST_METRICS: tuple[str, ...] = tuple(f.name for f in fields(Cost))
Direction = Literal["maximize", "minimize"]


class EvaluatorConfig(BaseModel):
    """An evaluator by name with its settings; a bare string is the name."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    settings: dict[str, Any] = {}


class ObjectiveConfig(BaseModel):
    """A metric to optimize: ``"maximize:naswot"``, ``"macs"`` or ``{metric, direction}``.

    With no direction, a cost metric is minimized and an evaluator's metric goes
    the evaluator's way.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: str
    direction: Direction | None = None


class DatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "digits"
    settings: dict[str, Any] = {}


def _named(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


def _objective(value: Any) -> Any:
    if isinstance(value, str):
        direction, _, metric = value.rpartition(":")
        return {"metric": metric, "direction": direction or None}
    return value


class SearchConfig(BaseModel):
    """Everything ``nas search`` needs; every field has a CLI flag that overrides it.

    Example:
        >>> from nas import SearchConfig
        >>> SearchConfig(trials=5, objectives=["maximize:synflow", "bytes"]).objectives[1].metric
        'bytes'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    space: str | dict[str, Any] = "cnn-small"
    dataset: DatasetConfig = DatasetConfig()
    evaluators: tuple[EvaluatorConfig, ...] = (EvaluatorConfig(name="naswot"),)
    objectives: tuple[ObjectiveConfig, ...] = (
        ObjectiveConfig(metric="naswot", direction="maximize"),
        ObjectiveConfig(metric="macs", direction="minimize"),
    )
    sampler: str = "tpe"
    #: options of the sampler, e.g. {population_size: 10, sample_size: 3} for evolution
    sampler_options: dict[str, StrictInt] = {}
    pruner: str = "none"
    trials: int = Field(default=100, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    seed: int = 0
    eval_seed: int = 0
    batch_size: int = Field(default=64, ge=1)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    storage: str = "sqlite:///nas.db"
    study: str = Field(default="nas", min_length=1)
    #: metric -> the most it may be; a candidate over any limit is infeasible.
    constraints: dict[str, StrictFloat] = {}
    #: Zero-cost warm-up of a new study: random candidates scored by ``warmup_proxy``.
    warmup: int = Field(default=0, ge=0)
    #: A registered evaluator with one metric to maximize, or "ensemble" (its rank).
    warmup_proxy: str = "synflow"
    #: How many of the best to enqueue as the first trials (default: min(warmup, 10, trials)).
    warmup_top: int | None = Field(default=None, ge=1)
    #: Evaluations in flight at once.
    parallel: int = Field(default=1, ge=1)
    #: Where they run: local (this process), process (a local pool), ray; default: local
    #: for one at a time, process for more.
    backend: Literal["local", "process", "ray"] | None = None
    #: How often an evaluation whose worker died is run again before its trial fails.
    max_retries: int = Field(default=2, ge=0)
    #: CPU threads (process) or Ray CPUs per evaluation; default: the cores shared out.
    cpus_per_trial: float | None = Field(default=None, gt=0)
    #: GPUs per evaluation on Ray (fractions share a GPU, e.g. 0.25).
    gpus_per_trial: float = Field(default=0.0, ge=0)
    #: The Ray cluster: auto (a running one), ray://host:10001, or None (start one here).
    ray_address: str | None = None
    #: Seconds without a heartbeat after which another driver recovers a RUNNING trial.
    heartbeat_grace: int = Field(default=60, ge=2)
    #: Where each trial uploads arch.json, model.onnx and its trained weights as Optuna
    #: artifacts: a directory, "auto" (beside a SQLite file, else ./nas-artifacts; a
    #: continued study keeps its own), or "none".
    artifacts: str = Field(default="auto", min_length=1)

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, value: Any) -> Any:
        return _named(value)

    @field_validator("evaluators", mode="before")
    @classmethod
    def _evaluators(cls, value: Any) -> Any:
        return [_named(v) for v in value] if isinstance(value, list | tuple) else value

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, value: Any) -> Any:
        return [_objective(v) for v in value] if isinstance(value, list | tuple) else value

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, value: dict[str, float]) -> dict[str, float]:
        for metric, limit in value.items():
            if not (math.isfinite(limit) and limit > 0):
                raise ConfigError(metric, f"a limit must be finite and > 0, got {limit}")
        return value


def load_config(path: str | Path | None = None, **overrides: Any) -> SearchConfig:
    """A config from a YAML/JSON file (or the defaults), with ``overrides`` applied on top.

    ``None`` overrides are ignored, so CLI options left unset keep the file's value.
    ``constraints`` extend the file's, metric by metric, instead of replacing them.
    """
    data: dict[str, Any] = read_mapping(Path(path), "config") if path is not None else {}
    limits = overrides.pop("constraints", None)
    data.update({k: v for k, v in overrides.items() if v is not None})
    if limits is not None:
        base = data.get("constraints", {})
        merge = isinstance(base, dict) and isinstance(limits, dict)
        data["constraints"] = {**base, **limits} if merge else limits
    return config_from_dict(data)


def parse_constraint(text: str) -> tuple[str, float]:
    """``"params<=50000"`` -> ``("params", 50000.0)``; anything else is a ConfigError.

    Example:
        >>> parse_constraint("bytes <= 2e5")
        ('bytes', 200000.0)
    """
    metric, sep, limit = text.partition("<=")
    try:
        value = float(limit)
    except ValueError:
        value = math.nan
    if not sep or not metric.strip() or math.isnan(value):
        raise ConfigError(
            "constraint", f"expected METRIC<=VALUE (e.g. params<=50000), got {text!r}"
        )
    return metric.strip(), value


def parse_reference(text: str) -> tuple[float, ...]:
    """``"0.5,2e6"`` -> ``(0.5, 2000000.0)``: a reference point, one finite number per objective.

    Example:
        >>> parse_reference("0, 1e6")
        (0.0, 1000000.0)
    """
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(
            "reference", f"expected finite numbers separated by commas (e.g. 0,2e6), got {text!r}"
        )
    return values


def config_from_dict(data: dict[str, Any]) -> SearchConfig:
    try:
        return SearchConfig.model_validate(data)
    except ValidationError as exc:
        raise pydantic_error(exc) from None


@dataclass(frozen=True)
class Objective:
    """A resolved objective: the metric and the direction."""

    metric: str
    direction: Direction


def _available(evaluator_directions: Mapping[str, Direction]) -> dict[str, Direction]:
    """Every metric a search can use, with its default direction."""
    return {**{m: "minimize" for m in COST_METRICS}, **evaluator_directions}


def resolve_objectives(
    config: SearchConfig, evaluator_directions: dict[str, Direction]
) -> list[Objective]:
    """Check every objective names a metric the evaluators or the cost model produce."""
    available = _available(evaluator_directions)
    objectives = []
    for i, obj in enumerate(config.objectives):
        if obj.metric not in available:
            raise ConfigError(
                f"objectives.{i}",
                f"unknown metric {obj.metric!r}; available: {', '.join(available)}",
            )
        direction = obj.direction or available[obj.metric]
        objectives.append(Objective(obj.metric, direction))  # type: ignore[arg-type]
    if len({o.metric for o in objectives}) != len(objectives):
        raise ConfigError("objectives", "each metric may appear once")
    return objectives


def resolve_constraints(
    config: SearchConfig, evaluator_directions: dict[str, Direction]
) -> dict[str, float]:
    """Check every constraint limits a metric the evaluators or the cost model produce."""
    available = _available(evaluator_directions)
    for metric in config.constraints:
        if metric not in available:
            raise ConfigError(
                f"constraints.{metric}",
                f"unknown metric {metric!r}; available: {', '.join(available)}",
            )
    return dict(sorted(config.constraints.items()))
