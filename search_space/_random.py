"""Sampling without Optuna: a trial that draws from a seeded NumPy generator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np

if TYPE_CHECKING:
    from nas.search_space._architecture import Architecture
    from nas.search_space._nb201 import CellArchitecture, CellSpace
    from nas.search_space._space import SearchSpace


class RandomTrial:
    """Answers ``suggest_*`` uniformly at random; records what it chose in ``params``."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.params: dict[str, Any] = {}

    def suggest_int(self, name: str, low: int, high: int) -> int:
        self.params[name] = int(self.rng.integers(low, high + 1))
        return self.params[name]

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.params[name] = choices[int(self.rng.integers(len(choices)))]
        return self.params[name]


@overload
def sample_random(space: SearchSpace, n: int, seed: int = 0) -> list[Architecture]: ...
@overload
def sample_random(space: CellSpace, n: int, seed: int = 0) -> list[CellArchitecture]: ...
@overload
def sample_random(
    space: SearchSpace | CellSpace, n: int, seed: int = 0
) -> list[Architecture | CellArchitecture]: ...
def sample_random(space: SearchSpace | CellSpace, n: int, seed: int = 0) -> list[Any]:
    """``n`` architectures drawn uniformly per choice, reproducibly for a seed.

    Example:
        >>> from nas.search_space import get_space, sample_random
        >>> space = get_space("cnn-small")
        >>> ids = [a.arch_id for a in sample_random(space, 3, seed=0)]
        >>> ids == [a.arch_id for a in sample_random(space, 3, seed=0)]
        True
    """
    rng = np.random.default_rng(seed)
    return [space.sample(RandomTrial(rng)) for _ in range(n)]
