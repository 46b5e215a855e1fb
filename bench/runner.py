"""Run a suite: every cell once, recorded in the ledger and in MLflow, resumable.

A cell's key hashes its full configuration and the code version, so a rerun skips the
cells already finished (or diverged: a legitimate result) and retries failed and killed
ones. The ledger is the source of truth and MLflow a tracker: when a cell ends its record is
written (atomically) before anything optional, MLflow failures only mark the record not
synced, and ``bench sync`` (which also runs at the start of every suite) pushes it later.

Several drivers may run one suite into one ``--out`` at once: each cell is trained by
the process holding its claim (:mod:`bench.ledger.cell_claims`), and every driver returns once the
whole suite is recorded.
Ctrl-C is honoured only between safe points (:class:`bench.training.interrupts.InterruptGuard`):
an interrupted cell is recorded ``killed`` with the curve it had so far, a finished one
is recorded whatever the moment of the Ctrl-C, and the suite stops. Any other error
marks the cell failed, the suite goes on, and the exit code is non-zero at the end.
"""

from __future__ import annotations

import fnmatch
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bench.data import DataCache, DataOptionError, DataSplits
from bench.environment import environment
from bench.ledger.cell_claims import WAIT_POLL_S, CellClaims
from bench.ledger.checkpoints import DEFAULT_MINUTES, CellCheckpoints, checkpoint_path
from bench.ledger.identity import cell_key
from bench.ledger.records import CellRecord, load_record
from bench.suites import Cell, Suite, SuiteError
from bench.tracking.client import EXPERIMENT_PREFIX, Tracker
from bench.tracking.meta import dataset_inputs, suite_experiment_tags
from bench.tracking.names import STATUS_TAG
from bench.tracking.sync import (
    SYNC_PENDING,
    SyncOutcome,
    close_run,
    retire_replaced_runs,
    run_spec,
    sync_ledger,
)
from bench.training.interrupts import InterruptGuard, describe
from bench.training.loop import TrainingResult, iterations_per_epoch, train_cell
from bench.training.metrics import SUMMARY_FIELDS

#: Statuses a rerun keeps; failed, killed and capped cells run again (a capped cell hit
#: its clock safety net, which a quieter machine may not).
RERUN_KEEPS = ("finished", "diverged")
#: Statuses after which a cell's checkpoint is deleted: final ones, and ``capped``, whose
#: rerun starts afresh (resumed, it would carry the device time that hit the cap). A
#: failed or killed cell keeps its checkpoint and resumes from it.
RESTART = (*RERUN_KEEPS, "capped")
#: Samples in a logged model's input example (its signature comes from them).
MODEL_EXAMPLE_SIZE = 4


def suite_dir(out_dir: Path, suite: str) -> Path:
    return Path(out_dir) / suite


def cells_dir(out_dir: Path, suite: str) -> Path:
    return suite_dir(out_dir, suite) / "cells"


def suite_claims(out_dir: Path, suite: str) -> CellClaims:
    """The per-cell claims of a suite's ledger in ``out_dir`` (:mod:`bench.ledger.cell_claims`)."""
    return CellClaims(suite_dir(out_dir, suite), suite)


@dataclass
class SuiteOutcome:
    ran: int
    skipped: int
    failed: int
    diverged: int
    unsynced: int = 0  # cells recorded in the ledger whose MLflow run is incomplete
    elsewhere: int = 0  # cells another driver trained while this one ran (claims)
    sync: SyncOutcome | None = None  # what the start-of-run sync did

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.unsynced else 0

    def count_trained(self, record: CellRecord) -> None:
        """A cell this driver trained and recorded."""
        self.ran += 1
        self.failed += record.status == "failed"
        self.diverged += record.status == "diverged"
        self.unsynced += not record.mlflow_synced

    def count_recorded(self, record: CellRecord, before_start: bool) -> None:
        """A cell this driver did not train: recorded before it started, or by another
        driver meanwhile (whose failed attempt makes this driver's exit status 1 too)."""
        if before_start:
            self.skipped += 1
        else:
            self.elsewhere += 1
            self.failed += record.status == "failed"
        self.unsynced += not record.mlflow_synced


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
    tracker: Tracker | None = None,
    models: bool = True,
    checkpoint_minutes: float | None = DEFAULT_MINUTES,
) -> SuiteOutcome:
    """Run the suite's remaining cells, each under its claim (see the module docstring).

    ``models``: save each finished cell's network as its run's MLflow model.
    ``checkpoint_minutes``: wall-clock minutes between checkpoints of a cell in training
    (None: only when interrupted); an interrupted cell resumes on the next run. The data
    of every cell still to run is loaded before the first cell trains, so a missing or
    damaged data file stops the suite at once with the loader's message. Cells another
    live driver has claimed are left to it and waited for at the end.

    Raises :class:`bench.ledger.safe_files.OutputWriteError` when the ledger cannot be written,
    and :class:`KeyboardInterrupt` after recording the cell that Ctrl-C interrupted.
    """
    out_dir = Path(out_dir)
    ledger = cells_dir(out_dir, suite.name)
    claims = suite_claims(out_dir, suite.name)
    cells = select(suite.cells(), only)
    tracker = tracker or Tracker.for_output(
        out_dir,
        EXPERIMENT_PREFIX + suite.name,
        suite_experiment_tags(suite),
    )
    with InterruptGuard() as guard:
        outcome = SuiteOutcome(0, 0, 0, 0)
        data = DataCache(device)
        todo = [(cell, cell_key(cell)) for cell in cells]
        existing = {key: load_record(ledger / f"{key}.json") for _, key in todo}
        for cell, key in todo:
            if not is_done(existing[key]):
                load_cell_data(cell, data, suite.path)
        with guard.deferred():
            outcome.sync = sync_ledger(tracker, ledger, suite.name, data)
        guard.check()
        if outcome.sync.pushed or outcome.sync.closed:
            print(f"mlflow sync: {outcome.sync.describe()}", file=sys.stderr)
        env = environment(device)
        bar = tqdm(total=len(cells), desc=f"suite {suite.name}", unit="cell", disable=not progress)
        first_pass = True
        while todo:
            waiting = []
            for cell, key in todo:
                claim = claims.take(key)
                if claim is None:  # another live driver trains or records it now
                    waiting.append((cell, key))
                    continue
                with claim:  # read under the claim: no record is half-written now
                    done = load_record(ledger / f"{key}.json")  # as the sync left it
                    if settled(done, attempt(existing[key])):
                        outcome.count_recorded(done, before_start=is_done(existing[key]))
                    else:
                        record = run_cell(
                            cell, key, tracker, data, device, env, ledger, guard,
                            progress=progress, models=models,
                            checkpoint_minutes=checkpoint_minutes,
                        )  # fmt: skip
                        outcome.count_trained(record)
                        tqdm.write(one_line(record), file=None)
                bar.update()
                guard.check()
            if waiting:
                if len(waiting) != len(todo) or first_pass:
                    tqdm.write(claims.waiting_note([key for _, key in waiting]), file=sys.stderr)
                time.sleep(WAIT_POLL_S)
                guard.check()
            todo, first_pass = waiting, False
        bar.close()
    return outcome


def load_cell_data(cell: Cell, data: DataCache, suite_path: Path) -> DataSplits:
    """A cell's splits, checked against its suite before any cell trains.

    What only the loaded files tell (``train_subset`` beyond the training split, a
    ``batch_size`` beyond the training samples) raises :class:`SuiteError` naming the
    suite file; missing or damaged files raise the loaders' own errors.
    """
    try:
        splits = data.get(cell.dataset, cell.data)
    except DataOptionError as error:
        raise SuiteError(f"{suite_path}: [data] of dataset {cell.dataset}: {error}") from None
    try:
        iterations_per_epoch(cell, len(splits.train_y))
    except ValueError as error:
        raise SuiteError(f"{suite_path}: key 'batch_size': {error}") from None
    return splits


def is_done(record: CellRecord | None) -> bool:
    """Whether a record ends its cell for good (finished or diverged; a rerun keeps it)."""
    return record is not None and record.status in RERUN_KEEPS


def attempt(record: CellRecord | None) -> tuple[str, float | None] | None:
    """What identifies one training attempt's record (its status and wall time)."""
    return None if record is None else (record.status, record.wall_time_s)


def settled(record: CellRecord | None, at_start: tuple[str, float | None] | None) -> bool:
    """Whether a cell needs no training now: it is finished or diverged, or another driver
    recorded an attempt (failed or killed too) while this one ran. A failed cell is
    retried by the next run, not by a driver that saw it fail elsewhere moments ago."""
    return record is not None and (is_done(record) or attempt(record) != at_start)


def run_cell(
    cell: Cell,
    key: str,
    tracker: Tracker,
    data: DataCache,
    device: torch.device,
    env: dict[str, str],
    ledger: Path,
    guard: InterruptGuard | None = None,
    *,
    progress: bool = True,
    models: bool = True,
    finish: Callable[[CellRecord, Any, Path], None] | None = None,
    checkpoint_minutes: float | None = DEFAULT_MINUTES,
) -> CellRecord:
    """Train one cell, write its record, then close its MLflow run; returns the record.

    The run gets the cell's dataset splits as inputs, system metrics while it trains,
    and (``models``) the trained network of a finished cell as its MLflow model.
    ``finish(record, run, ledger)`` replaces :func:`record_and_close` where the record
    is written elsewhere: a Dask worker hands both back to the driver, which writes them.
    The cell resumes from its checkpoint (``<out>/<suite>/checkpoints/<key>.pt``) if a
    stopped attempt left one, writes one every ``checkpoint_minutes`` and on Ctrl-C, and
    deletes it once the record is final; a resume is recorded in the record
    (``resumed_from_step``, ``resumes``), whose closing gives the MLflow run those tags.
    """
    finish = finish or record_and_close
    guard = guard or InterruptGuard()
    record = CellRecord(
        key=key, suite=cell.suite, status="failed", config=cell.config(), environment=env
    )
    name, params, tags = run_spec(record, ledger)
    run = tracker.start(name, params, {**tags, STATUS_TAG: "running"})
    record.mlflow_run_id = run.run_id
    seen: list[dict[str, Any]] = []
    checkpoints = CellCheckpoints(
        checkpoint_path(ledger, key),
        None if checkpoint_minutes is None else checkpoint_minutes * 60.0,
        guard,
    )

    def on_eval(point: dict[str, Any]) -> None:
        seen.append(point)
        run.log_point(point)

    began = time.perf_counter()
    try:
        splits = data.get(cell.dataset, cell.data)
        run.log_inputs(dataset_inputs(cell.dataset, cell.data, splits))
        with run.system_metrics():
            result = train_cell(
                cell, splits, device, on_eval=on_eval, progress=progress, checkpoints=checkpoints
            )
        if models and result.status == "finished" and result.model is not None:
            run.log_model(result.model, splits.test_x[:MODEL_EXAMPLE_SIZE])
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM
        with guard.deferred():
            _note_resume(record, checkpoints)
            record.status = "killed"
            record.error = describe(interrupt)
            record.curve = seen
            last = seen[-1] if seen else {}
            record.summary = {k: last[k] for k in SUMMARY_FIELDS if k in last}
            record.wall_time_s = time.perf_counter() - began
            finish(record, run, ledger)
        raise
    except Exception as error:  # the suite goes on; the record keeps the traceback
        record.error = f"{type(error).__name__}: {error}"
        record.summary = {"traceback": traceback.format_exc()}
    else:
        _fill(record, result)
    _note_resume(record, checkpoints)
    record.wall_time_s = time.perf_counter() - began
    with guard.deferred():
        finish(record, run, ledger)
        if record.status in RESTART:
            checkpoints.delete()
    return record


def _note_resume(record: CellRecord, checkpoints: CellCheckpoints) -> None:
    """A resumed attempt says so in its record (and so as tags of its MLflow run)."""
    if checkpoints.resumes:
        record.resumed_from_step = checkpoints.resumed_from_step
        record.resumes = checkpoints.resumes


def record_and_close(record: CellRecord, run: Any, ledger: Path) -> None:
    """The ledger first (marked not synced), then MLflow, then the sync status.

    A crash or a second Ctrl-C after the first save leaves a complete record that says
    MLflow may lack part of it, which is what ``bench sync`` repairs.
    """
    record.mlflow_synced, record.mlflow_error = False, run.error or SYNC_PENDING
    record.save(ledger)
    close_run(run, record)
    record.mlflow_synced, record.mlflow_error = run.synced, run.error
    record.save(ledger)
    retire_replaced_runs(run, record, ledger)


def _fill(record: CellRecord, result: TrainingResult) -> None:
    record.status = result.status
    record.summary = result.summary
    record.curve = result.curve
    record.layer_sparsity = result.layer_sparsity
    record.layer_sizes = result.layer_sizes
    if result.status in ("diverged", "capped"):
        record.error = result.summary.get(f"{result.status}_reason")


def one_line(record: CellRecord) -> str:
    s = record.summary
    config = record.config
    name = f"{config['label']}/{config['model']}/{config['dataset']}/seed{config['seed']}"
    if record.status == "failed":
        return f"{name}: FAILED {record.error}" + _sync_note(record)

    def fmt(key: str, spec: str) -> str:
        value = s.get(key)
        return "–" if value is None else format(value, spec)

    return (
        f"{name}: {record.status} test_acc={fmt('test_accuracy', '.4f')} "
        f"sparsity={fmt('sparsity', '.3f')} device={fmt('device_time_s', '.2f')}s "
        f"iters={s.get('iterations')} wall={record.wall_time_s:.1f}s"
    ) + _sync_note(record)


def _sync_note(record: CellRecord) -> str:
    return "" if record.mlflow_synced else f" [not synced to MLflow: {record.mlflow_error}]"
