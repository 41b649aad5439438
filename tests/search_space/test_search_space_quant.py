"""Fake quantization: the grids, the errors, the straight-through gradient, calibration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas.search_space._quant import ActQuant, QConv2d, QLinear, quantize_weight

BITS = [2, 4, 8, 16]


def _weight() -> torch.Tensor:
    """Three output channels of very different ranges, 70000 uniform values each (> 2^16)."""
    torch.manual_seed(0)
    return (torch.rand(3, 70000) * 2 - 1) * torch.tensor([[0.01], [1.0], [100.0]])


def _channel_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    return w.abs().amax(dim=1, keepdim=True) / (2 ** (bits - 1) - 1)


def _rounding_slack(bits: int) -> float:
    """float32 error of ``w / scale`` (up to 2^(b-1) - 1) in steps: 0.016 at 16 bits."""
    return (2 ** (bits - 1) - 1) * 2.0**-21


@pytest.mark.parametrize("bits", BITS)
def test_weight_levels_per_channel(bits: int) -> None:
    w = _weight()
    q = quantize_weight(w, bits)
    qmax = 2 ** (bits - 1) - 1
    for channel in q:
        magnitudes = channel[channel > 0].unique()
        assert 1 <= len(magnitudes) <= qmax
    if bits <= 8:  # dense enough to use every level
        assert all(len(channel[channel > 0].unique()) == qmax for channel in q)


@pytest.mark.parametrize("bits", BITS)
def test_weight_error_within_half_a_step(bits: int) -> None:
    w = _weight()
    scale = _channel_scale(w, bits)
    error = (quantize_weight(w, bits) - w).abs()
    assert (error <= scale * (0.5 + _rounding_slack(bits))).all()


@pytest.mark.parametrize("bits", BITS)
def test_weight_values_on_the_channel_grid(bits: int) -> None:
    w = _weight()
    steps = quantize_weight(w, bits) / _channel_scale(w, bits)
    torch.testing.assert_close(steps, steps.round(), rtol=0, atol=_rounding_slack(bits))


@pytest.mark.parametrize("bits", BITS)
def test_weight_gradient_is_straight_through(bits: int) -> None:
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    quantize_weight(w, bits).sum().backward()
    assert w.grad is not None
    assert torch.equal(w.grad, torch.ones_like(w))


def test_float_bits_return_the_weight_itself() -> None:
    w = torch.randn(4, 3)
    assert quantize_weight(w, 32) is w


def test_act_unsigned_uses_all_levels_of_non_negative_input() -> None:
    x = torch.linspace(0, 1, 1001)
    unsigned, signed = ActQuant(4, signed=False)(x), ActQuant(4, signed=True)(x)
    assert (unsigned >= 0).all()
    assert len(unsigned.unique()) == 16  # 0..15, the unsigned range
    assert len(signed.unique()) == 8  # 0..7: half the levels wasted on negatives
    assert (unsigned - x).abs().max() <= (1 / 15) / 2 + 1e-6


def test_act_signed_keeps_negative_values() -> None:
    x = torch.linspace(-1, 1, 1001)
    out = ActQuant(4, signed=True)(x)
    assert out.min() == -1
    assert len(out.unique()) == 15  # -7..7


def test_act_calibration_is_an_ema_in_training() -> None:
    quant = ActQuant(8, signed=True).train()
    quant(torch.full((4,), 2.0))
    assert quant.running_max.item() == pytest.approx(2.0)  # the first batch sets it
    quant(torch.full((4,), -12.0))
    assert quant.running_max.item() == pytest.approx(0.9 * 2.0 + 0.1 * 12.0)


def test_act_calibration_is_frozen_in_eval() -> None:
    quant = ActQuant(8, signed=False).train()
    quant(torch.full((4,), 2.0))
    quant.eval()
    out = quant(torch.full((4,), 10.0))
    assert quant.running_max.item() == pytest.approx(2.0)
    assert torch.allclose(out, torch.full((4,), 2.0))  # clipped to the calibrated range


def test_act_first_eval_batch_initializes() -> None:
    quant = ActQuant(8, signed=False).eval()
    quant(torch.full((4,), 3.0))
    assert bool(quant.initialized)
    assert quant.running_max.item() == pytest.approx(3.0)


def test_act_float_bits_pass_through_without_calibrating() -> None:
    quant = ActQuant(32, signed=True)
    x = torch.randn(5)
    assert quant(x) is x
    assert not bool(quant.initialized)


def test_act_gradient_is_straight_through_in_range() -> None:
    x = torch.rand(10, requires_grad=True)
    ActQuant(4, signed=False)(x).sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, torch.ones_like(x))


def test_quantized_layers_are_torch_layers() -> None:
    conv = QConv2d(2, 4, 3, wbits=4, abits=8, signed_input=True)
    linear = QLinear(4, 2, bias=True, wbits=4, abits=8, signed_input=False)
    assert isinstance(conv, nn.Conv2d)
    assert isinstance(linear, nn.Linear)


def test_qconv_quantizes_input_and_weight() -> None:
    torch.manual_seed(0)
    conv = QConv2d(2, 4, 3, padding=1, bias=False, wbits=2, abits=4, signed_input=True)
    x = torch.randn(1, 2, 5, 5)
    reference = ActQuant(4, signed=True)
    expected = nn.functional.conv2d(reference(x), quantize_weight(conv.weight, 2), padding=1)
    torch.testing.assert_close(conv(x), expected)
    plain = nn.functional.conv2d(x, conv.weight, padding=1)
    assert not torch.allclose(conv(x), plain, atol=1e-3)


def test_qlinear_quantizes_input_and_weight() -> None:
    torch.manual_seed(0)
    linear = QLinear(6, 3, bias=True, wbits=2, abits=4, signed_input=True)
    x = torch.randn(2, 6)
    reference = ActQuant(4, signed=True)
    weight = quantize_weight(linear.weight, 2)
    expected = nn.functional.linear(reference(x), weight, linear.bias)
    torch.testing.assert_close(linear(x), expected)
    assert not torch.allclose(linear(x), nn.functional.linear(x, linear.weight, linear.bias))
