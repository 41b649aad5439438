"""The analytic cost of an architecture, computed from its specs alone.

Conventions (tests hold the builder to them):

- ``params``: every trainable parameter of the built module (BatchNorm included).
- ``macs``: multiply-accumulates of convolutions and linear layers at batch 1
  (what ``torch.utils.flop_counter.FlopCounterMode`` counts, halved); pooling,
  BatchNorm, ReLU and additions are not counted.
- ``bitops``: sum over weighted layers of MACs x weight bits x activation bits.
- ``bytes``: the stored model: each conv/linear weight at its weight bits,
  BatchNorm's affine parameters and biases as float32, plus one float32 scale per
  output channel of every quantized weight and one float32 scale per quantized
  activation. BatchNorm's running statistics are not counted: a deployed model
  folds them into the preceding convolution.
- ``peak_activation_bytes``: at batch 1, the largest sum of the tensors alive
  at once: a layer's input and output (and, inside a block, consecutive
  intermediate tensors plus the input kept for a residual skip), each stored at
  the bits of the weighted layer that reads it next (32 for float and for the
  logits; a pooling layer passes its input's bits through).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from nas.search_space._architecture import LayerSpec
from nas.search_space._layers import layer_type
from nas.search_space._quant import FLOAT_BITS

if TYPE_CHECKING:
    from nas.search_space._architecture import Architecture

_SCALE_BYTES = 4
_FLOAT_BYTES = 4


@dataclass(frozen=True)
class Cost:
    """Params, MACs, BitOps, bytes and peak activation bytes of one architecture."""

    params: int
    macs: int
    bitops: int
    bytes: int
    peak_activation_bytes: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Tally:
    params: int = 0
    macs: int = 0
    bitops: int = 0
    weight_bits: int = 0  # quantized weights, in bits
    extra_bytes: int = 0  # BN, biases, scales
    peak: int = 0

    def weights(self, n: int, macs: int, spec: LayerSpec, out_channels: int) -> None:
        """A conv/linear weight of ``n`` elements with ``out_channels`` rows."""
        self.params += n
        self.macs += macs
        self.bitops += macs * spec.wbits * spec.abits
        self.weight_bits += n * spec.wbits
        if spec.wbits < FLOAT_BITS:
            self.extra_bytes += out_channels * _SCALE_BYTES
        if spec.abits < FLOAT_BITS:
            self.extra_bytes += _SCALE_BYTES

    def float_params(self, n: int) -> None:
        self.params += n
        self.extra_bytes += n * _FLOAT_BYTES

    def alive(self, *bytes_: float) -> None:
        self.peak = max(self.peak, math.ceil(sum(bytes_)))


def _spatial(h: int, k: int, s: int) -> int:
    return (h + 2 * (k // 2) - k) // s + 1


def _act_bytes(numel: int, bits: int) -> float:
    return numel * bits / 8


def _layer(t: _Tally, spec: LayerSpec, shape: tuple[int, ...], out_bits: int) -> tuple[int, ...]:
    """Add one layer's cost; return its output shape."""
    lt = layer_type(spec.type)
    c = shape[0]
    if lt.family == "mlp":
        t.weights(c * spec.width, c * spec.width, spec, spec.width)
        t.float_params(2 * spec.width)
        t.alive(_act_bytes(c, spec.abits), _act_bytes(spec.width, out_bits))
        return (spec.width,)
    if not lt.has_weights:
        if lt.family == "identity":
            return shape
        dims = tuple(_spatial(d, lt.kernel, spec.stride) for d in shape[1:])
        t.alive(_act_bytes(math.prod(shape), out_bits), _act_bytes(c * math.prod(dims), out_bits))
        return (c, *dims)
    # hw: spatial positions (H*W for images, L for sequences); k2: kernel taps per channel.
    dims = tuple(_spatial(d, lt.kernel, spec.stride) for d in shape[1:])
    hw_in, hw, k2 = math.prod(shape[1:]), math.prod(dims), lt.kernel ** len(dims)
    a = spec.abits
    if lt.family == "conv":
        t.weights(c * spec.width * k2, hw * c * spec.width * k2, spec, spec.width)
        t.float_params(2 * spec.width)
        t.alive(_act_bytes(c * hw_in, a), _act_bytes(spec.width * hw, out_bits))
    elif lt.family == "dwsep":
        t.weights(c * k2, hw * c * k2, spec, c)
        t.weights(c * spec.width, hw * c * spec.width, spec, spec.width)
        t.float_params(2 * c + 2 * spec.width)
        t.alive(_act_bytes(c * hw_in, a), _act_bytes(c * hw, a))
        t.alive(_act_bytes(c * hw, a), _act_bytes(spec.width * hw, out_bits))
    else:  # mbconv
        e = c * spec.expansion
        if spec.expansion != 1:
            t.weights(c * e, hw_in * c * e, spec, e)
            t.float_params(2 * e)
            t.alive(_act_bytes(c * hw_in, a), _act_bytes(e * hw_in, a))
        t.weights(e * k2, hw * e * k2, spec, e)
        t.weights(e * spec.width, hw * e * spec.width, spec, spec.width)
        t.float_params(2 * e + 2 * spec.width)
        skip = _act_bytes(c * hw_in, a) if spec.stride == 1 and c == spec.width else 0.0
        t.alive(skip, _act_bytes(e * hw_in, a), _act_bytes(e * hw, a))
        t.alive(skip, _act_bytes(e * hw, a), _act_bytes(spec.width * hw, out_bits))
    return (spec.width, *dims)


def _reader_bits(specs: tuple[LayerSpec, ...], head_abits: int) -> list[int]:
    """For each layer, the activation bits of the next weighted layer (the head after the last)."""
    bits, next_abits = [], head_abits
    for spec in reversed(specs):
        bits.append(next_abits)
        if layer_type(spec.type).has_weights:
            next_abits = spec.abits
    return bits[::-1]


def compute_cost(arch: Architecture) -> Cost:
    """The :class:`Cost` of ``arch``, without building or running it."""
    t = _Tally()
    specs = ((arch.stem,) if arch.stem else ()) + arch.layers
    shape = arch.input_shape
    for spec, out_bits in zip(specs, _reader_bits(specs, arch.head_abits), strict=True):
        shape = _layer(t, spec, shape, out_bits)
    head = LayerSpec(
        type="mlp", width=arch.num_classes, wbits=arch.head_wbits, abits=arch.head_abits
    )
    c = shape[0]
    t.weights(c * arch.num_classes, c * arch.num_classes, head, arch.num_classes)
    t.float_params(arch.num_classes)  # bias
    t.alive(_act_bytes(c, arch.head_abits), _act_bytes(arch.num_classes, FLOAT_BITS))
    total_bytes = math.ceil(t.weight_bits / 8) + t.extra_bytes
    return Cost(t.params, t.macs, t.bitops, total_bytes, t.peak)
