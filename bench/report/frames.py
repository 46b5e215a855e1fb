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

import optimizers
from bench.ledger.records import CellRecord
from bench.training import metrics
from bench.training.budget import Budget, BudgetError
from bench.training.metrics import CURVE_FIELDS, RUN_FIELDS

#: Columns that identify a cell; they lead both CSV files.
ID_COLUMNS = ("method", "optimizer", "model", "dataset", "seed", "mode", "status")

#: Configuration and bookkeeping columns of runs.csv that follow the summary figures.
RUN_TAIL_COLUMNS = (
    "wall_time_s",
    "batch_size",
    "chunk_size",
    "budget",
    "budget_unit",
    "budget_amount",
    "budget_safety_cap_seconds",
    "device",
    "device_name",
    "torch",
    "python",
    "git_commit",
    "platform",
    "suite",
    "penalty",
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


#: Hyperparameters that set the strength of a method's regularizer R in J = CE + R.
PENALTY_WEIGHTS = ("beta", "gamma", "lam")
#: How the report names each sparsity term a method declares (``optimizers.Traits``).
PENALTY_NAMES = {"l0": "L0", "l1": "L1", "l0-gates": "expected L0 (gates)"}


def penalty_family(config: Mapping[str, Any]) -> str:
    """Which R a method's objective J = CE + R contains, e.g. ``L0, beta=0.0001``.

    Two methods' J values are comparable only within one family; the report draws J
    per family and the cross-entropy (comparable everywhere) for all. Defaults come from
    the method's hyperparameter dataclass, so a suite that relies on them still says
    what R was; the kind of R is the method's ``penalty`` hyperparameter where it has
    one, else its declared ``penalty`` trait (a record of a method no longer registered
    reads as L0, the default trait).
    """
    name = str(config.get("method") or "")
    given = dict(config.get("hparams") or {})
    try:
        hparams = optimizers.effective_hparams(name, **given)
    except (TypeError, ValueError):  # a record of a method no longer registered
        hparams = given
    if "penalty" in hparams:
        kind = str(hparams["penalty"]).upper()
    else:
        declared = optimizers.traits(name).penalty
        kind = PENALTY_NAMES[declared] if declared is not None else "none"
    weights = {
        k: float(hparams[k])
        for k in PENALTY_WEIGHTS
        if isinstance(hparams.get(k), int | float) and hparams.get(k)
    }
    if not weights:
        return "R = 0"
    return f"{kind}, " + ", ".join(f"{k}={v:g}" for k, v in weights.items())


def layer_frame(records: Iterable[CellRecord]) -> pd.DataFrame:
    """Per-layer sparsity: one row per cell and prunable layer, in the model's order, with
    the layer's weight count (``size``; empty for records written before it was kept)."""
    rows = [
        {
            **_identity(record),
            "key": record.key,
            "layer": layer,
            "sparsity": float(value),
            "size": (record.layer_sizes or {}).get(layer),
        }
        for record in records
        for layer, value in (record.layer_sparsity or {}).items()
    ]
    return pd.DataFrame(rows, columns=[*ID_COLUMNS, "key", "layer", "sparsity", "size"])


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
            **budget_columns(budget),
            "device": env.get("device"),
            "device_name": env.get("device_name"),
            "torch": env.get("torch"),
            "python": env.get("python"),
            "git_commit": env.get("git_commit"),
            "platform": env.get("platform"),
            "suite": record.suite,
            "penalty": penalty_family(config),
            "mlflow_run_id": record.mlflow_run_id,
            "key": record.key,
            "error": record.error,
        }
    )
    row.update(flatten_hparams(config.get("hparams") or {}))
    return row


def budget_columns(budget: Mapping[str, Any]) -> dict[str, Any]:
    """The budget of a cell as runs.csv columns; a record of an older, clock-bounded
    version reads as its raw table with no unit."""
    try:
        parsed = Budget.from_config(budget)
    except BudgetError:
        text = ", ".join(f"{k}={v}" for k, v in budget.items() if v is not None)
        return {
            "budget": text or None,
            "budget_unit": None,
            "budget_amount": None,
            "budget_safety_cap_seconds": None,
        }
    return {
        "budget": parsed.describe(),
        "budget_unit": parsed.unit,
        "budget_amount": parsed.amount,
        "budget_safety_cap_seconds": parsed.safety_cap_seconds,
    }


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
