"""REPORT.md sections that compare methods with their uncertainty and over many targets.

Three sections, each computed from the same runs and curves as the rest of the report:

* *Medians with confidence intervals*: test accuracy and sparsity per method, median
  over finished seeds with a 95% percentile-bootstrap interval (``significance``).
* *Joint time-to-target*: per (accuracy a, sparsity s) target of the grid, each method's
  median device time until test accuracy ≥ a and sparsity ≥ s (``profiles``).
* *Performance profile*: rho(tau) at tau = 1, 2, 4, 10 over all (dataset, model, seed,
  target) problems of the suite, with its figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.ticker import LogFormatter

from bench.report.figures import FigureFile, _new_axes, _save, method_palette
from bench.report.markdown import DASH, fmt, fmt_seconds, table
from bench.report.profiles import (
    PROFILE_TAUS,
    performance_ratios,
    problem_matrix,
    profile,
    profile_curve,
    target_table,
    target_times,
)
from bench.report.significance import BOOTSTRAP_RESAMPLES, CONFIDENCE, MIN_SEEDS
from bench.report.stats import GROUP_COLUMNS

PROFILE_KIND = "performance_profile"


@dataclass
class Comparisons:
    """What the comparison sections need, computed once by :func:`compute`."""

    times: pd.DataFrame  # targets.csv
    targets: pd.DataFrame  # median time per target and method
    profile: pd.DataFrame  # rho at PROFILE_TAUS (rows) per method (columns)
    ratios: pd.DataFrame
    unsolved: int


def compute(runs: pd.DataFrame, curves: pd.DataFrame) -> Comparisons:
    times = target_times(runs, curves)
    ratios, unsolved = performance_ratios(problem_matrix(times))
    return Comparisons(
        times=times,
        targets=target_table(times),
        profile=profile(ratios, PROFILE_TAUS),
        ratios=ratios,
        unsolved=unsolved,
    )


def _interval(row: pd.Series, prefix: str) -> str:
    median = row.get(f"{prefix}_median")
    low, high = row.get(f"{prefix}_ci_low"), row.get(f"{prefix}_ci_high")
    if fmt(median) == DASH:
        return DASH
    return f"{fmt(median)} [{fmt(low)}, {fmt(high)}]"


def confidence_section(method_rows: pd.DataFrame) -> list[str]:
    """Per dataset x model: median test accuracy and sparsity with bootstrap intervals."""
    lines = [
        "## Medians with confidence intervals",
        "",
        f"Median over finished seeds [{100 * CONFIDENCE:g}% percentile-bootstrap interval, "
        f"{BOOTSTRAP_RESAMPLES} resamples, fixed seed]. With few seeds the interval is "
        "about the range of the seeds; comparative claims need at least "
        f"{MIN_SEEDS} seeds per method.",
        "",
    ]
    if method_rows.empty:
        return [*lines, "No cells were recorded.", ""]
    for (dataset, model), group in method_rows.groupby(list(GROUP_COLUMNS), sort=True):
        rows = [
            [
                row["method"],
                int(row["n_finished"]),
                _interval(row, "acc"),
                _interval(row, "sparsity"),
            ]
            for _, row in group.sort_values("method").iterrows()
        ]
        header = ["Method", "Seeds", "Test accuracy [CI]", "Sparsity [CI]"]
        lines += [f"### {dataset} × {model}", "", *table(header, rows), ""]
    return lines


def _time_text(median: float, reached: int, n: int) -> str:
    if reached == 0:
        return DASH
    text = fmt_seconds(median) if math.isfinite(median) else "> half missed"
    return text if reached == n else f"{text} ({reached}/{n})"


def targets_section(comparisons: Comparisons) -> list[str]:
    """Per dataset x model: a row per joint target some method reached, a column per method."""
    lines = [
        "## Joint time-to-target",
        "",
        "Median device time [s] until test accuracy ≥ a **and** sparsity ≥ s (first "
        "evaluation point meeting both). A seed that never got there counts as infinitely "
        "slow; *(k/n)*: k of n seeds reached it; *> half missed*: fewer than half did; "
        f"{DASH}: none did. Targets that no method reached are left out. Every cell and "
        "target is in `targets.csv`.",
        "",
    ]
    targets = comparisons.targets
    if targets.empty:
        return [*lines, "No finished cells with curves.", ""]
    for (dataset, model), group in targets.groupby(list(GROUP_COLUMNS), sort=True):
        methods = sorted(group["method"].unique())
        rows = []
        for (a, s), part in group.groupby(["accuracy", "sparsity"], sort=True):
            if not part["reached"].any():
                continue
            by_method = {r["method"]: r for _, r in part.iterrows()}
            rows.append(
                [
                    f"{a:g}",
                    f"{s:g}",
                    *(
                        _time_text(m["median_s"], int(m["reached"]), int(m["n"]))
                        if (m := by_method.get(method)) is not None
                        else DASH
                        for method in methods
                    ),
                ]
            )
        lines += [f"### {dataset} × {model}", ""]
        lines += table(["a", "s", *methods], rows) if rows else ["No target was reached."]
        lines.append("")
    return lines


def profile_section(
    comparisons: Comparisons, figure: FigureFile | None, report_dir: Path
) -> list[str]:
    """rho_m(tau) at the tabulated taus, and the figure."""
    ratios = comparisons.ratios
    lines = [
        "## Performance profile",
        "",
        "Dolan–Moré profile over every (dataset, model, seed, joint target) problem of the "
        "suite: rho(tau) is the share of problems a method solved within tau times the "
        "fastest method's device time on that problem. rho(1) is the share of wins (ties "
        "count for each), rho at large tau the share solved at all.",
        "",
    ]
    if ratios.empty:
        return [*lines, "No problem was solved by any method.", ""]
    lines.append(
        f"{len(ratios)} problems; {comparisons.unsolved} more that no method solved are left out."
    )
    lines.append("")
    prof = comparisons.profile
    header = ["Method", *(f"rho({tau:g})" for tau in prof.index)]
    order = sorted(prof.columns, key=lambda m: (-prof[m].iloc[-1], -prof[m].iloc[0], m))
    rows = [[m, *(f"{v:.2f}" for v in prof[m])] for m in order]
    lines += [*table(header, rows), ""]
    if figure is not None:
        link = figure.path.relative_to(report_dir).as_posix()
        lines += [f"![{figure.caption}]({link})", ""]
    return lines


def draw_profile(comparisons: Comparisons, methods: Sequence[str], path: Path) -> FigureFile | None:
    """rho_m(tau) against tau (log axis), one step line per method."""
    ratios = comparisons.ratios
    if ratios.empty:
        return None
    taus, curve = profile_curve(ratios)
    palette = method_palette(methods)
    figure, (ax,) = _new_axes(height=4.6)
    for method in sorted(curve.columns):
        ax.step(
            taus,
            curve[method].to_numpy(float),
            where="post",
            label=method,
            color=palette.get(method),
            lw=1.8,
            clip_on=False,  # a method that solves nothing is a line on y = 0, drawn over it
            zorder=3,
        )
    ax.set_xscale("log")
    for formatter in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        formatter(LogFormatter(labelOnlyBase=False))  # 1, 2, 3 rather than 2×10⁰
    ax.set_ylim(-0.04, 1.04)
    ax.set_xlabel("tau: factor of the best method's device time (log scale)")
    ax.set_ylabel("share of problems solved within tau")
    ax.set_title(f"Performance profile over {len(ratios)} problems", fontsize=10)
    figure.legend(loc="outside right upper", fontsize=8, frameon=False)
    figure.supxlabel(
        "problem: dataset, model, seed and target (test accuracy ≥ a and sparsity ≥ s)",
        fontsize=7.5,
        color="0.3",
    )
    _save(figure, path)
    return FigureFile("all", "all", PROFILE_KIND, "performance profile", path)


def target_summary(comparisons: Comparisons) -> pd.DataFrame:
    """The profile as a tidy table for ``profile.csv``: method, tau, rho."""
    prof = comparisons.profile
    if prof.empty or not len(prof.columns):
        return pd.DataFrame(columns=["method", "tau", "rho"])
    long = prof.reset_index().melt(id_vars="tau", var_name="method", value_name="rho")
    return long[["method", "tau", "rho"]].sort_values(["method", "tau"]).reset_index(drop=True)


__all__ = [
    "Comparisons",
    "compute",
    "confidence_section",
    "draw_profile",
    "profile_section",
    "target_summary",
    "targets_section",
]
