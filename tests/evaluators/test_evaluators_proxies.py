"""Every proxy on small hand-made models (see conftest.py): determinism and a sanity check each."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from nas._errors import ConfigError, EvaluationError
from nas.evaluators import Dataset, EvalContext, get_evaluator, load_dataset

#: Every proxy that builds and runs the model (all but the size baselines): one suite for all.
MODEL_PROXIES = [
    "synflow",
    "naswot",
    "grad_norm",
    "snip",
    "grasp",
    "fisher",
    "jacob_cov",
    "zen",
    "zico",
]


def score(name: str, arch, ctx: EvalContext) -> float:
    return get_evaluator(name)(arch, ctx)[name]


@pytest.mark.parametrize("name", MODEL_PROXIES)
def test_proxy_is_deterministic_finite_and_seeded(name: str, models, synthetic_ctx) -> None:
    arch = models.cnn(channels=16, bits=4)
    first = score(name, arch, synthetic_ctx)
    torch.rand(10)  # moving the global RNG must not change the result
    assert score(name, arch, synthetic_ctx) == first
    assert math.isfinite(first)
    other_seed = dataclasses.replace(synthetic_ctx, seed=1)
    assert score(name, arch, other_seed) != first


@pytest.mark.parametrize("name", MODEL_PROXIES)
def test_proxy_works_under_no_grad(name: str, models, synthetic_ctx) -> None:
    arch = models.mlp()
    expected = score(name, arch, synthetic_ctx)
    with torch.no_grad():
        assert score(name, arch, synthetic_ctx) == expected


@pytest.mark.parametrize("name", MODEL_PROXIES)
def test_bits_change_the_score(name: str, models, synthetic_ctx) -> None:
    low, full = models.mlp(bits=4), models.mlp(bits=32)
    assert score(name, low, synthetic_ctx) != score(name, full, synthetic_ctx)


def test_synflow_matches_closed_form_of_a_linear_chain(models, synthetic_ctx) -> None:
    # Bias-free, no BN, positive weights and input: R = 1^T |W3||W2||W1| 1, and R is
    # linear in each layer's weights, so each layer's sum(w * dR/dw) equals R.
    arch = models.mlp(width=16, depth=2, bits=32, bias=False, batchnorm=False)
    torch.manual_seed(synthetic_ctx.seed)
    weights = [m.weight.detach().double().abs() for m in arch.build() if isinstance(m, nn.Linear)]
    flow = torch.ones(64, dtype=torch.float64)
    for w in weights:
        flow = w @ flow
    expected = math.log(3 * float(flow.sum()))
    assert score("synflow", arch, synthetic_ctx) == pytest.approx(expected, rel=1e-12)


def test_synflow_prefers_the_wider_network(models, synthetic_ctx) -> None:
    narrow, wide = models.mlp(width=16), models.mlp(width=128)
    assert score("synflow", wide, synthetic_ctx) > score("synflow", narrow, synthetic_ctx)


def test_synflow_of_zero_weights_is_minus_infinity(models, synthetic_ctx) -> None:
    assert score("synflow", models.mlp(scale=0.0), synthetic_ctx) == -math.inf


def test_naswot_scores_identical_inputs_below_distinct_ones(models, synthetic_ctx) -> None:
    arch = models.mlp(width=128)
    data = synthetic_ctx.dataset
    same = dataclasses.replace(data, x_train=data.x_train[:1].expand_as(data.x_train).clone())
    distinct = score("naswot", arch, synthetic_ctx)
    assert math.isfinite(distinct)
    assert score("naswot", arch, dataclasses.replace(synthetic_ctx, dataset=same)) < distinct


def test_naswot_needs_a_relu(models, synthetic_ctx) -> None:
    with pytest.raises(EvaluationError, match=r"no nn\.ReLU"):
        score("naswot", models.mlp(relu=False), synthetic_ctx)


def _linear_gradient(arch, ctx: EvalContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and closed-form cross-entropy gradient of a single linear layer."""
    torch.manual_seed(ctx.seed)
    layer = arch.build()[1]
    x, y = ctx.batch()
    x = x.flatten(1)
    probs = torch.softmax(x @ layer.weight.T + layer.bias, dim=1)
    delta = (probs - nn.functional.one_hot(y, 10)) / len(y)
    return layer.weight.detach(), (delta.T @ x).detach()


def test_grad_norm_and_snip_match_closed_form_of_a_linear_model(models, synthetic_ctx) -> None:
    arch = models.mlp(depth=0, bits=32, batchnorm=False)
    weight, grad = _linear_gradient(arch, synthetic_ctx)
    assert score("grad_norm", arch, synthetic_ctx) == pytest.approx(float(grad.norm()), rel=1e-5)
    snip = float((weight * grad).abs().sum())
    assert score("snip", arch, synthetic_ctx) == pytest.approx(snip, rel=1e-5)


def test_snip_scales_with_the_weights(models, synthetic_ctx) -> None:
    # Near zero the softmax is uniform, so dL/dw barely moves and |w * dL/dw| is linear in w.
    small = score("snip", models.mlp(depth=0, batchnorm=False, scale=0.01), synthetic_ctx)
    double = score("snip", models.mlp(depth=0, batchnorm=False, scale=0.02), synthetic_ctx)
    assert double / small == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("name", ["synflow", "grad_norm", "snip"])
def test_a_model_without_weighted_layers_is_an_evaluation_error(name, models, synthetic_ctx):
    arch = models.StubArch(lambda: nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Unflatten(1, (8, 8))))
    with pytest.raises(EvaluationError, match=f"^{name}: the model has no Conv or Linear"):
        score(name, arch, synthetic_ctx)


def test_too_few_outputs_for_the_classes_is_a_config_error(models, synthetic_ctx) -> None:
    arch = dataclasses.replace(models.mlp(), num_classes=5)
    with pytest.raises(ConfigError, match="num_classes"):
        score("grad_norm", arch, synthetic_ctx)


def test_size_proxies_read_the_cost_model(models, synthetic_ctx) -> None:
    arch = models.mlp(width=16, depth=1)
    expected = arch.cost()
    assert get_evaluator("params")(arch, synthetic_ctx) == {"params": float(expected.params)}
    assert get_evaluator("macs")(arch, synthetic_ctx) == {"macs": float(expected.macs)}


def test_dataset_is_a_plain_value(synthetic_ctx) -> None:
    data: Dataset = synthetic_ctx.dataset
    assert data.settings["n_train"] == 128 and len(data.fingerprint) == 64


def test_synflow_does_not_depend_on_the_data(models, synthetic_ctx) -> None:
    arch = models.cnn(channels=8, bits=4)
    other = load_dataset("synthetic", n_train=64, n_val=16, seed=9)
    assert not torch.equal(other.x_train[:64], synthetic_ctx.dataset.x_train[:64])
    assert score("synflow", arch, EvalContext(other)) == score("synflow", arch, synthetic_ctx)


def test_synflow_turns_batchnorm_off(models, synthetic_ctx) -> None:
    # BatchNorm is replaced by the identity, whatever its statistics and affine parameters.
    with_bn = models.mlp(width=16, bias=False, batchnorm=True)
    without = models.mlp(width=16, bias=False, batchnorm=False)

    def odd_batchnorm() -> nn.Module:
        model = with_bn.build()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_var.fill_(9.0)
                m.running_mean.fill_(-3.0)
                nn.init.constant_(m.weight, 5.0)
        return model

    expected = score("synflow", without, synthetic_ctx)
    assert score("synflow", with_bn, synthetic_ctx) == expected
    assert score("synflow", models.StubArch(odd_batchnorm), synthetic_ctx) == expected


def test_naswot_matches_a_kernel_computed_by_hand(models) -> None:
    # Linear(2, 2) = identity, then ReLU: the codes of (1, 1), (1, -1), (-1, -1) are
    # (1, 1), (1, 0), (0, 0); K counts the units on which two samples agree:
    # K = [[2, 1, 0], [1, 2, 1], [0, 1, 2]], det K = 2 * 3 - 1 * 2 = 4.
    def make() -> nn.Module:
        linear = nn.Linear(2, 2)
        with torch.no_grad():
            linear.weight.copy_(torch.eye(2))
            linear.bias.zero_()
        return nn.Sequential(linear, nn.ReLU())

    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    y = torch.zeros(3, dtype=torch.long)
    data = Dataset("hand", x, y, x, y, (2,), 2, "0" * 64)
    arch = models.StubArch(make, input_shape=(2,), num_classes=2)
    ctx = EvalContext(data, batch_size=3)
    assert score("naswot", arch, ctx) == pytest.approx(math.log(4.0), abs=1e-12)
