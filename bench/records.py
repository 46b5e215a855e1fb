"""The record of one finished (or diverged, or failed) cell: the runner's ledger entry.

One JSON file per cell, ``<out>/<suite>/cells/<key>.json``, written atomically when the
cell ends. The report, the tuner and resumption read only these files (and MLflow for
the UI), so this module is the contract between them. Which figures a summary and a
curve point hold is defined once, in ``bench.metrics``. The ledger is the source of
truth: MLflow is a copy, and a record says whether that copy is complete
(``mlflow_synced``), so ``bench sync`` can push what MLflow missed.

A record that cannot be read (truncated by a crash of an older version, edited by hand)
is moved to ``cells/quarantine/`` with a warning that names it, so its cell runs again
instead of blocking every command that reads the ledger.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.safe_files import atomic_write_text, describe_write_error, is_temporary

STATUSES = ("finished", "diverged", "failed", "killed")
QUARANTINE = "quarantine"


class LedgerWarning(UserWarning):
    """A ledger file was unreadable and has been moved aside."""


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
    mlflow_synced: bool = True  # False: MLflow lacks (part of) this record; `bench sync`
    mlflow_error: str | None = None  # why the last attempt to reach MLflow failed
    # Set when training continued from a checkpoint (bench.checkpoints): the iteration
    # of the last resume and how many resumes the cell took in all.
    resumed_from_step: int | None = None
    resumes: int = 0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def save(self, directory: Path) -> Path:
        """Write atomically: a crash mid-write never leaves a truncated ledger entry.

        Raises :class:`bench.safe_files.OutputWriteError` (naming the file and what to do)
        when the disk is full or the folder is read-only.
        """
        path = Path(directory) / f"{self.key}.json"
        try:
            text = json.dumps(asdict(self), indent=1, default=_jsonable)
        except ValueError as error:  # a circular structure: a bug, not a disk problem
            raise ValueError(f"record {self.key} cannot be written as JSON: {error}") from None
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: Path) -> CellRecord:
        """Read one record; a damaged file raises :class:`ValueError` naming it."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            return cls(**data)
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            raise ValueError(f"ledger file {path} is damaged: {error}") from None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def record_paths(directory: Path) -> list[Path]:
    """The ledger's record files: ``<key>.json``, never leftovers of interrupted writes."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.json") if p.is_file() and not is_temporary(p))


def load_records(directory: Path) -> list[CellRecord]:
    """Every readable ledger entry in ``directory`` (sorted by file name).

    Damaged files are quarantined (see the module docstring), so their cells count as
    not run.
    """
    records = []
    for path in record_paths(directory):
        try:
            records.append(CellRecord.load(path))
        except ValueError as error:
            quarantine(path, str(error))
    return records


def load_record(path: Path) -> CellRecord | None:
    """One record if the file exists and is readable; a damaged one is quarantined."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return CellRecord.load(path)
    except ValueError as error:
        quarantine(path, str(error))
        return None


def quarantine(path: Path, reason: str) -> Path:
    """Move a damaged record to ``quarantine/`` beside it, with a warning naming both."""
    path = Path(path)
    folder = path.parent / QUARANTINE
    target = folder / path.name
    n = 1
    while target.exists():
        target = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    try:
        folder.mkdir(exist_ok=True)
        path.replace(target)
    except OSError as error:
        raise describe_write_error(error, target) from error
    warnings.warn(
        f"{reason}; moved it to {target}; its cell will run again", LedgerWarning, stacklevel=3
    )
    return target
