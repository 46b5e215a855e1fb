"""What a Dask worker runs for one cell: train it, hand the record back, write nothing.

The worker trains with the runner's own :func:`bench.runner.run_cell` (device time is
measured there exactly as in a serial run) but, instead of writing the ledger and
closing the MLflow run, returns both to the driver: the driver is the ledger's only
writer (see :mod:`bench.distributed.suite`). MLflow:

- **live** (a tracking server or a database server): the worker opens the cell's run and
  logs its curve, inputs, system metrics and model as it trains, so the UI shows the cell
  converging; the driver closes the run once the record is on disk.
- **deferred** (a SQLite file or a local folder, which concurrent processes must not
  write): the worker touches no store; it keeps the dataset inputs and the trained
  network, and the driver logs the whole run when the cell comes back.

A driver that is interrupted sets a Dask :class:`distributed.Event`; a running cell looks
at it at each evaluation point and stops there as if Ctrl-C had been pressed, so it comes
back recorded ``killed`` with its curve so far.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.distributed.allocator import keep_freed_buffers
from bench.environment import environment, resolve_device
from bench.ledger.records import CellRecord
from bench.runner import DataCache, run_cell
from bench.suites import Cell
from bench.tracking.client import RunLog, Tracker

#: Seconds between two looks at the driver's stop event (one scheduler round trip each).
STOP_POLL_S = 1.0

_DATA: dict[str, DataCache] = {}  # per worker process and device: datasets load once


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs for one cell, by value."""

    cell: Cell
    key: str
    ledger: str  # the driver's ledger folder: the runs' pmp.ledger tag
    device: str  # the --device choice, resolved on the worker
    experiment: str
    experiment_tags: dict[str, str]
    tracking_uri: str | None  # live MLflow; None: the driver logs the run
    models: bool = True
    threads: int | None = None
    stop_event: str | None = None


@dataclass
class CellOutcome:
    """The worker's result: the record to write and what the driver must log for it."""

    record: CellRecord
    run_error: str | None = None  # the live run's MLflow failure
    inputs: list[Any] = field(default_factory=list)  # deferred: dataset inputs
    model: torch.nn.Module | None = None  # deferred: the finished network, on the CPU
    example: torch.Tensor | None = None
    worker: str = ""


class _Stop:
    """Whether the driver asked running cells to stop (looked up at most every second)."""

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.last = 0.0
        self.event: Any = None

    def __call__(self) -> bool:
        if self.name is None or time.monotonic() - self.last < STOP_POLL_S:
            return False
        self.last = time.monotonic()
        try:
            if self.event is None:
                from distributed import Event

                self.event = Event(self.name)
            return bool(self.event.is_set())
        except Exception:  # no scheduler to ask (a test calling the task directly)
            return False


class WorkerRun(RunLog):
    """A cell's run on a worker: live, or deferred to the driver; it honours the stop."""

    def __init__(self, tracker: WorkerTracker) -> None:
        super().__init__(tracker)
        self.live = tracker.live
        self.stop = tracker.stop
        self.inputs: list[Any] = []
        self.model: torch.nn.Module | None = None
        self.example: torch.Tensor | None = None

    def log_point(self, point: dict[str, Any]) -> None:
        if self.live:
            super().log_point(point)
        if self.stop():
            raise KeyboardInterrupt  # run_cell records the cell killed, curve so far

    def log_inputs(self, datasets: Any) -> None:
        if self.live:
            super().log_inputs(datasets)
        else:
            self.inputs = list(datasets)

    def log_model(self, model: Any, example: Any) -> str | None:
        if self.live:
            return super().log_model(model, example)
        self.model, self.example = model.cpu(), example.cpu()
        return None

    def system_metrics(self, enabled: bool = True) -> Any:
        return super().system_metrics(enabled) if self.live else contextlib.nullcontext()


class WorkerTracker(Tracker):
    """Opens :class:`WorkerRun` runs; without a tracking URI nothing reaches a store."""

    def __init__(self, task: CellTask) -> None:
        uri = task.tracking_uri
        super().__init__(uri or "", task.experiment, experiment_tags=task.experiment_tags)
        self.live = uri is not None
        self.stop = _Stop(task.stop_event)

    def new_log(self) -> RunLog:
        return WorkerRun(self)

    def start(self, name: str, params: dict[str, Any], tags: dict[str, str], **kw: Any) -> RunLog:
        if self.live:
            return super().start(name, params, tags, **kw)
        return self.new_log()  # deferred: no run id yet, the driver opens the run


def run_cell_task(task: CellTask) -> CellOutcome | None:
    """Train ``task.cell`` on this worker and return its record (see the module docstring).

    Never raises for a failing cell: the record says ``failed`` with the traceback, as in
    a serial run; only the death of the worker process loses the attempt (Dask retries
    it on another worker). None: the driver had stopped before the cell began.
    """
    tracker = WorkerTracker(task)
    if tracker.stop():
        return None
    keep_freed_buffers()  # Dask's allocator setting would halve CPU training speed
    if task.threads:
        torch.set_num_threads(task.threads)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    device = resolve_device(task.device)
    data = _DATA.setdefault(str(device), DataCache(device))
    kept: dict[str, Any] = {}

    def hand_back(record: CellRecord, run: Any, ledger: Path) -> None:
        kept["record"], kept["run"] = record, run

    with contextlib.suppress(KeyboardInterrupt):  # the driver's stop: recorded killed
        run_cell(
            task.cell,
            task.key,
            tracker,
            data,
            device,
            environment(device),
            Path(task.ledger),
            progress=False,
            models=task.models,
            finish=hand_back,
        )
    record, run = kept["record"], kept["run"]
    if record.status == "killed":
        record.error = "stopped: the driver was interrupted (Ctrl-C)"
    return CellOutcome(
        record=record,
        run_error=run.error,
        inputs=run.inputs,
        model=run.model,
        example=run.example,
        worker=worker,
    )
