"""The results of a suite as pandas DataFrames, for your own analysis in Python.

``load(out, suite)`` reads the ledger (``<out>/<suite>/cells/*.json``, the source of
truth) and builds the same tables ``bench report`` writes as ``runs.csv`` and
``curves.csv``, with the same columns and by the same code, so a notebook and the
report never disagree; no report needs to have been written, and MLflow is not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.ledger.records import CellRecord, load_records
from bench.report.frames import curves_frame, layer_frame, runs_frame
from bench.runner import cells_dir

__all__ = ["SuiteResults", "load"]


@dataclass(frozen=True)
class SuiteResults:
    """One suite's recorded cells and the tables built from them.

    Attributes:
        runs: one row per cell, the columns of ``runs.csv`` (identity, every final
            metric, configuration, ``hp_*`` hyperparameters).
        curves: one row per evaluation point, the columns of ``curves.csv``.
        layers: one row per cell and prunable layer: its final sparsity.
        records: the ledger records themselves (``bench.ledger.records.CellRecord``).
    """

    suite: str
    runs: pd.DataFrame
    curves: pd.DataFrame
    layers: pd.DataFrame
    records: list[CellRecord]


def load(out: str | Path, suite: str | Path) -> SuiteResults:
    """Every recorded cell of ``suite`` in the output folder ``out``, whatever its status.

    ``suite`` is the suite's name (``"quick"``) or its TOML file. Filter on the ``status``
    column (finished, diverged, capped, failed, killed) for what you compare. Raises
    FileNotFoundError naming the folder, and the suites that ``out`` holds, when the
    suite has no ledger there.
    """
    out = Path(out)
    name = _suite_name(suite)
    folder = cells_dir(out, name)
    if not folder.is_dir():
        held = sorted(p.parent.name for p in out.glob("*/cells") if p.is_dir())
        raise FileNotFoundError(
            f"no ledger of suite {name!r} in {out} (expected {folder}); "
            f"suites there: {', '.join(held) or 'none'}"
        )
    records = load_records(folder)
    return SuiteResults(
        suite=name,
        runs=runs_frame(records),
        curves=curves_frame(records),
        layers=layer_frame(records),
        records=records,
    )


def _suite_name(suite: str | Path) -> str:
    """A suite name, or the ``name`` of a suite file."""
    if str(suite).endswith(".toml"):
        from bench.suites import load_suite  # only for a file: reads and checks it

        return load_suite(Path(suite)).name
    return str(suite)
