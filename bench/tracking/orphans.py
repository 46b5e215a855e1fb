"""Runs a dead process left RUNNING: who opened a run, and the one sweep that ends them.

Every run the bench opens carries the host and process id of its driver
(:func:`bench.tracking.client.driver_tags`). A process killed hard (OOM, ``kill -9``, a
worker lost with its machine) cannot close its runs, so three places sweep for such
orphans, each with its own test of what an orphan is: the start of ``bench run``/``bench
sync`` (a cell's run whose claim nobody holds, :mod:`bench.tracking.sync`), the Dask
driver (runs of a cell that an earlier, dead worker opened,
:mod:`bench.distributed.recording`) and the tuner (a trial's run whose Optuna trial has
ended, :mod:`bench.tuning.cleanup`). They share :func:`close_orphans`, which takes that
test as a predicate.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from bench.ledger.locking import process_alive
from bench.tracking.client import Tracker
from bench.tracking.names import CLOSE_REASON_TAG, DRIVER_HOST_TAG, DRIVER_PID_TAG, STATUS_TAG

#: Whether a run is an orphan: the reason to write on it, or None to leave it.
OrphanTest = Callable[[Any], str | None]
#: A guard held while a run is closed (a cell's claim); it yields whether it is held.
Guard = Callable[[Any], AbstractContextManager[bool]]


def run_owner(tags: Mapping[str, str]) -> str:
    """``process P on HOST``: the process that opened a run (its driver tags)."""
    return f"process {tags.get(DRIVER_PID_TAG, '?')} on {tags.get(DRIVER_HOST_TAG, '?')}"


def owner_gone(tags: Mapping[str, str]) -> bool | None:
    """Whether the process that opened a run has ended; None when that cannot be checked
    (another host, or no process id)."""
    pid = tags.get(DRIVER_PID_TAG, "")
    if tags.get(DRIVER_HOST_TAG) != socket.gethostname() or not pid.isdigit():
        return None
    return not process_alive(int(pid))


def end_killed(tracker: Tracker, run_id: str, reason: str) -> None:
    """End a run KILLED, saying why (``status`` and :data:`CLOSE_REASON_TAG` tags)."""
    tracker.set_tags(run_id, {STATUS_TAG: "killed", CLOSE_REASON_TAG: reason})
    tracker.end(run_id, "KILLED")


def close_orphans(
    tracker: Tracker, tags: Mapping[str, str], orphan: OrphanTest, guard: Guard | None = None
) -> int:
    """End KILLED every RUNNING run carrying ``tags`` that ``orphan`` gives a reason for.

    ``orphan(run)`` returns the reason (written as :data:`CLOSE_REASON_TAG`) or None to
    leave the run. With ``guard``, a run is closed only while ``guard(run)`` is held and
    only if it is still RUNNING then: its owner may have closed it meanwhile. Returns
    how many runs were closed. MLflow's errors propagate; each caller decides what an
    unreachable store means for it.
    """
    closed = 0
    for run in tracker.running_runs(dict(tags)):
        reason = orphan(run)
        if reason is None:
            continue
        run_id = run.info.run_id
        with guard(run) if guard is not None else contextlib.nullcontext(True) as held:
            if not held or (guard is not None and tracker.status(run_id) != "RUNNING"):
                continue
            end_killed(tracker, run_id, reason)
            closed += 1
    return closed
