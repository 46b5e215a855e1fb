"""The matched-sparsity tables (CSV + Markdown) and their figure.

Two tables per budget:

* **matched**: one row per method and target: the knob value of the reported round, how
  many seed-0 validation runs and how many refinement rounds on the report seeds found
  it, then over the report seeds (test split) the median test
  accuracy, sparsity and nonzeros, each with an order-statistic interval whose exact
  binomial level is printed (:func:`bench.report.significance.median_interval`), and
  ``within_tolerance``: whether the retrained median sparsity is within the tolerance of
  the target (an entry whose rounds hit the cap shows its closest round, flagged). A
  diverged seed counts as a failure (chance accuracy), never dropped.
* **paired**: at each target, every method against the reference (bSQH) on the seeds
  both ran (same seed = same initialisation): the median of the per-seed differences
  (method − reference) with its interval, the exact paired test's p, its effect size, and
  the Holm-adjusted p within the target's family (one target = one family). Where the
  smallest adjusted p attainable with the row's pairs in a family of that size exceeds α
  the verdict reads "too few seeds for this family" instead of one; ``matched`` says
  whether both medians of sparsity lie within the tolerance.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.matched.calibration import DEFAULT_TOLERANCE
from bench.matched.study import Calibrated, SeedFigures
from bench.report import significance

ALPHA = significance.ALPHA

MATCHED_COLUMNS = (
    "budget_epochs",
    "method",
    "target_sparsity",
    "knob",
    "value",
    "calibration_runs",
    "val_sparsity",
    "refinement_rounds",
    "calibrated",
    "n_seeds",
    "n_failed",
    "test_accuracy",
    "test_accuracy_low",
    "test_accuracy_high",
    "interval_level",
    "sparsity",
    "sparsity_low",
    "sparsity_high",
    "nonzeros",
    "nonzeros_low",
    "nonzeros_high",
    "within_tolerance",
    "missing",
)

PAIRED_COLUMNS = (
    "budget_epochs",
    "target_sparsity",
    "method",
    "reference",
    "n_pairs",
    "median_method",
    "median_reference",
    "median_difference",
    "difference_low",
    "difference_high",
    "interval_level",
    "p",
    "p_holm",
    "effect_size",
    "effect_name",
    "smallest_holm_p",
    "matched",
    "verdict",
)


def _interval(values: Sequence[float]) -> tuple[float, float, float, float]:
    """(median, low, high, level) of the per-seed values (NaNs when there are none)."""
    if not values:
        return math.nan, math.nan, math.nan, math.nan
    found = significance.median_interval(list(values))
    return _median(values), found.low, found.high, found.level


def matched_rows(
    calibrated: Sequence[Calibrated],
    figures: Mapping[str, SeedFigures],
    epochs: float,
    tolerance: float,
) -> list[dict[str, Any]]:
    """One row of :data:`MATCHED_COLUMNS` per method and target."""
    rows = []
    for entry in calibrated:
        row: dict[str, Any] = dict.fromkeys(MATCHED_COLUMNS)
        row.update(
            budget_epochs=epochs,
            method=entry.label,
            target_sparsity=entry.target,
            knob=entry.knob,
            value=entry.value,
            calibration_runs=entry.calibration_runs,
            val_sparsity=entry.val_sparsity,
            refinement_rounds=entry.rounds,
            calibrated=entry.reached,
        )
        seeds = figures.get(entry.cell_label)
        if (seeds is None or not seeds.test_accuracy) and not entry.reached:
            row["missing"] = f"not reached ({entry.reason})"
        elif seeds is None or not seeds.test_accuracy:
            row["missing"] = "no retrained seed"
        else:
            order = sorted(seeds.test_accuracy)
            acc = _interval([seeds.test_accuracy[s] for s in order])
            spa = _interval([seeds.sparsity[s] for s in order])
            nnz = _interval([seeds.nonzeros[s] for s in order])
            row.update(
                n_seeds=len(order),
                n_failed=len(seeds.failed),
                test_accuracy=acc[0],
                test_accuracy_low=acc[1],
                test_accuracy_high=acc[2],
                interval_level=acc[3],
                sparsity=spa[0],
                sparsity_low=spa[1],
                sparsity_high=spa[2],
                nonzeros=nnz[0],
                nonzeros_low=nnz[1],
                nonzeros_high=nnz[2],
                within_tolerance=abs(spa[0] - entry.target) <= tolerance + 1e-12,
            )
        rows.append(row)
    return rows


def paired_rows(
    figures: Mapping[str, SeedFigures],
    calibrated: Sequence[Calibrated],
    reference: str,
    epochs: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> list[dict[str, Any]]:
    """At each target, every retrained method against ``reference`` (module docstring);
    ``matched``: both medians of sparsity lie within ``tolerance`` of the target."""
    rows: list[dict[str, Any]] = []
    targets = sorted({c.target for c in calibrated})
    for target in targets:
        here = {
            c.label: figures[c.cell_label]
            for c in calibrated
            if c.target == target and c.cell_label in figures
        }
        if reference not in here:
            continue
        base = here[reference].test_accuracy
        family = []
        for method in (m for m in here if m != reference):
            mine = here[method].test_accuracy
            common = sorted(set(mine) & set(base))
            if not common:
                continue
            a = [mine[s] for s in common]
            b = [base[s] for s in common]
            family.append((method, a, b, significance.paired_compare(a, b)))
        if not family:
            continue
        adjusted = significance.holm([c.p_value for *_, c in family])
        for (method, a, b, comparison), p_holm in zip(family, adjusted, strict=True):
            # Per row: a comparison on fewer seeds (a study still running) cannot reach
            # what the family's complete rows can.
            floor = significance.smallest_holm_p(comparison.n, len(family))
            possible = significance.verdict_possible(comparison.n, len(family))
            low, high, level = _difference_interval(comparison)
            rows.append(
                {
                    "budget_epochs": epochs,
                    "target_sparsity": target,
                    "method": method,
                    "reference": reference,
                    "n_pairs": comparison.n,
                    "median_method": _median(a),
                    "median_reference": _median(b),
                    "median_difference": comparison.median_difference,
                    "difference_low": low,
                    "difference_high": high,
                    "interval_level": level,
                    "p": comparison.p_value,
                    "p_holm": p_holm,
                    "effect_size": comparison.effect_size,
                    "effect_name": comparison.effect_name,
                    "smallest_holm_p": floor,
                    "matched": _matched(here[method], target, tolerance)
                    and _matched(here[reference], target, tolerance),
                    "verdict": verdict(comparison.median_difference, p_holm, possible, reference),
                }
            )
    return rows


def _matched(seeds: SeedFigures, target: float, tolerance: float) -> bool:
    return abs(_median(list(seeds.sparsity.values())) - target) <= tolerance + 1e-12


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2.0


def _difference_interval(comparison: Any) -> tuple[float, float, float]:
    interval = comparison.interval
    return float(interval.low), float(interval.high), float(interval.level)


def verdict(difference: float, p_holm: float, possible: bool, reference: str) -> str:
    """The claim a row supports at family-wise α (Holm)."""
    if not possible:
        return "too few seeds for this family"
    if p_holm > ALPHA or difference == 0:
        return "no difference shown"
    return (
        f"more accurate than {reference}" if difference > 0 else f"less accurate than {reference}"
    )


# --------------------------------------------------------------------------- output


def _num(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def matched_markdown(rows: Sequence[dict[str, Any]], epochs: float, tolerance: float) -> str:
    """The matched table of one budget: methods as rows, targets as columns."""
    targets = sorted({r["target_sparsity"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cells = {(r["method"], r["target_sparsity"]): r for r in rows}
    full = max((r["n_seeds"] or 0 for r in rows), default=0)
    levels = {r["interval_level"] for r in rows if r["interval_level"] is not None}
    level = f"{100 * max(levels):.1f} %" if levels else "–"
    lines = [
        f"### Budget: {epochs:g} epochs",
        "",
        f"Median test accuracy [{level} order-statistic interval] over the seeds, then the "
        f"retrained median sparsity and nonzeros (n=: fewer seeds than the rest so far); "
        f"*(!)*: median sparsity outside ±{tolerance:g} of the target after the cap of "
        "refinement rounds (the closest round is reported, never hidden); *not reached*: "
        "no run to report.",
        "",
        "| Method | " + " | ".join(f"s = {t:g}" for t in targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for method in methods:
        entries = []
        for target in targets:
            r = cells.get((method, target))
            if r is None or r["missing"]:
                entries.append((r or {}).get("missing") or "–")
                continue
            text = (
                f"{_num(r['test_accuracy'])} [{_num(r['test_accuracy_low'])}, "
                f"{_num(r['test_accuracy_high'])}] @ {_num(r['sparsity'])}, "
                f"{_num(r['nonzeros'], '.0f')} nz"
            )
            if r["n_seeds"] < full:
                text += f", n={r['n_seeds']}"
            if r["n_failed"]:
                text += f", {r['n_failed']} failed"
            entries.append(text + ("" if r["within_tolerance"] else " (!)"))
        lines.append(f"| {method} | " + " | ".join(entries) + " |")
    return "\n".join(lines) + "\n"


def paired_markdown(rows: Sequence[dict[str, Any]], epochs: float) -> str:
    lines = [
        f"#### Paired against the reference, {epochs:g} epochs",
        "",
        "*(!)*: the method's or the reference's median sparsity misses the tolerance.",
        "",
        "| s | method | n | median diff [interval] | p | Holm p | effect | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target_sparsity']:g} | {r['method']}{'' if r['matched'] else ' (!)'} | "
            f"{r['n_pairs']} | "
            f"{_num(r['median_difference'], '+.3f')} [{_num(r['difference_low'], '+.3f')}, "
            f"{_num(r['difference_high'], '+.3f')}] | {_num(r['p'], '.3g')} | "
            f"{_num(r['p_holm'], '.3g')} | {r['effect_name']} = {_num(r['effect_size'], '.2f')} "
            f"| {r['verdict']} |"
        )
    if not rows:
        lines.append("| – | – | – | – | – | – | – | no target with the reference and a peer |")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict[str, Any]], path: Path, columns: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Test accuracy against nonzeros, one panel per budget, intervals on both axes."""
    budgets = sorted({r["budget_epochs"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    markers = "osD^vP*Xh<>"
    fig, axes = plt.subplots(
        1, max(1, len(budgets)), figsize=(9.6, 4.4), sharey=True, squeeze=False
    )
    for ax, epochs in zip(axes[0], budgets, strict=False):
        for i, method in enumerate(methods):
            points = sorted(
                (
                    r
                    for r in rows
                    if r["method"] == method and r["budget_epochs"] == epochs and r["n_seeds"]
                ),
                key=lambda r: r["nonzeros"],
            )
            if not points:
                continue
            ax.errorbar(
                [r["nonzeros"] for r in points],
                [r["test_accuracy"] for r in points],
                xerr=[
                    [r["nonzeros"] - r["nonzeros_low"] for r in points],
                    [r["nonzeros_high"] - r["nonzeros"] for r in points],
                ],
                yerr=[
                    [r["test_accuracy"] - r["test_accuracy_low"] for r in points],
                    [r["test_accuracy_high"] - r["test_accuracy"] for r in points],
                ],
                marker=markers[i % len(markers)],
                ms=5,
                capsize=2,
                lw=1,
                color=f"C{i % 10}",
                label=method,
            )
        ax.set_xscale("log")
        ax.set(title=f"{epochs:g} epochs", xlabel="nonzero prunable weights (median, log)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("test accuracy (median, interval)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
