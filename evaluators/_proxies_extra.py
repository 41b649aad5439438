"""More zero-cost proxies: GraSP, Fisher, Jacobian covariance, Zen-score and ZiCo.

The conventions of :mod:`nas.evaluators._proxies` hold here too: each proxy
builds a fresh model under ``torch.manual_seed(ctx.seed)``, so the same (arch,
seed) gives the same number; per-layer bit-widths enter through the built model,
whose weighted layers fake-quantize their weight and input in ``forward``, so
every forward value is that of the quantized network and every gradient is the
straight-through (STE) gradient through its quantizers, clipping masks
included. "Weighted layers" are the ``nn.Conv1d/2d/3d`` and ``nn.Linear``
modules; where a score multiplies by a weight ``w``, ``w`` is the float master
weight (``module.weight``), never its quantized copy, as in ``snip``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from nas._errors import ConfigError, EvaluationError
from nas.evaluators._base import Direction, EvalContext, Evaluator, register_evaluator
from nas.evaluators._proxies import (
    _WEIGHTED,
    _check_classes,
    _fresh_model,
    _grads,
    _loss,
    _weights,
)

if TYPE_CHECKING:
    from nas.search_space import AnyArchitecture

_BATCHNORM = nn.modules.batchnorm._BatchNorm


@register_evaluator
class GraSP(Evaluator):
    """GraSP (Wang et al., 2020, "Picking winning tickets before training by preserving
    gradient flow"), summed over the network as in Abdelfattah et al. 2021.

    Cross-entropy ``L`` on ``ctx.batch_size`` train samples, model in train
    mode; ``g = dL/dw`` and ``Hg`` is the Hessian-vector product
    ``d(g . stop_grad(g))/dw`` by double backprop on the same forward pass. The
    metric ``grasp`` is ``-sum over weighted layers of sum(w * Hg)`` with ``w``
    the float master weight (Abdelfattah et al.'s sign: higher is better).

    Bits: torch's fake-quantize ops are twice differentiable (their backward
    is ``grad * mask``, a product with a constant mask), so autograd's double
    backward gives the *straight-through Hessian*: for a layer ``y = f(q(w))``,
    ``Hg = M * H_q (M * g)`` where ``H_q`` is the Hessian of ``L`` with respect
    to the quantized weights, evaluated at the quantized network, and ``M`` the
    quantizer's in-range mask; activation quantizers pass the same way. No
    finite difference is used: a finite difference of gradients across a
    quantizer would mostly measure rounding steps.
    """

    name = "grasp"
    description = "-sum(w * Hg), Hessian-gradient product (Wang et al. 2020)"
    metrics = ("grasp",)
    directions: ClassVar[dict[str, Direction]] = {"grasp": "maximize"}
    uses_batch = True

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        weights, loss = _loss(arch, ctx, self.name)
        terms = grasp_terms(weights, hessian_gradient_product(loss, weights))
        return {"grasp": -sum(float(t) for t in terms)}


def grasp_terms(weights: Sequence[torch.Tensor], hg: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``sum(w * Hg)`` of each weighted layer (scalar tensors); ``grasp`` is minus their sum."""
    return [(w.detach() * h).sum() for w, h in zip(weights, hg, strict=True)]


def hessian_gradient_product(loss: torch.Tensor, weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """``Hg`` per weight: ``H`` the Hessian of ``loss`` in all weights, ``g`` its gradient.

    Double backprop: the gradient of ``sum(g * stop_grad(g))``; zeros where
    the gradient does not depend on a weight.
    """
    grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
    return hessian_times_gradient(grads, weights)


def hessian_times_gradient(
    grads: Sequence[torch.Tensor | None], weights: list[torch.Tensor]
) -> list[torch.Tensor]:
    """``Hg`` from ``grads``, the gradient of a loss in ``weights`` taken with ``create_graph``."""
    terms = [(g * g.detach()).sum() for g in grads if g is not None and g.requires_grad]
    if not terms:  # the gradient does not depend on the weights: H g = 0
        return [torch.zeros_like(w) for w in weights]
    return _grads(torch.stack(terms).sum(), weights)


@register_evaluator
class Fisher(Evaluator):
    """Fisher pruning saliency (Theis et al., 2018, "Faster gaze prediction with dense
    networks and Fisher pruning"), summed over the network as in Abdelfattah et al. 2021.

    The activations ``a`` are the outputs of every ``nn.ReLU`` module (the
    feature maps a channel-pruning mask would multiply). Cross-entropy ``L``
    (mean over the batch) on ``ctx.batch_size`` train samples, model in train
    mode. For channel ``c`` of a ReLU output,
    ``fisher_c = 0.5 * mean over samples n of (sum over positions of a * dL/da)^2``
    (a vector ``(N, C)`` output has one position per channel); the metric
    ``fisher`` is the sum over channels and ReLU modules (each call of a module
    counts once). Bits enter through the fake-quantized forward values ``a``
    and the straight-through gradients ``dL/da`` (which the next layer's input
    quantizer masks where it clips).
    """

    name = "fisher"
    description = "sum of channel Fisher saliencies of ReLU outputs (Theis et al. 2018)"
    metrics = ("fisher",)
    directions: ClassVar[dict[str, Direction]] = {"fisher": "maximize"}
    uses_batch = True

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        _check_classes(arch, ctx)
        model = _fresh_model(arch, ctx).train()
        x, y = ctx.batch(shape=arch.input_shape)
        acts: list[torch.Tensor] = []

        def record(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            if output.requires_grad:  # a ReLU of a constant (a cell node with no inputs) has none
                acts.append(output)

        handles = [
            m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.ReLU)
        ]
        if not handles:
            raise EvaluationError("fisher: the model has no nn.ReLU whose channels to score")
        try:
            loss = F.cross_entropy(model(x), y)
        finally:
            for handle in handles:
                handle.remove()
        terms = fisher_terms(acts, torch.autograd.grad(loss, acts, allow_unused=True))
        return {"fisher": sum((float(t) for t in terms), 0.0)}


def fisher_terms(
    acts: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None]
) -> list[torch.Tensor]:
    """The Fisher saliency of each ReLU output (float64 scalars); their sum is ``fisher``.

    An output the loss does not use (``grad`` None) has zero saliency and no term.
    """
    terms = []
    for act, grad in zip(acts, grads, strict=True):
        if grad is None:
            continue
        per_channel = (act * grad).detach().double()
        if per_channel.dim() > 2:
            per_channel = per_channel.flatten(2).sum(2)
        terms.append(0.5 * per_channel.pow(2).mean(0).sum())
    return terms


@register_evaluator
class JacobCov(Evaluator):
    """Jacobian covariance (Mellor et al., 2020, "Neural architecture search without
    training", arXiv v1), as in Abdelfattah et al. 2021.

    ``ctx.batch_size`` train samples, model in train mode (batch statistics, as
    in both papers' code). ``J`` is the gradient of the sum of all outputs
    (logits) over the batch with respect to the input, one flattened row per
    sample (batch x input size); ``C = corrcoef(J)`` (rows are variables),
    ``v`` its eigenvalues (``eigvalsh``, float64) and the metric ``jacob_cov``
    is ``-sum(log(v + k) + 1/(v + k))`` with ``k = 1e-5``. Bits enter through
    the fake-quantized forward pass and the straight-through input gradients.
    A sample whose Jacobian row is constant (e.g. all zero) makes ``C``
    undefined: :class:`EvaluationError`. ``batch_size`` 1 is a :class:`ConfigError`.
    """

    name = "jacob_cov"
    description = "-sum(log(v+k) + 1/(v+k)) of the input-Jacobian correlations (Mellor 2020 v1)"
    metrics = ("jacob_cov",)
    directions: ClassVar[dict[str, Direction]] = {"jacob_cov": "maximize"}
    uses_batch = True
    k: ClassVar[float] = 1e-5

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        _check_batch(ctx, self.name)
        model = _fresh_model(arch, ctx).train()
        x, _ = ctx.batch(shape=arch.input_shape)
        if len(x) < 2:
            raise EvaluationError("jacob_cov: needs 2 train samples, but the data has 1")
        x = x.clone().requires_grad_(True)
        (jacobian,) = torch.autograd.grad(model(x).sum(), x, allow_unused=True)
        if jacobian is None:
            raise EvaluationError("jacob_cov: the output does not depend on the input")
        return {"jacob_cov": jacob_cov_score(jacobian.flatten(1))}


def jacob_cov_score(jacobian: torch.Tensor, k: float = JacobCov.k) -> float:
    """``-sum(log(v + k) + 1/(v + k))``, ``v`` the eigenvalues of ``corrcoef(jacobian)``."""
    score, constant, positive = jacob_cov_tensors(jacobian, k)
    return jacob_cov_metric(float(score), int(constant), len(jacobian), bool(positive))


def jacob_cov_tensors(
    jacobian: torch.Tensor, k: float = JacobCov.k
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The score of :func:`jacob_cov_score` and what decides whether it stands, on the device.

    ``(score, constant, positive)``: the number of constant rows (when there is
    one, the eigenvalues are those of the identity, so that no NaN reaches
    ``eigvalsh``) and whether every ``v + k`` is finite and positive. No host sync.
    """
    rows = jacobian.detach().double()
    constant = (rows.std(dim=1) == 0).sum()
    corr = torch.corrcoef(rows)
    identity = torch.eye(len(rows), dtype=corr.dtype, device=corr.device)
    corr = torch.where(constant > 0, identity, corr)
    eigenvalues = torch.linalg.eigvalsh(corr) + k
    positive = torch.isfinite(eigenvalues).all() & (eigenvalues > 0).all()
    return -(eigenvalues.log() + eigenvalues.reciprocal()).sum(), constant, positive


def jacob_cov_metric(score: float, constant: int, samples: int, positive: bool) -> float:
    """``score`` if it stands, else the :class:`EvaluationError` that says why not."""
    if constant:
        raise EvaluationError(
            f"jacob_cov: the input Jacobian of {constant} of {samples} samples is constant, "
            "so their correlations are undefined"
        )
    if not positive:
        raise EvaluationError("jacob_cov: the Jacobian correlation matrix is not positive")
    return score


@register_evaluator
class Zen(Evaluator):
    """Zen-score (Lin et al., 2021, "Zen-NAS: a zero-shot NAS for high-performance
    image recognition"), data-free.

    As in the paper (and its code), every weighted layer's weight is drawn from
    ``N(0, 1)`` and its bias set to 0, BatchNorm weights to 1 and biases to 0.
    The input ``x`` is ``ctx.batch_size`` samples of ``N(0, 1)`` noise of the
    architecture's input shape, NOT the data (the score is data-free; the data
    set only enters the fingerprint), and ``x' = x + alpha * eps`` with
    ``alpha = 0.01`` and ``eps ~ N(0, 1)``; both are drawn from a generator
    seeded with ``ctx.seed``. ``f`` is ``model.features`` (the network before
    global pooling and the head; the whole model if it has no ``features``).
    ``Delta = mean over samples of ||f(x) - f(x')||_F`` (the paper's norm; its
    code uses the L1 norm).

    BatchNorm runs in train mode (batch statistics) in both passes, so
    ``batch_size`` must be at least 2. For BN layer ``i`` with per-channel
    batch variances ``var_ij`` of its input on the ``x`` pass (biased, as BN
    normalizes with; the paper's code reads ``running_var`` instead),
    ``sigma_i = sqrt(mean over channels j of var_ij)``. The metric ``zen`` is
    ``log(Delta / alpha) + sum over BN layers of log(sigma_i)``; ``-inf`` when
    ``Delta`` or a ``sigma_i`` is 0. Dividing by ``alpha`` (a finite-difference
    gradient norm) adds the constant ``log(100)`` to the paper's ``log(Delta)``,
    so the ranking is the paper's.

    Bits: the fake-quantized forward pass. Everything but BatchNorm is in eval
    mode, so each activation quantizer calibrates its range on the ``x`` pass
    and keeps it for ``x'``: the difference is that of one quantized network.
    Caveat: with coarse activation bits a perturbation of 0.01 moves some
    values across a rounding step, a jump far larger than the smooth response,
    so ``Delta`` — and the score — grows as activation bits shrink.
    """

    name = "zen"
    description = "log(E||f(x)-f(x+0.01e)||/0.01) + sum log BN std (Lin et al. 2021)"
    metrics = ("zen",)
    directions: ClassVar[dict[str, Direction]] = {"zen": "maximize"}
    uses_batch = True
    alpha: ClassVar[float] = 0.01

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        _check_batch(ctx, self.name)
        model = _fresh_model(arch, ctx)
        _gaussian_init(model)
        model.eval()
        for module in model.modules():
            if isinstance(module, _BATCHNORM):
                module.train()
        features = getattr(model, "features", None)
        features = features if isinstance(features, nn.Module) else model
        gen = torch.Generator().manual_seed(ctx.seed)
        shape = (ctx.batch_size, *arch.input_shape)
        x = torch.randn(shape, generator=gen).to(ctx.device)
        x_perturbed = x + self.alpha * torch.randn(shape, generator=gen).to(ctx.device)
        sigmas: list[torch.Tensor] = []

        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            dims = [d for d in range(inputs[0].dim()) if d != 1]
            sigmas.append(inputs[0].double().var(dim=dims, unbiased=False).mean().sqrt())

        handles = [
            m.register_forward_pre_hook(record)
            for m in model.modules()
            if isinstance(m, _BATCHNORM)
        ]
        with torch.no_grad():
            try:
                out = features(x)
            finally:
                for handle in handles:
                    handle.remove()
            diff = (out - features(x_perturbed)).flatten(1).double()
        delta = float(diff.norm(dim=1).mean())
        log_sigmas = sum((_log(float(s)) for s in sigmas), 0.0)
        return {"zen": _log(delta / self.alpha) + log_sigmas}


def _check_batch(ctx: EvalContext, proxy: str) -> None:
    if ctx.batch_size < 2:
        raise ConfigError(
            "batch_size", f"{proxy} compares samples, so it needs batch_size >= 2, but got 1"
        )


def _gaussian_init(model: nn.Module) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _WEIGHTED):
                nn.init.normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, _BATCHNORM) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def _log(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf


class ZiCoSettings(BaseModel):
    """``batches``: how many mini-batches the ctx batch is split into (the paper uses 2)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    batches: int = Field(default=2, ge=2)


@register_evaluator
class ZiCo(Evaluator):
    """ZiCo (Li et al., 2023, "ZiCo: zero-shot NAS via inverse coefficient of variation
    on gradients").

    The ``ctx.batch_size`` train samples are split in order into ``batches``
    (default 2, as in the paper) mini-batches of ``batch_size // batches``
    samples (a remainder is dropped). Model in train mode; for each mini-batch
    ``b`` the cross-entropy gradient ``g_b = dL_b/dw`` of every weighted layer
    (a fresh gradient per mini-batch: the authors' code accumulates ``.grad``
    across batches, the paper's definition does not). Per weight,
    ``mu = mean_b |g_b|`` and ``sigma = std_b g_b`` (population std, as the
    authors' ``np.std``). The metric ``zico`` is
    ``sum over layers l of log(sum over weights of l with sigma > 0 of mu / sigma)``;
    a layer without any weight whose gradient varies is skipped (as in the
    authors' code), and ``-inf`` if every layer is skipped (their code returns
    0, which would rank such a network above one with a negative score).

    Bits enter through the fake-quantized forward pass and the STE gradients
    of the float master weights. The activation quantizers update their range
    (an EMA, as in training) with each mini-batch.
    """

    name = "zico"
    description = "sum over layers of log sum mean|g|/std(g) over mini-batches (Li et al. 2023)"
    metrics = ("zico",)
    directions: ClassVar[dict[str, Direction]] = {"zico": "maximize"}
    uses_batch = True
    Settings = ZiCoSettings

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        _check_classes(arch, ctx)
        batches: int = self._settings.batches  # type: ignore[attr-defined]
        size = ctx.batch_size // batches
        if size < 2:
            raise ConfigError(
                "batch_size",
                f"zico splits the batch into {batches} mini-batches of at least 2 samples, "
                f"so it needs batch_size >= {2 * batches}, but got {ctx.batch_size}",
            )
        model = _fresh_model(arch, ctx).train()
        x, y = ctx.batch(shape=arch.input_shape)
        if len(y) < 2 * batches:
            raise EvaluationError(
                f"zico: needs {2 * batches} train samples for {batches} mini-batches, "
                f"but the data has {len(y)}"
            )
        size = len(y) // batches
        weights = _weights(model, self.name)
        per_batch = [
            _grads(F.cross_entropy(model(x[i : i + size]), y[i : i + size]), weights)
            for i in range(0, size * batches, size)
        ]
        layers = [torch.stack(grads).flatten(1).double() for grads in zip(*per_batch, strict=True)]
        return {"zico": zico_score(layers)}


def zico_score(layers: list[torch.Tensor]) -> float:
    """ZiCo of per-layer gradients, each ``(batches, weights)``; see :class:`ZiCo`."""
    total, counted = 0.0, 0
    for grads in layers:
        sigma = grads.std(dim=0, unbiased=False)
        mu = grads.abs().mean(dim=0)
        varies = sigma > 0
        if bool(varies.any()):
            total += math.log(float((mu[varies] / sigma[varies]).sum()))
            counted += 1
    return total if counted else -math.inf
