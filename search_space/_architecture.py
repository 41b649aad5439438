"""One concrete point of a search space: an ordered list of layer specs.

An :class:`Architecture` is immutable. Its canonical JSON (:meth:`to_json`) has
sorted keys and no whitespace, so it is the same text whoever built it, and
:attr:`Architecture.arch_id` is a hash of the *network* it describes (the stages
flattened), so the same network always has the same id whichever space or
sampler produced it.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nas.search_space._layers import accepts_rank, layer_type

if TYPE_CHECKING:
    import torch.nn

    from nas.search_space._cost import Cost

#: Bit-widths a layer may use for weights and activations; 32 means float (no quantization).
ALLOWED_BITS: tuple[int, ...] = (2, 4, 8, 16, 32)


class LayerSpec(BaseModel):
    """One layer: its registered type, output width and stride, and its bit-widths.

    Parameter-free layers (pooling, identity) keep their input width and carry
    ``wbits = abits = 32``: they hold no weights and pass activations through.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    width: int = Field(ge=1)
    stride: int = Field(default=1, ge=1)
    expansion: int = Field(default=1, ge=1)
    wbits: int = 32
    abits: int = 32

    @field_validator("wbits", "abits")
    @classmethod
    def _allowed_bits(cls, bits: int) -> int:
        if bits not in ALLOWED_BITS:
            raise ValueError(f"bits must be one of {list(ALLOWED_BITS)}, got {bits}")
        return bits

    def summary(self) -> str:
        """A short human form, e.g. ``mbconv3x3(e6)x32/s2@w4a8``."""
        text = self.type
        if self.expansion != 1:
            text += f"(e{self.expansion})"
        text += f"x{self.width}"
        if self.stride != 1:
            text += f"/s{self.stride}"
        if self.wbits != 32 or self.abits != 32:
            text += f"@w{self.wbits}a{self.abits}"
        return text


class Architecture(BaseModel):
    """A network: input, an optional fixed stem, stages of layers, and a linear head.

    Example:
        >>> from nas.search_space import Architecture, LayerSpec
        >>> arch = Architecture(
        ...     input_shape=(1, 8, 8), num_classes=10,
        ...     stages=((LayerSpec(type="conv3x3", width=8, wbits=8, abits=8),),),
        ... )
        >>> Architecture.from_json(arch.to_json()) == arch
        True
        >>> len(arch.arch_id)
        16
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_shape: tuple[int, ...]
    num_classes: int = Field(ge=2)
    stem: LayerSpec | None = None
    stages: tuple[tuple[LayerSpec, ...], ...]
    head_wbits: int = 32
    head_abits: int = 32

    @model_validator(mode="after")
    def _consistent(self) -> Architecture:
        """Every layer is a known type for this input, and widths chain through it."""
        for bits in (self.head_wbits, self.head_abits):
            LayerSpec._allowed_bits(bits)
        rank = len(self.input_shape)
        channels = self.input_shape[0]
        for layer in ((self.stem,) if self.stem else ()) + self.layers:
            _check_layer(layer, rank, channels)
            channels = layer.width
        return self

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        """Every searched layer in order, the stages flattened (the stem excluded)."""
        return tuple(layer for stage in self.stages for layer in stage)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace; :meth:`from_json` reads it back."""
        return _canonical(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Architecture:
        return cls.model_validate_json(text)

    @cached_property
    def arch_id(self) -> str:
        """16 hex digits of SHA-256 over the canonical JSON of the network (stages flattened)."""
        network: dict[str, Any] = self.model_dump(mode="json")
        network["layers"] = [layer for stage in network.pop("stages") for layer in stage]
        return hashlib.sha256(_canonical(network).encode()).hexdigest()[:16]

    def summary(self) -> str:
        """One line a person can read: stages separated by ``|``."""
        return " | ".join(" ".join(layer.summary() for layer in stage) for stage in self.stages)

    def build(self) -> torch.nn.Module:
        """The PyTorch module, with per-layer fake quantization at each layer's bits."""
        from nas.search_space._builder import build_model

        return build_model(self)

    def cost(self) -> Cost:
        """Params, MACs, BitOps, bytes and peak activation bytes, computed without running it."""
        from nas.search_space._cost import compute_cost

        return compute_cost(self)


def _check_layer(layer: LayerSpec, rank: int, channels: int) -> None:
    lt = layer_type(layer.type)
    if not accepts_rank(lt, rank):
        raise ValueError(f"layer type {layer.type!r} does not take input of rank {rank}")
    if not lt.uses_expansion and layer.expansion != 1:
        raise ValueError(f"{layer.type}: expansion must be 1, got {layer.expansion}")
    if lt.has_weights:
        return
    if layer.width != channels:
        raise ValueError(
            f"{layer.type}: width must equal its input's {channels}, got {layer.width}"
        )
    if (layer.wbits, layer.abits) != (32, 32):
        raise ValueError(f"{layer.type}: a parameter-free layer has wbits = abits = 32")
    if not lt.can_downsample and layer.stride != 1:
        raise ValueError(f"{layer.type}: stride must be 1, got {layer.stride}")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
