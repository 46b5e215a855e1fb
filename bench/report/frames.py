"""Flatten cell records into the two tables every other report module reads.

The report works from DataFrames rather than from records so that the CSV files, the
tables, the claims and the figures are all computed from exactly the same numbers: what
a reader finds in ``runs.csv`` is what the Markdown summarises.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from bench import metrics
from bench.metrics import CURVE_FIELDS, RUN_FIELDS
from bench.records import CellRecord

#: Columns that identify a cell; they lead both CSV files.
ID_COLUMNS = ("method", "optimizer", "model", "dataset", "seed", "mode", "status")

#: Configuration and bookkeeping columns of runs.csv that follow the summary figures.
RUN_TAIL_COLUMNS = (
    "wall_time_s",
    "batch_size",
    "chunk_size",
    "budget_epochs",
    "budget_device_seconds",
    "device",
    "device_name",
    "torch",
    "python",
    "git_commit",
    "platform",
    "suite",
    "mlflow_run_id",
    "key",
    "error",
)

#: Counts that should read as integers in the CSV even when some cells lack them.
INTEGER_COLUMNS = (*metrics.INTEGER_FIELDS, "seed", "batch_size", "chunk_size")

HP_PREFIX = "hp_"


def method_label(config: Mapping[str, Any]) -> str:
    """The method's label in the suite; older records without one fall back to the name."""
    return str(config.get("label") or config.get("method") or "unknown")


def _identity(record: CellRecord) -> dict[str, Any]:
    config = record.config
    return {
        "method": method_label(config),
        "optimizer": config.get("method"),
        # Grouping keys: a missing one must not make pandas drop the cell from the tables.
        "model": config.get("model") or "unknown",
        "dataset": config.get("dataset") or "unknown",
        "seed": config.get("seed"),
        "mode": config.get("mode"),
        "status": record.status,
    }


def flatten_hparams(hparams: Mapping[str, Any], prefix: str = HP_PREFIX) -> dict[str, Any]:
    """``hp_<name>`` columns; nested dicts join with '.', sequences become JSON text.

    CSV cells must be scalars, and JSON keeps a list readable and parseable again.
    """
    flat: dict[str, Any] = {}
    for name, value in hparams.items():
        column = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, prefix=f"{column}."))
        elif isinstance(value, list | tuple | set):
            flat[column] = json.dumps(list(value), default=str)
        else:
            flat[column] = value
    return flat


def _clean(value: Any) -> Any:
    """Plain Python scalars: numpy or torch scalars that slipped into a record unwrap."""
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    return value


def run_row(record: CellRecord) -> dict[str, Any]:
    """One runs.csv row: identity, every summary figure, configuration, hyperparameters."""
    config, env = record.config, record.environment
    budget = config.get("budget") or {}
    row = _identity(record)
    summary = {name: _clean(record.summary.get(name)) for name in metrics.SUMMARY_FIELDS}
    row.update(summary)
    row.update(metrics.derived(summary))
    row.update(
        {
            "wall_time_s": record.wall_time_s,
            "batch_size": config.get("batch_size"),
            "chunk_size": config.get("chunk_size"),
            "budget_epochs": budget.get("epochs"),
            "budget_device_seconds": budget.get("device_seconds"),
            "device": env.get("device"),
            "device_name": env.get("device_name"),
            "torch": env.get("torch"),
            "python": env.get("python"),
            "git_commit": env.get("git_commit"),
            "platform": env.get("platform"),
            "suite": record.suite,
            "mlflow_run_id": record.mlflow_run_id,
            "key": record.key,
            "error": record.error,
        }
    )
    row.update(flatten_hparams(config.get("hparams") or {}))
    return row


def _integer_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Nullable integers for counts, so a missing value does not turn 1200 into 1200.0."""
    for column in INTEGER_COLUMNS:
        if column not in frame:
            continue
        numeric = pd.to_numeric(frame[column], errors="coerce")
        present = numeric.dropna()
        if len(present) and all(math.isfinite(v) and float(v).is_integer() for v in present):
            frame[column] = numeric.astype("Int64")
    return frame


def runs_frame(records: Iterable[CellRecord]) -> pd.DataFrame:
    """runs.csv as a DataFrame: one row per cell, fixed leading columns, then ``hp_*``."""
    rows = [run_row(r) for r in records]
    fixed = [*ID_COLUMNS, *RUN_FIELDS, *RUN_TAIL_COLUMNS]
    hp_columns = sorted({c for row in rows for c in row if c.startswith(HP_PREFIX)})
    frame = pd.DataFrame(rows, columns=[*fixed, *hp_columns])
    return _integer_columns(frame)


def curves_frame(records: Iterable[CellRecord]) -> pd.DataFrame:
    """curves.csv as a DataFrame: one row per evaluation point, in recorded order."""
    rows: list[dict[str, Any]] = []
    extra: set[str] = set()
    for record in records:
        identity = {**_identity(record), "key": record.key}
        for point in record.curve:
            extra.update(k for k in point if k not in CURVE_FIELDS)
            rows.append({**identity, **{k: _clean(v) for k, v in point.items()}})
    columns = [*ID_COLUMNS, "key", *CURVE_FIELDS, *sorted(extra - set(ID_COLUMNS) - {"key"})]
    frame = pd.DataFrame(rows, columns=columns)
    for column in CURVE_FIELDS:
        if column not in INTEGER_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return _integer_columns(frame)
