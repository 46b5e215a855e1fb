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
from bench.tracking.client import RunLog, Tracker
from bench.tracking.names import CELL_KEY_TAG, LEDGER_TAG, STATUS_TAG, SUITE_TAG
from bench.tracking.orphans import close_orphans, run_owner
from bench.tracking.sync import SYNC_PENDING, open_run_from_record


def record_outcome(outcome: CellOutcome, tracker: Tracker, ledger: Path) -> CellRecord:
    """Write the worker's record to the ledger and complete its MLflow run."""
    record = outcome.record
    record.mlflow_synced, record.mlflow_error = False, SYNC_PENDING
    record.save(ledger)  # the ledger first: a crash from here on loses no training
    if record.mlflow_run_id is not None:  # live: the worker opened and fed the run
        run = RunLog(tracker)
        run.run_id, run.error = record.mlflow_run_id, outcome.run_error
    else:
        run = open_run_from_record(tracker, record, ledger, {STATUS_TAG: "running"}, outcome.inputs)
        record.mlflow_run_id = run.run_id
        if outcome.model is not None and outcome.example is not None:
            run.log_model(outcome.model, outcome.example)
    record_and_close(record, run, ledger)
    close_abandoned_runs(tracker, record, ledger)
    return record


def failed_outcome(cell_config: dict[str, Any], key: str, suite: str, error: str) -> CellOutcome:
    """The record of a cell whose every attempt died with its worker (Dask gave up)."""
    record = CellRecord(key=key, suite=suite, status="failed", config=cell_config, error=error)
    return CellOutcome(record=record)


def close_abandoned_runs(tracker: Tracker, record: CellRecord, ledger: Path) -> int:
    """End KILLED the RUNNING runs of this cell and ledger other than the record's own.

    MLflow being unreachable is not an error here: the next start-of-run sync closes them.
    """
    mine = str(Path(ledger).resolve())

    def orphan(run: Any) -> str | None:
        tags = run.data.tags
        if run.info.run_id == record.mlflow_run_id or tags.get(LEDGER_TAG, mine) != mine:
            return None
        return (
            f"the worker ({run_owner(tags)}) stopped before the cell ended; the cell was run "
            f"again, see run {record.mlflow_run_id}"
        )

    tags = {CELL_KEY_TAG: record.key, SUITE_TAG: record.suite}
    try:
        return close_orphans(tracker.open(), tags, orphan)
    except Exception:  # MLflow unreachable
        return 0
