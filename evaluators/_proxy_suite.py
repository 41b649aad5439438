"""The six classic zero-cost proxies from one network build: the evaluator ``zc_suite``.

``synflow``, ``snip``, ``grad_norm``, ``fisher``, ``grasp`` and ``jacob_cov``
(the proxies Abdelfattah et al. 2021 compare) each build the network under
``torch.manual_seed(ctx.seed)`` and run their own passes. Their definitions
share most of the work, so the suite builds the network once and shares it:

* the five batch proxies each run ONE train-mode forward of the fresh network
  on the same ``ctx.batch()``; a forward changes nothing but buffers (BN
  statistics, activation-quantizer ranges), so one forward gives each of them
  its forward values. The input is a leaf that requires a gradient
  (``jacob_cov``'s), and forward hooks keep the ``nn.ReLU`` outputs ``fisher``
  reads;
* one ``autograd.grad(CE loss, weights + ReLU outputs, create_graph=True)``
  gives ``grad_norm``, ``snip``, ``fisher`` and GraSP's ``g``;
* one more backward of the same graph, ``d(sum of logits)/dx``, gives ``jacob_cov``;
* the backward of ``g . stop_grad(g)`` gives GraSP's ``Hg`` and its sum ``w . Hg``
  (and frees the graph); in a float network the suite computes the same sum as
  ``g . Hw`` (``H`` is symmetric), whose second backward is the cheaper one;
* ``synflow`` (data-free, its own pass at batch 1) then runs on the same module:
  its buffers are put back as built, and the module is turned into SynFlow's
  (BatchNorm removed, float64, ``|w|``) in place — the suite's last use of it,
  so nothing is copied and nothing needs undoing.

For a float network (every weighted layer a plain ``nn.Conv2d``/``nn.Linear``,
as NAS-Bench-201's) the batch passes also run faster kernels:

* :class:`~nas.evaluators._double_backward.DoubleBackward` swaps its convolutions,
  batch norms, ReLUs and poolings for ones whose second derivative is written out
  (GraSP's ``Hg`` pass was 57% of the suite's time, most of it in PyTorch's generic
  double backward of batch norm and convolution), and records what ``Hw`` needs;
* images on the CPU are channels-last (oneDNN's own layout: forward and first
  backward about 2x faster), with batch-norm statistics in two passes (the CPU's
  channels-last kernel sums in one float32 pass, 20x less precise).

A quantized network keeps autograd's kernels and ``Hg``: a float32 difference in
the order of a sum moves values across its quantizers' steps, and with
straight-through gradients the second derivative autograd computes need not be
symmetric, so ``g . Hw`` need not equal ``w . Hg`` there.

Every score is accumulated on the device and read back in one host sync at the
end. The per-layer arithmetic is the single evaluators' own (the ``*_terms``
helpers they use), so the values are theirs up to float rounding: in float64 to
1e-9 relative (tested); in float32 the faster kernels round differently, about
as far from the exact values as the singles are (``benchmarks/proxy_speed.py``).
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nas._errors import EvaluationError
from nas.evaluators._base import Direction, EvalContext, Evaluator, register_evaluator
from nas.evaluators._double_backward import ConvCall, DoubleBackward
from nas.evaluators._proxies import (
    _WEIGHTED,
    _check_classes,
    _fresh_model,
    _weights,
    grad_norm_terms,
    snip_terms,
    synflow_metric,
    synflow_terms,
)
from nas.evaluators._proxies_extra import (
    _check_batch,
    fisher_terms,
    grasp_terms,
    hessian_times_gradient,
    jacob_cov_metric,
    jacob_cov_tensors,
)

if TYPE_CHECKING:
    from nas.search_space import AnyArchitecture

SUITE_METRICS = ("synflow", "snip", "grad_norm", "fisher", "grasp", "jacob_cov")
#: The stages :func:`suite_scores` times, in the order they run.
STAGES = ("build", "forward", "gradients", "jacobian", "hessian", "synflow", "scores")


@register_evaluator
class ZCSuite(Evaluator):
    """synflow, snip, grad_norm, fisher, grasp and jacob_cov on one network build.

    Each metric is the one of the evaluator of the same name on the same (arch,
    ctx), with the same direction (see the module docstring for how the passes
    are shared). If any of the six cannot score the architecture, the suite
    raises that proxy's error; a proxy that needs a setting the context lacks
    (``num_classes``, ``batch_size >= 2``) is a :class:`ConfigError` up front.

    Example:
        >>> from nas.evaluators import EvalContext, get_evaluator, load_dataset
        >>> from nas.search_space import get_space, sample_random
        >>> arch = sample_random(get_space("mlp-small"), 1, seed=0)[0]
        >>> ctx = EvalContext(load_dataset("digits"), batch_size=16)
        >>> scores = get_evaluator("zc_suite")(arch, ctx)
        >>> scores["snip"] == get_evaluator("snip")(arch, ctx)["snip"]
        True
    """

    name = "zc_suite"
    description = "synflow, snip, grad_norm, fisher, grasp, jacob_cov: one build, shared passes"
    metrics = SUITE_METRICS
    directions: ClassVar[dict[str, Direction]] = dict.fromkeys(SUITE_METRICS, "maximize")
    uses_batch = True

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        return suite_scores(arch, ctx)


def suite_scores(
    arch: AnyArchitecture, ctx: EvalContext, stages: MutableMapping[str, float] | None = None
) -> dict[str, float]:
    """The metrics of :class:`ZCSuite`; with ``stages``, the seconds of each of :data:`STAGES`.

    ``stages[name]`` is incremented, so one dict can sum many calls. Timing
    synchronizes a CUDA device at each stage's end (only when ``stages`` is given).
    """
    clock = _Clock(stages, ctx.device)
    _check_classes(arch, ctx)
    _check_batch(ctx, "jacob_cov")
    model = _fresh_model(arch, ctx)
    built_buffers = [b.clone() for b in model.buffers()]
    # A quantized network rounds every layer's input to its grid: a float32 difference in
    # the order of a sum moves values across a step, so it keeps autograd's kernels.
    fast = _is_float(model)
    kernels = DoubleBackward(model if fast else None)
    layout = _layout(arch, ctx) if fast else torch.contiguous_format
    model.to(memory_format=layout)  # type: ignore[call-overload]  # not in the stubs
    clock.mark("build")
    values, samples = _batch_scores(model, arch, ctx, clock, kernels if fast else None, layout)
    kernels.remove()  # synflow runs as its own evaluator runs it
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    with torch.no_grad():  # synflow sees the buffers as built, as its own evaluator does
        for buffer, built in zip(model.buffers(), built_buffers, strict=True):
            buffer.copy_(built)
    values["synflow"] = _total(synflow_terms(model, arch, ctx.device), ctx.device)
    clock.mark("synflow")
    keys = list(values)
    numbers = dict(zip(keys, torch.stack([values[k] for k in keys]).tolist(), strict=True))
    scores = {
        "synflow": synflow_metric(numbers["synflow"]),
        "snip": numbers["snip"],
        "grad_norm": numbers["grad_norm"],
        "fisher": numbers["fisher"],
        "grasp": -numbers["grasp"],
        "jacob_cov": jacob_cov_metric(
            numbers["jacob_cov"],
            int(numbers["jacob_constant"]),
            samples,
            bool(numbers["jacob_positive"]),
        ),
    }
    clock.mark("scores")
    return scores


def _is_float(model: nn.Module) -> bool:
    """Whether every weighted layer is a plain (unquantized) ``nn.Conv2d`` or ``nn.Linear``."""
    return all(
        type(m) in (nn.Conv2d, nn.Linear) for m in model.modules() if isinstance(m, _WEIGHTED)
    )


def _layout(arch: AnyArchitecture, ctx: EvalContext) -> torch.memory_format:
    """Channels-last for images on the CPU: oneDNN's native layout, 1.5-2x faster here."""
    image = len(arch.input_shape) == 3
    return torch.channels_last if image and ctx.device == "cpu" else torch.contiguous_format


def _batch_scores(
    model: nn.Module,
    arch: AnyArchitecture,
    ctx: EvalContext,
    clock: _Clock,
    kernels: DoubleBackward | None,
    layout: torch.memory_format,
) -> tuple[dict[str, torch.Tensor], int]:
    """The five batch proxies' sums (float64, on the device) from one train-mode forward.

    ``kernels``: those installed in a float network, ``None`` for autograd's own.

    With ``jacob_cov``'s checks (``jacob_constant``, ``jacob_positive``) and the batch size.
    """
    model.train()
    weights = _weights(model, ZCSuite.name)
    x, y = ctx.batch(shape=arch.input_shape)
    if len(x) < 2:
        raise EvaluationError("jacob_cov: needs 2 train samples, but the data has 1")
    x = x.clone(memory_format=layout).requires_grad_(True)
    with _relu_outputs(model, x) as acts:
        logits = model(x)
    loss = F.cross_entropy(logits, y)
    clock.mark("forward")

    recording: contextlib.AbstractContextManager[list[ConvCall]] = (
        kernels.recording() if kernels is not None else contextlib.nullcontext([])
    )
    with recording as calls:
        grads = torch.autograd.grad(loss, [*weights, *acts], create_graph=True, allow_unused=True)
    weight_grads, act_grads = grads[: len(weights)], grads[len(weights) :]
    used = [(w, g.detach()) for w, g in zip(weights, weight_grads, strict=True) if g is not None]
    sums = {
        "grad_norm": _total(grad_norm_terms([g for _, g in used]), ctx.device),
        "snip": _total(snip_terms([w for w, _ in used], [g for _, g in used]), ctx.device),
        "fisher": _total(fisher_terms(acts, [_detached(g) for g in act_grads]), ctx.device),
    }
    clock.mark("gradients")

    with kernels.inputs_only() if kernels is not None else contextlib.nullcontext():
        (jacobian,) = torch.autograd.grad(logits.sum(), x, retain_graph=True, allow_unused=True)
    if jacobian is None:
        raise EvaluationError("jacob_cov: the output does not depend on the input")
    score, constant, positive = jacob_cov_tensors(jacobian.flatten(1))
    sums.update(jacob_cov=score, jacob_constant=constant.double(), jacob_positive=positive.double())
    clock.mark("jacobian")

    if kernels is not None:  # w . Hg = g . Hw (H symmetric), and Hw is the cheaper product here
        hw = kernels.hessian_times_weights(calls, weights, weight_grads)
        terms = [
            (g.detach() * h).sum() for g, h in zip(weight_grads, hw, strict=True) if g is not None
        ]
    else:
        terms = grasp_terms(weights, hessian_times_gradient(weight_grads, weights))
    sums["grasp"] = _total(terms, ctx.device)  # the metric is minus this
    clock.mark("hessian")
    return sums, len(x)


@contextmanager
def _relu_outputs(model: nn.Module, x: torch.Tensor) -> Iterator[list[torch.Tensor]]:
    """The outputs of every ``nn.ReLU`` call in the block that depend on a parameter.

    Fisher's own pass records the outputs that require a gradient, its input
    requiring none; here ``x`` requires one, so an output computed from ``x``
    through parameter-free layers alone is left out, as Fisher leaves it out.
    """
    acts: list[torch.Tensor] = []

    def record(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        if _reads_a_parameter(output, x):
            acts.append(output)

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.ReLU)]
    if not handles:
        raise EvaluationError("fisher: the model has no nn.ReLU whose channels to score")
    try:
        yield acts
    finally:
        for handle in handles:
            handle.remove()


def _reads_a_parameter(tensor: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether ``tensor`` would require a gradient if ``x`` did not (graph search, stops early)."""
    if tensor.grad_fn is None:
        return tensor.requires_grad and tensor is not x
    seen = {tensor.grad_fn}
    queue = deque([tensor.grad_fn])
    while queue:
        for node, _ in queue.popleft().next_functions:
            if node is None or node in seen:
                continue
            leaf = getattr(node, "variable", None)  # AccumulateGrad: a leaf requiring a gradient
            if leaf is not None:
                if leaf is not x:
                    return True
                continue
            seen.add(node)
            queue.append(node)
    return False


def _detached(grad: torch.Tensor | None) -> torch.Tensor | None:
    return None if grad is None else grad.detach()


def _total(terms: Sequence[torch.Tensor], device: str) -> torch.Tensor:
    """The float64 sum of scalar ``terms`` (each rounded as the single evaluators round it)."""
    if not terms:
        return torch.zeros((), dtype=torch.float64, device=device)
    return torch.stack([t.detach() for t in terms]).double().sum()


class _Clock:
    """Adds the seconds since the last mark to ``stages[name]``; a no-op without ``stages``."""

    def __init__(self, stages: MutableMapping[str, float] | None, device: str) -> None:
        self.stages = stages
        self.device = torch.device(device)
        self.last = time.perf_counter()

    def mark(self, name: str) -> None:
        if self.stages is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.stages[name] = self.stages.get(name, 0.0) + now - self.last
        self.last = now
