"""Joint time-to-target and Dolan–Moré performance profiles.

A sparse-training method is useful when it is *both* accurate and sparse, so the target
here is joint: the device time of the first evaluation point at which validation
accuracy ≥ a **and** sparsity ≥ s, for every (a, s) of a grid. Accuracy alone rewards
dense methods; sparsity alone rewards pruning to chance. The moment is selected on the
validation split, never on test (selecting on test would tune on it); the test accuracy
at that moment is recorded beside the time. A cell that did not finish (diverged,
capped, failed, killed) never reaches a target: its time is infinite, so it ranks last
on every problem instead of dropping out of the profile.

Performance profiles (Dolan & Moré 2002, arXiv cs/0102001; AlgoPerf scores training
algorithms the same way) summarise many such targets at once. A *problem* is one
(dataset, model, seed, (a, s)) combination; method m's time on it is t(p, m) (infinite
when m never got there). With the best time t*(p) = min over methods, the ratio is
r(p, m) = t(p, m) / t*(p), and the profile is

    rho_m(tau) = share of problems with r(p, m) <= tau.

rho_m(1) is m's share of wins (ties count as wins for each tied method), and rho_m(tau)
for large tau is the share of problems m solves at all. Problems that no method solved
say nothing about the methods and are left out (their number is reported).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.report.stats import (
    FINISHED,
    GROUP_COLUMNS,
    TARGET_REPORTED,
    TARGET_SELECTION,
    median,
)

#: The (accuracy, sparsity) grid of joint targets.
ACCURACY_GRID = (0.6, 0.7, 0.8, 0.85, 0.9)
SPARSITY_GRID = (0.0, 0.5, 0.8, 0.9)
#: The factors of the best time the report tabulates.
PROFILE_TAUS = (1.0, 2.0, 4.0, 10.0)


def joint_target_hit(
    curve: pd.DataFrame, accuracy: float, sparsity: float
) -> tuple[float, float] | None:
    """(device time, test accuracy) of the first point (recorded order) whose validation
    accuracy and sparsity are both at or above target; None when the cell never got there.
    """
    acc = pd.to_numeric(curve[TARGET_SELECTION], errors="coerce")
    spa = pd.to_numeric(curve["sparsity"], errors="coerce")
    hits = curve[(acc >= accuracy) & (spa >= sparsity)]
    if hits.empty:
        return None
    first = hits.iloc[0]
    reported = pd.to_numeric(pd.Series([first.get(TARGET_REPORTED)]), errors="coerce").iloc[0]
    return float(first["device_time_s"]), float(reported)


def joint_time_to_target(curve: pd.DataFrame, accuracy: float, sparsity: float) -> float | None:
    """Device time of :func:`joint_target_hit`, or None."""
    hit = joint_target_hit(curve, accuracy, sparsity)
    return None if hit is None else hit[0]


def target_times(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    accuracies: Sequence[float] = ACCURACY_GRID,
    sparsities: Sequence[float] = SPARSITY_GRID,
) -> pd.DataFrame:
    """One row per cell and grid target: its joint time-to-target (inf: never, and for
    every cell that did not finish) and the test accuracy at that moment (NaN: never)."""
    columns = [
        *GROUP_COLUMNS, "method", "seed", "key", "accuracy", "sparsity", "time_s", "test_accuracy"
    ]  # fmt: skip
    if runs.empty or curves.empty:
        return pd.DataFrame(columns=columns)
    by_key: Mapping[str, pd.DataFrame] = dict(tuple(curves.groupby("key", sort=False)))
    rows: list[dict[str, Any]] = []
    for _, cell in runs.iterrows():
        curve = by_key.get(cell["key"]) if cell["status"] == FINISHED else None
        for a in accuracies:
            for s in sparsities:
                hit = None if curve is None else joint_target_hit(curve, a, s)
                rows.append(
                    {
                        **{c: cell[c] for c in GROUP_COLUMNS},
                        "method": cell["method"],
                        "seed": cell["seed"],
                        "key": cell["key"],
                        "accuracy": a,
                        "sparsity": s,
                        "time_s": math.inf if hit is None else hit[0],
                        "test_accuracy": math.nan if hit is None else hit[1],
                    }
                )
    return pd.DataFrame(rows, columns=columns)


def target_table(times: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x model x target x method: median time over seeds and seeds reaching it.

    A seed that never reached the target counts as infinitely slow, as in the main table;
    ``test_median`` is the median test accuracy at the moment of the seeds that reached it.
    """
    keys = [*GROUP_COLUMNS, "accuracy", "sparsity", "method"]
    rows = []
    for key, group in times.groupby(keys, sort=True):
        values = group["time_s"].to_numpy(float)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "median_s": float(np.median(values)),
                "reached": int(np.isfinite(values).sum()),
                "n": len(values),
                "test_median": median(group["test_accuracy"]),
            }
        )
    return pd.DataFrame(rows, columns=[*keys, "median_s", "reached", "n", "test_median"])


def problem_matrix(times: pd.DataFrame) -> pd.DataFrame:
    """Times as a problems x methods matrix; a problem is (dataset, model, seed, a, s).

    A method without a cell for a problem (e.g. it failed) counts as never solving it.
    """
    problem = [*GROUP_COLUMNS, "seed", "accuracy", "sparsity"]
    if times.empty:
        return pd.DataFrame()
    matrix = times.pivot_table(index=problem, columns="method", values="time_s", aggfunc="min")
    return matrix.fillna(math.inf)


def performance_ratios(matrix: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Ratios t(p, m) / min_m t(p, m) over the problems some method solved, and the
    number of problems left out because none did."""
    if matrix.empty:
        return matrix, 0
    best = matrix.min(axis=1)
    solved = np.isfinite(best.to_numpy(float))
    kept = matrix[solved]
    best = best[solved]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = kept.div(best, axis=0)
    # A best time of 0 (target met at the first evaluation): the tied methods score 1,
    # the others, who needed longer, never catch up with a ratio.
    zero = best.to_numpy(float) == 0
    if zero.any():
        ratios.loc[zero] = np.where(kept.loc[zero].to_numpy(float) == 0, 1.0, math.inf)
    return ratios, int((~solved).sum())


def profile(ratios: pd.DataFrame, taus: Sequence[float]) -> pd.DataFrame:
    """rho_m(tau) for every method (columns) and tau (rows)."""
    if ratios.empty:
        return pd.DataFrame(index=pd.Index(list(taus), name="tau"))
    values = ratios.to_numpy(float)
    data = {
        method: [float(np.mean(values[:, j] <= tau)) for tau in taus]
        for j, method in enumerate(ratios.columns)
    }
    return pd.DataFrame(data, index=pd.Index(list(taus), name="tau"))


def profile_curve(ratios: pd.DataFrame, points: int = 200) -> tuple[np.ndarray, pd.DataFrame]:
    """Taus from 1 to just past the largest finite ratio (log-spaced) and rho at each."""
    finite_ratios = ratios.to_numpy(float)
    finite_ratios = finite_ratios[np.isfinite(finite_ratios)]
    top = max(2.0, float(finite_ratios.max()) * 1.1) if len(finite_ratios) else 2.0
    taus = np.unique(np.concatenate([np.geomspace(1.0, top, points), finite_ratios]))
    return taus, profile(ratios, taus)
