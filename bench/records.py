"""The record of one finished (or diverged, or failed) cell: the runner's ledger entry.

One JSON file per cell, ``<out>/<suite>/cells/<key>.json``, written atomically when the
cell ends. The report, the tuner and resumption read only these files (and MLflow for
the UI), so this module is the contract between them. Which figures a summary and a
curve point hold is defined once, in ``bench.metrics``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("finished", "diverged", "failed", "killed")


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
