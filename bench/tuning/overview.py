"""All studies of a setting side by side: the hypervolume table and one plot of fronts.

``tune-all`` writes ``<out>/studies/hypervolume-<setting>.{csv,md}`` and
``<out>/studies/pareto-fronts-<setting>.png`` from the studies' ``summary.json``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from bench.report.markdown import table
from bench.tuning.figures import plot_fronts
from bench.tuning.seeds import seed_markdown

TABLE_COLUMNS = (
    "label",
    "method",
    "mode",
    "study",
    "tuning_seed",
    "finished",
    "failed",
    "front_size",
    "hypervolume",
    "hv_reference",
    "best_val_accuracy",
    "max_sparsity",
    "picked_val_accuracy",
    "picked_sparsity",
    "picked_trial",
)
TABLE_NOTE = (
    "`hypervolume`: area dominated by the method's Pareto front in (validation accuracy, "
    "sparsity) above the reference point `hv_reference` = (chance accuracy, 0), so fully "
    "pruned networks that only guess add nothing; larger is better. Methods that produce "
    "no exact zeros have hypervolume 0 by construction. Rows are in suite order, **not a "
    "ranking**: each hypervolume comes from one tuning run; read a difference between "
    "methods against the spread of the hypervolume over tuning seeds (the tuning-seed "
    "table), and with a single tuning seed, whose spread is unknown, not at all."
)


def hypervolume_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per study, in the order given (the suite's): never sorted by hypervolume,
    which would rank methods by one tuning run's figure without its spread over seeds."""
    rows = []
    for s in summaries:
        picked = s.get("picked") or {}
        rows.append(
            {
                "label": s.get("label"),
                "method": s.get("method"),
                "mode": s.get("mode"),
                "study": s["study"],
                "tuning_seed": s.get("tuning_seed", 0),
                "finished": s["finished"],
                "failed": s["trials"]["FAIL"] - s.get("surplus", 0),
                "front_size": s["front_size"],
                "hypervolume": s["hypervolume"],
                "hv_reference": _reference_text(s.get("hypervolume_reference")),
                "best_val_accuracy": s["best_val_accuracy"],
                "max_sparsity": s["max_sparsity"],
                "picked_val_accuracy": picked.get("val_accuracy"),
                "picked_sparsity": picked.get("sparsity"),
                "picked_trial": picked.get("trial"),
            }
        )
    return rows


def _reference_text(reference: Any) -> str | None:
    """``(0.1, 0)``; None for studies written before the reference was recorded."""
    if not reference:
        return None
    return "(" + ", ".join(f"{float(v):g}" for v in reference) + ")"


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write_overview(
    summaries: list[dict[str, Any]], directory: Path, name: str, *, caption: str = ""
) -> dict[str, Path]:
    """The hypervolume table (CSV + Markdown) and one plot of every study's front."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = hypervolume_rows(summaries)
    csv_path = directory / f"hypervolume-{name}.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(TABLE_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    md_path = directory / f"hypervolume-{name}.md"
    lines = [
        f"# Dominated hypervolume per method: setting {name}",
        "",
        *([caption, ""] if caption else []),
        TABLE_NOTE,
        "",
        *table(TABLE_COLUMNS, ([_text(r.get(c)) for c in TABLE_COLUMNS] for r in rows)),
        "",
        *seed_markdown(summaries),
    ]
    md_path.write_text("\n".join(lines) + "\n")
    title = f"Pareto fronts, setting {name}" + (f"\n{caption}" if caption else "")
    png_path = plot_fronts(summaries, directory / f"pareto-fronts-{name}.png", title=title)
    return {"csv": csv_path, "markdown": md_path, "figure": png_path}
