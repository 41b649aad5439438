"""An evaluation in float64: the exact values a float32 evaluation approximates.

For precision checks (the suite's kernels against the single evaluators, in the tests and in
``benchmarks/proxy_speed.py``): the network is built as usual, so it has the same weights,
then cast to float64, and the context hands out the same batches in float64.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from nas.evaluators._base import EvalContext


class _Float64Context(EvalContext):
    def batch(self, n: int | None = None, shape: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().batch(n, shape)
        return x.double(), y


class _Float64Arch:
    def __init__(self, arch: Any) -> None:
        self.arch = arch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.arch, name)

    def build(self) -> nn.Module:
        return self.arch.build().double()


def in_float64(arch: Any, ctx: EvalContext) -> tuple[Any, EvalContext]:
    """``(arch, ctx)`` for an evaluator to score ``arch`` in float64, same weights, same batch.

    Example:
        >>> from nas.evaluators import EvalContext, get_evaluator, load_dataset
        >>> from nas.search_space import get_space, sample_random
        >>> arch = sample_random(get_space("mlp-small"), 1, seed=0)[0]
        >>> ctx = EvalContext(load_dataset("digits"), batch_size=16)
        >>> wide = get_evaluator("grad_norm")(*in_float64(arch, ctx))["grad_norm"]
        >>> abs(wide / get_evaluator("grad_norm")(arch, ctx)["grad_norm"] - 1) < 1e-3
        True
    """
    fields = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx)}
    return _Float64Arch(arch), _Float64Context(**fields)
