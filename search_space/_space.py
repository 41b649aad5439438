"""``SearchSpace``: validation across fields, sampling and the params round trip."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nas._errors import ConfigError, UnknownNameError
from nas.search_space._architecture import ALLOWED_BITS, Architecture, LayerSpec
from nas.search_space._layers import LAYER_TYPES, RANK_NAMES, accepts_rank, layer_type
from nas.search_space._spec import HeadSpec, InputSpec, StageSpec, StemSpec

if TYPE_CHECKING:
    from nas.search_space._nb201 import CellArchitecture


class TrialLike(Protocol):
    """What :meth:`SearchSpace.sample` needs of a trial: ``optuna.Trial`` fits."""

    def suggest_int(self, name: str, low: int, high: int) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


class SearchSpace(BaseModel):
    """A search space over stages of layers with per-layer bit-widths.

    Example:
        >>> from nas.search_space import get_space
        >>> import optuna
        >>> space = get_space("cnn-small")
        >>> study = optuna.create_study()
        >>> arch = space.sample(study.ask())
        >>> study.enqueue_trial(space.to_params(arch))
        >>> space.sample(study.ask()) == arch
        True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    description: str = ""
    input: InputSpec
    stem: StemSpec | None = None
    stages: tuple[StageSpec, ...] = Field(min_length=1)
    head: HeadSpec = HeadSpec()

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        rank = len(self.input.shape)
        if self.stem is not None:
            _check_stem(self.stem, rank)
        for i, stage in enumerate(self.stages):
            _check_stage(stage, f"stages.{i}", rank)
        for field, bits in (("head.wbits", self.head.wbits), ("head.abits", self.head.abits)):
            _check_bit(field, bits)
        self._check_spatial()
        return self

    def _check_spatial(self) -> None:
        if len(self.input.shape) == 1:
            return
        # Every stage's stride always applies (its first layer must downsample), so the
        # total stride is fixed: each stride-s layer divides the size by s, and below one
        # pixel the later layers would see nothing but padding.
        strides = [("stem.stride", self.stem.stride if self.stem else 1)]
        strides += [(f"stages.{i}.stride", stage.stride) for i, stage in enumerate(self.stages)]
        total = 1
        for field, stride in strides:
            total *= stride
            size = min(self.input.shape[1:]) / total
            if size < 1:
                spatial = "x".join(map(str, self.input.shape[1:]))
                raise ConfigError(
                    field,
                    f"total stride {total} collapses the {spatial} input to {size:g} "
                    "(must stay >= 1)",
                )

    # -- sampling ---------------------------------------------------------------------------

    def sample(self, trial: TrialLike) -> Architecture:
        """One architecture, choosing every value through ``trial.suggest_*``."""
        channels = self.stem.width if self.stem else self.input.shape[0]
        stages = []
        for i, stage in enumerate(self.stages):
            layers = _sample_stage(trial, i, stage, channels)
            channels = layers[-1].width
            stages.append(layers)
        return self._architecture(tuple(stages))

    def to_params(self, arch: Architecture | CellArchitecture) -> dict[str, Any]:
        """The trial params that make :meth:`sample` return ``arch``.

        Raises:
            ConfigError: ``arch`` is not a point of this space.
        """
        return _params(self._check_member(arch))

    def contains(self, arch: Architecture | CellArchitecture) -> bool:
        try:
            self._check_member(arch)
        except ConfigError:
            return False
        return True

    def size(self) -> int:
        """How many parameter assignments (architectures) the space holds."""
        total = 1
        for stage in self.stages:
            first, rest = _choices(stage, True), _choices(stage, False)
            d = stage.depth
            total *= sum(first * rest ** (n - 1) for n in range(d.min, d.max + 1))
        return total

    def for_data(self, shape: tuple[int, ...], num_classes: int) -> SearchSpace:
        """This space with its input set to a data set's (a vector space flattens any input)."""
        rank = len(self.input.shape)
        if rank == 1:
            shape = (math.prod(shape),)
        elif len(shape) != rank:
            raise ConfigError(
                "dataset",
                f"space {self.name!r} needs {RANK_NAMES[rank]} input, got shape {list(shape)}",
            )
        data = self.model_dump()
        data["input"] = {"shape": shape, "num_classes": num_classes}
        from nas.search_space._load import pydantic_error  # _load imports this module

        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            raise pydantic_error(exc) from None

    def _architecture(self, stages: tuple[tuple[LayerSpec, ...], ...]) -> Architecture:
        return Architecture(
            input_shape=self.input.shape,
            num_classes=self.input.num_classes,
            stem=self.stem.layer() if self.stem else None,
            stages=stages,
            head_wbits=self.head.wbits,
            head_abits=self.head.abits,
        )

    def _check_member(self, arch: Architecture | CellArchitecture) -> Architecture:
        """``arch`` itself if it is a point of this space, else ConfigError."""
        if not isinstance(arch, Architecture):
            raise ConfigError(
                "architecture", f"not a point of space {self.name!r}: a cell, not layers"
            )
        if len(arch.stages) != len(self.stages):
            raise ConfigError(
                "stages",
                f"architecture has {len(arch.stages)} stages, space has {len(self.stages)}",
            )
        try:
            rebuilt = self.sample(_FixedParams(_params(arch)))
        except (KeyError, ValueError) as exc:
            raise ConfigError(
                "architecture", f"not a point of space {self.name!r}: {exc}"
            ) from None
        if rebuilt != arch:
            raise ConfigError("architecture", f"not a point of space {self.name!r}")
        return arch


# -- validation helpers --------------------------------------------------------------------


def _check_bit(field: str, bits: int) -> None:
    if bits not in ALLOWED_BITS:
        raise ConfigError(field, f"bits must be one of {list(ALLOWED_BITS)}, got {bits!r}")


def _check_type(field: str, name: str, rank: int) -> None:
    if name not in LAYER_TYPES:
        raise UnknownNameError("layer type", name, LAYER_TYPES.names(), field)
    if not accepts_rank(layer_type(name), rank):
        allowed = [n for n, lt in LAYER_TYPES.items() if accepts_rank(lt, rank)]
        raise ConfigError(
            field,
            f"layer type {name!r} does not take {RANK_NAMES[rank]} input; "
            f"allowed: {', '.join(allowed)}",
        )


def _check_stem(stem: StemSpec, rank: int) -> None:
    _check_type("stem.type", stem.type, rank)
    if not layer_type(stem.type).has_weights:
        raise ConfigError("stem.type", f"the stem must be a weighted layer, got {stem.type!r}")
    _check_bit("stem.wbits", stem.wbits)
    _check_bit("stem.abits", stem.abits)


def _check_stage(stage: StageSpec, field: str, rank: int) -> None:
    for j, name in enumerate(stage.layers):
        _check_type(f"{field}.layers.{j}", name, rank)
    if stage.stride > 1:
        if rank == 1:
            raise ConfigError(f"{field}.stride", "vector input allows only stride 1")
        if not stage.types(first=True):
            downsampling = [n for n, lt in LAYER_TYPES.items() if lt.can_downsample]
            raise ConfigError(
                f"{field}.layers",
                f"stride {stage.stride} needs a layer type that downsamples; "
                f"allowed: {', '.join(downsampling)}",
            )


# -- sampling helpers ----------------------------------------------------------------------


def _sample_stage(
    trial: TrialLike, i: int, stage: StageSpec, channels: int
) -> tuple[LayerSpec, ...]:
    depth = trial.suggest_int(f"s{i}.depth", stage.depth.min, stage.depth.max)
    layers: list[LayerSpec] = []
    for j in range(depth):
        layers.append(_sample_layer(trial, f"s{i}.l{j}", stage, j == 0, channels))
        channels = layers[-1].width
    return tuple(layers)


def _sample_layer(
    trial: TrialLike, prefix: str, stage: StageSpec, first: bool, channels: int
) -> LayerSpec:
    name = trial.suggest_categorical(f"{prefix}.type", stage.types(first))
    lt = layer_type(name)
    stride = stage.stride if first else 1
    if not lt.has_weights:  # keeps its input width; nothing else to choose
        return LayerSpec(type=name, width=channels, stride=stride)
    return LayerSpec(
        type=name,
        width=trial.suggest_categorical(f"{prefix}.width", stage.widths),
        stride=stride,
        expansion=(
            trial.suggest_categorical(f"{prefix}.expansion", stage.expansions)
            if lt.uses_expansion
            else 1
        ),
        wbits=trial.suggest_categorical(f"{prefix}.wbits", stage.wbits),
        abits=trial.suggest_categorical(f"{prefix}.abits", stage.abits),
    )


def _params(arch: Architecture) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for i, layers in enumerate(arch.stages):
        params[f"s{i}.depth"] = len(layers)
        for j, layer in enumerate(layers):
            params.update(_layer_params(f"s{i}.l{j}", layer))
    return params


def _layer_params(prefix: str, layer: LayerSpec) -> dict[str, Any]:
    params: dict[str, Any] = {f"{prefix}.type": layer.type}
    lt = layer_type(layer.type)
    if lt.has_weights:
        params[f"{prefix}.width"] = layer.width
        if lt.uses_expansion:
            params[f"{prefix}.expansion"] = layer.expansion
        params[f"{prefix}.wbits"] = layer.wbits
        params[f"{prefix}.abits"] = layer.abits
    return params


def _choices(stage: StageSpec, first: bool) -> int:
    total = 0
    for name in stage.types(first):
        lt = layer_type(name)
        n = len(stage.widths) * len(stage.wbits) * len(stage.abits) if lt.has_weights else 1
        total += n * (len(stage.expansions) if lt.uses_expansion else 1)
    return total


class _FixedParams:
    """A trial that answers from fixed params; a missing or foreign value raises."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def suggest_int(self, name: str, low: int, high: int) -> int:
        value = self.params[name]
        if not low <= value <= high:
            raise ValueError(f"{name}={value} outside [{low}, {high}]")
        return int(value)

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        value = self.params[name]
        if value not in choices:
            raise ValueError(f"{name}={value!r} not in {list(choices)}")
        return value
