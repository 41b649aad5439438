"""The seeded random sampler."""

from __future__ import annotations

import pytest

from nas.search_space import SPACES, get_space, sample_random


@pytest.mark.parametrize("name", SPACES.names())
def test_same_seed_same_architectures(name: str) -> None:
    space = get_space(name)
    assert sample_random(space, 10, seed=3) == sample_random(space, 10, seed=3)


@pytest.mark.parametrize("name", SPACES.names())
def test_other_seed_other_architectures(name: str) -> None:
    space = get_space(name)
    assert sample_random(space, 10, seed=3) != sample_random(space, 10, seed=4)


@pytest.mark.parametrize("name", SPACES.names())
def test_samples_vary_within_a_call(name: str) -> None:
    archs = sample_random(get_space(name), 20, seed=0)
    assert len(archs) == 20
    assert len({a.arch_id for a in archs}) > 10


def test_every_choice_is_reached() -> None:
    space = get_space("mlp-small")
    archs = sample_random(space, 200, seed=0)
    assert {a.stages[0][0].width for a in archs} == set(space.stages[0].widths)
    assert {len(a.stages[1]) for a in archs} == {1, 2}
    assert {a.stages[1][0].type for a in archs} == {"mlp", "identity"}
