from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nas.strategies._pareto import hypervolume, non_dominated

MIN2 = ["minimize", "minimize"]


def _flip(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[list[float]]:
    """The same points with every maximized objective's sign changed."""
    return [
        [-v if d == "maximize" else v for v, d in zip(p, directions, strict=True)] for p in points
    ]


# --- non_dominated ---------------------------------------------------------------------


def test_non_dominated_2d_minimize() -> None:
    points = [(1, 3), (2, 2), (3, 1), (3, 3), (2, 4)]
    assert non_dominated(points, MIN2) == [0, 1, 2]


def test_non_dominated_mixed_directions() -> None:
    # accuracy (maximize) against MACs (minimize)
    points = [(0.9, 500), (0.8, 100), (0.7, 300), (0.95, 900), (0.8, 200)]
    assert non_dominated(points, ["maximize", "minimize"]) == [0, 1, 3]


def test_non_dominated_keeps_every_copy_of_an_equal_point() -> None:
    points = [(1, 1), (2, 0), (1, 1), (2, 2), (2, 0)]
    assert non_dominated(points, MIN2) == [0, 1, 2, 4]


def test_non_dominated_weakly_better_dominates() -> None:
    # (1, 2) is no worse in both and better in one: (1, 3) is dominated.
    assert non_dominated([(1, 3), (1, 2)], MIN2) == [1]


def test_non_dominated_1d_keeps_the_best_and_its_ties() -> None:
    assert non_dominated([(3,), (1,), (2,), (1,)], ["minimize"]) == [1, 3]
    assert non_dominated([(3,), (1,), (3,)], ["maximize"]) == [0, 2]


def test_non_dominated_4d_and_empty() -> None:
    points = [(1, 1, 1, 1), (0, 2, 2, 2), (2, 2, 2, 2), (1, 1, 1, 0)]
    assert non_dominated(points, ["minimize"] * 4) == [1, 3]
    assert non_dominated([], MIN2) == []


@pytest.mark.parametrize(
    ("points", "directions", "match"),
    [
        ([(1, 2)], ["minimize", "up"], "directions\\[1\\]"),
        ([(1, 2, 3)], MIN2, "points\\[0\\] has 3 values, expected 2"),
        ([(1, math.nan)], MIN2, "NaN"),
        ([(1,)], [], "at least one objective"),
    ],
)
def test_non_dominated_bad_input(
    points: list[tuple[float, ...]], directions: list[str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        non_dominated(points, directions)


# --- hypervolume: hand-computed cases --------------------------------------------------


def test_hypervolume_1d() -> None:
    assert hypervolume([(3,), (1,), (2,)], (5,), ["minimize"]) == 4.0
    assert hypervolume([(3,), (1,)], (0,), ["maximize"]) == 3.0
    assert hypervolume([(6,)], (5,), ["minimize"]) == 0.0


def test_hypervolume_2d_staircase() -> None:
    # three unit-step strips: 3 + 2 + 1
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4), MIN2) == 6.0
    # a dominated point adds nothing
    assert hypervolume([(1, 3), (2, 2), (3, 1), (3, 3)], (4, 4), MIN2) == 6.0


def test_hypervolume_2d_maximize_and_minimize() -> None:
    # boxes 0.9 x 500 and 0.8 x 900 overlap in 0.8 x 500: 450 + 720 - 400
    points = [(0.9, 500), (0.8, 100)]
    assert hypervolume(points, (0.0, 1000), ["maximize", "minimize"]) == pytest.approx(770.0)
    # both maximized: boxes 3 x 1 and 1 x 3 overlap in 1 x 1
    assert hypervolume([(3, 1), (1, 3)], (0, 0), ["maximize", "maximize"]) == 5.0


def test_hypervolume_3d() -> None:
    ref = (2, 2, 2)
    assert hypervolume([(0, 0, 0)], (1, 2, 3), ["minimize"] * 3) == 6.0
    # boxes 2*2*1 and 1*1*2 overlap in the unit cube
    assert hypervolume([(0, 0, 1), (1, 1, 0)], ref, ["minimize"] * 3) == 5.0
    # the 2x2x2 cube but for the unit cube at the origin no point covers
    unit = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    assert hypervolume(unit, ref, ["minimize"] * 3) == 7.0


def test_hypervolume_4d() -> None:
    ref = (2, 2, 2, 2)
    assert hypervolume([(0, 0, 0, 0)], (1, 1, 1, 1), ["minimize"] * 4) == 1.0
    assert hypervolume([(0, 0, 0, 1), (1, 1, 1, 0)], ref, ["minimize"] * 4) == 9.0  # 8 + 2 - 1
    unit = [tuple(float(i == j) for j in range(4)) for i in range(4)]
    assert hypervolume(unit, ref, ["minimize"] * 4) == 15.0  # 2**4 - 1


def test_hypervolume_4d_mixed_directions() -> None:
    directions = ["maximize", "minimize", "maximize", "minimize"]
    unit = [tuple(float(i == j) for j in range(4)) for i in range(4)]
    points = _flip(unit, directions)
    ref = _flip([(2, 2, 2, 2)], directions)[0]
    assert hypervolume(points, ref, directions) == 15.0


def test_hypervolume_duplicates_count_once() -> None:
    assert hypervolume([(1, 1), (1, 1)], (2, 2), MIN2) == 1.0
    assert hypervolume([(1, 0, 0), (1, 0, 0), (0, 1, 0)], (2, 2, 2), ["minimize"] * 3) == 6.0


def test_hypervolume_points_outside_the_reference_add_nothing() -> None:
    assert hypervolume([(3, 0)], (2, 2), MIN2) == 0.0  # worse in one objective
    assert hypervolume([(2, 0)], (2, 2), MIN2) == 0.0  # on the boundary: no volume
    assert hypervolume([(1, 1), (3, 0), (0, 5)], (2, 2), MIN2) == 1.0
    assert hypervolume([(0.5, 100)], (0.6, 1000), ["maximize", "minimize"]) == 0.0
    assert hypervolume([], (2, 2), MIN2) == 0.0


@pytest.mark.parametrize(
    ("points", "reference", "match"),
    [
        ([(1, 1)], (2,), "reference\\[0\\] has 1 values"),
        ([(1, 1)], (2, math.inf), "finite"),
        ([(1, -math.inf)], (2, 2), "finite"),
        ([(1, math.nan)], (2, 2), "NaN"),
    ],
)
def test_hypervolume_bad_input(
    points: list[tuple[float, ...]], reference: tuple[float, ...], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        hypervolume(points, reference, MIN2)


# --- properties against brute force ----------------------------------------------------


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def _inclusion_exclusion(points: list[list[float]], ref: Sequence[float]) -> float:
    """Union of the boxes [p, ref] (minimization): the sum over subsets of their intersections."""
    total = 0.0
    for size in range(1, len(points) + 1):
        for subset in itertools.combinations(points, size):
            corner = [max(c) for c in zip(*subset, strict=True)]
            volume = math.prod(max(0.0, r - c) for r, c in zip(ref, corner, strict=True))
            total += (-1) ** (size + 1) * volume
    return total


@st.composite
def _problems(draw: st.DrawFn) -> tuple[list[list[float]], list[float], list[str]]:
    m = draw(st.integers(1, 4))
    n = draw(st.integers(0, 7))
    coordinate = st.integers(0, 6).map(float)
    points = draw(st.lists(st.lists(coordinate, min_size=m, max_size=m), min_size=n, max_size=n))
    directions = draw(st.lists(st.sampled_from(["minimize", "maximize"]), min_size=m, max_size=m))
    ref = [float(draw(st.integers(3, 7))) for _ in range(m)]  # some points lie beyond it
    return points, ref, directions


@settings(max_examples=150, deadline=None)
@given(_problems())
def test_hypervolume_matches_inclusion_exclusion(
    problem: tuple[list[list[float]], list[float], list[str]],
) -> None:
    points, ref, directions = problem
    # the problem as drawn is in minimization form; present it in the drawn directions
    shown, shown_ref = _flip(points, directions), _flip([ref], directions)[0]
    expected = _inclusion_exclusion(points, ref)
    assert hypervolume(shown, shown_ref, directions) == pytest.approx(expected, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(_problems())
def test_non_dominated_matches_the_definition(
    problem: tuple[list[list[float]], list[float], list[str]],
) -> None:
    points, ref, directions = problem
    shown = _flip(points, directions)
    expected = [i for i, p in enumerate(points) if not any(_dominates(q, p) for q in points)]
    assert non_dominated(shown, directions) == expected
    # the front alone has the whole set's hypervolume
    front = [shown[i] for i in expected]
    shown_ref = _flip([ref], directions)[0]
    assert hypervolume(front, shown_ref, directions) == hypervolume(shown, shown_ref, directions)
