"""Zero-cost proxies: scores of an untrained network that rank candidates before training.

Each proxy builds a fresh model under ``torch.manual_seed(ctx.seed)``, so the
same (arch, seed) gives the same number. Per-layer bit-widths enter through the
built model itself: its weighted layers fake-quantize their weight and input in
``forward``, so every forward value and every straight-through gradient below is
that of the quantized network. "Weighted layers" are the ``nn.Conv1d/2d/3d`` and
``nn.Linear`` modules (the builder's quantized layers subclass them); their
``.weight`` is the float master weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nas._errors import ConfigError, EvaluationError
from nas.evaluators._base import Direction, EvalContext, Evaluator, register_evaluator

if TYPE_CHECKING:
    from nas.search_space import AnyArchitecture

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@register_evaluator
class SynFlow(Evaluator):
    """SynFlow (Tanaka et al., 2020, "Pruning neural networks without any data by
    iteratively conserving synaptic flow"), data-free, as ranked by Abdelfattah et al. 2021.

    Data-free: no batch is read, so the score does not depend on the data set.
    "Batch-norm off" is literal: every BatchNorm layer is replaced by
    ``nn.Identity`` (Abdelfattah et al. score synflow with ``bn=False``); eval
    mode with fresh running stats would be the identity only up to
    ``1/sqrt(1 + eps)`` and the affine part. The model is then cast to float64
    and put in eval mode, and every parameter is replaced by its absolute value.
    With an all-ones input of batch 1, ``R = sum(f(1))`` and
    ``score = sum over weighted layers of sum(w * dR/dw)``, ``w`` the float
    master weight (after ``abs``). The metric ``synflow`` is ``log(score)``
    because the score spans hundreds of orders of magnitude; ``-inf`` when the
    score is 0. The weights and inputs are fake-quantized at each layer's bits in
    the forward pass (each activation quantizer calibrates its range on the
    all-ones pass it sees), and dR/dw is the straight-through gradient through
    that quantizer. Torch's ``fake_quantize_per_{tensor,channel}_affine`` accept
    float64 input as long as the scale stays float32, which the builder ensures
    (``.float()`` on it).

    Version 2: BatchNorm replaced by the identity (version 1 kept it in eval
    mode, which scaled each of its outputs by ``1/sqrt(1 + 1e-5)``).
    """

    name = "synflow"
    version = 2
    description = "log SynFlow score (Tanaka et al. 2020): data-free, |weights|, all-ones input"
    metrics = ("synflow",)
    directions: ClassVar[dict[str, Direction]] = {"synflow": "maximize"}

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        terms = synflow_terms(_fresh_model(arch, ctx), arch, ctx.device)
        return {"synflow": synflow_metric(sum(float(t) for t in terms))}


def synflow_terms(model: nn.Module, arch: AnyArchitecture, device: str) -> list[torch.Tensor]:
    """``sum(w * dR/dw)`` of each weighted layer of ``model`` (float64 scalars); see SynFlow.

    Turns ``model`` into SynFlow's network in place first: BatchNorm replaced by
    the identity, float64, eval mode, every parameter replaced by its absolute value.
    """
    model = _without_batchnorm(model).double().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.abs_()
    x = torch.ones((1, *arch.input_shape), dtype=torch.float64, device=device)
    weights = _weights(model, "synflow")
    grads = _grads(model(x).sum(), weights)
    return [(w.detach() * g).sum() for w, g in zip(weights, grads, strict=True)]


def synflow_metric(score: float) -> float:
    """The metric ``synflow`` of the summed score: its log, ``-inf`` at 0; negative is an error."""
    if score < 0:
        raise EvaluationError(f"synflow: score is negative ({score:.3g})")
    return math.log(score) if score > 0 else -math.inf


@register_evaluator
class NASWOT(Evaluator):
    """NASWOT (Mellor et al., 2021, "Neural architecture search without training").

    Forward hooks on every ``nn.ReLU`` record the binary code ``x > 0`` of each
    sample, flattened and concatenated over the layers into ``C`` (batch x
    units). With ``K = C C^T + (1 - C)(1 - C)^T`` (units on which two samples
    agree), the metric ``naswot`` is ``log|det K|`` (``slogdet``, in float64);
    ``-inf`` when K is singular, e.g. when two samples share a code. The batch is
    ``ctx.batch_size`` train samples chosen by the seed; the model runs in train
    mode (batch statistics), without gradients. Bits enter through the
    fake-quantized forward pass that decides each unit's sign.
    """

    name = "naswot"
    description = "log|det K| of ReLU codes over a batch (Mellor et al. 2021)"
    metrics = ("naswot",)
    directions: ClassVar[dict[str, Direction]] = {"naswot": "maximize"}
    uses_batch = True

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        model = _fresh_model(arch, ctx).train()
        x, _ = ctx.batch(shape=arch.input_shape)
        codes = _relu_codes(model, x).double()
        kernel = codes @ codes.T + (1 - codes) @ (1 - codes).T
        return {"naswot": float(torch.linalg.slogdet(kernel).logabsdet)}


@register_evaluator
class GradNorm(Evaluator):
    """Grad-norm (Abdelfattah et al., 2021, "Zero-cost proxies for lightweight NAS").

    Cross-entropy ``L`` on ``ctx.batch_size`` train samples, model in train
    mode; the metric ``grad_norm`` is ``sum over weighted layers of ||dL/dw||_2``
    (one Frobenius norm per layer). The gradients are the straight-through
    gradients of the fake-quantized network, so the bits enter through the
    quantized forward values and the quantizers' clipping masks.
    """

    name = "grad_norm"
    description = "sum of per-layer ||dL/dw|| on one batch (Abdelfattah et al. 2021)"
    metrics = ("grad_norm",)
    directions: ClassVar[dict[str, Direction]] = {"grad_norm": "maximize"}
    uses_batch = True

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        _, grads = _loss_grads(arch, ctx, self.name)
        return {"grad_norm": sum(float(t) for t in grad_norm_terms(grads))}


def grad_norm_terms(grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``||dL/dw||_2`` of each weighted layer (scalar tensors); their sum is ``grad_norm``."""
    return [g.norm() for g in grads]


@register_evaluator
class SNIP(Evaluator):
    """SNIP saliency (Lee et al., 2019, "SNIP: single-shot network pruning based on
    connection sensitivity"), summed over the network as in Abdelfattah et al. 2021.

    Cross-entropy ``L`` on ``ctx.batch_size`` train samples, model in train
    mode; the metric ``snip`` is ``sum over weighted layers of sum |w * dL/dw|``.
    ``w`` is the float master weight and ``dL/dw`` the straight-through gradient
    of the fake-quantized network, which is how the bits enter.
    """

    name = "snip"
    description = "sum of |w * dL/dw| on one batch (Lee et al. 2019)"
    metrics = ("snip",)
    directions: ClassVar[dict[str, Direction]] = {"snip": "maximize"}
    uses_batch = True

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        weights, grads = _loss_grads(arch, ctx, self.name)
        return {"snip": sum(float(t) for t in snip_terms(weights, grads))}


def snip_terms(
    weights: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """``sum |w * dL/dw|`` of each weighted layer (scalar tensors); their sum is ``snip``."""
    return [(w.detach() * g).abs().sum() for w, g in zip(weights, grads, strict=True)]


def _fresh_model(arch: AnyArchitecture, ctx: EvalContext) -> nn.Module:
    torch.manual_seed(ctx.seed)
    return arch.build().to(ctx.device)


def _weights(model: nn.Module, proxy: str) -> list[torch.Tensor]:
    weights = [m.weight for m in model.modules() if isinstance(m, _WEIGHTED)]
    if not weights:
        raise EvaluationError(f"{proxy}: the model has no Conv or Linear layer to score")
    return weights


def _grads(
    output: torch.Tensor | Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    cotangents: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """d output / d each weight; a weight the output does not use gets zeros.

    With several outputs, the gradient of the sum of ``<output, cotangent>``.
    """
    grads = torch.autograd.grad(output, list(weights), cotangents, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads, strict=True)]


def _without_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm layer (1d/2d/3d) replaced, in place, by ``nn.Identity``."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, child_name, nn.Identity())
    return model


def _check_classes(arch: AnyArchitecture, ctx: EvalContext) -> None:
    if arch.num_classes < ctx.dataset.num_classes:
        raise ConfigError(
            "num_classes",
            f"the architecture's {arch.num_classes} outputs must cover the data's "
            f"{ctx.dataset.num_classes} classes",
        )


def _loss(
    arch: AnyArchitecture, ctx: EvalContext, proxy: str
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Weights and cross-entropy loss of a fresh train-mode model on one batch (with graph)."""
    _check_classes(arch, ctx)
    model = _fresh_model(arch, ctx).train()
    x, y = ctx.batch(shape=arch.input_shape)
    weights = _weights(model, proxy)
    return weights, F.cross_entropy(model(x), y)


def _loss_grads(
    arch: AnyArchitecture, ctx: EvalContext, proxy: str
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Weights and cross-entropy gradients of a fresh train-mode model on one batch."""
    weights, loss = _loss(arch, ctx, proxy)
    return weights, _grads(loss, weights)


def _relu_codes(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Binary codes (batch x units) of every nn.ReLU's output sign, layers concatenated."""
    codes: list[torch.Tensor] = []

    def record(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        codes.append((output > 0).flatten(1))

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.ReLU)]
    if not handles:
        raise EvaluationError("naswot: the model has no nn.ReLU to take codes from")
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(codes, dim=1)
