"""Fake quantization with straight-through gradients, at any of 2/4/8/16 bits.

Weights: symmetric, per output channel, scale = max|w| / (2^(b-1) - 1).
Activations: per tensor; unsigned ``[0, 2^b - 1]`` where the builder knows the
input is non-negative (after a ReLU), symmetric signed otherwise. The range is
calibrated, not learned: in training mode an exponential moving average of the
batch's max |x| (momentum 0.1, the first batch sets it), frozen in eval mode once
calibrated (a quantizer that has seen no data calibrates on its first batch).
32 bits means float: no quantization at all.

Torch's functional ``fake_quantize_per_*_affine`` ops are used because they carry
a (clipped) straight-through gradient and export to ONNX QuantizeLinear /
DequantizeLinear pairs.
"""

from __future__ import annotations

import torch
from torch import nn

FLOAT_BITS = 32
_EPS = 1e-8


def quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-channel (dim 0) fake quantization of a weight tensor."""
    if bits >= FLOAT_BITS:
        return w
    qmax = 2 ** (bits - 1) - 1
    reduce_dims = tuple(range(1, w.dim()))
    scale = (w.detach().abs().amax(dim=reduce_dims).clamp_min(_EPS) / qmax).float()
    zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -qmax, qmax)


class ActQuant(nn.Module):
    """Per-tensor activation fake quantization with a calibrated range."""

    running_max: torch.Tensor
    initialized: torch.Tensor

    def __init__(self, bits: int, signed: bool, momentum: float = 0.1) -> None:
        super().__init__()
        self.bits = bits
        self.signed = signed
        self.momentum = momentum
        self.register_buffer("running_max", torch.ones(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits >= FLOAT_BITS:
            return x
        if x.dtype in (torch.float16, torch.bfloat16):  # under autocast: quantize in float32
            return self._quantize(x.float()).to(x.dtype)
        return self._quantize(x)

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not bool(self.initialized):
            self._observe(x)
        if self.signed:
            qmin, qmax = -(2 ** (self.bits - 1) - 1), 2 ** (self.bits - 1) - 1
        else:
            qmin, qmax = 0, 2**self.bits - 1
        scale = (self.running_max.clamp_min(_EPS) / qmax).float().reshape(1)
        zero = torch.zeros(1, dtype=torch.int32, device=x.device)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, qmin, qmax)

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        batch_max = x.detach().abs().amax().to(self.running_max.dtype)
        if bool(self.initialized):
            self.running_max.lerp_(batch_max, self.momentum)
        else:
            self.running_max.copy_(batch_max)
            self.initialized.fill_(True)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"


class _QuantizedConv:
    """Fake-quantizes a convolution's input at ``abits`` and its weight at ``wbits``.

    Mixed in before ``nn.Conv1d`` / ``nn.Conv2d``, whose ``_conv_forward`` it calls.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self, *args: object, wbits: int, abits: int, signed_input: bool, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)
        self.wbits = wbits
        self.act_quant = ActQuant(abits, signed_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = quantize_weight(self.weight, self.wbits)
        return self._conv_forward(self.act_quant(x), weight, self.bias)  # type: ignore[attr-defined]


class QConv2d(_QuantizedConv, nn.Conv2d):
    """``nn.Conv2d`` whose input and weight are fake-quantized at ``abits`` / ``wbits``."""


class QConv1d(_QuantizedConv, nn.Conv1d):
    """``nn.Conv1d`` whose input and weight are fake-quantized at ``abits`` / ``wbits``."""


class QLinear(nn.Linear):
    """``nn.Linear`` whose input and weight are fake-quantized at ``abits`` / ``wbits``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool,
        wbits: int,
        abits: int,
        signed_input: bool,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.wbits = wbits
        self.act_quant = ActQuant(abits, signed_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(
            self.act_quant(x), quantize_weight(self.weight, self.wbits), self.bias
        )
