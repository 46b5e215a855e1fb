"""A ledger record as an MLflow run: how a cell's run is opened and closed, and rebuilt.

The runner opens a cell's run before training and closes it from the finished record
(:func:`close_run`); when MLflow missed any of it, the record says ``mlflow_synced:
false`` and :func:`sync_ledger` (``bench sync``, and ``bench run`` at its start)
rebuilds the whole run from the record: the same params and tags, the dataset inputs
(the splits are loaded again to digest them, as the runner does), the curve as metrics
with their steps, the final figures, the artifacts and the end status. The trained
network is not in the ledger, so a rebuilt run has no model. It also closes
the runs of this ledger that a dead process left RUNNING (KILLED, with a reason tag).
Other drivers may be running the same suite meanwhile, so both take the cell's claim
(:mod:`bench.ledger.cell_claims`) before touching its record or run: a cell another live driver is
training is left alone, and a run is closed only if it is still RUNNING once the claim
is held (its owner closes its run before it lets the claim go).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data import DataCache, DatasetUnavailable
from bench.ledger.cell_claims import CellClaims
from bench.ledger.records import QUARANTINE, CellRecord, load_record, load_records
from bench.tracking.client import RunLog, Tracker, short_reason
from bench.tracking.colours import run_colour
from bench.tracking.meta import cell_description, dataset_inputs, run_name, standard_tags
from bench.tracking.names import (
    CELL_CONFIG_TAGS,
    CELL_ENVIRONMENT_PARAMS,
    CELL_KEY_PARAM,
    CELL_KEY_TAG,
    CELL_KIND,
    CLOSE_REASON_TAG,
    COMPLETE_TAG,
    INTERFERENCE_TAG,
    LEDGER_TAG,
    REBUILT_TAG,
    RESUMED_FROM_STEP_TAG,
    RESUMES_TAG,
    RUN_COLOUR_TAG,
    RUN_KIND_TAG,
    SEED_TAG,
    STATUS_TAG,
    SUITE_TAG,
)
from bench.tracking.orphans import close_orphans as close_orphan_runs
from bench.tracking.orphans import owner_gone, run_owner

SYNC_PENDING = "the process stopped before MLflow had the whole record"


def run_spec(record: CellRecord, ledger: Path) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The run name, params and tags of a cell, all read from its record.

    One name per meaning, in params and tags alike: ``label`` is the suite's name of the
    method (``bsqh-mb``), ``method`` the registry name (``bsqh``). The short run name
    (``bsqh-mb/s0``) and the ``seed`` tag show the seed in the run table; the model and
    dataset are tags and params; ``run_kind = cell`` tells it from the suite's report
    run; ``mlflow.runColor`` gives the method its fixed colour (:mod:`bench.tracking.colours`).
    Options that are not set (None) are not logged.
    """
    config, env = record.config, record.environment
    name = run_name(config["label"], config["seed"])
    params = {
        **config,
        **{name: env.get(name) for name in CELL_ENVIRONMENT_PARAMS},
        CELL_KEY_PARAM: record.key,
    }
    tags = {
        **standard_tags(git_commit=env.get("git_commit"), description=cell_description(config)),
        **{name: config[name] for name in CELL_CONFIG_TAGS},
        SEED_TAG: str(config["seed"]),
        SUITE_TAG: record.suite,
        CELL_KEY_TAG: record.key,
        RUN_KIND_TAG: CELL_KIND,
        RUN_COLOUR_TAG: run_colour(config["method"], config["mode"]),
        LEDGER_TAG: str(Path(ledger).resolve()),
    }
    return name, params, tags


def open_run_from_record(
    tracker: Tracker,
    record: CellRecord,
    ledger: Path,
    tags: Mapping[str, str],
    inputs: Sequence[Any] = (),
) -> RunLog:
    """A new run holding what a record holds up to its end: the one way to make a run
    from a record after its cell trained.

    ``bench sync`` rebuilds a run MLflow missed with it, and the Dask driver opens the
    run a worker deferred; each then adds what only it has (the worker's model) and
    closes the run. The run gets the spec of :func:`run_spec` plus ``tags``, the
    dataset ``inputs`` and the curve as metrics with their steps.
    """
    name, params, spec_tags = run_spec(record, ledger)
    run = tracker.start(name, params, {**spec_tags, **tags})
    if inputs:
        run.log_inputs(inputs)
    run.log_curve(record.curve)
    return run


def record_inputs(record: CellRecord, data: DataCache) -> list[Any]:
    """The dataset inputs of a record's run, as the runner logs them for a live cell.

    Data that can no longer be loaded (files removed, a dataset this version does not
    know) costs the inputs only, with a warning: the rest of the run is still rebuilt.
    """
    dataset, options = record.config.get("dataset"), record.config.get("data") or {}
    try:
        splits = data.get(dataset, options)
    except (DatasetUnavailable, OSError, ValueError) as error:  # DataFileError is one
        note = f"run of cell {record.key} rebuilt without dataset inputs: {short_reason(error)}"
        warnings.warn(note, stacklevel=2)
        return []
    return dataset_inputs(dataset, options, splits)


def close_run(run: RunLog, record: CellRecord) -> None:
    """Final figures, artifacts, figure, status tag and end status from the record."""
    summary = record.summary
    error = {"error": record.error, **summary} if record.error else None
    resumed = (
        {RESUMED_FROM_STEP_TAG: str(record.resumed_from_step), RESUMES_TAG: str(record.resumes)}
        if record.resumes
        else None
    )
    run.finish_training(
        record.status,
        summary,
        tags={**(resumed or {}), **interference_tag(summary)} or None,
        curve=record.curve,
        layer_sparsity=record.layer_sparsity,
        error=error,
        figure=(lambda folder: draw_cell_figure(record, folder)) if record.curve else None,
    )


def interference_tag(summary: dict[str, Any]) -> dict[str, str]:
    """``interference = true|false`` where the cell's steps were checked (a filter in the UI)."""
    flag = summary.get("interference")
    return {} if flag is None else {INTERFERENCE_TAG: str(bool(flag)).lower()}


def retire_replaced_runs(run: RunLog, record: CellRecord, ledger: Path) -> int:
    """Mark the runs of an earlier record of this cell replaced by ``run``; how many.

    A record that was quarantined (:mod:`bench.ledger.records`) leaves a run that MLflow still
    shows FINISHED; once the cell is trained again and its new run is complete, the old
    one is ended FAILED with the tags ``status = replaced`` and ``pmp.close_reason``, so
    MLflow holds one current run per cell. Only cells with a quarantined record are
    searched (no query per cell otherwise); a failure here costs nothing but the marks.
    """
    if not run.synced or run.run_id is None:
        return 0
    if not any(Path(ledger, QUARANTINE).glob(f"{record.key}*.json")):
        return 0
    try:
        tracker = run.tracker.open()
        tags = {CELL_KEY_TAG: record.key, LEDGER_TAG: str(Path(ledger).resolve())}
        old = [r for r in tracker.runs_with_tags(tags) if r.info.run_id != run.run_id]
        for stale in old:
            if stale.info.status == "RUNNING" or stale.data.tags.get(STATUS_TAG) == "replaced":
                continue  # an orphan's (close_orphans ends it) or done already
            reason = f"replaced by run {run.run_id}: its record was quarantined and the cell rerun"
            tracker.set_tags(stale.info.run_id, {STATUS_TAG: "replaced", CLOSE_REASON_TAG: reason})
            tracker.end(stale.info.run_id, "FAILED")
        return len(old)
    except Exception:  # MLflow failed meanwhile: the old run stays as it was
        return 0


def draw_cell_figure(record: CellRecord, folder: Path) -> Path:
    """``cell.png``: objective and accuracy against device time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [p["device_time_s"] for p in record.curve]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    try:
        left.plot(times, [p["objective"] for p in record.curve], marker=".")
        left.set(xlabel="device time [s]", ylabel="objective J", title="objective")
        right.plot(times, [p["val_accuracy"] for p in record.curve], marker=".", label="val")
        if record.curve[0].get("test_accuracy") is not None:
            tests = [p["test_accuracy"] for p in record.curve]
            right.plot(times, tests, marker=".", label="test")
        right.set(xlabel="device time [s]", ylabel="accuracy", title="accuracy")
        right.legend()
        fig.suptitle(record.config["label"], fontsize=9)
        fig.tight_layout()
        path = Path(folder) / "cell.png"
        fig.savefig(path, dpi=80)
    finally:
        plt.close(fig)
    return path


@dataclass
class SyncOutcome:
    pushed: int = 0  # records whose run was rebuilt (or found complete)
    unsynced: int = 0  # records MLflow still lacks
    closed: int = 0  # orphaned RUNNING runs closed
    claimed: int = 0  # not-synced records left to the live driver holding their claim
    error: str | None = None  # why MLflow could not be reached at all

    def describe(self) -> str:
        text = f"pushed {self.pushed} record(s), closed {self.closed} orphaned run(s)"
        if self.unsynced:
            text += f"; {self.unsynced} record(s) still not synced"
        if self.claimed:
            text += f"; {self.claimed} record(s) left to the running driver that claims them"
        if self.error:
            text += f" ({self.error})"
        return text


def sync_ledger(
    tracker: Tracker, ledger: Path, suite: str, data: DataCache | None = None
) -> SyncOutcome:
    """Close orphaned runs of this ledger, then push every not-synced record.

    ``data``: where the records' datasets are loaded from (the runner passes its own,
    already loaded; by default a CPU cache, loaded only if a run is rebuilt). Records
    whose cell another live driver has claimed are left to it. MLflow failures are
    reported in the outcome, never raised: the ledger stays as it was and the next sync
    tries again.
    """
    ledger = Path(ledger)
    claims = CellClaims(ledger.parent, suite)
    records = load_records(ledger)
    outcome = SyncOutcome()
    pending = [r for r in records if not r.mlflow_synced]
    data = data or DataCache("cpu")
    if tracker.unreachable is not None:
        outcome.error, outcome.unsynced = tracker.unreachable, len(pending)
        return outcome
    try:
        tracker = tracker.open()
        partial = {r.mlflow_run_id for r in pending if r.mlflow_run_id}  # replaced below
        outcome.closed = close_orphans(tracker, suite, ledger, skip=partial)
    except Exception as error:  # the store is unreachable: nothing to do now
        tracker.note_failure("sync", error)
        outcome.error = f"MLflow unreachable: {short_reason(error)}"
        outcome.unsynced = len(pending)
        return outcome
    for stale in pending:
        claim = claims.take(stale.key)
        if claim is None:  # its driver is writing it right now
            outcome.claimed += 1
            continue
        with claim:
            record = load_record(ledger / f"{stale.key}.json")
            if record is not None and not record.mlflow_synced:
                _push(tracker, ledger, record, data, outcome)
    return outcome


def _push(
    tracker: Tracker,
    ledger: Path,
    record: CellRecord,
    data: DataCache,
    outcome: SyncOutcome,
) -> None:
    """Make MLflow hold ``record``: find its run complete, or rebuild the run."""
    old = record.mlflow_run_id
    old_status = tracker.status(old) if old else None
    if old_status in ("FINISHED", "FAILED", "KILLED") and _complete(tracker, old, record):
        record.mlflow_synced, record.mlflow_error = True, None
        record.save(ledger)
        outcome.pushed += 1
        return
    run = open_run_from_record(
        tracker, record, ledger, {REBUILT_TAG: "true"}, record_inputs(record, data)
    )
    close_run(run, record)
    if not run.synced:
        record.mlflow_error = run.error
        record.save(ledger)
        outcome.unsynced += 1
        return
    if old_status is not None:
        stale = RunLog(tracker)
        stale.run_id = old
        stale.set_tags({STATUS_TAG: "replaced"})
        reason = f"replaced by run {run.run_id}, rebuilt from the ledger"
        if old_status == "RUNNING":
            stale.end("FAILED", reason=reason)
        else:
            stale.set_tags({CLOSE_REASON_TAG: reason})
    record.mlflow_run_id = run.run_id
    record.mlflow_synced, record.mlflow_error = True, None
    record.save(ledger)
    outcome.pushed += 1


def _complete(tracker: Any, run_id: str, record: CellRecord) -> bool:
    """A run that holds the whole record (only the ledger's last save was lost)."""
    try:
        tags = tracker.client.get_run(run_id).data.tags
        return tags.get(COMPLETE_TAG) == "true" and tags.get(STATUS_TAG) == record.status
    except Exception:
        return False


def close_orphans(tracker: Tracker, suite: str, ledger: Path, skip: set[str] = frozenset()) -> int:
    """End KILLED every RUNNING run of ``suite`` written for this ledger (or untagged)
    whose process is gone.

    A cell's run is closed only under the cell's claim and only if it is still RUNNING
    then (a live driver holds the claim while its run is open); any other run (a report
    run) only when the process that opened it is no longer running on this host.
    ``skip``: runs of not-synced records, which the push replaces (and ends FAILED).
    """
    mine = str(Path(ledger).resolve())
    claims = CellClaims(Path(ledger).parent, suite)

    def orphan(run: Any) -> str | None:
        tags = run.data.tags
        if run.info.run_id in skip or tags.get(LEDGER_TAG, mine) != mine:
            return None  # another output folder sharing this tracking server
        if not tags.get(CELL_KEY_TAG) and owner_gone(tags) is False:
            return None  # the process that opened it still runs
        return f"left RUNNING by {run_owner(tags)}, which stopped without closing it"

    @contextlib.contextmanager
    def claimed(run: Any) -> Iterator[bool]:
        key = run.data.tags.get(CELL_KEY_TAG)
        claim = claims.take(key) if key else None
        if key and claim is None:
            yield False  # a live driver trains this cell and will close the run
            return
        with claim or contextlib.nullcontext():
            yield True

    return close_orphan_runs(tracker.open(), {SUITE_TAG: suite}, orphan, claimed)
