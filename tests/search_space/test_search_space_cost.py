"""The analytic cost model, held to the built module and to hand computations."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.search_space import Architecture, LayerSpec, compute_cost


def test_params_match_built_model(sampled: list[Architecture]) -> None:
    for arch in sampled:
        built = sum(p.numel() for p in arch.build().parameters())
        assert arch.cost().params == built, arch.summary()


def test_macs_match_flop_counter(sampled: list[Architecture], one_thread: None) -> None:
    for arch in sampled:
        model = arch.build().eval()  # batch 1: BatchNorm1d refuses it in training mode
        with FlopCounterMode(display=False) as counter:
            model(torch.randn(1, *arch.input_shape))
        macs = counter.get_total_flops() / 2
        assert abs(arch.cost().macs - macs) <= 0.01 * macs, arch.summary()


def test_peak_activation_is_positive(sampled: list[Architecture]) -> None:
    assert all(arch.cost().peak_activation_bytes > 0 for arch in sampled)


def _one_conv(wbits: int, abits: int, head_bits: int) -> Architecture:
    """8x8 grey input -> conv3x3 to 4 channels -> head to 10 classes."""
    conv = LayerSpec(type="conv3x3", width=4, wbits=wbits, abits=abits)
    return Architecture(
        input_shape=(1, 8, 8),
        num_classes=10,
        stages=((conv,),),
        head_wbits=head_bits,
        head_abits=head_bits,
    )


def test_one_conv_by_hand() -> None:
    cost = compute_cost(_one_conv(wbits=4, abits=8, head_bits=8))
    conv_macs = 8 * 8 * (1 * 4 * 3 * 3)  # output pixels x weights
    head_macs = 4 * 10
    assert cost.macs == conv_macs + head_macs == 2344
    assert cost.bitops == conv_macs * 4 * 8 + head_macs * 8 * 8 == 76288
    assert cost.params == 36 + 2 * 4 + 40 + 10  # conv, BN, head weight, head bias


def test_quantized_bytes_by_hand() -> None:
    cost = compute_cost(_one_conv(wbits=4, abits=8, head_bits=8))
    weights = (36 * 4 + 40 * 8) // 8  # conv at 4 bits, head at 8 bits
    conv_extra = 4 * 4 + 4 + 2 * 4 * 4  # 4 channel scales, 1 activation scale, BN
    head_extra = 10 * 4 + 4 + 10 * 4  # 10 channel scales, 1 activation scale, bias
    assert cost.bytes == weights + conv_extra + head_extra == 194


def test_float_bytes_are_four_per_param() -> None:
    cost = compute_cost(_one_conv(wbits=32, abits=32, head_bits=32))
    assert cost.bytes == 4 * cost.params == 4 * 94


def test_dwsep_bytes_by_hand() -> None:
    layer = LayerSpec(type="dwsep3x3", width=3, wbits=4, abits=8)
    arch = Architecture(input_shape=(2, 4, 4), num_classes=2, stages=((layer,),))
    weights = (2 * 9 * 4 + 2 * 3 * 4 + 3 * 2 * 32) // 8  # depthwise, pointwise, float head
    scales = (2 + 1) * 4 + (3 + 1) * 4  # per channel + activation, for each conv
    floats = (2 * 2 + 2 * 3 + 2) * 4  # two BatchNorms and the head bias
    assert compute_cost(arch).bytes == weights + scales + floats == 112


def test_peak_activation_of_one_mlp_layer_by_hand() -> None:
    layer = LayerSpec(type="mlp", width=32, wbits=8, abits=16)
    arch = Architecture(
        input_shape=(64,), num_classes=3, stages=((layer,),), head_wbits=8, head_abits=8
    )
    mlp = 64 * 16 // 8 + 32 * 8 // 8  # input at its abits, output at the head's abits
    head = 32 * 8 // 8 + 3 * 4  # head input, float logits
    assert compute_cost(arch).peak_activation_bytes == max(mlp, head) == 160


def test_as_dict_names_every_metric() -> None:
    cost = compute_cost(_one_conv(wbits=4, abits=8, head_bits=8))
    assert cost.as_dict() == {
        "params": cost.params,
        "macs": cost.macs,
        "bitops": cost.bitops,
        "bytes": cost.bytes,
        "peak_activation_bytes": cost.peak_activation_bytes,
    }
