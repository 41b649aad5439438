"""The search-space spec: pydantic models loaded from YAML/JSON or a built-in name.

A space has an input (shape, number of classes), an optional fixed stem, an
ordered list of stages and a head. A stage has a depth range, width choices, a
stride (applied by its first layer), layer-type choices, expansion choices for
inverted residuals, and per-layer choices of weight and activation bits.

Every rule is checked at load time and reported as a :class:`ConfigError`
naming the field (``stages.1.layers.2``) and the allowed values.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from nas.search_space._architecture import ALLOWED_BITS, LayerSpec
from nas.search_space._layers import layer_type

_STRICT = ConfigDict(extra="forbid", frozen=True)


def _bits(value: Any) -> Any:
    if isinstance(value, list | tuple):
        bad = [b for b in value if b not in ALLOWED_BITS]
        if bad:
            allowed = ", ".join(map(str, ALLOWED_BITS))
            raise ValueError(f"bits must be a subset of {{{allowed}}}, got {bad[0]!r}")
    return value


Bits = Annotated[tuple[int, ...], BeforeValidator(_bits), Field(min_length=1)]


class InputSpec(BaseModel):
    """The network input: ``shape`` is (C, H, W) for images or (F,) for vectors."""

    model_config = _STRICT
    shape: tuple[int, ...]
    num_classes: int = Field(ge=2)

    @field_validator("shape")
    @classmethod
    def _rank(cls, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) not in (1, 2, 3) or min(shape) < 1:
            raise ValueError(
                f"must be (C, H, W), (C, L) or (F,) with positive sizes, got {list(shape)}"
            )
        return shape


class DepthRange(BaseModel):
    model_config = _STRICT
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) == 2:
            return {"min": value[0], "max": value[1]}
        if isinstance(value, int):
            return {"min": value, "max": value}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> DepthRange:
        if self.min > self.max:
            raise ValueError(f"`min <= max` must hold, got min={self.min}, max={self.max}")
        return self


class StemSpec(BaseModel):
    """A fixed first convolution (not searched)."""

    model_config = _STRICT
    type: str = "conv3x3"
    width: int = Field(ge=1)
    stride: int = Field(default=1, ge=1)
    wbits: int = 8
    abits: int = 8

    def layer(self) -> LayerSpec:
        return LayerSpec(**self.model_dump())


class HeadSpec(BaseModel):
    model_config = _STRICT
    wbits: int = 8
    abits: int = 8


class StageSpec(BaseModel):
    """One stage: ``depth`` layers, each choosing a type, width, expansion and bits."""

    model_config = _STRICT
    depth: DepthRange
    widths: tuple[Annotated[int, Field(ge=1)], ...] = Field(min_length=1)
    stride: int = Field(default=1, ge=1)
    layers: tuple[str, ...] = Field(min_length=1)
    expansions: tuple[Annotated[int, Field(ge=1)], ...] = (1,)
    wbits: Bits = (32,)
    abits: Bits = (32,)

    def types(self, first: bool) -> list[str]:
        """Layer types a position may take: a strided first layer must downsample."""
        if first and self.stride > 1:
            return [n for n in self.layers if layer_type(n).can_downsample]
        return list(self.layers)
