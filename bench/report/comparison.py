"""REPORT.md sections that compare methods with their uncertainty and over many targets.

Three sections, each computed from the same runs and curves as the rest of the report:

* *Medians with confidence intervals*: test accuracy (every seed, failed ones at chance)
  and sparsity (finished seeds) per method, each median with its order-statistic interval
  labelled with the interval's exact level (``significance.median_interval``).
* *Joint time-to-target*: per (accuracy a, sparsity s) target of the grid, each method's
  median device time until validation accuracy ≥ a and sparsity ≥ s, and the test
  accuracy at that moment (``profiles``).
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
from bench.report.significance import CONFIDENCE, Interval
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
    """``median [low, high] (level)``: the level is the interval's exact coverage."""
    median = row.get(f"{prefix}_median")
    if fmt(median) == DASH or fmt(row.get(f"{prefix}_ci_level")) == DASH:
        return DASH
    interval = Interval(
        float(row[f"{prefix}_ci_low"]),
        float(row[f"{prefix}_ci_high"]),
        float(row[f"{prefix}_ci_level"]),
    )
    return f"{fmt(median)} {interval.label()}"


def confidence_section(method_rows: pd.DataFrame) -> list[str]:
    """Per dataset x model: median test accuracy and sparsity with labelled intervals."""
    lines = [
        "## Medians with confidence intervals",
        "",
        "Median over seeds [order-statistic interval for the median] (its exact level). "
        "The interval (x_(k), x_(n+1−k)) of n sorted seeds covers the population median "
        "with probability 1 − 2·P(Binomial(n, ½) ≤ k − 1) for any continuous distribution: "
        f"the narrowest such interval with level ≥ {100 * CONFIDENCE:g} % is shown, and "
        "with too few seeds for that the full range with its lower, exact level (75 % for "
        "3 seeds, 87.5 % for 4, 93.8 % for 5). Test accuracy counts every seed, failed ones "
        "at chance accuracy; sparsity counts the finished seeds.",
        "",
    ]
    if method_rows.empty:
        return [*lines, "No cells were recorded.", ""]
    for (dataset, model), group in method_rows.groupby(list(GROUP_COLUMNS), sort=True):
        rows = [
            [
                row["method"],
                int(row["n_cells"]),
                int(row["n_failures"]),
                _interval(row, "acc"),
                _interval(row, "sparsity"),
            ]
            for _, row in group.sort_values("method").iterrows()
        ]
        header = ["Method", "Seeds", "Failed", "Test accuracy [interval] (level)"]
        header.append("Sparsity [interval] (level)")
        lines += [f"### {dataset} × {model}", "", *table(header, rows), ""]
    return lines


def _time_text(median: float, reached: int, n: int, test: float) -> str:
    """Median time (k/n reached when not all), then the test accuracy at that moment."""
    if reached == 0:
        return DASH
    text = fmt_seconds(median) if math.isfinite(median) else "> half missed"
    text = text if reached == n else f"{text} ({reached}/{n})"
    return f"{text}; test {fmt(test)}"


def targets_section(comparisons: Comparisons) -> list[str]:
    """Per dataset x model: a row per joint target some method reached, a column per method."""
    lines = [
        "## Joint time-to-target",
        "",
        "Median device time [s] until **validation** accuracy ≥ a **and** sparsity ≥ s "
        "(first evaluation point meeting both; the moment is selected without the test "
        "split), then *test*: the median **test** accuracy at that moment over the seeds "
        "that got there. A seed that never got there, or did not finish, counts as "
        "infinitely slow; *(k/n)*: k of n seeds reached it; *> half missed*: fewer than "
        "half did; "
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
                        _time_text(m["median_s"], int(m["reached"]), int(m["n"]), m["test_median"])
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
        "fastest method's device time on that problem, a target being met when "
        "**validation** accuracy and sparsity reach it. rho(1) is the share of wins (ties "
        "count for each), rho at large tau the share solved at all; a cell that did not "
        "finish solves nothing, so failures rank last rather than leaving the profile.",
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
        "problem: dataset, model, seed and target (validation accuracy ≥ a and sparsity ≥ s)",
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
