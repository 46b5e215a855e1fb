"""The record of one finished (or diverged, or failed) cell: the runner's ledger entry.

One JSON file per cell, ``<out>/<suite>/cells/<key>.json``, written atomically when the
cell ends. The report, the tuner and resumption read only these files (and MLflow for
the UI), so this module is the contract between them.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("finished", "diverged", "failed", "killed")

#: Columns of one evaluation point (curves.csv). None where a figure does not apply
#: (eps and accept_rate for methods without them).
CURVE_FIELDS = (
    "iteration",  # training steps taken so far
    "epoch",  # passes over the training split so far (float)
    "device_time_s",  # cumulative device time of training steps only
    "objective",  # J = mean CE + R on the training-evaluation set
    "train_loss",  # mean CE on the training-evaluation set
    "val_accuracy",
    "test_accuracy",
    "sparsity",  # fraction of exact zeros among prunable weights
    "nonzeros",  # nonzero prunable weights
    "nonzero_macs",  # multiply-accumulates per sample counting nonzero weights only
    "eps",  # bSQH's augmentation parameter (None for other methods)
    "accept_rate",  # accepted attempts / attempts since the start (bSQH)
    "forward_passes",  # cumulative network-equivalent forward passes
    "backward_passes",
)

#: Summary figures that are simply the last evaluation point's values.
FINAL_FROM_CURVE = (
    "test_accuracy",
    "val_accuracy",
    "objective",
    "train_loss",
    "sparsity",
    "nonzeros",
    "nonzero_macs",
    "eps",
    "accept_rate",
    "forward_passes",
    "backward_passes",
)

#: Final figures of a cell (runs.csv columns beyond the configuration).
SUMMARY_FIELDS = (
    *FINAL_FROM_CURVE,
    "device_time_s",  # training steps only
    "eval_time_s",  # evaluation, timed separately
    "warmup_time_s",  # warm-up and compilation, timed separately
    "iterations",
    "epochs",
    "attempts",  # bSQH attempts (accepted steps + rejected attempts)
    "rejected_attempts",
    "accepted_increases",  # full-batch: accepted steps whose objective rose (must be 0)
)


@dataclass
class CellRecord:
    """Everything the suite knows about one cell after it ran."""

    key: str
    suite: str
    status: str
    config: dict[str, Any]  # method label/name, hparams, model, dataset, seed, mode, ...
    summary: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, Any]] = field(default_factory=list)
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)  # device, torch, git commit
    mlflow_run_id: str | None = None
    error: str | None = None
    wall_time_s: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def save(self, directory: Path) -> Path:
        """Write atomically: a crash mid-write never leaves a truncated ledger entry."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.key}.json"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle, indent=1, default=_jsonable)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> CellRecord:
        return cls(**json.loads(Path(path).read_text()))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def load_records(directory: Path) -> list[CellRecord]:
    """Every ledger entry in ``directory`` (sorted by file name for stable output)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return [CellRecord.load(p) for p in sorted(directory.glob("*.json"))]
