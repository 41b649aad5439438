"""SearchSpace: the params round trip (by hand and through Optuna), membership, size."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas import ConfigError
from nas.search_space import (
    SPACES,
    Architecture,
    RandomTrial,
    SearchSpace,
    get_space,
    layer_type,
    sample_random,
    space_from_dict,
)

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
DrawArch = Callable[[SearchSpace, st.DataObject], Architecture]


@pytest.mark.parametrize("space_name", SPACES.names())
@PROPERTY
@given(data=st.data())
def test_fixed_trial_round_trip(space_name: str, draw_arch: DrawArch, data: st.DataObject) -> None:
    space = get_space(space_name)
    arch = draw_arch(space, data)
    assert space.sample(optuna.trial.FixedTrial(space.to_params(arch))) == arch


@pytest.mark.parametrize("space_name", SPACES.names())
@PROPERTY
@given(data=st.data())
def test_enqueued_optuna_trial_round_trip(
    space_name: str, draw_arch: DrawArch, data: st.DataObject
) -> None:
    space = get_space(space_name)
    arch = draw_arch(space, data)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.enqueue_trial(space.to_params(arch))
    assert space.sample(study.ask()) == arch


def test_random_trial_records_exactly_the_params() -> None:
    space = get_space("cnn-small")
    for seed in range(20):
        trial = RandomTrial(np.random.default_rng(seed))
        arch = space.sample(trial)
        assert trial.params == space.to_params(arch)


_PAIRS = [(a, b) for a in SPACES.names() for b in SPACES.names() if a != b]


@pytest.mark.parametrize(("source", "target"), _PAIRS)
def test_foreign_architecture_is_rejected(source: str, target: str) -> None:
    arch = sample_random(get_space(source), 1, seed=0)[0]
    space = get_space(target)
    assert not space.contains(arch)
    with pytest.raises(ConfigError) as info:
        space.to_params(arch)
    layers = isinstance(arch, Architecture) and isinstance(space, SearchSpace)
    if layers and len(arch.stages) != len(space.stages):
        assert info.value.field == "stages"
        counts = f"has {len(arch.stages)} stages, space has {len(space.stages)}"
        assert counts in info.value.message
    else:
        assert info.value.field == "architecture"
        assert f"not a point of space {target!r}" in info.value.message


def test_same_layout_other_input_is_rejected() -> None:
    space = get_space("cnn-small")
    arch = sample_random(space.for_data((3, 32, 32), 10), 1, seed=0)[0]
    with pytest.raises(ConfigError, match="not a point of space 'cnn-small'") as info:
        space.to_params(arch)
    assert info.value.field == "architecture"


def test_layer_outside_the_choices_is_rejected() -> None:
    space = get_space("mlp-small")
    arch = sample_random(space, 1, seed=0)[0]
    first = arch.stages[0][0].model_copy(update={"width": 7})
    bad = arch.model_copy(update={"stages": ((first, *arch.stages[0][1:]), *arch.stages[1:])})
    with pytest.raises(ConfigError, match="width=7") as info:
        space.to_params(bad)
    assert info.value.field == "architecture"


@pytest.mark.parametrize("space_name", SPACES.names())
def test_sampled_architectures_are_members(space_name: str) -> None:
    space = get_space(space_name)
    assert all(space.contains(arch) for arch in sample_random(space, 20, seed=1))


#: The layer spaces: a cell space has no layer list (test_search_space_nb201 checks its skeleton).
LAYER_SPACES = [n for n in SPACES.names() if isinstance(get_space(n), SearchSpace)]


@pytest.mark.parametrize("space_name", LAYER_SPACES)
def test_only_downsampling_layers_stride(space_name: str) -> None:
    for arch in sample_random(get_space(space_name), 50, seed=2):
        strided = [layer.type for layer in arch.layers if layer.stride > 1]
        assert all(layer_type(name).can_downsample for name in strided), arch.summary()


# -- size ----------------------------------------------------------------------------------


class _Odometer:
    """Takes the ``path``-th choice at each decision (0 past its end), recording the counts."""

    def __init__(self, path: list[int]) -> None:
        self.path = path
        self.counts: list[int] = []

    def _pick(self, choices: Sequence[Any]) -> Any:
        i = len(self.counts)
        self.counts.append(len(choices))
        return choices[self.path[i] if i < len(self.path) else 0]

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return int(self._pick(range(low, high + 1)))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._pick(choices)


def _every_architecture(space: SearchSpace) -> list[Architecture]:
    """Depth-first over the decision tree that ``space.sample`` walks."""
    archs: list[Architecture] = []
    path: list[int] = []
    while True:
        trial = _Odometer(path)
        archs.append(space.sample(trial))
        path = path + [0] * (len(trial.counts) - len(path))
        while path and path[-1] + 1 == trial.counts[len(path) - 1]:
            path.pop()
        if not path:
            return archs
        path[-1] += 1


_TINY = {
    "input": {"shape": [1, 8, 8], "num_classes": 3},
    "stages": [
        {  # a strided first layer may not be the identity
            "depth": [1, 2],
            "widths": [4, 8],
            "stride": 2,
            "layers": ["conv3x3", "identity", "mbconv3x3", "maxpool3x3"],
            "expansions": [1, 3],
            "wbits": [4, 8],
            "abits": [8],
        },
        {"depth": [1, 2], "widths": [8], "layers": ["dwsep3x3", "identity"], "wbits": [2]},
    ],
}


def test_size_matches_brute_force() -> None:
    space = space_from_dict(_TINY)
    archs = _every_architecture(space)
    assert len({a.to_json() for a in archs}) == len(archs)  # no assignment repeats
    assert space.size() == len(archs)
    assert all(space.contains(a) for a in archs)


def test_size_matches_itertools_product() -> None:
    widths, wbits, abits = (4, 8), (4, 8, 32), (8, 32)
    stage = {"depth": 2, "widths": widths, "layers": ["conv3x3"], "wbits": wbits, "abits": abits}
    space = space_from_dict({"input": {"shape": [1, 8, 8], "num_classes": 3}, "stages": [stage]})
    layer = list(itertools.product(widths, wbits, abits))
    archs = set()
    for (w0, wb0, ab0), (w1, wb1, ab1) in itertools.product(layer, layer):
        params = {"s0.depth": 2, "s0.l0.type": "conv3x3", "s0.l1.type": "conv3x3"}
        params |= {"s0.l0.width": w0, "s0.l0.wbits": wb0, "s0.l0.abits": ab0}
        params |= {"s0.l1.width": w1, "s0.l1.wbits": wb1, "s0.l1.abits": ab1}
        archs.add(space.sample(optuna.trial.FixedTrial(params)).arch_id)
    assert space.size() == len(archs) == len(layer) ** 2


@pytest.mark.parametrize("space_name", SPACES.names())
def test_builtin_sizes_are_large(space_name: str) -> None:
    assert get_space(space_name).size() > 1000


# -- for_data ------------------------------------------------------------------------------


def test_mlp_for_data_flattens_images() -> None:
    space = get_space("mlp-small").for_data((1, 8, 8), 10)
    assert space.input.shape == (64,)
    arch = sample_random(space, 1, seed=0)[0]
    assert arch.build().eval()(torch.randn(2, 64)).shape == (2, 10)


@pytest.mark.parametrize(
    "space_name", [n for n in SPACES.names() if len(get_space(n).input.shape) == 3]
)
def test_cnn_for_data_takes_cifar(space_name: str) -> None:
    space = get_space(space_name).for_data((3, 32, 32), 100)
    assert (space.input.shape, space.input.num_classes) == ((3, 32, 32), 100)
    arch = sample_random(space, 1, seed=0)[0]
    assert arch.build().eval()(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_data_variant_of_cnn_mobile_is_itself() -> None:
    space = get_space("cnn-mobile")
    assert space.for_data((3, 32, 32), 10) == space


def test_data_variant_of_mlp_small_is_itself() -> None:
    space = get_space("mlp-small")
    assert space.for_data((1, 8, 8), 10) == space


def test_for_data_rejects_vectors_for_an_image_space() -> None:
    with pytest.raises(
        ConfigError, match=r"needs image \(C, H, W\) input, got shape \[64\]"
    ) as info:
        get_space("cnn-small").for_data((64,), 10)
    assert info.value.field == "dataset"


def test_for_data_rejects_images_for_a_sequence_space() -> None:
    with pytest.raises(ConfigError, match=r"needs sequence \(C, L\) input, got shape \[1, 8, 8\]"):
        get_space("cnn1d-small").for_data((1, 8, 8), 10)


def test_sequence_space_takes_other_lengths() -> None:
    space = get_space("cnn1d-small").for_data((2, 100), 5)
    arch = sample_random(space, 1, seed=0)[0]
    assert arch.build().eval()(torch.randn(3, 2, 100)).shape == (3, 5)


def test_for_data_reports_a_collapsing_input_as_config_error() -> None:
    with pytest.raises(ConfigError, match="collapses the 2x2 input") as info:
        get_space("cnn-small").for_data((1, 2, 2), 10)
    assert info.value.field == "stages.2.stride"
