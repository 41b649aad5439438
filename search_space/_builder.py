"""Architecture -> ``torch.nn.Module`` with per-layer fake quantization.

Every weighted layer is a :class:`QConv2d` / :class:`QConv1d` / :class:`QLinear`
(subclasses of the torch layers, so ``isinstance(m, nn.Conv2d)`` still holds)
followed by BatchNorm and an ``nn.ReLU`` module. Images (C, H, W) get 2-D
layers, sequences (C, L) 1-D ones. The builder tracks whether each layer's input
is non-negative, so activation quantizers after a ReLU use the unsigned range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from nas.search_space._layers import layer_type
from nas.search_space._quant import QConv1d, QConv2d, QLinear

if TYPE_CHECKING:
    from nas.search_space._architecture import Architecture, LayerSpec

_CONV: dict[int, type[QConv1d] | type[QConv2d]] = {2: QConv1d, 3: QConv2d}
_BN: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm1d, 3: nn.BatchNorm2d}
_MAXPOOL: dict[int, type[nn.Module]] = {2: nn.MaxPool1d, 3: nn.MaxPool2d}
_AVGPOOL: dict[int, type[nn.Module]] = {2: nn.AvgPool1d, 3: nn.AvgPool2d}
_GLOBAL_POOL: dict[int, type[nn.Module]] = {2: nn.AdaptiveAvgPool1d, 3: nn.AdaptiveAvgPool2d}


class Residual(nn.Module):
    """``x + body(x)``: the skip of an inverted-residual block."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Network(nn.Module):
    """The built network: ``features`` (stem and searched layers), then ``head``."""

    def __init__(self, features: nn.Sequential, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _conv_bn(
    c_in: int,
    c_out: int,
    k: int,
    stride: int,
    spec: LayerSpec,
    signed: bool,
    rank: int,
    *,
    groups: int = 1,
    relu: bool = True,
) -> list[nn.Module]:
    conv = _CONV[rank](
        c_in,
        c_out,
        k,
        stride=stride,
        padding=k // 2,
        groups=groups,
        bias=False,
        wbits=spec.wbits,
        abits=spec.abits,
        signed_input=signed,
    )
    return [conv, _BN[rank](c_out)] + ([nn.ReLU()] if relu else [])


def build_layer(spec: LayerSpec, c_in: int, signed: bool, rank: int) -> tuple[nn.Module, bool]:
    """One layer for input of ``rank`` and whether its output may be negative (``signed``)."""
    lt = layer_type(spec.type)
    k, s, c_out = lt.kernel, spec.stride, spec.width
    if lt.family == "conv":
        return nn.Sequential(*_conv_bn(c_in, c_out, k, s, spec, signed, rank)), False
    if lt.family == "dwsep":
        dw = _conv_bn(c_in, c_in, k, s, spec, signed, rank, groups=c_in)
        return nn.Sequential(*dw, *_conv_bn(c_in, c_out, 1, 1, spec, False, rank)), False
    if lt.family == "mbconv":
        return _mbconv(spec, c_in, signed, rank), True
    if lt.family == "maxpool":
        return _MAXPOOL[rank](k, s, padding=k // 2), signed
    if lt.family == "avgpool":
        return _AVGPOOL[rank](k, s, padding=k // 2, count_include_pad=False), signed
    if lt.family == "mlp":
        linear = QLinear(
            c_in, c_out, bias=False, wbits=spec.wbits, abits=spec.abits, signed_input=signed
        )
        return nn.Sequential(linear, nn.BatchNorm1d(c_out), nn.ReLU()), False
    return nn.Identity(), signed


def _mbconv(spec: LayerSpec, c_in: int, signed: bool, rank: int) -> nn.Module:
    lt = layer_type(spec.type)
    hidden = c_in * spec.expansion
    parts: list[nn.Module] = []
    if spec.expansion != 1:
        parts += _conv_bn(c_in, hidden, 1, 1, spec, signed, rank)
        signed = False
    parts += _conv_bn(hidden, hidden, lt.kernel, spec.stride, spec, signed, rank, groups=hidden)
    parts += _conv_bn(hidden, spec.width, 1, 1, spec, False, rank, relu=False)
    body = nn.Sequential(*parts)
    return Residual(body) if spec.stride == 1 and c_in == spec.width else body


def build_model(arch: Architecture) -> nn.Module:
    """Build ``arch``; the module maps ``(N, *arch.input_shape)`` to ``(N, num_classes)`` logits."""
    rank = len(arch.input_shape)
    layers: list[nn.Module] = []
    channels, signed = arch.input_shape[0], True
    for spec in ((arch.stem,) if arch.stem else ()) + arch.layers:
        layer, signed = build_layer(spec, channels, signed, rank)
        layers.append(layer)
        channels = spec.width
    head: list[nn.Module] = []
    if rank > 1:
        head += [_GLOBAL_POOL[rank](1), nn.Flatten()]
    head.append(
        QLinear(
            channels,
            arch.num_classes,
            bias=True,
            wbits=arch.head_wbits,
            abits=arch.head_abits,
            signed_input=signed,
        )
    )
    return Network(nn.Sequential(*layers), nn.Sequential(*head))
