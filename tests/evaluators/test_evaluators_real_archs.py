"""Every registered evaluator on real Architectures from the built-in spaces."""

from __future__ import annotations

import math

import pytest
import torch

from nas.evaluators import EVALUATORS, EvalContext, get_evaluator, load_dataset
from nas.search_space import (
    AnyArchitecture,
    Architecture,
    CellArchitecture,
    LayerSpec,
    get_space,
    sample_random,
)

MODEL_PROXIES = ["synflow", "naswot", "grad_norm", "snip"]


def _context(arch: AnyArchitecture, device: str = "cpu") -> EvalContext:
    data = load_dataset(
        "synthetic", input_shape=arch.input_shape, num_classes=arch.num_classes, n_train=48, n_val=8
    )
    return EvalContext(data, seed=0, device=device, batch_size=16)


#: Every evaluator but the measured ones: training (tests/evaluators/test_evaluators_training.py)
#: and latency (tests/evaluators/test_evaluators_latency.py), whose numbers vary run to run.
SCORERS = [name for name in EVALUATORS.names() if name not in ("train", "latency")]


def _scorers(arch: AnyArchitecture) -> list[str]:
    """The scorers that take ``arch``: the nb201 table holds NAS-Bench-201 cells only."""
    return [n for n in SCORERS if n != "nb201" or isinstance(arch, CellArchitecture)]


def _all_scores(arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
    scores: dict[str, float] = {}
    for name in _scorers(arch):
        scores.update(get_evaluator(name)(arch, ctx))
    return scores


@pytest.mark.parametrize(
    ("space", "n"), [("cnn-small", 2), ("mlp-small", 2), ("cnn-mobile", 1), ("nb201", 1)]
)
def test_every_evaluator_scores_sampled_architectures(space: str, n: int) -> None:
    for arch in sample_random(get_space(space), n, seed=3):
        ctx = _context(arch)
        scores = _all_scores(arch, ctx)
        assert set(scores) == {m for name in _scorers(arch) for m in get_evaluator(name).metrics}
        assert all(math.isfinite(value) for value in scores.values()), scores
        assert _all_scores(arch, ctx) == scores


def test_vector_architecture_reads_image_data() -> None:
    arch = sample_random(get_space("mlp-small"), 1, seed=0)[0]
    ctx = EvalContext(load_dataset("digits"), batch_size=32)
    assert arch.input_shape == (64,)
    assert math.isfinite(get_evaluator("naswot")(arch, ctx)["naswot"])


def _conv_net(bits: int) -> Architecture:
    layer = LayerSpec(type="conv3x3", width=16, wbits=bits, abits=max(bits, 4))
    return Architecture(input_shape=(1, 8, 8), num_classes=10, stages=((layer, layer),))


def test_bits_enter_through_the_built_model() -> None:
    low, full = _conv_net(2), _conv_net(32)
    ctx = _context(full)
    low_scores, full_scores = _all_scores(low, ctx), _all_scores(full, ctx)
    for name in MODEL_PROXIES:
        assert low_scores[name] != full_scores[name], name
    assert low_scores["params"] == full_scores["params"]


@pytest.mark.gpu
def test_cuda_agrees_with_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    arch = sample_random(get_space("cnn-small"), 1, seed=0)[0]
    cpu, gpu = _all_scores(arch, _context(arch)), _all_scores(arch, _context(arch, "cuda"))
    for name, value in cpu.items():
        assert gpu[name] == pytest.approx(value, rel=1e-2), name
