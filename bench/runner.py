"""Run a suite: every cell once, recorded in the ledger and in MLflow, resumable.

A cell's key hashes its full configuration and the code version, so a rerun skips the
cells already finished (or diverged: a legitimate result) and retries failed ones. The
ledger entry is written only when a cell ends; Ctrl-C marks the interrupted MLflow run
KILLED, keeps everything finished so far and stops the suite. Any other error marks the
cell failed, the suite goes on, and the exit code is non-zero at the end.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bench.data import DataSplits, load_dataset
from bench.environment import code_version, environment
from bench.records import CellRecord
from bench.suites import Cell, Suite
from bench.tracking import EXPERIMENT_PREFIX, Tracker, tracking_uri
from bench.training import TrainingResult, train_cell

MLFLOW_STATUS = {"finished": "FINISHED", "diverged": "FINISHED", "failed": "FAILED"}


def cell_key(cell: Cell) -> str:
    """Stable hash of everything that determines the cell's result, code included."""
    payload = json.dumps({"config": cell.config(), "code": code_version()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def suite_dir(out_dir: Path, suite: str) -> Path:
    return Path(out_dir) / suite


def cells_dir(out_dir: Path, suite: str) -> Path:
    return suite_dir(out_dir, suite) / "cells"


@dataclass
class SuiteOutcome:
    ran: int
    skipped: int
    failed: int
    diverged: int

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


class DataCache:
    """Datasets loaded once per suite run and kept on the training device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cache: dict[str, DataSplits] = {}

    def get(self, dataset: str, options: dict[str, Any]) -> DataSplits:
        key = json.dumps([dataset, options], sort_keys=True)
        if key not in self._cache:
            self._cache[key] = load_dataset(dataset, device=self.device, **options)
        return self._cache[key]


def select(cells: list[Cell], only: str | None) -> list[Cell]:
    """Cells whose name (label/model/dataset/seedN) matches the glob ``only``."""
    if not only:
        return cells
    chosen = [c for c in cells if fnmatch.fnmatch(c.name, only) or only in c.name]
    if not chosen:
        names = ", ".join(c.name for c in cells[:8])
        raise ValueError(f"--only {only!r} matches no cell; cells look like: {names}, ...")
    return chosen


def run_suite(
    suite: Suite,
    out_dir: Path,
    device: torch.device,
    *,
    only: str | None = None,
    progress: bool = True,
) -> SuiteOutcome:
    out_dir = Path(out_dir)
    ledger = cells_dir(out_dir, suite.name)
    cells = select(suite.cells(), only)
    tracker = Tracker(
        tracking_uri(out_dir), EXPERIMENT_PREFIX + suite.name, out_dir / "mlflow-artifacts"
    )
    env = environment(device)
    data = DataCache(device)
    outcome = SuiteOutcome(0, 0, 0, 0)
    bar = tqdm(cells, desc=f"suite {suite.name}", unit="cell", disable=not progress)
    for cell in bar:
        key = cell_key(cell)
        existing = ledger / f"{key}.json"
        if existing.is_file() and CellRecord.load(existing).status in ("finished", "diverged"):
            outcome.skipped += 1
            continue
        record = run_cell(cell, key, tracker, data, device, env, progress=progress)
        record.save(ledger)
        outcome.ran += 1
        outcome.failed += record.status == "failed"
        outcome.diverged += record.status == "diverged"
        tqdm.write(one_line(record), file=None)
    return outcome


def run_cell(
    cell: Cell,
    key: str,
    tracker: Tracker,
    data: DataCache,
    device: torch.device,
    env: dict[str, str],
    *,
    progress: bool = True,
) -> CellRecord:
    config = cell.config()
    params = {
        **config,
        "device_name": env["device_name"],
        "torch": env["torch"],
        "git_commit": env["git_commit"],
        "cell_key": key,
    }
    tags = {
        "method": cell.method.label,
        "optimizer": cell.method.name,
        "model": cell.model,
        "dataset": cell.dataset,
        "mode": cell.method.mode,
        "seed": str(cell.seed),
        "suite": cell.suite,
        "cell_key": key,
        "status": "running",
    }
    run_id = tracker.start(cell.name, params, tags)
    began = time.perf_counter()
    record = CellRecord(
        key=key,
        suite=cell.suite,
        status="failed",
        config=config,
        environment=env,
        mlflow_run_id=run_id,
    )

    def log_point(point: dict[str, Any]) -> None:
        tracker.log_metrics(
            run_id, point, step=int(point["iteration"]), timestamp_ms=int(time.time() * 1000)
        )

    try:
        splits = data.get(cell.dataset, cell.data)
        result = train_cell(cell, splits, device, on_eval=log_point, progress=progress)
    except KeyboardInterrupt:
        tracker.set_tags(run_id, {"status": "killed"})
        tracker.end(run_id, "KILLED")
        raise
    except Exception as error:  # the suite goes on; the record keeps the traceback
        record.error = f"{type(error).__name__}: {error}"
        record.summary = {"traceback": traceback.format_exc()}
    else:
        _fill(record, result)
    record.wall_time_s = time.perf_counter() - began
    _close_run(tracker, run_id, record)
    return record


def _fill(record: CellRecord, result: TrainingResult) -> None:
    record.status = result.status
    record.summary = result.summary
    record.curve = result.curve
    record.layer_sparsity = result.layer_sparsity
    if result.status == "diverged":
        record.error = result.summary.get("diverged_reason")


def _close_run(tracker: Tracker, run_id: str, record: CellRecord) -> None:
    numeric = {f"final_{k}": v for k, v in record.summary.items()}
    tracker.log_metrics(
        run_id,
        numeric,
        step=int(record.summary.get("iterations") or 0),
        timestamp_ms=int(time.time() * 1000),
    )
    if record.layer_sparsity:
        tracker.log_json(run_id, "layer_sparsity.json", record.layer_sparsity)
    if record.curve:
        tracker.log_json(run_id, "curve.json", record.curve)
        _log_cell_figure(tracker, run_id, record)
    if record.error:
        tracker.log_json(run_id, "error.json", {"error": record.error, **record.summary})
    tracker.set_tags(run_id, {"status": record.status})
    tracker.end(run_id, MLFLOW_STATUS[record.status])


def _log_cell_figure(tracker: Tracker, run_id: str, record: CellRecord) -> None:
    """A small per-cell figure (objective and accuracy against device time)."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [p["device_time_s"] for p in record.curve]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    left.plot(times, [p["objective"] for p in record.curve], marker=".")
    left.set(xlabel="device time [s]", ylabel="objective J", title="objective")
    right.plot(times, [p["val_accuracy"] for p in record.curve], marker=".", label="val")
    if record.curve[0].get("test_accuracy") is not None:
        right.plot(times, [p["test_accuracy"] for p in record.curve], marker=".", label="test")
    right.set(xlabel="device time [s]", ylabel="accuracy", title="accuracy")
    right.legend()
    fig.suptitle(record.config["label"], fontsize=9)
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cell.png"
        fig.savefig(path, dpi=80)
        tracker.log_file(run_id, path)
    plt.close(fig)


def one_line(record: CellRecord) -> str:
    s = record.summary
    config = record.config
    name = f"{config['label']}/{config['model']}/{config['dataset']}/seed{config['seed']}"
    if record.status == "failed":
        return f"{name}: FAILED {record.error}"

    def fmt(key: str, spec: str) -> str:
        value = s.get(key)
        return "–" if value is None else format(value, spec)

    return (
        f"{name}: {record.status} test_acc={fmt('test_accuracy', '.4f')} "
        f"sparsity={fmt('sparsity', '.3f')} device={fmt('device_time_s', '.2f')}s "
        f"iters={s.get('iterations')} wall={record.wall_time_s:.1f}s"
    )
