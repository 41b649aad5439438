"""grasp, fisher, jacob_cov, zen and zico: determinism, bits, real architectures, hand checks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from nas._errors import ConfigError, EvaluationError
from nas.evaluators import EvalContext, get_evaluator, load_dataset
from nas.evaluators._proxies_extra import hessian_gradient_product, zico_score
from nas.search_space import Architecture, LayerSpec, get_space, sample_random

NEW_PROXIES = ["grasp", "fisher", "jacob_cov", "zen", "zico"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # On a small shared CPU machine torch's default intra-op threads oversubscribe the cores
    # and these tiny models run up to 100x slower; one thread keeps the module fast.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def score(name: str, arch, ctx: EvalContext) -> float:
    return get_evaluator(name)(arch, ctx)[name]


def _context(arch: Architecture, seed: int = 0) -> EvalContext:
    data = load_dataset(
        "synthetic", input_shape=arch.input_shape, num_classes=arch.num_classes, n_train=48, n_val=8
    )
    return EvalContext(data, seed=seed, batch_size=16)


def test_every_new_proxy_scores_sampled_cnn_small_architectures() -> None:
    for arch in sample_random(get_space("cnn-small"), 2, seed=5):
        ctx, other_seed = _context(arch), _context(arch, seed=1)
        for name in NEW_PROXIES:
            first = score(name, arch, ctx)
            assert math.isfinite(first), (name, arch.arch_id)
            assert score(name, arch, ctx) == first, name
            assert score(name, arch, other_seed) != first, name


def _conv_net(bits: int, width: int = 16, depth: int = 2) -> Architecture:
    layer = LayerSpec(type="conv3x3", width=width, wbits=bits, abits=max(bits, 4))
    return Architecture(input_shape=(1, 8, 8), num_classes=10, stages=((layer,) * depth,))


@pytest.mark.parametrize("name", NEW_PROXIES)
def test_bits_enter_through_the_built_model(name: str) -> None:
    low, full = _conv_net(2), _conv_net(32)
    ctx = _context(full)
    assert score(name, low, ctx) != score(name, full, ctx)


# -- grasp -----------------------------------------------------------------------------------


def _loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str]):
    def loss(*weights: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(
            functional_call(model, dict(zip(names, weights, strict=True)), (x,)), y
        )

    return loss


def test_grasp_matches_an_autograd_and_a_finite_difference_hvp_on_a_float_model(
    models, synthetic_ctx
) -> None:
    arch = models.mlp(width=16, depth=2, bits=32)  # float: no quantizer anywhere
    torch.manual_seed(synthetic_ctx.seed)
    model = arch.build().train().double()
    names = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    weights = tuple(model.get_parameter(n).detach() for n in names)
    x, y = synthetic_ctx.batch()
    loss = _loss_fn(model, x.double(), y, names)
    leaves = [w.clone().requires_grad_() for w in weights]
    grads = tuple(g.detach() for g in torch.autograd.grad(loss(*leaves), leaves))
    _, hvp = torch.autograd.functional.hvp(loss, weights, grads)
    expected = -sum(float((w * hg).sum()) for w, hg in zip(weights, hvp, strict=True))
    assert score("grasp", arch, synthetic_ctx) == pytest.approx(expected, rel=1e-4)

    # A central difference of the gradient along g, in float64; eps small enough that
    # hardly any ReLU flips between w - eps g and w + eps g.
    eps = 1e-7

    def grad_at(step: float) -> tuple[torch.Tensor, ...]:
        moved = [
            (w + step * g).detach().requires_grad_() for w, g in zip(weights, grads, strict=True)
        ]
        return torch.autograd.grad(loss(*moved), moved)

    fd = [(p - m) / (2 * eps) for p, m in zip(grad_at(eps), grad_at(-eps), strict=True)]
    for exact, approx in zip(hvp, fd, strict=True):
        torch.testing.assert_close(approx, exact, rtol=1e-4, atol=1e-6 * float(exact.abs().max()))


def _fake_quant_4bit(t: torch.Tensor) -> torch.Tensor:
    scale = (t.abs().amax() / 7).reshape(1)
    return torch.fake_quantize_per_tensor_affine(t, scale, torch.zeros(1, dtype=torch.int32), -7, 7)


def test_grasp_of_a_quantized_layer_is_the_straight_through_hessian(models, synthetic_ctx) -> None:
    # One QLinear at 4 bits: per-tensor scale max|w| / 7, so no weight is clipped (mask = 1)
    # and the double backward is H_q g_q: the Hessian and gradient of a float layer whose
    # weight is the quantized q(w) and whose input is the quantized q(x); times the master w.
    arch = models.mlp(depth=0, bits=4, batchnorm=False)
    torch.manual_seed(synthetic_ctx.seed)
    qlayer = arch.build()[1]
    x, y = synthetic_ctx.batch()
    qx, w = _fake_quant_4bit(x.flatten(1)), qlayer.weight.detach()
    qw = _fake_quant_4bit(w).requires_grad_()

    def loss(weight: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(qx @ weight.T + qlayer.bias.detach(), y)

    (g,) = torch.autograd.grad(loss(qw), qw)
    _, hg = torch.autograd.functional.hvp(loss, qw.detach(), g)
    expected = -float((w * hg).sum())
    assert score("grasp", arch, synthetic_ctx) == pytest.approx(expected, rel=1e-4)


def test_hessian_gradient_product_is_zero_for_a_loss_linear_in_the_weights() -> None:
    w = torch.randn(3, requires_grad=True)
    (hg,) = hessian_gradient_product((w * torch.arange(3.0)).sum(), [w])
    assert torch.equal(hg, torch.zeros(3))


# -- fisher ----------------------------------------------------------------------------------


def test_fisher_matches_closed_form_of_a_one_hidden_layer_network(models, synthetic_ctx) -> None:
    arch = models.mlp(width=16, depth=1, bits=32, batchnorm=False)
    torch.manual_seed(synthetic_ctx.seed)
    _, first, _, head = arch.build()
    x, y = synthetic_ctx.batch()
    act = torch.relu(first(x.flatten(1))).detach()
    probs = torch.softmax(head(act), dim=1).detach()
    grad = (probs - nn.functional.one_hot(y, 10)) / len(y) @ head.weight.detach()
    expected = float(0.5 * (act * grad).pow(2).mean(0).sum())
    assert score("fisher", arch, synthetic_ctx) == pytest.approx(expected, rel=1e-5)


def test_fisher_sums_over_the_spatial_positions_of_a_channel(models, synthetic_ctx) -> None:
    arch = models.cnn(channels=4, bits=32)
    torch.manual_seed(synthetic_ctx.seed)
    model = arch.build().train()
    x, y = synthetic_ctx.batch()
    acts = []
    out = x
    for layer in model:
        out = layer(out)
        if isinstance(layer, nn.ReLU):
            out.retain_grad()
            acts.append(out)
    nn.functional.cross_entropy(out, y).backward()
    expected = sum(
        float(0.5 * (a * a.grad).sum((2, 3)).pow(2).mean(0).sum().detach()) for a in acts
    )
    assert score("fisher", arch, synthetic_ctx) == pytest.approx(expected, rel=1e-5)


def test_fisher_needs_a_relu(models, synthetic_ctx) -> None:
    with pytest.raises(EvaluationError, match=r"^fisher: the model has no nn\.ReLU"):
        score("fisher", models.mlp(relu=False), synthetic_ctx)


# -- jacob_cov -------------------------------------------------------------------------------


def _jacob_cov_expected(jacobian: np.ndarray, k: float = 1e-5) -> float:
    v, _ = np.linalg.eig(np.corrcoef(jacobian))  # as Abdelfattah et al.'s code does
    return float(-np.sum(np.log(v.real + k) + 1.0 / (v.real + k)))


def test_jacob_cov_of_a_linear_model_has_identical_jacobian_rows(models, synthetic_ctx) -> None:
    # f(x) = W x + b: every sample's Jacobian of sum(f) is W^T 1, so C is all ones, with
    # eigenvalues n (once) and 0 (n - 1 times).
    arch = models.mlp(depth=0, bits=32, batchnorm=False)
    n, k = synthetic_ctx.batch_size, 1e-5
    expected = -(math.log(n + k) + 1 / (n + k) + (n - 1) * (math.log(k) + 1 / k))
    assert score("jacob_cov", arch, synthetic_ctx) == pytest.approx(expected, rel=1e-9)


class _HalfSquare(nn.Module):
    """``0.5 * |x|^2`` per sample, so the input Jacobian of each sample is the sample."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.flatten(1).pow(2).sum(1, keepdim=True)


def test_jacob_cov_of_a_known_jacobian_matches_numpy(models, synthetic_ctx) -> None:
    arch = models.StubArch(_HalfSquare)
    x, _ = synthetic_ctx.batch()
    expected = _jacob_cov_expected(x.flatten(1).double().numpy())
    assert score("jacob_cov", arch, synthetic_ctx) == pytest.approx(expected, rel=1e-6)


def test_jacob_cov_of_a_constant_jacobian_is_an_evaluation_error(models, synthetic_ctx) -> None:
    with pytest.raises(EvaluationError, match=r"^jacob_cov: the input Jacobian of 32 of 32"):
        score("jacob_cov", models.mlp(scale=0.0), synthetic_ctx)


# -- zen -------------------------------------------------------------------------------------


def test_zen_prefers_the_deeper_and_wider_network(models, synthetic_ctx) -> None:
    trivial, big = models.mlp(width=8, depth=1), models.mlp(width=128, depth=4)
    assert score("zen", big, synthetic_ctx) > score("zen", trivial, synthetic_ctx) + 1
    small_cnn, big_cnn = _conv_net(32, width=8, depth=1), _conv_net(32, width=48, depth=4)
    ctx = _context(big_cnn)
    assert score("zen", big_cnn, ctx) > score("zen", small_cnn, ctx) + 1


def test_zen_is_data_free(models, synthetic_ctx) -> None:
    arch = models.cnn(channels=8, bits=8)
    other = load_dataset("synthetic", n_train=128, n_val=32, seed=7)
    assert not torch.equal(other.x_train, synthetic_ctx.dataset.x_train)
    assert score("zen", arch, dataclasses.replace(synthetic_ctx, dataset=other)) == score(
        "zen", arch, synthetic_ctx
    )


def test_zen_batchnorm_correction_restores_the_scale_batchnorm_removes(models) -> None:
    # BN divides each channel by its std; the log-sigma term adds it back, so a network
    # with BN scores about what the same network without BN does.
    ctx = EvalContext(load_dataset("synthetic", n_train=256, n_val=8), batch_size=256)
    with_bn = models.mlp(width=64, depth=2, bits=32, bias=False, batchnorm=True)
    without = models.mlp(width=64, depth=2, bits=32, bias=False, batchnorm=False)
    assert score("zen", with_bn, ctx) == pytest.approx(score("zen", without, ctx), abs=0.1)


def test_zen_of_a_linear_map_is_the_mean_norm_of_the_mapped_noise(models, synthetic_ctx) -> None:
    arch = models.mlp(depth=0, bits=32, batchnorm=False)  # f(x) = W x + b, W ~ N(0, 1)
    torch.manual_seed(synthetic_ctx.seed)
    weight = nn.init.normal_(arch.build()[1].weight.detach())
    gen = torch.Generator().manual_seed(synthetic_ctx.seed)
    shape = (synthetic_ctx.batch_size, 64)
    torch.randn(shape, generator=gen)
    noise = torch.randn(shape, generator=gen).double()
    expected = math.log(float((noise @ weight.double().T).norm(dim=1).mean()))
    assert score("zen", arch, synthetic_ctx) == pytest.approx(expected, abs=1e-4)


# -- zico ------------------------------------------------------------------------------------


def test_zico_matches_closed_form_of_a_linear_model_on_two_batches(models, synthetic_ctx) -> None:
    arch = models.mlp(depth=0, bits=32, batchnorm=False)
    torch.manual_seed(synthetic_ctx.seed)
    layer = arch.build()[1]
    x, y = synthetic_ctx.batch()
    x = x.flatten(1).double()
    grads = []
    for part in (slice(0, 16), slice(16, 32)):
        logits = x[part] @ layer.weight.detach().double().T + layer.bias.detach().double()
        delta = (torch.softmax(logits, 1) - nn.functional.one_hot(y[part], 10)) / 16
        grads.append(delta.T @ x[part])
    g1, g2 = grads
    # Two samples: mean |g| = (|g1| + |g2|) / 2 and population std = |g1 - g2| / 2.
    varies = g1 != g2
    ratio = (g1.abs() + g2.abs())[varies] / (g1 - g2).abs()[varies]
    expected = math.log(float(ratio.sum()))
    assert score("zico", arch, synthetic_ctx) == pytest.approx(expected, rel=1e-5)


def test_zico_score_skips_weights_and_layers_whose_gradient_does_not_vary() -> None:
    varying = torch.tensor([[1.0, 2.0, 0.0], [3.0, 2.0, 0.0]])  # std (1, 0, 0), mean|g| (2, 2, 0)
    constant = torch.tensor([[5.0, -1.0], [5.0, -1.0]])
    assert zico_score([varying, constant]) == pytest.approx(math.log(2.0))
    assert zico_score([constant]) == -math.inf


def test_zico_of_an_input_without_signal_is_minus_infinity(models, synthetic_ctx) -> None:
    data = synthetic_ctx.dataset
    blank = dataclasses.replace(data, x_train=torch.zeros_like(data.x_train))
    arch = models.mlp(depth=0, bits=32, batchnorm=False)  # dL/dW = delta^T x = 0 for x = 0
    assert score("zico", arch, dataclasses.replace(synthetic_ctx, dataset=blank)) == -math.inf


def test_zico_needs_two_mini_batches_of_two(models, synthetic_ctx) -> None:
    with pytest.raises(ConfigError, match="batch_size >= 4"):
        score("zico", models.mlp(), dataclasses.replace(synthetic_ctx, batch_size=3))
    with pytest.raises(ConfigError) as info:
        get_evaluator("zico", batches=1)
    assert info.value.field == "batches"
    three = get_evaluator("zico", batches=3)(models.mlp(), synthetic_ctx)["zico"]
    assert math.isfinite(three) and three != score("zico", models.mlp(), synthetic_ctx)


@pytest.mark.parametrize("name", ["jacob_cov", "zen"])
def test_a_batch_of_one_is_a_config_error(name: str, models, synthetic_ctx) -> None:
    with pytest.raises(ConfigError, match="batch_size >= 2") as info:
        score(name, models.mlp(), dataclasses.replace(synthetic_ctx, batch_size=1))
    assert info.value.field == "batch_size"
