"""Trials and MLflow runs that a dead process left RUNNING: found and closed.

Why: the journal and SQLite storages have no heartbeat, so a worker killed hard (OOM,
``kill -9``) would leave its trial RUNNING forever; the resume logic would count it as
under way and waiting workers would wait for it. Likewise its MLflow run would stay
RUNNING in the UI. Databases rely on Optuna's heartbeat for trials instead.
"""

from __future__ import annotations

import datetime
import socket
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.ledger.locking import process_alive
from bench.silence import silenced
from bench.tracking.client import Tracker
from bench.tracking.names import (
    LEGACY_KIND_TAG,
    RUN_KIND_TAG,
    STUDY_TAG,
    TRIAL_KIND,
    TRIAL_NUMBER_TAG,
)
from bench.tracking.orphans import close_orphans, owner_gone, run_owner
from bench.tuning.storage import StorageSpec

#: A RUNNING trial that no worker claimed for this long is failed (journal and SQLite).
ORPHAN_AFTER_S = 120.0


def orphan_window(storage: StorageSpec) -> float | None:
    """How long an unclaimed RUNNING trial may live: storages without a heartbeat only."""
    return ORPHAN_AFTER_S if storage.kind == "journal" or storage.is_sqlite else None


def fail_dead_trials(study: optuna.Study, *, orphan_after_s: float | None = None) -> list[int]:
    """FAIL the RUNNING trials of worker processes on this host that no longer exist.

    A worker records its host and process id on a trial right after creating it; with
    ``orphan_after_s``, a RUNNING trial still without them after that many seconds (its
    worker died in between) is failed too. Returns the failed trials' numbers.
    """
    with silenced(optuna.exceptions.ExperimentalWarning):
        optuna.storages.fail_stale_trials(study)  # databases: Optuna's heartbeat
    host = socket.gethostname()
    failed = []
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("worker_pid")
        if "worker_host" not in trial.user_attrs:
            started = trial.datetime_start
            if orphan_after_s is None or started is None:
                continue
            if (now - started).total_seconds() < orphan_after_s:
                continue
            reason = f"no worker claimed it within {orphan_after_s:g} s of its creation"
        elif trial.user_attrs["worker_host"] != host or not _dead(pid):
            continue
        else:
            reason = f"worker process {pid} on {host} died while running it"
        # Optuna has no public call to annotate another process's trial; this is what
        # its own fail_stale_trials does.
        storage = study._storage
        trial_id = trial._trial_id
        try:
            storage.set_trial_user_attr(trial_id, "error", reason)
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
            failed.append(trial.number)
        except Exception:  # another process failed it first
            pass
    return failed


def close_orphaned_runs(tracker: Tracker, study: optuna.Study, name: str) -> int:
    """End KILLED the MLflow runs of ``name`` that a dead process left RUNNING.

    A trial's run is an orphan when its Optuna trial is no longer RUNNING (its worker
    died and :func:`fail_dead_trials` or Optuna's heartbeat failed it); an invocation's
    parent run when the process that started it, on this host, is gone. MLflow being
    unreachable is not an error here: the runs stay as they are until the next start.
    """
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}

    def orphan(run: Any) -> str | None:
        tags = run.data.tags
        if TRIAL_KIND in (tags.get(RUN_KIND_TAG), tags.get(LEGACY_KIND_TAG)):
            number = int(tags.get(TRIAL_NUMBER_TAG, -1))
            state = states.get(number)
            if state == TrialState.RUNNING:
                return None
            return (
                f"Optuna trial {number} is {state.name if state else 'missing'}; its worker "
                "stopped without closing this run"
            )
        if owner_gone(tags) is not True:
            return None
        return f"the bench tune {run_owner(tags)} stopped without closing it"

    try:
        return close_orphans(tracker.open(), {STUDY_TAG: name}, orphan)
    except Exception:  # MLflow unreachable: try again at the next start
        return 0


def _dead(pid: object) -> bool:
    return isinstance(pid, int) and not process_alive(pid)
