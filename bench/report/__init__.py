"""The report stage of ``make bench``: cell records in, CSV files, figures and REPORT.md out.

Modules, one job each: ``frames`` flattens records into the runs and curves tables,
``stats`` computes medians, spreads and seed bands, ``significance`` paired exact tests,
intervals with their exact level and the Holm adjustment, ``profiles`` joint
time-to-target and performance profiles, ``claims`` checks statements against the numbers,
``figures`` draws the PNGs, ``markdown`` writes the text, ``comparison`` the sections that
compare methods with their uncertainty and ``budgets`` whether their ranking holds across
the budgets of a budget sweep. Only this module touches the file system layout of a report.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.ledger.locking import process_alive
from bench.ledger.records import CellRecord
from bench.ledger.safe_files import describe_write_error, fsync_dir
from bench.report import budgets, comparison
from bench.report.claims import Claim, compute_claims
from bench.report.figures import FigureFile, draw_figures
from bench.report.frames import curves_frame, layer_frame, runs_frame
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
    targets_csv: Path | None = None
    profile_csv: Path | None = None
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
    Everything is written into a temporary folder beside ``out_dir``'s files and swapped
    in only when complete, so a crash or a full disk leaves the previous report whole;
    ``figures/`` is replaced as a folder, so a figure of a method no longer in the suite
    does not linger.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_folders(out_dir)
        staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=_folder_prefix("tmp")))
    except OSError as error:
        raise describe_write_error(error, out_dir) from error
    try:
        try:
            staged = _write_into(staging, records, suite, target_accuracy, description)
        except OSError as error:
            raise describe_write_error(error, staging) from error
        return _swap_in(staging, out_dir, staged)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


#: ``.report-tmp-<host>-<pid>-<random>`` (``old`` for the figures being replaced).
_FOLDER = re.compile(r"\.report-(?:tmp|old)-(?:(?P<host>.+)-(?P<pid>\d+)-)?[a-z0-9_]+")
#: A report folder of an earlier version (no owner in its name) this old is stale.
LEGACY_STALE_S = 3600.0


def _folder_prefix(kind: str) -> str:
    return f".report-{kind}-{socket.gethostname()}-{os.getpid()}-"


def remove_stale_folders(out_dir: Path) -> list[Path]:
    """Remove the temporary folders of reports whose process died (SIGKILL, power cut).

    A folder names its host and process; one of this host whose process is gone is
    removed, one of another host is left alone (its process cannot be checked).
    """
    removed = []
    for path in Path(out_dir).glob(".report-*"):
        match = _FOLDER.fullmatch(path.name)
        if match is None or not path.is_dir():
            continue
        stale = False
        if match["pid"] is None:
            with contextlib.suppress(OSError):
                stale = time.time() - path.stat().st_mtime > LEGACY_STALE_S
        elif match["host"] == socket.gethostname():  # another host's cannot be checked
            stale = not process_alive(int(match["pid"]))
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _write_into(
    folder: Path,
    records: Sequence[CellRecord],
    suite: str,
    target_accuracy: float | None,
    description: str,
) -> ReportPaths:
    figures_dir = folder / FIGURES_DIR
    figures_dir.mkdir()
    runs = runs_frame(records)
    curves = curves_frame(records)
    paths = ReportPaths(
        runs_csv=folder / "runs.csv",
        curves_csv=folder / "curves.csv",
        report_md=folder / "REPORT.md",
    )
    runs.to_csv(paths.runs_csv, index=False)
    curves.to_csv(paths.curves_csv, index=False)

    method_rows = method_table(runs, curves, target_accuracy)
    layers = layer_frame(records)
    figures = draw_figures(runs, curves, figures_dir, layers) if len(runs) else []
    compared = comparison.compute(runs, curves)
    paths.targets_csv = folder / "targets.csv"
    paths.profile_csv = folder / "profile.csv"
    compared.times.to_csv(paths.targets_csv, index=False)
    comparison.target_summary(compared).to_csv(paths.profile_csv, index=False)
    profile_figure = comparison.draw_profile(
        compared, list(runs["method"]), figures_dir / f"{comparison.PROFILE_KIND}.png"
    )
    paths.figures = [f.path for f in figures]
    if profile_figure is not None:
        paths.figures.append(profile_figure.path)
    text = render_report(
        suite=suite,
        description=description,
        runs=runs,
        curves=curves,
        method_rows=method_rows,
        claims=compute_claims(runs, method_rows),
        figures=figures,
        report_dir=folder,
        target_accuracy=target_accuracy,
        comparison_lines=[
            *comparison.confidence_section(method_rows),
            *comparison.targets_section(compared),
            *comparison.profile_section(compared, profile_figure, folder),
            *budgets.section(runs),
        ],
    )
    paths.report_md.write_text(text, encoding="utf-8")
    tables = [paths.runs_csv, paths.curves_csv, paths.targets_csv, paths.profile_csv]
    for path in [*tables, paths.report_md, *paths.figures]:
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    return paths


def _swap_in(staging: Path, out_dir: Path, staged: ReportPaths) -> ReportPaths:
    """Move the staged report over the old one: figures folder first, REPORT.md last."""
    final = out_dir / FIGURES_DIR
    old = None
    try:
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=out_dir, prefix=_folder_prefix("old")))
            final.replace(old / FIGURES_DIR)
        (staging / FIGURES_DIR).replace(final)
        for name in ("runs.csv", "curves.csv", "targets.csv", "profile.csv", "REPORT.md"):
            (staging / name).replace(out_dir / name)
        fsync_dir(out_dir)
    except OSError as error:
        raise describe_write_error(error, out_dir) from error
    finally:
        if old is not None:
            if not final.exists():  # the swap failed half-way: put the old figures back
                with contextlib.suppress(OSError):
                    (old / FIGURES_DIR).replace(final)
            shutil.rmtree(old, ignore_errors=True)
    return replace(
        staged,
        runs_csv=out_dir / "runs.csv",
        curves_csv=out_dir / "curves.csv",
        report_md=out_dir / "REPORT.md",
        targets_csv=out_dir / "targets.csv",
        profile_csv=out_dir / "profile.csv",
        figures=[final / p.name for p in staged.figures],
    )
