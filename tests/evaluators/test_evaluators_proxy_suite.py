"""zc_suite: the six classic proxies from one build, equal to the six single evaluators."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from nas._errors import ConfigError, EvaluationError
from nas.evaluators import EvalContext, ZCSuite, get_evaluator, load_dataset
from nas.evaluators._float64 import in_float64
from nas.evaluators._proxy_suite import STAGES, SUITE_METRICS, suite_scores
from nas.search_space import (
    AnyArchitecture,
    Architecture,
    CellArchitecture,
    LayerSpec,
    get_space,
    sample_random,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # As in test_evaluators_proxies_extra.py: oversubscribed threads make tiny models crawl.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _singles(arch: AnyArchitecture, ctx: EvalContext) -> dict[str, float]:
    return {name: get_evaluator(name)(arch, ctx)[name] for name in SUITE_METRICS}


def _assert_equal(
    arch: AnyArchitecture, ctx: EvalContext, float32_rel: float = 1e-2
) -> dict[str, float]:
    """The suite computes the singles' functions: equal in float64, close in float32.

    In float64 only the order of sums differs. In float32 the suite's channels-last kernels
    and written-out second derivatives (float networks only) round differently from
    autograd's own, about as far from the exact values as the singles are: up to 4e-3
    relative for GraSP's sum of cancelling terms, the suite's g . Hw as the singles' w . Hg
    (benchmarks/results/proxy_speed.md).
    """
    wide, wide_ctx = in_float64(arch, ctx)
    exact = _singles(wide, wide_ctx)
    suite = get_evaluator("zc_suite")(wide, wide_ctx)
    assert set(suite) == set(exact)
    for name, value in exact.items():
        assert suite[name] == pytest.approx(value, rel=1e-9, abs=0), name
    suite, singles = get_evaluator("zc_suite")(arch, ctx), _singles(arch, ctx)
    for name, value in singles.items():
        assert suite[name] == pytest.approx(value, rel=float32_rel, abs=0), name
    return suite


def _cell_context(arch: CellArchitecture, batch_size: int = 16) -> EvalContext:
    data = load_dataset(
        "synthetic", input_shape=arch.input_shape, num_classes=arch.num_classes, n_train=64, n_val=8
    )
    return EvalContext(data, seed=0, batch_size=batch_size)


DIGITS = load_dataset("digits")


def _digits_space(name: str):
    return get_space(name).for_data(DIGITS.input_shape, DIGITS.num_classes)


CASES = [
    *(("nb201", a) for a in sample_random(get_space("nb201").for_data((3, 16, 16), 10), 3, seed=0)),
    *(("cnn-small", a) for a in sample_random(_digits_space("cnn-small"), 2, seed=1)),
    *(("mlp-small", a) for a in sample_random(_digits_space("mlp-small"), 2, seed=1)),
]


@pytest.mark.parametrize(("space", "arch"), CASES, ids=[f"{s}-{a.arch_id}" for s, a in CASES])
def test_suite_equals_the_six_single_evaluators(space: str, arch: AnyArchitecture) -> None:
    if isinstance(arch, CellArchitecture):
        ctx = _cell_context(arch)
    else:
        ctx = EvalContext(DIGITS, seed=0, batch_size=32)
    suite = _assert_equal(arch, ctx)
    assert all(math.isfinite(v) for v in suite.values()), suite


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantized_network_equals_the_singles(bits: int) -> None:
    # The activation quantizers calibrate on the first pass they see: the train-mode batch for
    # the batch proxies, the all-ones input for synflow, which must see them as built.
    layer = LayerSpec(type="conv3x3", width=16, wbits=bits, abits=max(bits, 4))
    arch = Architecture(input_shape=(1, 8, 8), num_classes=10, stages=((layer, layer),))
    ctx = EvalContext(DIGITS, seed=3, batch_size=32)
    _assert_equal(arch, ctx, float32_rel=1e-9)  # a quantized network keeps autograd's kernels


def test_cell_with_constant_nodes_equals_the_singles() -> None:
    # Nodes 1 and 2 have no input (zeros): the ReLU of edge 4 reads a constant, which Fisher
    # skips, and the weights of edge 4's convolution get no gradient.
    text = "|none~0|+|none~0|none~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    arch = CellArchitecture.from_string(text, input_shape=(3, 8, 8), cells_per_stage=2)
    ctx = _cell_context(arch)
    _assert_equal(arch, ctx)


def test_relu_reading_the_input_is_left_out_as_fisher_leaves_it_out(models, synthetic_ctx) -> None:
    # The suite's input requires a gradient (jacob_cov's); a ReLU computed from it alone must
    # still be skipped, as in Fisher's own pass, where it requires none.
    def make() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Flatten(), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
        )

    arch = models.StubArch(make)
    _assert_equal(arch, synthetic_ctx)


def test_suite_is_deterministic_seeded_and_works_under_no_grad(models, synthetic_ctx) -> None:
    arch = models.cnn(channels=8, bits=4)
    suite = get_evaluator("zc_suite")
    first = suite(arch, synthetic_ctx)
    torch.rand(10)  # moving the global RNG must not change the result
    with torch.no_grad():
        assert suite(arch, synthetic_ctx) == first
    other = suite(arch, dataclasses.replace(synthetic_ctx, seed=1))
    assert all(other[name] != first[name] for name in SUITE_METRICS)


def test_metrics_and_directions_are_the_singles() -> None:
    suite = get_evaluator("zc_suite")
    assert isinstance(suite, ZCSuite) and suite.uses_batch
    assert suite.metrics == SUITE_METRICS
    for name in SUITE_METRICS:
        assert suite.directions[name] == get_evaluator(name).directions[name]


def test_stages_are_timed_and_change_nothing(models, synthetic_ctx) -> None:
    arch = models.mlp(bits=4)
    stages: dict[str, float] = {}
    with torch.enable_grad():
        first = suite_scores(arch, synthetic_ctx, stages)
        suite_scores(arch, synthetic_ctx, stages)
    assert list(stages) == list(STAGES)
    assert all(seconds > 0 for seconds in stages.values())
    assert first == get_evaluator("zc_suite")(arch, synthetic_ctx)


def test_a_batch_of_one_is_a_config_error(models, synthetic_ctx) -> None:
    with pytest.raises(ConfigError) as info:
        get_evaluator("zc_suite")(models.mlp(), dataclasses.replace(synthetic_ctx, batch_size=1))
    assert info.value.field == "batch_size"


def test_too_few_outputs_is_a_config_error(models, synthetic_ctx) -> None:
    arch = dataclasses.replace(models.mlp(), num_classes=5)
    with pytest.raises(ConfigError, match="num_classes"):
        get_evaluator("zc_suite")(arch, synthetic_ctx)


def test_a_proxy_that_cannot_score_fails_the_suite_with_its_reason(models, synthetic_ctx) -> None:
    with pytest.raises(EvaluationError, match=r"^fisher: the model has no nn\.ReLU"):
        get_evaluator("zc_suite")(models.mlp(relu=False), synthetic_ctx)
    # Node 3 has no input: the logits do not depend on the image.
    arch = CellArchitecture.from_string(
        "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|none~0|none~1|none~2|",
        input_shape=(3, 8, 8),
        cells_per_stage=1,
    )
    ctx = _cell_context(arch)
    message = "jacob_cov: the output does not depend on the input"
    with pytest.raises(EvaluationError, match=message):
        get_evaluator("jacob_cov")(arch, ctx)
    with pytest.raises(EvaluationError, match=message):
        get_evaluator("zc_suite")(arch, ctx)


@pytest.mark.gpu
def test_suite_equals_the_singles_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    arch = sample_random(get_space("nb201").for_data((3, 16, 16), 10), 1, seed=0)[0]
    ctx = dataclasses.replace(_cell_context(arch), device="cuda")
    suite, singles = get_evaluator("zc_suite")(arch, ctx), _singles(arch, ctx)
    for name, value in singles.items():  # cuDNN may pick other kernels run to run
        assert suite[name] == pytest.approx(value, rel=1e-4), name
