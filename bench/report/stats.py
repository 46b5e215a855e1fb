"""Statistics over seeds: medians, intervals, time to a target accuracy, and seed bands.

Conventions, stated once here and repeated in REPORT.md:

* Failed cells are never dropped. Any status but ``finished`` (diverged, capped, failed,
  killed), or a NaN accuracy, scores chance accuracy, 1 / num_classes
  (:func:`bench.report.significance.failure_accuracy`), in the test-accuracy median, its
  interval and spread, and every comparison; the tables say how many cells failed. Other
  figures (sparsity, device time, steps) describe the cells that finished.
* The interval beside a median is the order-statistic interval with its exact binomial
  level (:func:`bench.report.significance.median_interval`), printed with that level.
* The spread of a figure over seeds is half its range, (max - min) / 2, so that
  "median ± spread" with three seeds shows how far apart the extreme seeds lie. The
  curve figures draw the same min-max range as a band, so table and figure agree.
* A cell that never reaches the target accuracy, or did not finish, counts as taking
  infinitely long, so the median time is finite only when more than half of the seeds got
  there. The target is checked on validation accuracy (the moment is selected without the
  test split); the test accuracy at that moment is what the report shows beside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.report.significance import FINISHED, Interval, failure_accuracy, finite, median_interval
from bench.training.metrics import METRICS, RUN_FIELDS

#: Statuses counted one by one in the tables; any status but ``finished`` is a failure.
NOT_FINISHED = ("diverged", "capped", "failed", "killed")
GROUP_COLUMNS = ("dataset", "model")
#: Grid points per method when curves of different seeds are put on one time axis.
GRID_POINTS = 200


def median(values: Iterable[Any]) -> float:
    """Median of the finite values; NaN when there are none (rendered as a dash)."""
    present = finite(values)
    return float(np.median(present)) if len(present) else math.nan


def half_range(values: Iterable[Any]) -> float:
    """(max - min) / 2 of the finite values: the spread reported next to a median."""
    present = finite(values)
    return float(np.ptp(present) / 2) if len(present) else math.nan


def failed(cells: pd.DataFrame) -> pd.Series:
    """Which cells count as failures: any status but ``finished``, or no finite accuracy."""
    accuracy = pd.to_numeric(cells["test_accuracy"], errors="coerce")
    return (cells["status"] != FINISHED) | ~np.isfinite(accuracy.to_numpy(float))


def chance_accuracy(cells: pd.DataFrame) -> float:
    """The accuracy a failed cell of these cells' dataset scores: 1 / num_classes.

    Records written before ``num_classes`` was recorded fall back to the lowest accuracy
    any of the given cells reached (a failure then ranks last, never above a finished
    seed), and to 0 when no cell has one.
    """
    classes = finite(cells["num_classes"]) if "num_classes" in cells else np.array([])
    if len(classes):
        return failure_accuracy(int(classes[0]))
    reached = finite(cells["test_accuracy"])
    return float(reached.min()) if len(reached) else 0.0


def scored_accuracy(cells: pd.DataFrame, chance: float) -> pd.Series:
    """Test accuracy per cell with failed cells (:func:`failed`) at ``chance``."""
    accuracy = pd.to_numeric(cells["test_accuracy"], errors="coerce").astype(float)
    return accuracy.where(~failed(cells), chance)


def chance_by_group(runs: pd.DataFrame) -> dict[tuple[Any, Any], float]:
    """:func:`chance_accuracy` of every dataset x model in ``runs``."""
    return {
        where: chance_accuracy(cells)
        for where, cells in runs.groupby(list(GROUP_COLUMNS), sort=True)
    }


def spans_decades(values: Iterable[Any], decades: float = 2.0) -> bool:
    """Whether the positive values span more than ``decades`` powers of ten (log axis)."""
    present = finite(values)
    present = present[present > 0]
    return bool(len(present)) and float(present.max() / present.min()) > 10**decades


#: Time to target is measured on this split (selecting the moment by test accuracy would
#: tune on the test set); the test accuracy at that moment is reported beside it.
TARGET_SELECTION = "val_accuracy"
TARGET_REPORTED = "test_accuracy"


def target_hit(curve: pd.DataFrame, target: float) -> tuple[float, float] | None:
    """(device time, test accuracy) at the first evaluation, in recorded order, whose
    validation accuracy is at or above ``target``; None when the cell never got there.

    Recorded order is training order: the runner appends a point per evaluation.
    """
    accuracy = pd.to_numeric(curve[TARGET_SELECTION], errors="coerce")
    hits = curve[accuracy >= target]
    if hits.empty:
        return None
    first = hits.iloc[0]
    reported = pd.to_numeric(pd.Series([first.get(TARGET_REPORTED)]), errors="coerce").iloc[0]
    return float(first["device_time_s"]), float(reported)


def time_to_target(curve: pd.DataFrame, target: float) -> float | None:
    """Device time of the first evaluation whose validation accuracy reaches ``target``."""
    hit = target_hit(curve, target)
    return None if hit is None else hit[0]


def method_table(
    runs: pd.DataFrame, curves: pd.DataFrame, target_accuracy: float | None = None
) -> pd.DataFrame:
    """One row per dataset x model x method with the figures REPORT.md tabulates.

    Counts cover every cell. Test accuracy (median, interval, range, spread) covers every
    cell too, failed ones at chance (``acc_chance`` says which value that was); the other
    figures cover the finished cells.
    """
    curves_by_key: Mapping[str, pd.DataFrame] = (
        dict(tuple(curves.groupby("key", sort=False))) if len(curves) else {}
    )
    rows: list[dict[str, Any]] = []
    keys = [*GROUP_COLUMNS, "method"]
    chances = chance_by_group(runs)
    for (dataset, model, method), cells in runs.groupby(keys, sort=True):
        done = cells[cells["status"] == FINISHED]
        chance = chances[(dataset, model)]
        accuracy = scored_accuracy(cells, chance)
        present = finite(accuracy)
        row: dict[str, Any] = {
            "dataset": dataset,
            "model": model,
            "method": method,
            "optimizer": cells["optimizer"].iloc[0],
            "mode": cells["mode"].iloc[0],
            "n_cells": len(cells),
            "n_finished": len(done),
            "n_failures": int(failed(cells).sum()),
            **{f"n_{s}": int((cells["status"] == s).sum()) for s in NOT_FINISHED},
            "acc_chance": chance,
            "acc_median": median(accuracy),
            "acc_min": float(present.min()) if len(present) else math.nan,
            "acc_max": float(present.max()) if len(present) else math.nan,
            "acc_spread": half_range(accuracy),
            **_ci_columns("acc", accuracy),
            **_ci_columns("sparsity", done["sparsity"]),
            **{
                f"{m.name}_median": median(done[m.name])
                for m in METRICS
                if m.aggregate == "median" and m.name in RUN_FIELDS and m.name in done
            },
            **{
                f"{m.name}_spread": half_range(done[m.name])
                for m in METRICS
                if m.spread and m.name in done
            },
        }
        # The table's test-accuracy column is the scored one: failed seeds at chance.
        row["test_accuracy_median"] = row["acc_median"]
        row["test_accuracy_spread"] = row["acc_spread"]
        if target_accuracy is not None:
            empty = curves.iloc[0:0]
            hits = [
                target_hit(curves_by_key.get(key, empty), target_accuracy) for key in done["key"]
            ]
            reached = [h for h in hits if h is not None]
            # Failed cells never reached it: infinitely slow, like a finished seed that missed.
            missed = len(cells) - len(reached)
            padded = [t for t, _ in reached] + [math.inf] * missed
            row["target_time_median"] = float(np.median(padded)) if padded else math.nan
            row["target_missed"] = missed
            row["target_test_median"] = median(a for _, a in reached)
        rows.append(row)
    return pd.DataFrame(rows)


def interval_of(values: Iterable[Any]) -> Interval | None:
    """The order-statistic interval of the median of the finite values; None without any."""
    present = finite(values)
    return median_interval(present) if len(present) else None


def _ci_columns(prefix: str, values: pd.Series) -> dict[str, float]:
    """``<prefix>_ci_low`` / ``_ci_high`` / ``_ci_level``: the order-statistic interval of
    the median and its exact level (NaN without values)."""
    interval = interval_of(values)
    if interval is None:
        return {f"{prefix}_ci_{k}": math.nan for k in ("low", "high", "level")}
    return {
        f"{prefix}_ci_low": interval.low,
        f"{prefix}_ci_high": interval.high,
        f"{prefix}_ci_level": interval.level,
    }


def _seed_series(
    cells: pd.DataFrame, y: str, x: str = "device_time_s"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per cell: strictly increasing ``x`` values and the finite values of ``y`` there."""
    series = []
    for _, cell in cells.groupby("key", sort=False):
        t = pd.to_numeric(cell[x], errors="coerce").to_numpy(float)
        v = pd.to_numeric(cell[y], errors="coerce").to_numpy(float)
        ok = np.isfinite(t) & np.isfinite(v)
        t, v = t[ok], v[ok]
        if not len(t):
            continue
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        # Equal times keep the later measurement: interpolation needs increasing x.
        keep = np.append(t[1:] != t[:-1], True)
        series.append((t[keep], v[keep]))
    return series


def common_grid(
    series: Sequence[tuple[np.ndarray, np.ndarray]], *, log_x: bool, points: int = GRID_POINTS
) -> np.ndarray:
    """Device times at which every seed is compared.

    The grid covers the span all seeds share, so a median never mixes a seed that has
    data with one that has stopped; only when seeds share no span (a one-point curve)
    does it cover their union, each seed then counting only where it has data.
    """
    starts = [t[0] for t, _ in series]
    ends = [t[-1] for t, _ in series]
    lo, hi = max(starts), min(ends)
    if hi <= lo:
        lo, hi = min(starts), max(ends)
    if log_x:
        positive = [t[t > 0] for t, _ in series]
        smallest = min((p[0] for p in positive if len(p)), default=None)
        if smallest is not None and hi > 0:
            lo = max(lo, smallest)
            if hi > lo:
                return np.geomspace(lo, hi, points)
    if hi <= lo:
        return np.array([hi], dtype=float)
    return np.linspace(lo, hi, points)


def seed_band(
    curves: pd.DataFrame, y: str, *, log_x: bool = False, x: str = "device_time_s"
) -> pd.DataFrame:
    """Median, min and max over seeds of ``y`` on a common grid of ``x``, per method.

    Evaluation times (or epochs, or passes) differ between seeds, so each seed's curve is
    linearly interpolated onto the grid (never extrapolated) before the statistics are
    taken. The grid column keeps the name ``x``.
    """
    frames = []
    for method, cells in curves.groupby("method", sort=True):
        series = _seed_series(cells, y, x)
        if not series:
            continue
        grid = common_grid(series, log_x=log_x)
        values = np.full((len(series), len(grid)), np.nan)
        for i, (t, v) in enumerate(series):
            inside = (grid >= t[0]) & (grid <= t[-1])
            values[i, inside] = np.interp(grid[inside], t, v)
        covered = ~np.isnan(values).all(axis=0)
        values, grid = values[:, covered], grid[covered]
        frames.append(
            pd.DataFrame(
                {
                    "method": method,
                    x: grid,
                    "median": np.nanmedian(values, axis=0),
                    "low": np.nanmin(values, axis=0),
                    "high": np.nanmax(values, axis=0),
                    "n_seeds": (~np.isnan(values)).sum(axis=0),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["method", x, "median", "low", "high", "n_seeds"])
    return pd.concat(frames, ignore_index=True)
