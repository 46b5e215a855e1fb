"""The report stage of ``make bench``: cell records in, CSV files, figures and REPORT.md out.

Modules, one job each: ``frames`` flattens records into the runs and curves tables,
``stats`` computes medians, spreads and seed bands, ``claims`` checks statements against
the numbers, ``figures`` draws the PNGs and ``markdown`` writes the text. Only this module
touches the file system layout of a report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.records import CellRecord
from bench.report.claims import Claim, compute_claims
from bench.report.figures import FigureFile, draw_figures
from bench.report.frames import curves_frame, runs_frame
from bench.report.markdown import render_report
from bench.report.stats import method_table

__all__ = [
    "Claim",
    "FigureFile",
    "ReportPaths",
    "compute_claims",
    "curves_frame",
    "method_table",
    "runs_frame",
    "write_report",
]

FIGURES_DIR = "figures"


@dataclass
class ReportPaths:
    """Where a report's files went, so callers (the CLI, tests) need not rebuild the names."""

    runs_csv: Path
    curves_csv: Path
    report_md: Path
    figures: list[Path] = field(default_factory=list)


def write_report(
    records: Sequence[CellRecord],
    out_dir: Path,
    *,
    suite: str,
    target_accuracy: float | None = None,
    description: str = "",
) -> ReportPaths:
    """Write runs.csv, curves.csv, figures/*.png and REPORT.md for ``records`` into ``out_dir``.

    Every record appears in the CSV files whatever its status; the medians, figures and
    claims that compare methods use finished cells, and the report lists the others.
    PNG files already in ``out_dir/figures`` are removed first: that folder belongs to the
    report, and a figure of a method no longer in the suite must not linger beside it.
    """
    out_dir = Path(out_dir)
    figures_dir = out_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    for stale in figures_dir.glob("*.png"):
        stale.unlink()

    runs = runs_frame(records)
    curves = curves_frame(records)
    paths = ReportPaths(
        runs_csv=out_dir / "runs.csv",
        curves_csv=out_dir / "curves.csv",
        report_md=out_dir / "REPORT.md",
    )
    runs.to_csv(paths.runs_csv, index=False)
    curves.to_csv(paths.curves_csv, index=False)

    method_rows = method_table(runs, curves, target_accuracy)
    figures = draw_figures(runs, curves, figures_dir) if len(runs) else []
    paths.figures = [f.path for f in figures]
    text = render_report(
        suite=suite,
        description=description,
        runs=runs,
        curves=curves,
        method_rows=method_rows,
        claims=compute_claims(runs, method_rows),
        figures=figures,
        report_dir=out_dir,
        target_accuracy=target_accuracy,
    )
    paths.report_md.write_text(text, encoding="utf-8")
    return paths
