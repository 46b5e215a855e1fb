"""Pareto fronts of (validation accuracy, sparsity), their hypervolume, and the pick.

Pure functions of points: no Optuna, no files.

How a point is picked (``picked_by`` says which rule applied): among COMPLETE trials
that did not diverge, the most accurate one whose sparsity is at least ``S``
(``--min-sparsity``, default 0.5) and whose accuracy is clearly above chance (by at least
``ABOVE_CHANCE_SHARE`` of the way from chance to 1: 0.19 for ten classes); ties go to the
sparser, then the earlier trial. Such a point always lies on the Pareto front. If no trial
qualifies (always the case for ``sgd`` and ``adam``, which produce no exact zeros, and for
a method whose only sparse points are pruned to guessing), the most accurate trial
overall is picked and ``picked_by`` records the fallback. The same rule serves ``accuracy``
studies, where it is the best feasible trial. Pruned trials are never picked: they did
not train for the whole budget.

Hypervolume: the area of the (accuracy, sparsity) region dominated by the front above
the reference point (chance accuracy 1 / classes, sparsity 0), :func:`reference_point`.
A reference at accuracy 0 would let a network pruned until it guesses add area for
nothing; above chance it adds none. Methods that never produce zeros have hypervolume 0
by construction; their rows still show their accuracy. A hypervolume is one number from
one tuning run: the tables show it without ranking methods by it; its spread over tuning
seeds (:mod:`bench.tuning.seeds`) says whether a difference is more than tuning noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEFAULT_MIN_SPARSITY = 0.5
#: The reference when the number of classes is unknown (older studies): accuracy 0.
REFERENCE_POINT = (0.0, 0.0)
#: A sparse point is worth picking only this far (as a share of the way from chance
#: accuracy to 1) above chance: a network pruned until it guesses is sparse but useless.
ABOVE_CHANCE_SHARE = 0.1


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` dominates ``b`` when maximising: at least as good everywhere, better somewhere."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )


def pareto_indices(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (maximising every coordinate); equal points stay."""
    return [
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p) for j, q in enumerate(points) if j != i)
    ]


def hypervolume_2d(
    points: Sequence[Sequence[float]], reference: Sequence[float] = REFERENCE_POINT
) -> float:
    """Area dominated by ``points`` (maximising both coordinates) above ``reference``.

    Sort the front by the first coordinate, descending; each point then adds the
    rectangle between its first coordinate and the reference, and between its second
    coordinate and the previous (lower) one. Points not strictly above the reference in
    both coordinates add nothing.
    """
    rx, ry = reference
    kept = [(float(x), float(y)) for x, y in points if x > rx and y > ry]
    front = sorted({kept[i] for i in pareto_indices(kept)}, key=lambda p: (-p[0], p[1]))
    area, previous_y = 0.0, ry
    for x, y in front:  # x descends, so y ascends along a front
        if y > previous_y:
            area += (x - rx) * (y - previous_y)
            previous_y = y
    return area


def reference_point(chance_accuracy: float | None) -> tuple[float, float]:
    """(chance accuracy, 0): the hypervolume's reference; (0, 0) when chance is unknown."""
    return (float(chance_accuracy), 0.0) if chance_accuracy else REFERENCE_POINT


def coordinates(points: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    """(val_accuracy, sparsity) of each point, the axes every function here maximises."""
    return [(p["val_accuracy"], p["sparsity"]) for p in points]


def front_of(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Pareto-optimal points, sorted by sparsity."""
    front = [points[i] for i in pareto_indices(coordinates(points))]
    return sorted(front, key=lambda p: (p["sparsity"], -p["val_accuracy"], p["trial"]))


def staircase(front: Sequence[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """x (sparsity) and y (accuracy) of the dominated region's upper boundary."""
    xs: list[float] = []
    ys: list[float] = []
    for p in sorted(front, key=lambda p: p["sparsity"]):
        if xs:
            xs.append(xs[-1])
            ys.append(p["val_accuracy"])
        xs.append(p["sparsity"])
        ys.append(p["val_accuracy"])
    return xs, ys


def useful_accuracy_floor(chance: float | None) -> float:
    """The validation accuracy a sparse point must exceed to count as a working network."""
    return 0.0 if chance is None else chance + ABOVE_CHANCE_SHARE * (1.0 - chance)


def pick(
    points: list[dict[str, Any]], min_sparsity: float, chance: float | None = None
) -> tuple[dict[str, Any] | None, str]:
    """The point a suite should use, and the rule that picked it (module docstring)."""
    usable = [p for p in points if p["status"] != "diverged"]
    if not usable:
        return None, "no COMPLETE trial that did not diverge"

    def key(p: dict[str, Any]) -> tuple[float, float, int]:
        return (-p["val_accuracy"], -p["sparsity"], p["trial"])

    floor = useful_accuracy_floor(chance)
    sparse = [p for p in usable if p["sparsity"] >= min_sparsity and p["val_accuracy"] > floor]
    if sparse:
        return min(sparse, key=key), (
            f"most accurate trial with sparsity >= {min_sparsity:g} (validation split)"
        )
    return min(usable, key=key), (
        f"most accurate trial overall: no trial reached sparsity >= {min_sparsity:g} "
        f"with validation accuracy above {floor:.3g} (fallback; validation split)"
    )
