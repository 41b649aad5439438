"""Pareto utilities: the non-dominated set and the exact hypervolume, any number of objectives.

Each objective is minimized or maximized (``directions``); internally every value is
turned into one to minimize (a maximized value changes sign), so "``a`` dominates
``b``" means ``a`` is no worse in every objective and better in at least one.

The hypervolume is computed by WFG (While, Bradstreet & Barone 2012, "A fast way of
calculating exact hypervolumes"): the volume of a set is the sum over its points of
each one's *exclusive* volume, the part of its box that no later point covers, which
is the box minus the hypervolume of the later points clipped to that box — a smaller
problem of the same kind. Two objectives are a sweep; one is a difference. Optuna 5
has a WFG of its own, but only in the private module ``optuna._hypervolume``, which
may change in any release.

Example:
    >>> non_dominated([(1, 3), (2, 2), (3, 1), (3, 3)], ["minimize", "minimize"])
    [0, 1, 2]
    >>> hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4), ["minimize", "minimize"])
    6.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_SIGNS = {"minimize": 1.0, "maximize": -1.0}


def non_dominated(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """The indices (in input order) of the points that no other point dominates.

    Equal points do not dominate each other, so every copy of a non-dominated point
    is kept: ``non_dominated([(1, 1), (1, 1)], ...)`` is ``[0, 1]``.

    Raises:
        ValueError: a direction is neither "minimize" nor "maximize", a point has
            another length than ``directions``, or a value is NaN.

    Example:
        >>> non_dominated([(0.9, 500), (0.8, 100), (0.7, 300), (0.9, 500)],
        ...               ["maximize", "minimize"])
        [0, 1, 3]
    """
    values = _oriented(points, directions, "points")
    # In lexicographic order a point can be dominated only by one before it, and then by
    # one already on the front (domination is transitive): compare with the front only.
    order = sorted(range(len(values)), key=lambda i: tuple(values[i]))
    front: list[int] = []
    for i in order:
        if front:
            kept = values[front]
            no_worse = np.all(kept <= values[i], axis=1)
            if np.any(no_worse & np.any(kept < values[i], axis=1)):
                continue
        front.append(i)
    return sorted(front)


def hypervolume(
    points: Sequence[Sequence[float]], reference: Sequence[float], directions: Sequence[str]
) -> float:
    """The volume of objective space that the points dominate, bounded by ``reference``.

    Exact for any number of objectives. ``reference`` is a point worse than the
    interesting ones in every objective (larger where minimized, smaller where
    maximized); a point that is not strictly better than it in every objective
    covers no volume and contributes nothing. No points: 0.0.

    Raises:
        ValueError: a bad direction, a point or ``reference`` of another length than
            ``directions``, or a value that is not finite.

    Example:
        >>> hypervolume([(0.9, 500), (0.8, 100)], (0.0, 1000), ["maximize", "minimize"])
        770.0
    """
    ref = _oriented([reference], directions, "reference")[0]
    values = _oriented(points, directions, "points")
    if not np.all(np.isfinite(ref)) or not np.all(np.isfinite(values)):
        raise ValueError("hypervolume needs finite values in points and reference")
    inside = [tuple(p) for p in values.tolist() if all(a < r for a, r in zip(p, ref, strict=True))]
    return float(_wfg(_front(inside), tuple(ref.tolist())))


def _oriented(
    points: Sequence[Sequence[float]], directions: Sequence[str], what: str
) -> np.ndarray:
    """``points`` as an (n, m) array of values to minimize; checks shape and directions."""
    signs = []
    for i, d in enumerate(directions):
        if d not in _SIGNS:
            raise ValueError(f"directions[{i}] must be 'minimize' or 'maximize', got {d!r}")
        signs.append(_SIGNS[d])
    m = len(signs)
    if m == 0:
        raise ValueError("directions must name at least one objective")
    rows = [tuple(float(v) for v in p) for p in points]
    for i, row in enumerate(rows):
        if len(row) != m:
            raise ValueError(f"{what}[{i}] has {len(row)} values, expected {m} (one per direction)")
        if any(math.isnan(v) for v in row):
            raise ValueError(f"{what}[{i}] has a NaN value: {row}")
    return np.array(rows, dtype=float).reshape(len(rows), m) * np.array(signs)


def _front(points: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
    """The distinct non-dominated points (minimization), sorted; WFG's inputs stay small."""
    if not points:
        return []
    distinct = sorted(set(points))
    m = len(distinct[0])
    return [distinct[i] for i in non_dominated(distinct, ["minimize"] * m)]


def _wfg(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Hypervolume of distinct, mutually non-dominated, lexicographically sorted points."""
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - points[0][0]
    if len(ref) == 2:
        return _sweep_2d(points, ref)
    total = 0.0
    for i, p in enumerate(points):
        # What the later points cover of p's box: each clipped to it (the worse value).
        clipped = [tuple(max(a, b) for a, b in zip(p, q, strict=True)) for q in points[i + 1 :]]
        total += math.prod(r - a for r, a in zip(ref, p, strict=True)) - _wfg(_front(clipped), ref)
    return total


def _sweep_2d(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Two objectives: sorted by the first, a front's second values fall; sum the strips."""
    area, height = 0.0, ref[1]
    for x, y in points:
        if y < height:
            area += (ref[0] - x) * (height - y)
            height = y
    return area
