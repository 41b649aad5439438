"""Hand-made models that follow the builder's conventions, and small evaluation contexts.

Weighted layers subclass ``nn.Conv2d`` / ``nn.Linear`` and fake-quantize their
weight and input inside ``forward``; activations are ``nn.ReLU`` modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from nas.evaluators import EvalContext, load_dataset


def fake_quant(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-tensor fake quantization with a straight-through gradient."""
    if bits >= 32:
        return x
    qmax = 2 ** (bits - 1) - 1
    scale = (x.detach().abs().amax().clamp_min(1e-8) / qmax).float().reshape(1)
    zero = torch.zeros(1, dtype=torch.int32, device=x.device)
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, -qmax, qmax)


class QLinear(nn.Linear):
    def __init__(self, n_in: int, n_out: int, bits: int, bias: bool = True) -> None:
        super().__init__(n_in, n_out, bias=bias)
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = fake_quant(self.weight, self.bits)
        return nn.functional.linear(fake_quant(x, self.bits), w, self.bias)


class QConv2d(nn.Conv2d):
    def __init__(self, c_in: int, c_out: int, bits: int) -> None:
        super().__init__(c_in, c_out, 3, padding=1, bias=False)
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = fake_quant(self.weight, self.bits)
        return self._conv_forward(fake_quant(x, self.bits), w, None)


@dataclass(frozen=True)
class FakeCost:
    params: int
    macs: int


@dataclass(frozen=True)
class StubArch:
    """Duck-types an Architecture: input_shape, num_classes, build(), cost()."""

    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...] = (1, 8, 8)
    num_classes: int = 10

    def build(self) -> nn.Module:
        return self.make()

    def cost(self) -> FakeCost:
        model = self.make()
        params = sum(p.numel() for p in model.parameters())
        return FakeCost(params=params, macs=2 * params)


def mlp(
    width: int = 64,
    depth: int = 2,
    bits: int = 8,
    *,
    bias: bool = True,
    batchnorm: bool = True,
    relu: bool = True,
    scale: float = 1.0,
) -> StubArch:
    """Flatten, ``depth`` x (QLinear [BN] [ReLU]), QLinear head; weights multiplied by ``scale``."""

    def make() -> nn.Module:
        layers: list[nn.Module] = [nn.Flatten()]
        n_in = 64
        for _ in range(depth):
            layers.append(QLinear(n_in, width, bits, bias))
            layers += [nn.BatchNorm1d(width)] if batchnorm else []
            layers += [nn.ReLU()] if relu else []
            n_in = width
        layers.append(QLinear(n_in, 10, bits, bias))
        model = nn.Sequential(*layers)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    m.weight.mul_(scale)
        return model

    return StubArch(make)


def cnn(channels: int = 8, bits: int = 8) -> StubArch:
    """QConv2d-BN-ReLU twice, global average pooling, QLinear head."""

    def make() -> nn.Module:
        return nn.Sequential(
            QConv2d(1, channels, bits),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            QConv2d(channels, channels, bits),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            QLinear(channels, 10, bits),
        )

    return StubArch(make)


class Models:
    """What the ``models`` fixture hands a test."""

    mlp = staticmethod(mlp)
    cnn = staticmethod(cnn)
    StubArch = StubArch


@pytest.fixture(scope="session")
def synthetic_ctx() -> EvalContext:
    return EvalContext(load_dataset("synthetic", n_train=128, n_val=32), seed=0, batch_size=32)


@pytest.fixture
def models() -> Models:
    """The model factories (``models.mlp(...)``, ``models.cnn(...)``, ``models.StubArch``)."""
    return Models()
