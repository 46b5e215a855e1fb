"""The driver's side of a cell that came back from a worker: the record, then MLflow.

The order is the serial runner's: the record reaches the ledger (atomically, marked not
synced) before anything optional, then the run is completed and closed, then the record
is saved again as synced (:func:`bench.runner.record_and_close`). A live run (opened by
the worker) is closed here; a deferred one is opened here and rebuilt from the record,
the worker's dataset inputs and its trained network. Runs of the same cell that an
earlier attempt left RUNNING (its worker was killed and Dask ran the cell again
elsewhere) are ended KILLED with the reason, so each cell has exactly one FINISHED run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.distributed.cells import CellOutcome
from bench.ledger.records import CellRecord
from bench.runner import record_and_close
from bench.tracking.run_log import RunLog, Sink, end_killed, run_owner
from bench.tracking.sync import LEDGER_TAG, SYNC_PENDING, run_spec


def record_outcome(outcome: CellOutcome, sink: Sink, ledger: Path) -> CellRecord:
    """Write the worker's record to the ledger and complete its MLflow run."""
    record = outcome.record
    record.mlflow_synced, record.mlflow_error = False, SYNC_PENDING
    record.save(ledger)  # the ledger first: a crash from here on loses no training
    if record.mlflow_run_id is not None:  # live: the worker opened and fed the run
        run = RunLog(sink)
        run.run_id, run.error = record.mlflow_run_id, outcome.run_error
    else:
        name, params, tags = run_spec(record, ledger)
        run = sink.start(name, params, {**tags, "status": "running"})
        record.mlflow_run_id = run.run_id
        run.log_curve(record.curve)
        if outcome.inputs:
            run.log_inputs(outcome.inputs)
        if outcome.model is not None and outcome.example is not None:
            run.log_model(outcome.model, outcome.example)
    record_and_close(record, run, ledger)
    close_abandoned_runs(sink, record, ledger)
    return record


def failed_outcome(cell_config: dict[str, Any], key: str, suite: str, error: str) -> CellOutcome:
    """The record of a cell whose every attempt died with its worker (Dask gave up)."""
    record = CellRecord(key=key, suite=suite, status="failed", config=cell_config, error=error)
    return CellOutcome(record=record)


def close_abandoned_runs(sink: Sink, record: CellRecord, ledger: Path) -> int:
    """End KILLED the RUNNING runs of this cell and ledger other than the record's own."""
    try:
        tracker = sink.tracker()
        runs = tracker.running_runs({"cell_key": record.key, "suite": record.suite})
    except Exception:  # MLflow unreachable: the next start-of-run sync closes them
        return 0
    mine, closed = str(Path(ledger).resolve()), 0
    for run in runs:
        tags = run.data.tags
        if run.info.run_id == record.mlflow_run_id or tags.get(LEDGER_TAG, mine) != mine:
            continue
        reason = (
            f"the worker ({run_owner(tags)}) stopped before the cell ended; the cell was run "
            f"again, see run {record.mlflow_run_id}"
        )
        try:
            end_killed(tracker, run.info.run_id, reason)
            closed += 1
        except Exception:
            continue
    return closed
