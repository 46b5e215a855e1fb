"""The record of one finished (or diverged, or failed) cell: the runner's ledger entry.

One JSON file per cell, ``<out>/<suite>/cells/<key>.json``, written atomically when the
cell ends. The report, the tuner and resumption read only these files (and MLflow for
the UI), so this module is the contract between them. Which figures a summary and a
curve point hold is defined once, in ``bench.training.metrics``. The ledger is the source of
truth: MLflow is a copy, and a record says whether that copy is complete
(``mlflow_synced``), so ``bench sync`` can push what MLflow missed.

A record that cannot be trusted is moved to ``cells/quarantine/`` with a warning that
names it and says why, so its cell runs again instead of blocking (or silently skewing)
every command that reads the ledger: a file that is not JSON (truncated by a crash of an
older version, edited by hand), a field of the wrong type (``"summary": "oops"``,
``"test_accuracy": "high"``), a key that is not its file's name (one record copied over
another), or a configuration that does not hash to its key (edited by hand, or trained
by other code than the key says). Summary keys the bench does not know are kept as they
are, so a newer version's figures do not make an older version's ledger unreadable.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bench.ledger.identity import config_key, jsonable
from bench.ledger.safe_files import atomic_write_text, describe_write_error, is_temporary
from bench.training.metrics import SUMMARY_FIELDS

#: ``capped``: stopped by a safety time cap.
STATUSES = ("finished", "diverged", "capped", "failed", "killed")
QUARANTINE = "quarantine"
#: Summary entries that are text; every figure in ``SUMMARY_FIELDS`` is a number or null.
SUMMARY_TEXT = ("traceback", "diverged_reason")


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
    layer_sizes: dict[str, int] = field(default_factory=dict)  # weights per prunable layer
    environment: dict[str, Any] = field(default_factory=dict)  # device, torch, git commit
    mlflow_run_id: str | None = None
    error: str | None = None
    wall_time_s: float = 0.0
    mlflow_synced: bool = True  # False: MLflow lacks (part of) this record; `bench sync`
    mlflow_error: str | None = None  # why the last attempt to reach MLflow failed
    # Set when training continued from a checkpoint (bench.ledger.checkpoints): the iteration
    # of the last resume and how many resumes the cell took in all.
    resumed_from_step: int | None = None
    resumes: int = 0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def save(self, directory: Path) -> Path:
        """Write atomically: a crash mid-write never leaves a truncated ledger entry.

        Raises :class:`bench.ledger.safe_files.OutputWriteError` (naming the file and what to do)
        when the disk is full or the folder is read-only.
        """
        path = Path(directory) / f"{self.key}.json"
        try:
            text = json.dumps(asdict(self), indent=1, default=jsonable)
        except ValueError as error:  # a circular structure: a bug, not a disk problem
            raise ValueError(f"record {self.key} cannot be written as JSON: {error}") from None
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: Path) -> CellRecord:
        """Read one record; a damaged or untrustworthy file raises :class:`ValueError`
        naming it and the problem (see the module docstring)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            check_fields(data)
            record = cls(**data)
            check_identity(record, path)
            return record
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            raise ValueError(f"ledger file {path} is damaged: {error}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_optional_text(value: Any) -> bool:
    return value is None or isinstance(value, str)


#: What each field of a record file must hold (checked before the record is built).
_FIELD_TYPES: dict[str, tuple[str, Any]] = {
    "key": ("a string", lambda v: isinstance(v, str)),
    "suite": ("a string", lambda v: isinstance(v, str)),
    "status": ("a string", lambda v: isinstance(v, str)),
    "config": ("an object", lambda v: isinstance(v, dict)),
    "summary": ("an object", lambda v: isinstance(v, dict)),
    "curve": (
        "a list of objects",
        lambda v: isinstance(v, list) and all(isinstance(p, dict) for p in v),
    ),
    "layer_sparsity": (
        "an object of numbers",
        lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values()),
    ),
    "layer_sizes": (
        "an object of integers >= 0",
        lambda v: (
            isinstance(v, dict)
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v.values())
        ),
    ),
    "environment": ("an object", lambda v: isinstance(v, dict)),
    "mlflow_run_id": ("a string or null", _is_optional_text),
    "error": ("a string or null", _is_optional_text),
    "wall_time_s": (
        "a finite number >= 0",
        lambda v: _is_number(v) and math.isfinite(v) and v >= 0,
    ),
    "mlflow_synced": ("true or false", lambda v: isinstance(v, bool)),
    "mlflow_error": ("a string or null", _is_optional_text),
    "resumed_from_step": (
        "an integer >= 0 or null",
        lambda v: v is None or _is_count(v),
    ),
    "resumes": ("an integer >= 0", _is_count),
}


def check_fields(data: dict[str, Any]) -> None:
    """Raise :class:`ValueError` naming the first field (or summary figure) of the wrong type."""
    known = {f.name for f in fields(CellRecord)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}")
    for name, (kind, valid) in _FIELD_TYPES.items():
        if name in data and not valid(data[name]):
            raise ValueError(f"field {name!r} must be {kind}, got {data[name]!r:.80}")
    for name, value in data.get("summary", {}).items():
        # A figure is a number, or a flag (true/false, e.g. ``interference``), or null.
        if name in SUMMARY_FIELDS and not (
            value is None or isinstance(value, bool) or _is_number(value)
        ):
            raise ValueError(
                f"summary figure {name!r} must be a number, true/false or null, got {value!r:.80}"
            )
        if name in SUMMARY_TEXT and not _is_optional_text(value):
            raise ValueError(f"summary entry {name!r} must be text, got {value!r:.80}")


def check_identity(record: CellRecord, path: Path) -> None:
    """The record is the one its file name promises, of the configuration its key hashes."""
    if record.key != path.stem:
        raise ValueError(f"it holds the record of cell {record.key!r}, not of {path.stem!r}")
    code = record.environment.get("code_version")
    if isinstance(code, str) and config_key(record.config, code) != record.key:
        raise ValueError(
            f"its configuration does not hash to its key {record.key!r} (edited by hand?)"
        )


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
