"""The builder: every sampled architecture builds, runs forward and backward."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from nas.search_space import Architecture, LayerSpec, build_model
from nas.search_space._builder import Residual
from nas.search_space._quant import ActQuant, QConv2d, QLinear

BATCH = 2


def _bad_grads(model: nn.Module, unused: set[int]) -> list[str]:
    """Parameters without a finite gradient, but those of a cell's unused edges."""
    skip = tuple(f".edges.edge{k}." for k in unused)
    return [
        name
        for name, p in model.named_parameters()
        if (p.grad is None and not any(s in name for s in skip))
        or (p.grad is not None and not torch.isfinite(p.grad).all())
    ]


def test_forward_backward(
    sampled: list[Architecture],
    unused_edges: Callable[[Architecture], set[int]],
    one_thread: None,
) -> None:
    torch.manual_seed(0)
    for arch in sampled:
        model = arch.build()
        out = model(torch.randn(BATCH, *arch.input_shape))
        assert out.shape == (BATCH, arch.num_classes), arch.summary()
        assert torch.isfinite(out).all(), arch.summary()
        target = torch.randint(arch.num_classes, (BATCH,))
        nn.functional.cross_entropy(out, target).backward()
        assert _bad_grads(model, unused_edges(arch)) == [], arch.summary()


def _arch(*layers: LayerSpec, shape: tuple[int, ...] = (3, 8, 8)) -> Architecture:
    return Architecture(input_shape=shape, num_classes=4, stages=(layers,))


def _quantizers(model: nn.Module) -> list[ActQuant]:
    return [m for m in model.modules() if isinstance(m, ActQuant)]


def test_act_quant_is_unsigned_only_after_relu() -> None:
    model = build_model(
        _arch(
            LayerSpec(type="conv3x3", width=8, wbits=8, abits=8),
            LayerSpec(type="conv3x3", width=8, wbits=8, abits=8),
            LayerSpec(type="mbconv3x3", width=8, expansion=1, wbits=8, abits=8),
        )
    )
    # conv: raw input; conv: after a ReLU; mbconv depthwise and project: after
    # ReLUs; head: the residual sum, which may be negative.
    assert [q.signed for q in _quantizers(model)] == [True, False, False, False, True]


def test_pooling_keeps_the_sign_of_its_input() -> None:
    model = build_model(
        _arch(
            LayerSpec(type="conv3x3", width=8),
            LayerSpec(type="maxpool3x3", width=8, stride=2),
            LayerSpec(type="identity", width=8),
        )
    )
    assert [q.signed for q in _quantizers(model)] == [True, False]


def test_layers_carry_their_bits() -> None:
    arch = _arch(
        LayerSpec(type="conv3x3", width=8, wbits=4, abits=8),
        LayerSpec(type="dwsep3x3", width=8, wbits=2, abits=16),
    )
    model = build_model(arch)
    convs = [m for m in model.modules() if isinstance(m, QConv2d)]
    assert [(c.wbits, c.act_quant.bits) for c in convs] == [(4, 8), (2, 16), (2, 16)]
    head = model.head[-1]
    assert isinstance(head, QLinear)
    assert (head.wbits, head.act_quant.bits) == (arch.head_wbits, arch.head_abits)


@pytest.mark.parametrize(
    ("width", "stride", "residual"), [(8, 1, True), (16, 1, False), (8, 2, False)]
)
def test_mbconv_skip_only_when_shapes_match(width: int, stride: int, residual: bool) -> None:
    stem = LayerSpec(type="conv3x3", width=8)
    block = LayerSpec(type="mbconv3x3", width=width, stride=stride, expansion=3)
    arch = Architecture(input_shape=(3, 8, 8), num_classes=4, stem=stem, stages=((block,),))
    model = build_model(arch)
    assert isinstance(model.features[1], Residual) is residual
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 4)


def test_weighted_layers_are_torch_layers() -> None:
    model = build_model(_arch(LayerSpec(type="mlp", width=8), shape=(5,)))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2  # the mlp layer and the head
    assert all(isinstance(m, QLinear) for m in linears)


def test_float_layers_match_plain_torch() -> None:
    arch = _arch(LayerSpec(type="conv3x3", width=4), shape=(2, 5, 5))
    model = build_model(arch).eval()
    conv = model.features[0][0]
    x = torch.randn(1, 2, 5, 5)
    expected = nn.functional.conv2d(x, conv.weight, padding=1)
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=0)


def test_residual_adds_its_input() -> None:
    body = nn.Linear(3, 3)
    x = torch.randn(2, 3)
    torch.testing.assert_close(Residual(body)(x), x + body(x))
