"""Shared pieces of the search-space suite.

Everything heavy is parametrized over the registry itself (``SPACES``), so a new
built-in space is sampled, built, run and costed without touching the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import torch
from hypothesis import strategies as st

from nas.search_space import (
    NB201_EDGES,
    SPACES,
    AnyArchitecture,
    Architecture,
    CellArchitecture,
    SearchSpace,
    get_space,
    sample_random,
)

#: Architectures sampled per space for the build / forward / cost checks.
SAMPLES = 100


def _data_variant(space: SearchSpace) -> SearchSpace:
    """The space on CIFAR-shaped images (2-D CNN), 3-channel sequences of 64 (1-D CNN),
    or on 8x8 digits flattened (MLP)."""
    if len(space.input.shape) == 3:
        return space.for_data((3, 32, 32), 10)
    if len(space.input.shape) == 2:
        return space.for_data((3, 64), 10)
    return space.for_data((1, 8, 8), 10)


def _variants() -> list[tuple[str, SearchSpace]]:
    """Every built-in space, plus its data variant where that is a different space.

    cnn-mobile is CIFAR-shaped and mlp-small takes 64 features already, so their
    variants equal the built-in spaces and would only repeat the same work
    (``test_data_variant_of_*`` checks that equality).
    """
    variants = []
    for name in SPACES.names():
        space = get_space(name)
        variants.append((name, space))
        variant = _data_variant(space)
        if variant != space:
            shape = "x".join(map(str, variant.input.shape))
            variants.append((f"{name}@{shape}", variant))
    return variants


VARIANTS = _variants()


@pytest.fixture(scope="session", params=[s for _, s in VARIANTS], ids=[n for n, _ in VARIANTS])
def sampled(request: pytest.FixtureRequest) -> list[Architecture]:
    """``SAMPLES`` random architectures of one built-in space (or its data variant)."""
    return sample_random(request.param, SAMPLES, seed=0)


def _unused_edges(arch: AnyArchitecture) -> set[int]:
    if not isinstance(arch, CellArchitecture):
        return set()
    live = {3}
    for node in (2, 1):
        edges = zip(NB201_EDGES, arch.ops, strict=True)
        if any(dst in live for (dst, src), op in edges if src == node and op != "none"):
            live.add(node)
    return {k for k, (dst, _) in enumerate(NB201_EDGES) if dst not in live}


@pytest.fixture(scope="session")
def unused_edges() -> Callable[[AnyArchitecture], set[int]]:
    """``unused_edges(arch)``: the edges of a NAS-Bench-201 cell whose node nothing reads on
    the way to the output (none for a layer architecture).

    The benchmark builds and runs their ops (they count in its parameter formula), but
    the loss does not depend on their weights, which get no gradient.
    """
    return _unused_edges


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for this test only, restored afterwards.

    The tensors are tiny: handing them to a thread pool costs more than the work
    (about 5x slower with two busy cores).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class DrawTrial:
    """A trial whose answers hypothesis draws, so failing architectures shrink."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high), label=name)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.data.draw(st.sampled_from(choices), label=name)


@pytest.fixture(scope="session")
def draw_arch() -> Callable[[SearchSpace, st.DataObject], Architecture]:
    """``draw_arch(space, data)``: an architecture of ``space`` drawn by hypothesis."""

    def draw(space: SearchSpace, data: st.DataObject) -> Architecture:
        return space.sample(DrawTrial(data))

    return draw
