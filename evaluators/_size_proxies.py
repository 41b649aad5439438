"""Baseline proxies read from the analytic cost model: no network is built or run.

Abdelfattah et al. 2021 ("Zero-cost proxies for lightweight NAS") report #params
and FLOPs as the baselines every zero-cost proxy should beat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from nas.evaluators._base import Direction, EvalContext, Evaluator, register_evaluator

if TYPE_CHECKING:
    from nas.search_space import AnyArchitecture


@register_evaluator
class Params(Evaluator):
    """Parameter count from ``arch.cost()`` (no model is built), as an accuracy proxy.

    Larger networks are usually more accurate, so as a *proxy of accuracy* the
    direction is ``maximize`` (Abdelfattah et al. 2021 report #params as a
    baseline proxy). To penalise size, use the cost model as an objective or a
    constraint instead. Bits do not enter: the count is the same at any width.
    """

    name = "params"
    description = "parameter count from the cost model (baseline proxy; larger is better)"
    metrics = ("params",)
    directions: ClassVar[dict[str, Direction]] = {"params": "maximize"}

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        return {"params": float(arch.cost().params)}


@register_evaluator
class MACs(Evaluator):
    """Multiply-accumulate count from ``arch.cost()`` (no model is built), as an accuracy proxy.

    Direction ``maximize`` for the same reason as :class:`Params`
    (Abdelfattah et al. 2021 report FLOPs as a baseline proxy). Bits do not
    enter; ``arch.cost().bitops`` is the bit-aware count.
    """

    name = "macs"
    description = "multiply-accumulates from the cost model (baseline proxy; larger is better)"
    metrics = ("macs",)
    directions: ClassVar[dict[str, Direction]] = {"macs": "maximize"}

    def _evaluate(self, arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
        return {"macs": float(arch.cost().macs)}
