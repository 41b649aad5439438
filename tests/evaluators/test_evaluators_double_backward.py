"""The written-out double backward of Conv2d, BatchNorm2d and ReLU: autograd's derivatives."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nas.evaluators._double_backward import DoubleBackward
from nas.evaluators._proxies_extra import hessian_gradient_product, hessian_times_gradient
from nas.search_space import CellArchitecture, get_space, sample_random


def _double(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return module.double()


MODULES = {
    "conv-stride-groups": lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
    "conv-dilated-no-bias": lambda: nn.Conv2d(4, 4, 3, padding=2, dilation=2, bias=False),
    "conv-1x1": lambda: nn.Conv2d(4, 3, 1, bias=False),
    "batchnorm": lambda: nn.BatchNorm2d(4),
    "batchnorm-no-affine": lambda: nn.BatchNorm2d(4, affine=False),
    "batchnorm-no-running-stats": lambda: nn.BatchNorm2d(4, track_running_stats=False),
    "relu": nn.ReLU,
    "avgpool-3x3-no-pad-count": lambda: nn.AvgPool2d(
        3, stride=1, padding=1, count_include_pad=False
    ),
    "avgpool-2x2": lambda: nn.AvgPool2d(2, stride=2),
    "avgpool-3x2-strided": lambda: nn.AvgPool2d((3, 2), stride=(2, 1), padding=(1, 0)),
    "global-avgpool": lambda: nn.AdaptiveAvgPool2d(1),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_first_and_second_derivatives_are_autograds(name: str) -> None:
    module = _double(MODULES[name]())
    DoubleBackward(module)
    assert type(module).__module__ == "nas.evaluators._double_backward"
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    params = [p for p in module.parameters()]

    def f(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return module(x)

    assert torch.autograd.gradcheck(f, (x, *params))
    assert torch.autograd.gradgradcheck(f, (x, *params))


#: Every NB201 op, the 3x3 pooling (no padding counted) and the zero op included.
EVERY_OP = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_3x3~0|none~1|avg_pool_3x3~2|"


def _nb201_network(
    layout: torch.memory_format, cell: str = EVERY_OP
) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """A float64 NB201 network of ``cell``, its fast copy (in ``layout``) and a batch."""
    arch = CellArchitecture.from_string(cell, input_shape=(3, 8, 8), cells_per_stage=2)
    torch.manual_seed(0)
    native = arch.build().double().train()
    fast = copy.deepcopy(native)
    DoubleBackward(fast)
    fast.to(memory_format=layout)
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64).contiguous(memory_format=layout)
    return native, fast, x


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


SAMPLED = sample_random(get_space("nb201").for_data((3, 8, 8), 10), 1, seed=4)[0].to_string()


@pytest.mark.parametrize("cell", [EVERY_OP, SAMPLED], ids=["every-op", "sampled"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_hessian_gradient_product_of_a_network_equals_autograds(
    layout: torch.memory_format, cell: str
) -> None:
    # GraSP's Hg through a real NB201 network (convolutions, BN, ReLU, pooling, sums), float64.
    native, fast, x = _nb201_network(layout, cell)
    y = torch.randint(0, 10, (8,))
    results = []
    for model in (native, fast):
        loss = nn.functional.cross_entropy(model(x), y)
        results.append(hessian_gradient_product(loss, _weights(model)))
    # Sums in another order (oneDNN's choice varies with the load on the threads): an element
    # that cancels to ~1e-3 differs by ~2e-12 now and then; float32 would be ~1e-4 off.
    for expected, got in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-11)
    for a, b in zip(native.buffers(), fast.buffers(), strict=True):  # running stats as nn's
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_hessian_times_weights_is_autograds_and_gives_grasps_sum() -> None:
    # H w from the recorded convolution calls, against autograd's double backprop of
    # sum(g . stop_grad(w)); and g . Hw = w . Hg (H is symmetric), GraSP's sum.
    native, fast, x = _nb201_network(torch.channels_last)
    y = torch.randint(0, 10, (8,))
    weights = _weights(native)
    loss = nn.functional.cross_entropy(native(x), y)
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    direction = torch.stack([(g * w.detach()).sum() for g, w in zip(grads, weights, strict=True)])
    unused = torch.autograd.grad(direction.sum(), weights, retain_graph=True, allow_unused=True)
    expected = [
        torch.zeros_like(w) if h is None else h for w, h in zip(weights, unused, strict=True)
    ]
    hg = hessian_times_gradient(grads, weights)

    kernels = next(m._double_backward for m in fast.modules() if hasattr(m, "_double_backward"))
    fast_weights = _weights(fast)
    fast_loss = nn.functional.cross_entropy(fast(x), y)
    with kernels.recording() as calls:
        fast_grads = torch.autograd.grad(fast_loss, fast_weights, create_graph=True)
    assert len(calls) == sum(isinstance(m, nn.Conv2d) for m in fast.modules())
    hw = kernels.hessian_times_weights(calls, fast_weights, fast_grads)
    assert kernels.calls is None
    for got, want in zip(hw, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-11)
    w_hg = sum((w.detach() * h).sum() for w, h in zip(weights, hg, strict=True))
    g_hw = sum((g.detach() * h).sum() for g, h in zip(fast_grads, hw, strict=True))
    torch.testing.assert_close(g_hw, w_hg, rtol=1e-9, atol=0)


def test_gradients_keep_the_channels_last_layout() -> None:
    # Autograd's global pooling and avg_pool2d's double backward hand back contiguous
    # tensors, which would run everything below them at a fraction of oneDNN's speed.
    _, fast, x = _nb201_network(torch.channels_last)
    x.requires_grad_(True)
    weights = _weights(fast)
    formats: list[torch.Tensor] = []  # the gradients of the outputs of every layer

    def watch(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        output.register_hook(formats.append)

    for m in fast.modules():
        if isinstance(m, nn.Conv2d | nn.AvgPool2d | nn.BatchNorm2d | nn.ReLU):
            m.register_forward_hook(watch)
    loss = nn.functional.cross_entropy(fast(x), torch.randint(0, 10, (8,)))
    grads = torch.autograd.grad(loss, [x, *weights], create_graph=True)
    assert len(formats) > 20 and all(_channels_last(g) for g in formats)
    assert _channels_last(grads[0])
    (second,) = torch.autograd.grad(sum(g.sum() for g in grads[1:]), x)
    assert _channels_last(second)


def _channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def test_batch_norm_bookkeeping_is_nns() -> None:
    native = _double(nn.BatchNorm2d(4, momentum=None))  # cumulative average: 1 / batches
    fast = copy.deepcopy(native)
    DoubleBackward(fast)
    for _ in range(3):
        x = torch.randn(6, 4, 3, 3, dtype=torch.float64) * 3 + 2
        torch.testing.assert_close(fast(x), native(x))
    assert fast.state_dict()["num_batches_tracked"] == native.state_dict()["num_batches_tracked"]
    assert native.state_dict()["num_batches_tracked"] == 3
    torch.testing.assert_close(fast.running_mean, native.running_mean)
    torch.testing.assert_close(fast.running_var, native.running_var)
    fast.eval(), native.eval()
    x = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(fast(x), native(x))


def test_channels_last_statistics_are_as_precise_as_contiguous_ones() -> None:
    # The CPU's own channels-last batch norm sums in one float32 pass (mean off by ~2e-5 here).
    torch.manual_seed(0)
    x = (torch.randn(64, 16, 16, 16) * 3 + 5).contiguous(memory_format=torch.channels_last)
    bn = nn.BatchNorm2d(16, affine=False)
    DoubleBackward(bn)
    exact = nn.functional.batch_norm(x.double(), None, None, training=True)
    assert (bn(x).double() - exact).abs().max() < 2e-6


def test_inputs_only_gives_the_same_input_gradient_and_no_weight_gradient() -> None:
    torch.manual_seed(0)
    first = nn.Conv2d(3, 4, 3)
    model = nn.Sequential(first, nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    kernels = DoubleBackward(model)
    x = torch.randn(5, 3, 6, 6, requires_grad=True)
    out = model(x).sum()
    (expected,) = torch.autograd.grad(out, x, retain_graph=True)
    with kernels.inputs_only():
        (got,) = torch.autograd.grad(out, x, retain_graph=True)
        with pytest.raises(RuntimeError, match="appears to not have been used"):
            torch.autograd.grad(out, first.weight, retain_graph=True)
    assert kernels.weights
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_unsupported_modules_keep_autograd_and_remove_restores_classes() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 3, 3, padding="same"),
        nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"),
        nn.Conv1d(3, 3, 1),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(3),
        nn.Conv2d(3, 3, 3),
        nn.ReLU(),
    )
    before = [type(m) for m in model]
    kernels = DoubleBackward(model)
    assert [type(m) for m in model][:5] == before[:5]
    assert type(model[5]) is not nn.Conv2d and isinstance(model[5], nn.Conv2d)
    assert isinstance(model[6], nn.ReLU) and type(model[6]) is not nn.ReLU
    kernels.remove()
    assert [type(m) for m in model] == before
    assert not hasattr(model[5], "_double_backward")


@pytest.mark.gpu
def test_second_derivatives_are_autograds_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
    model = _double(model).cuda()
    DoubleBackward(model)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, *ps: model(x), (x, *model.parameters()))
