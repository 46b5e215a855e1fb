"""``bench run --scheduler``: the driver that spreads a suite's cells over Dask workers.

Decisions (the docs' "Scaling out" page folds these in):

- **One cell, one Dask task** (:func:`bench.distributed.cells.run_cell_task`); on CUDA
  workers it asks for the resource ``GPU=1``, so two cells never share a GPU.
- **The driver writes the ledger.** Workers return the record; the driver, the only
  process that writes ``cells/``, saves it atomically and then completes the MLflow run
  (:mod:`bench.distributed.recording`). Workers need no access to ``--out``.
- **Several drivers may share a suite and ``--out``**, as in a serial run: the driver
  takes a cell's claim (:mod:`bench.ledger.cell_claims`) before it submits the cell and lets it go
  once the record is written, so a second driver (another cluster, another terminal)
  submits only the cells nobody holds, waits for the rest, and no cell is trained twice.
- **MLflow.** A tracking server or database URI: workers log live. A SQLite file (the
  default) or a local folder: workers write nothing, the driver logs each run when its
  cell comes back (one writer, so SQLite stays safe); for live curves run
  ``make mlflow-server``.
- **Faults.** A worker killed mid-cell: Dask runs the cell again on another worker (up to
  ``distributed.scheduler.allowed-failures`` deaths, default 3, after which the cell is
  recorded ``failed``) and the dead attempt's run ends KILLED. Ctrl-C: running cells are
  asked to stop (a Dask event they look at each evaluation point) and are recorded
  ``killed`` if they come back within :data:`STOP_GRACE_S`; cells not yet started are
  cancelled, a cluster started here is closed (its workers end), runs left RUNNING are
  ended KILLED, and a rerun runs what is not finished.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bench.distributed.cells import CellOutcome, CellTask, run_cell_task
from bench.distributed.cluster import Cluster, open_cluster
from bench.distributed.recording import failed_outcome, record_outcome
from bench.distributed.spec import SchedulerSpec
from bench.errors import UsageError
from bench.ledger.cell_claims import WAIT_POLL_S, CellClaims
from bench.ledger.records import CellRecord, load_record
from bench.runner import (
    DataCache,
    SuiteOutcome,
    attempt,
    cell_key,
    cells_dir,
    is_done,
    load_cell_data,
    one_line,
    select,
    settled,
    suite_claims,
)
from bench.suites import Cell, Suite
from bench.tracking.client import EXPERIMENT_PREFIX, Tracker, short_reason, tracking_uri
from bench.tracking.meta import suite_experiment_tags
from bench.tracking.sync import close_orphans, sync_ledger
from bench.training.interrupts import InterruptGuard

#: Seconds an interrupted driver waits for running cells to come back ``killed``.
STOP_GRACE_S = 15.0
#: Tracking URI schemes only one process may write (the driver logs their runs).
LOCAL_STORES = ("sqlite", "file", "")


def is_live_store(uri: str) -> bool:
    """Whether workers may write to this MLflow store themselves (a server or database)."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    return scheme not in LOCAL_STORES


def suite_sink(suite: Suite, out_dir: Path, uri: str, live: bool) -> Tracker:
    """The driver's MLflow tracker; a new experiment on a server keeps its artifacts there.

    Why: a serial run names ``<out>/mlflow-artifacts`` as the artifact folder of a new
    experiment, which workers on other machines cannot reach; a server given no folder
    stores what they send under its own ``--artifacts-destination``.
    """
    tags = suite_experiment_tags(suite)
    experiment = EXPERIMENT_PREFIX + suite.name
    if not live:
        return Tracker.for_output(out_dir, experiment, tags)
    return Tracker(uri, experiment, experiment_tags=tags)


def device_problems(cluster: Cluster, device: str) -> dict[str, str]:
    """Workers on which ``--device`` cannot be used, with the reason."""
    answers = cluster.client.run(_device_problem, device)
    return {worker: problem for worker, problem in answers.items() if problem}


def _device_problem(device: str) -> str | None:
    from bench.environment import resolve_device

    try:
        resolve_device(device)
    except ValueError as error:
        return str(error)
    return None


def run_suite_distributed(
    suite: Suite,
    out_dir: Path,
    device: str,
    scheduler: SchedulerSpec,
    *,
    only: str | None = None,
    progress: bool = True,
    models: bool = True,
) -> SuiteOutcome:
    """Run the suite's remaining cells on the cluster of ``scheduler`` (module docstring).

    Raises :class:`bench.distributed.cluster.SchedulerError` when the cluster cannot be
    started or reached (nothing is trained), and :class:`KeyboardInterrupt` after Ctrl-C.
    """
    out_dir = Path(out_dir)
    ledger = cells_dir(out_dir, suite.name)
    cells = select(suite.cells(), only)
    uri = tracking_uri(out_dir)
    live = is_live_store(uri)
    tracker = suite_sink(suite, out_dir, uri, live)
    claims = suite_claims(out_dir, suite.name)
    with InterruptGuard() as guard:
        outcome = SuiteOutcome(0, 0, 0, 0)
        keys = [cell_key(cell) for cell in cells]
        existing = {key: load_record(ledger / f"{key}.json") for key in keys}
        pending = [
            cell for cell, key in zip(cells, keys, strict=True) if not is_done(existing[key])
        ]
        with open_cluster(scheduler) as cluster:  # an unreachable one fails first, in seconds
            data = DataCache(torch.device("cpu"))  # every data file is checked before training
            for cell in pending:
                load_cell_data(cell, data, suite.path)
            problems = device_problems(cluster, device)
            if problems:
                worker, problem = next(iter(problems.items()))
                raise UsageError(f"--device {device} on worker {worker}: {problem}")
            with guard.deferred():
                outcome.sync = sync_ledger(tracker, ledger, suite.name, data)
            guard.check()
            if outcome.sync.pushed or outcome.sync.closed:
                print(f"mlflow sync: {outcome.sync.describe()}", file=sys.stderr)
            print(
                f"suite {suite.name}: {len(pending)} of {len(cells)} cells to run on "
                f"{scheduler.describe()} ({cluster.workers()} workers"
                + (", one GPU each" if cluster.gpu else "")
                + (
                    ""
                    if live
                    else "; MLflow is a local store, so the driver logs each run "
                    "when its cell ends: `make mlflow-server` for live curves"
                )
                + ")",
                file=sys.stderr,
            )
            shared = task_fields(suite, ledger, device, uri if live else None, models, cluster)
            try:
                _drive(
                    cells,
                    existing,
                    claims,
                    cluster,
                    tracker,
                    ledger,
                    outcome,
                    guard,
                    shared,
                    progress,
                )
            finally:
                if live:  # runs of attempts that never came back (Ctrl-C, dead workers)
                    with guard.deferred(), contextlib.suppress(Exception):
                        close_orphans(tracker, suite.name, ledger)
    return outcome


def task_fields(
    suite: Suite,
    ledger: Path,
    device: str,
    uri: str | None,
    models: bool,
    cluster: Cluster,
) -> dict[str, Any]:
    """What every cell's :class:`CellTask` shares."""
    return {
        "ledger": str(Path(ledger).resolve()),
        "device": device,
        "experiment": EXPERIMENT_PREFIX + suite.name,
        "experiment_tags": suite_experiment_tags(suite),
        "tracking_uri": uri,
        "models": models,
        "threads": cluster.threads,
        "stop_event": f"pmp-bench-stop-{suite.name}-{uuid.uuid4().hex[:12]}",
    }


def _drive(
    cells: list[Cell],
    existing: dict[str, CellRecord | None],
    claims: CellClaims,
    cluster: Cluster,
    tracker: Tracker,
    ledger: Path,
    outcome: SuiteOutcome,
    guard: InterruptGuard,
    shared: dict[str, Any],
    progress: bool,
) -> None:
    """Submit every cell this driver can claim and that is not recorded, record each as
    it comes back, wait for cells another driver holds (taking over those whose driver
    died); on Ctrl-C stop. ``existing``: the records as they were at the start."""
    from distributed import Event, as_completed, wait

    client = cluster.client
    stop = Event(shared["stop_event"], client=client)
    running: dict[Any, tuple[Cell, str, Any]] = {}  # future -> cell, key, claim
    waiting = [(cell, cell_key(cell)) for cell in cells]
    bar = tqdm(
        total=len(cells),
        desc=f"cells on {cluster.spec.describe()}",
        unit="cell",
        disable=not progress,
    )
    announced = 0
    try:
        while waiting or running:
            waiting, recorded = _submit_claimed(
                waiting, existing, claims, client, cluster, shared, running, ledger
            )
            for key, done in recorded:  # before this driver started, or by another one
                outcome.count_recorded(done, before_start=is_done(existing[key]))
                bar.update()
            if waiting and len(waiting) != announced:
                tqdm.write(claims.waiting_note([k for _, k in waiting]), file=sys.stderr)
            announced = len(waiting)
            if not running:
                time.sleep(WAIT_POLL_S)
                guard.check()
                continue
            with contextlib.suppress(TimeoutError):
                wait(
                    list(running),
                    timeout=WAIT_POLL_S if waiting else None,
                    return_when="FIRST_COMPLETED",
                )
            for future in [f for f in running if f.done()]:
                cell, key, claim = running.pop(future)
                with guard.deferred():
                    try:
                        _record(future, (cell, key), tracker, ledger, outcome)
                    finally:
                        claim.release()
                bar.update()
                guard.check()
    except KeyboardInterrupt:
        with guard.deferred():  # a second Ctrl-C aborts at once
            stop.set()  # running cells stop at their next evaluation; queued ones skip
            with contextlib.suppress(TimeoutError):
                for future in as_completed(list(running), timeout=STOP_GRACE_S):
                    cell, key, claim = running.pop(future)
                    _record(future, (cell, key), tracker, ledger, outcome)
                    claim.release()
            client.cancel(list(running))
        raise
    finally:
        for _, _, claim in running.values():  # so the closing of orphans can take them
            claim.release()
        bar.close()


def _submit_claimed(
    cells: list[tuple[Cell, str]],
    existing: dict[str, CellRecord | None],
    claims: CellClaims,
    client: Any,
    cluster: Cluster,
    shared: dict[str, Any],
    running: dict[Any, tuple[Cell, str, Any]],
    ledger: Path,
) -> tuple[list[tuple[Cell, str]], list[tuple[str, CellRecord]]]:
    """Submit each cell whose claim this driver gets and that needs training. Returns the
    cells another driver holds, and the keys and records of those that need none (read
    under the claim, so never half-written)."""
    held, recorded = [], []
    for cell, key in cells:
        claim = claims.take(key)
        if claim is None:
            held.append((cell, key))
            continue
        done = load_record(ledger / f"{key}.json")
        if settled(done, attempt(existing[key])):
            claim.release()
            recorded.append((key, done))
            continue
        future = client.submit(
            run_cell_task,
            CellTask(cell=cell, key=key, **shared),
            key=f"pmp-cell-{key}-{uuid.uuid4().hex[:8]}",
            pure=False,
            resources=cluster.resources(),
        )
        running[future] = (cell, key, claim)
    return held, recorded


def _record(
    future: Any,
    cell_and_key: tuple[Cell, str],
    tracker: Tracker,
    ledger: Path,
    outcome: SuiteOutcome,
) -> None:
    """Write the cell that came back (a cell that never started writes nothing)."""
    cell, key = cell_and_key
    if future.cancelled():
        return
    try:
        result: CellOutcome | None = future.result()
    except Exception as error:  # KilledWorker: every attempt died with its worker
        result = failed_outcome(cell.config(), key, cell.suite, short_reason(error))
    if result is None:  # the driver stopped before this cell began
        return
    record = record_outcome(result, tracker, ledger)
    outcome.count_trained(record)
    tqdm.write(one_line(record) + (f" [{result.worker}]" if result.worker else ""), file=None)
