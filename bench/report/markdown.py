"""REPORT.md: setup, one table per dataset x model, figures, claims, unfinished cells.

The text states its own conventions (failed cells at chance accuracy, what the spread
means, how an unreached target counts) so that the report can be read without this code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

import optimizers
from bench.report.claims import Claim
from bench.report.figures import FigureFile
from bench.report.frames import HP_PREFIX
from bench.report.significance import ALPHA, EFFECT_NAME, PAIRED_TEST_NAME
from bench.report.stats import FINISHED, GROUP_COLUMNS, NOT_FINISHED
from bench.training.metrics import TABLE_METRICS, TARGET_COLUMN, Metric

DASH = "–"
ERROR_CHARS = 200


def _hp_text(value: Any) -> str:
    """Hyperparameters as written: pandas turns integer columns with gaps into floats."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def cell(value: Any) -> str:
    """Text safe inside a Markdown table cell: no pipes, no line breaks."""
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number in ``spec``, or a dash when it is missing."""
    return DASH if _missing(value) else format(float(value), spec)


def fmt_seconds(value: Any) -> str:
    """Seconds with about three significant digits, never in exponent notation."""
    if _missing(value):
        return DASH
    seconds = float(value)
    for limit, spec in ((100, ".0f"), (10, ".1f"), (1, ".2f")):
        if abs(seconds) >= limit:
            return format(seconds, spec)
    return format(seconds, ".3g")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def _unique(values: Iterable[Any]) -> str:
    present = sorted({str(v) for v in values if not _missing_text(v)})
    return ", ".join(present) if present else "unknown"


def _missing_text(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _total(values: pd.Series) -> float:
    return float(pd.to_numeric(values, errors="coerce").fillna(0).sum())


def setup_section(runs: pd.DataFrame) -> list[str]:
    """Where and with what the numbers were produced, and how much time they cost."""
    devices = _unique(
        f"{name} ({kind})" if not _missing_text(kind) else name
        for name, kind in zip(runs["device_name"], runs["device"], strict=True)
        if not _missing_text(name)
    )
    counts = runs["status"].value_counts()
    by_status = ", ".join(f"{s} {int(counts.get(s, 0))}" for s in (FINISHED, *NOT_FINISHED))
    budgets = _unique(runs["budget"])
    return [
        "## Setup",
        "",
        f"- Device(s): {devices}",
        f"- torch: {_unique(runs['torch'])}; Python: {_unique(runs['python'])}",
        f"- Platform(s): {_unique(runs['platform'])}",
        f"- Git commit(s): {_unique(runs['git_commit'])}",
        f"- Cells: {len(runs)} ({by_status})",
        f"- Budget per cell: {budgets}",
        f"- Total device time of training steps: {fmt_seconds(_total(runs['device_time_s']))} s"
        f" (evaluation {fmt_seconds(_total(runs['eval_time_s']))} s, warm-up "
        f"{fmt_seconds(_total(runs['warmup_time_s']))} s, timed separately); "
        f"total wall time: {fmt_seconds(_total(runs['wall_time_s']))} s",
        "",
    ]


def methods_section(runs: pd.DataFrame) -> list[str]:
    """Each method's optimizer, mode, batch size and hyperparameters, as configured."""
    hp_columns = [c for c in runs.columns if c.startswith(HP_PREFIX)]
    rows = []
    for method, cells in runs.groupby("method", sort=True):
        first = cells.iloc[0]
        hparams = ", ".join(
            f"{c[len(HP_PREFIX) :]}={_hp_text(first[c])}"
            for c in hp_columns
            if not _missing_text(first[c])
        )
        batch = DASH if _missing_text(first["batch_size"]) else first["batch_size"]
        rows.append([method, _optimizer(first["optimizer"]), first["mode"], batch, hparams or DASH])
    header = ["Method", "Optimizer", "Mode", "Batch size", "Hyperparameters"]
    return ["### Methods", "", *table(header, rows), ""]


def _optimizer(name: Any) -> str:
    """The registry name, with a labelled variant's label (``bsqh-parallel (ablation: ...)``)
    so that no table can show our variants or ablations as the method they derive from."""
    label = optimizers.variant_label(str(name))
    return f"{name} ({label})" if label else str(name)


def conventions(target_accuracy: float | None) -> list[str]:
    """The rules behind every number in the tables, stated where they are used."""
    lines = [
        "Failed cells are **never dropped**: *Seeds* counts every cell, *Failed* says how "
        "many did not finish (diverged, capped, failed, killed; each listed in its own "
        "section below), and each of them counts at **chance accuracy** (1 / classes) in "
        "the test-accuracy median, its interval and every comparison. *Test accuracy* is "
        "the median over seeds ± half the min–max range across seeds ((max − min) / 2); "
        "sparsity, nonzeros, device time and steps are medians over the finished cells. "
        "The curve figures draw the min–max range of the finished seeds as a band around "
        "their median, after interpolating each seed's curve onto a common device-time grid "
        "(the span all seeds share). Device time counts training steps only; *Steps* is the "
        "median number of training steps (full-batch: iterations) and *ms/step* the median "
        "device time per step.",
    ]
    if target_accuracy is not None:
        lines.append(
            f"*Time to val {target_accuracy:g}* is the median device time of the first "
            f"evaluation with **validation** accuracy ≥ {target_accuracy:g} (the moment is "
            "selected without the test split); *test acc. then* is the median **test** "
            "accuracy at that evaluation. A seed that never got there, or did not finish, "
            "counts as infinitely slow, and *not reached (k/n)* says that k of n seeds never "
            "reached it."
        )
    lines.append(f"*Accept rate* is bSQH's accepted attempts / attempts ({DASH} for others).")
    return [" ".join(lines), ""]


def _not_finished(row: pd.Series) -> str:
    """How many cells count as failures, by status ("1 diverged, 2 capped"), or "0"."""
    parts = [f"{int(row[f'n_{s}'])} {s}" for s in NOT_FINISHED if row[f"n_{s}"]]
    other = int(row["n_failures"]) - sum(int(row[f"n_{s}"]) for s in NOT_FINISHED)
    if other > 0:  # finished without a test accuracy, or a status of a newer runner
        parts.append(f"{other} without test accuracy")
    return ", ".join(parts) if parts else "0"


def _target_text(row: pd.Series) -> str:
    if not row["n_cells"]:
        return DASH
    missed, n = int(row["target_missed"]), int(row["n_cells"])
    if missed == 0:
        return fmt_seconds(row["target_time_median"])
    if math.isfinite(row["target_time_median"]):
        return f"{fmt_seconds(row['target_time_median'])}; not reached ({missed}/{n})"
    return f"not reached ({missed}/{n})"


def _metric_text(row: pd.Series, metric: Metric) -> str:
    """A table metric's median (± spread where the metric asks for it), or a dash."""
    value = row.get(f"{metric.name}_median")
    if metric.fmt == "s":
        return fmt_seconds(value)
    text = fmt(value, metric.fmt)
    spread = row.get(f"{metric.name}_spread")
    if metric.spread and text != DASH and not _missing(spread):
        text = f"{text} ± {format(float(spread), metric.fmt)}"
    return text


def results_table(group: pd.DataFrame, target_accuracy: float | None) -> list[str]:
    """One row per method of one dataset x model; columns from the metric table."""
    columns: list[tuple[int, str, Any]] = [
        (m.column, str(m.title), lambda row, m=m: _metric_text(row, m)) for m in TABLE_METRICS
    ]
    if target_accuracy is not None:
        columns.append((TARGET_COLUMN, f"Time to val {target_accuracy:g} [s]", _target_text))
        columns.append(
            (TARGET_COLUMN, "Test acc. then", lambda row: fmt(row.get("target_test_median")))
        )
    columns.sort(key=lambda c: c[0])
    header = ["Method", "Seeds", "Failed", *(title for _, title, _ in columns)]
    rows = []
    for _, row in group.sort_values("method").iterrows():
        values = [row["method"], int(row["n_cells"]), _not_finished(row)]
        values += [render(row) for _, _, render in columns]
        rows.append(values)
    return table(header, rows)


def results_section(
    method_rows: pd.DataFrame,
    figures: Sequence[FigureFile],
    report_dir: Path,
    target_accuracy: float | None,
) -> list[str]:
    """A subsection per dataset x model: its table, then its figures."""
    lines = ["## Results", "", *conventions(target_accuracy)]
    if method_rows.empty:
        return [*lines, "No cells were recorded.", ""]
    for (dataset, model), group in method_rows.groupby(list(GROUP_COLUMNS), sort=True):
        lines += [f"### {dataset} × {model}", "", *results_table(group, target_accuracy), ""]
        for figure in figures:
            if (figure.dataset, figure.model) == (str(dataset), str(model)):
                link = figure.path.relative_to(report_dir).as_posix()
                lines += [f"![{figure.caption}]({link})", ""]
    return lines


def claims_section(claims: Sequence[Claim]) -> list[str]:
    """Every claim with its verdict; "measured" marks a figure rather than a yes/no."""
    lines = [
        "## Claims",
        "",
        "Computed from the records on every report. Verdicts: *holds* / *does not hold* "
        "for yes-or-no statements, *measured* for a figure or a selection, *not applicable* "
        "when no record bears on it. Comparisons of methods are **paired by seed** (a seed "
        "fixes the initialisation for every method): the evidence gives the median paired "
        "difference of test accuracy with its order-statistic interval and that interval's "
        f"exact level, wins/losses/ties, the {PAIRED_TEST_NAME} (failed seeds at chance "
        f"accuracy) with its p-value and the {EFFECT_NAME} effect size beside it. All "
        "comparisons of this report form **one Holm–Bonferroni family**: a verdict needs a "
        f"Holm-adjusted p ≤ {ALPHA:g}, and when the family's smallest attainable adjusted p "
        "(its size × 2 / 2^seeds) is above that, every comparison says *too few seeds for "
        "this family* instead of a verdict.",
        "",
    ]
    lines += [c.markdown() for c in claims] or ["No claims: no cells were recorded."]
    return [*lines, ""]


def _short_error(error: Any) -> str:
    """The line of an error that names it (a traceback's last), cut to a table cell."""
    if _missing_text(error) or not str(error).strip():
        return DASH
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1]
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def _last_good(run: pd.Series, curves: pd.DataFrame) -> tuple[Any, Any, Any, Any]:
    """Iteration, device time, objective, test accuracy of the last finite evaluation.

    Falls back to the summary (where the runner keeps a diverged cell's last good
    figures) when the curve has no finite point.
    """
    points = curves[curves["key"] == run["key"]]
    objective = pd.to_numeric(points["objective"], errors="coerce")
    good = points[objective.apply(lambda v: not _missing(v))]
    source = good.iloc[-1] if len(good) else run
    iteration = source["iteration"] if "iteration" in source else source["iterations"]
    return iteration, source["device_time_s"], source["objective"], source["test_accuracy"]


def interference_lines(runs: pd.DataFrame) -> list[str]:
    """One line naming the cells whose steps other processes slowed (bench.training.interference).

    Their accuracy and sparsity stand (no stopping rule reads a clock); their time
    figures do not, and the line says so.
    """
    if "interference" not in runs:
        return []
    flagged = runs[runs["interference"].map(lambda v: v is True or str(v).lower() == "true")]
    if flagged.empty:
        return []
    names = ", ".join(
        f"{r['method']}/seed{r['seed']} (slowed {fmt(r['slowed_step_share'], '.0%')}, "
        f"starved {fmt(r['starved_step_share'], '.0%')})"
        for _, r in flagged.sort_values(["method", "seed"]).iterrows()
    )
    return [
        f"**Interference:** other processes slowed the training steps of {len(flagged)} of "
        f"{len(runs)} cells: {names}. Their accuracy and sparsity do not depend on it (no "
        "stopping rule reads a clock); their time figures are suspect.",
        "",
    ]


def unfinished_section(runs: pd.DataFrame, curves: pd.DataFrame) -> list[str]:
    """Every diverged, capped, failed or killed cell with its error and last good figures."""
    lines = ["## Diverged, capped, failed and killed cells", ""]
    bad = runs[runs["status"] != FINISHED].sort_values(["status", "key"])
    if bad.empty:
        return [*lines, "None: every cell finished.", ""]
    lines += [
        "Each counts at chance accuracy in the accuracy medians and comparisons above "
        "(its last good figures are not used there). *Capped* cells hit their clock "
        "safety net before their budget ended. *Last good* is the last evaluation with a "
        "finite objective; the full error text is in runs.csv.",
        "",
    ]
    header = ["Cell", "Method", "Dataset × model", "Seed", "Status", "Error"]
    header += ["Last good iteration", "Device time [s]", "Objective", "Test accuracy"]
    rows = []
    for _, run in bad.iterrows():
        iteration, seconds, objective, accuracy = _last_good(run, curves)
        rows.append(
            [
                run["key"],
                run["method"],
                f"{run['dataset']} × {run['model']}",
                run["seed"],
                run["status"],
                _short_error(run["error"]),
                fmt(iteration, ".0f"),
                fmt_seconds(seconds),
                fmt(objective, ".4g"),
                fmt(accuracy),
            ]
        )
    return [*lines, *table(header, rows), ""]


def render_report(
    *,
    suite: str,
    description: str,
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    method_rows: pd.DataFrame,
    claims: Sequence[Claim],
    figures: Sequence[FigureFile],
    report_dir: Path,
    target_accuracy: float | None,
    comparison_lines: Sequence[str] = (),
) -> str:
    """The whole REPORT.md text; ``comparison_lines`` go between the results and claims."""
    lines = [f"# Benchmark report: {suite}", ""]
    if description.strip():
        lines += [description.strip(), ""]
    if not runs.empty:
        lines += setup_section(runs) + interference_lines(runs) + methods_section(runs)
    lines += results_section(method_rows, figures, report_dir, target_accuracy)
    lines += list(comparison_lines)
    lines += claims_section(claims)
    lines += unfinished_section(runs, curves)
    return "\n".join(lines).rstrip() + "\n"
