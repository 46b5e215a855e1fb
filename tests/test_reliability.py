"""Nothing a user trained is lost, and no fault leaves a state that a rerun cannot repair.

Faults: a tracking server that is gone, hangs or dies mid-suite; Ctrl-C at any moment
(in process at chosen points, and in a subprocess at seeded random points); kill -9; a
damaged ledger file; a full or read-only disk; two drivers on one output folder.
"""

from __future__ import annotations

import errno
import http.server
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

import bench.tracking.client
import bench.tracking.sync
from bench.cli import main
from bench.ledger.cell_claims import CellClaims
from bench.ledger.checkpoints import checkpoint_path
from bench.ledger.locking import LockHeld, OwnerLock, file_lock
from bench.ledger.records import CellRecord, LedgerWarning, load_records
from bench.ledger.safe_files import OutputWriteError
from bench.runner import cell_key, cells_dir, run_suite
from bench.suites import load_suite
from bench.tracking.client import EXPERIMENT_PREFIX, Tracker, tracking_uri
from bench.tuning.cleanup import close_orphaned_runs
from bench.tuning.storage import StorageError, StorageSpec
from tests.test_runner import TINY, write_suite

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
ONE_SEED = TINY.replace("[0, 1]", "[0]")
SGD = '[[methods]]\nname = "sgd"\nbatch_size = 32\nhparams = { lr = 0.1 }\n'


@pytest.fixture(autouse=True)
def _fast_failures(monkeypatch):
    """The default store, and MLflow failures that give up at once (no back-off sleeps)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setattr(bench.tracking.client, "RETRY_PAUSE_S", 0.0)


def suite_file(tmp_path: Path, body: str = TINY, methods: str = SGD) -> Path:
    return write_suite(tmp_path / "t.toml", body, methods=methods)


def runs_by_status(out: Path, suite: str = "t") -> dict[str, list]:
    client = MlflowClient(tracking_uri=tracking_uri(out))
    experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + suite)
    runs = client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []
    grouped: dict[str, list] = {}
    for run in runs:
        grouped.setdefault(run.info.status, []).append(run)
    return grouped


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- MLflow faults


def test_unreachable_server_records_every_cell_and_sync_pushes_them_later(tmp_path, monkeypatch):
    path = suite_file(tmp_path)
    suite = load_suite(path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    began = time.monotonic()
    outcome = run_suite(suite, tmp_path, CPU, progress=False)
    assert time.monotonic() - began < 60  # not MLflow's default four minutes of retries
    records = load_records(cells_dir(tmp_path, "t"))
    assert {r.key for r in records} == {cell_key(c) for c in suite.cells()}
    assert all(r.status == "finished" and r.curve for r in records)
    assert all(not r.mlflow_synced and "127.0.0.1" in r.mlflow_error for r in records)
    assert outcome.unsynced == 2 and outcome.failed == 0 and outcome.exit_code == 1

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert main(["sync", "--suite", str(path), "--out", str(tmp_path)]) == 0
    runs = runs_by_status(tmp_path)
    assert set(runs) == {"FINISHED"} and len(runs["FINISHED"]) == 2
    client = MlflowClient(tracking_uri=tracking_uri(tmp_path))
    for record in load_records(cells_dir(tmp_path, "t")):
        assert record.mlflow_synced and record.mlflow_error is None
        run = client.get_run(record.mlflow_run_id)
        assert run.data.tags["cell_key"] == record.key and run.data.tags["status"] == "finished"
        history = client.get_metric_history(record.mlflow_run_id, "objective")
        assert sorted(m.step for m in history) == [p["iteration"] for p in record.curve]
        assert float(run.data.tags["final.iterations"]) == record.summary["iterations"]
    # Nothing left to push: a second sync changes nothing.
    assert main(["sync", "--suite", str(path), "--out", str(tmp_path)]) == 0
    assert len(runs_by_status(tmp_path)["FINISHED"]) == 2


class _Hang(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(3)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


def test_a_hanging_server_costs_seconds_not_minutes(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hang)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{server.server_port}")
        suite = load_suite(suite_file(tmp_path, ONE_SEED))
        began = time.monotonic()
        outcome = run_suite(suite, tmp_path, CPU, progress=False)
        assert time.monotonic() - began < 30
    finally:
        server.shutdown()
        server.server_close()
    (record,) = load_records(cells_dir(tmp_path, "t"))
    assert record.status == "finished" and not record.mlflow_synced
    assert "timed out" in record.mlflow_error.lower() or "timeout" in record.mlflow_error.lower()
    assert outcome.exit_code == 1


def test_store_that_dies_mid_suite_loses_nothing_and_sync_replaces_the_partial_run(
    tmp_path, monkeypatch
):
    """The store fails after the second cell started (e.g. its disk filled up)."""
    suite = load_suite(suite_file(tmp_path, TINY.replace("[0, 1]", "[0, 1, 2]")))
    real = Tracker.log_metrics
    started = {"n": 0}
    real_start = Tracker.start

    def counting_start(self, *args, **kwargs):
        started["n"] += 1
        return real_start(self, *args, **kwargs)

    def dying_log(self, *args, **kwargs):
        if started["n"] >= 2:
            raise OSError(errno.ENOSPC, "database or disk is full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Tracker, "start", counting_start)
    monkeypatch.setattr(Tracker, "log_metrics", dying_log)
    outcome = run_suite(suite, tmp_path, CPU, progress=False)
    records = {r.config["seed"]: r for r in load_records(cells_dir(tmp_path, "t"))}
    assert sorted(records) == [0, 1, 2] and {r.status for r in records.values()} == {"finished"}
    assert records[0].mlflow_synced
    assert not records[1].mlflow_synced and "disk is full" in records[1].mlflow_error
    assert outcome.unsynced == 2 and outcome.exit_code == 1
    partial = runs_by_status(tmp_path)["FAILED"]  # closed as incomplete, not left RUNNING
    assert len(partial) == 2 and all(
        "incomplete" in r.data.tags["pmp.close_reason"] for r in partial
    )

    monkeypatch.setattr(Tracker, "log_metrics", real)
    again = run_suite(suite, tmp_path, CPU, progress=False)  # syncs at its start
    assert again.ran == 0 and again.exit_code == 0 and again.sync.pushed == 2
    runs = runs_by_status(tmp_path)
    assert "RUNNING" not in runs and len(runs["FINISHED"]) == 3
    assert {r.data.tags["cell_key"] for r in runs["FINISHED"]} == {r.key for r in records.values()}
    assert all("replaced by run" in r.data.tags["pmp.close_reason"] for r in runs["FAILED"])
    # The rebuilt runs carry the live run's dataset inputs: the same splits, digested again.
    inputs = {
        r.data.tags.get("pmp.rebuilt_from_ledger", "live"): sorted(
            (i.dataset.name, i.dataset.digest, i.dataset.profile, i.tags[0].value)
            for i in r.inputs.dataset_inputs
        )
        for r in runs["FINISHED"]
    }
    assert set(inputs) == {"live", "true"} and len(inputs["live"]) == 3
    assert inputs["true"] == inputs["live"]


def test_only_numeric_summary_figures_become_metrics_and_times_become_tags(tmp_path):
    """A record rebuilt in MLflow: ``completed_at`` is a tag, text is neither."""
    ledger = cells_dir(tmp_path, "t")
    curve = [
        {
            "iteration": i,
            "objective": 2.0 - i,
            "device_time_s": 0.1 * i,
            "val_accuracy": 0.3,
            "test_accuracy": 0.25 * i,
        }
        for i in range(3)
    ]
    summary = {
        "test_accuracy": 0.5,
        "iterations": 2,
        "completed_at": 1_700_000_000.0,
        "diverged_reason": "text",
    }
    config = {"label": "sgd", "method": "sgd", "model": "m", "dataset": "d", "mode": "minibatch"}
    record = CellRecord(
        key="k", suite="t", status="finished", config={**config, "seed": 0}, summary=summary
    )
    record.curve, record.mlflow_synced = curve, False
    record.save(ledger)
    with pytest.warns(UserWarning, match="without dataset inputs.*unknown dataset 'd'"):
        outcome = bench.tracking.sync.sync_ledger(
            Tracker.for_output(tmp_path, "pmp-bench/t"), ledger, "t"
        )
    assert outcome.pushed == 1 and outcome.unsynced == 0
    (run,) = runs_by_status(tmp_path)["FINISHED"]
    assert run.data.metrics["test_accuracy"] == 0.5
    assert run.data.tags["final.iterations"] == "2" and "iterations" not in run.data.metrics
    assert not [k for k in run.data.metrics if k.startswith("final") or k.endswith("_at")]
    assert run.data.tags["completed_at"] == "2023-11-14T22:13:20+00:00"
    assert not run.inputs.dataset_inputs  # the data cannot be loaded: no inputs, no failure


# --------------------------------------------------------------------------- Ctrl-C


def _self_interrupt(times: int = 1):
    def interrupt(*args, **kwargs):
        for _ in range(times):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs at the next bytecode boundary

    return interrupt


def test_ctrl_c_while_closing_a_cell_still_records_it_then_stops(tmp_path, monkeypatch, capsys):
    path = suite_file(tmp_path)
    monkeypatch.setattr(bench.tracking.sync, "draw_cell_figure", _self_interrupt())
    assert main(["run", "--suite", str(path), "--out", str(tmp_path), "--no-progress"]) == 130
    (record,) = load_records(cells_dir(tmp_path, "t"))  # the second cell never started
    assert record.status == "finished"
    runs = runs_by_status(tmp_path)
    assert set(runs) == {"FINISHED"} and runs["FINISHED"][0].info.run_id == record.mlflow_run_id
    assert "press Ctrl-C again" in capsys.readouterr().err
    assert not list((tmp_path / "t" / "claims").glob("*.claim"))  # let go on the way out


def test_a_second_ctrl_c_aborts_at_once_and_sync_repairs_mlflow(tmp_path, monkeypatch):
    path = suite_file(tmp_path, ONE_SEED)
    monkeypatch.setattr(bench.tracking.sync, "draw_cell_figure", _self_interrupt(times=2))
    assert main(["run", "--suite", str(path), "--out", str(tmp_path), "--no-progress"]) == 130
    (record,) = load_records(cells_dir(tmp_path, "t"))
    assert record.status == "finished" and not record.mlflow_synced  # saved before MLflow
    assert "RUNNING" in runs_by_status(tmp_path)
    monkeypatch.undo()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["sync", "--suite", str(path), "--out", str(tmp_path)]) == 0
    runs = runs_by_status(tmp_path)
    assert "RUNNING" not in runs and len(runs["FINISHED"]) == 1
    (record,) = load_records(cells_dir(tmp_path, "t"))
    assert record.mlflow_synced and record.mlflow_run_id == runs["FINISHED"][0].info.run_id


def test_a_swallowed_ctrl_c_still_stops_the_suite(tmp_path, monkeypatch):
    """A KeyboardInterrupt raised inside a callback that ignores it (as gc callbacks do)."""
    real = bench.runner.train_cell

    def swallowing(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        return real(*args, **kwargs)

    monkeypatch.setattr(bench.runner, "train_cell", swallowing)
    suite = load_suite(suite_file(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, tmp_path, CPU, progress=False)
    (record,) = load_records(cells_dir(tmp_path, "t"))
    # Honoured at the cell's first step boundary: checkpointed, recorded, suite stopped.
    assert record.status == "killed" and record.mlflow_synced
    assert checkpoint_path(cells_dir(tmp_path, "t"), record.key).exists()


def _bench(*args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the subprocess"
        time.sleep(0.02)


@pytest.mark.slow
def test_ctrl_c_at_random_moments_never_loses_a_finished_cell(tmp_path):
    path = suite_file(tmp_path, TINY.replace("[0, 1]", "[0, 1, 2]"))
    claims = tmp_path / "t" / "claims"
    rng = random.Random(20251127)
    for _ in range(3):
        process = _bench("run", "--suite", str(path), "--out", str(tmp_path), "--no-progress")
        _wait_for(lambda p=process: any(claims.glob("*.claim")) or p.poll() is not None)
        time.sleep(rng.uniform(0.0, 2.5))
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
        # 0 only if the suite had finished. -SIGINT: seen rarely in long slow-test runs, the
        # process ends by the signal itself after the CLI handled the interrupt and printed
        # its line (a shell shows 130 for both); what matters here is the ledger below.
        assert process.returncode in (130, 0, -signal.SIGINT), err
        assert "interrupted (Ctrl-C)" in err or process.returncode == 0, err
        records = load_records(cells_dir(tmp_path, "t"))
        by_key = {r.key: r for r in records}
        # MLflow never knows of a finished cell that the ledger lacks.
        for run in runs_by_status(tmp_path).get("FINISHED", []):
            assert by_key[run.data.tags["cell_key"]].status == "finished"
        assert not [p for p in cells_dir(tmp_path, "t").glob(".tmp-*")]
    assert main(["sync", "--suite", str(path), "--out", str(tmp_path)]) == 0
    assert "RUNNING" not in runs_by_status(tmp_path)
    assert main(["run", "--suite", str(path), "--out", str(tmp_path), "--no-progress"]) == 0
    finished = runs_by_status(tmp_path)["FINISHED"]
    keys = [r.data.tags["cell_key"] for r in finished]
    assert len(keys) == len(set(keys)) == 3  # one FINISHED run per cell


@pytest.mark.slow
def test_kill_9_then_rerun_closes_the_orphan_and_takes_over_the_claim(tmp_path, capsys):
    path = suite_file(tmp_path)
    process = _bench("run", "--suite", str(path), "--out", str(tmp_path), "--no-progress")
    _wait_for(lambda: "RUNNING" in runs_by_status(tmp_path) or process.poll() is not None)
    process.kill()
    process.communicate(timeout=60)
    (claim,) = (tmp_path / "t" / "claims").glob("*.claim")  # left behind by the dead driver
    orphan = runs_by_status(tmp_path)["RUNNING"][0]

    assert main(["run", "--suite", str(path), "--out", str(tmp_path), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"took over a stale lock of process {process.pid}" in err and str(claim) in err
    assert "closed 1 orphaned run" in err
    runs = runs_by_status(tmp_path)
    assert "RUNNING" not in runs
    keys = [r.data.tags["cell_key"] for r in runs["FINISHED"]]
    assert sorted(keys) == sorted(r.key for r in load_records(cells_dir(tmp_path, "t")))
    assert len(keys) == len(set(keys)) == 2
    (killed,) = runs["KILLED"]
    assert killed.info.run_id == orphan.info.run_id
    assert "stopped without closing it" in killed.data.tags["pmp.close_reason"]


# --------------------------------------------------------------------------- the ledger


def test_a_damaged_record_is_quarantined_named_and_its_cell_rerun(tmp_path):
    path = suite_file(tmp_path, ONE_SEED)
    suite = load_suite(path)
    run_suite(suite, tmp_path, CPU, progress=False)
    ledger = cells_dir(tmp_path, "t")
    (record_file,) = ledger.glob("*.json")
    record_file.write_text(record_file.read_text()[:100])  # truncated
    (ledger / ".tmp-abc.partial").write_text("")  # leftovers of interrupted writes
    (ledger / ".tmp-def.json").write_text("")
    with pytest.warns(LedgerWarning, match=str(record_file)):
        outcome = run_suite(suite, tmp_path, CPU, progress=False)
    assert outcome.ran == 1
    assert (ledger / "quarantine" / record_file.name).is_file()
    (record,) = load_records(ledger)
    assert record.status == "finished"
    assert main(["report", "--suite", str(path), "--out", str(tmp_path)]) == 0


def test_report_keeps_the_old_report_until_the_new_one_is_complete(tmp_path, monkeypatch):
    path = suite_file(tmp_path, ONE_SEED)
    run_suite(load_suite(path), tmp_path, CPU, progress=False)
    assert main(["report", "--suite", str(path), "--out", str(tmp_path)]) == 0
    folder = tmp_path / "t"
    before = {p.name: p.read_bytes() for p in (folder / "figures").glob("*.png")}
    report = (folder / "REPORT.md").read_text()
    assert before

    def broken(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("bench.report.draw_figures", broken)
    assert main(["report", "--suite", str(path), "--out", str(tmp_path)]) == 2
    assert {p.name: p.read_bytes() for p in (folder / "figures").glob("*.png")} == before
    assert (folder / "REPORT.md").read_text() == report
    assert not list(folder.glob(".report-*"))


@pytest.mark.parametrize(
    ("code", "advice"), [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only")]
)
def test_a_ledger_that_cannot_be_written_names_the_path(
    tmp_path, monkeypatch, capsys, code, advice
):
    path = suite_file(tmp_path, ONE_SEED)
    record_dir = cells_dir(tmp_path, "t")
    real = os.fsync

    def failing(fd):
        if Path(os.readlink(f"/proc/self/fd/{fd}")).parent == record_dir:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", failing)
    assert main(["run", "--suite", str(path), "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    key = cell_key(load_suite(path).cells()[0])
    assert str(record_dir / f"{key}.json") in err and "No space left on device" in err
    assert "free some space there or pass another folder with --out" in err
    assert not list(record_dir.iterdir())  # no temp file left behind


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (errno.ENOSPC, "No space left on device; free some space there or pass another"),
        (errno.EROFS, "Read-only file system; make it writable or pass another folder"),
        (errno.EACCES, "Permission denied; make it writable or pass another folder"),
    ],
)
def test_record_save_errors_name_the_file_and_the_remedy(tmp_path, monkeypatch, code, advice):
    record = CellRecord(key="k", suite="t", status="finished", config={})

    def failing(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("bench.ledger.safe_files.tempfile.mkstemp", failing)
    with pytest.raises(OutputWriteError) as error:
        record.save(tmp_path)
    assert str(error.value).startswith(f"cannot write {tmp_path / 'k.json'}: ")
    assert advice in str(error.value) and not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- concurrency


def test_a_cell_claimed_by_a_live_driver_is_left_to_it_and_taken_over_when_it_dies(
    tmp_path, capsys
):
    path = suite_file(tmp_path)  # two cells
    suite = load_suite(path)
    first, second = (cell_key(cell) for cell in suite.cells())
    ledger = cells_dir(tmp_path, "t")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    claims = CellClaims(tmp_path / "t", "t")
    claim = OwnerLock(claims.path(second), "x", claims.guard)
    claim.owner["pid"] = holder.pid  # as if that process were training the second cell
    claim.acquire()

    def kill_the_holder_once_the_first_cell_is_recorded() -> None:
        deadline = time.monotonic() + 120
        while not (ledger / f"{first}.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # the driver is waiting for the second cell now
        assert not (ledger / f"{second}.json").exists()  # it did not train a claimed cell
        holder.kill()
        holder.wait()

    killer = threading.Thread(target=kill_the_holder_once_the_first_cell_is_recorded)
    killer.start()
    try:
        assert main(["run", "--suite", str(path), "--out", str(tmp_path), "--no-progress"]) == 0
    finally:
        killer.join(timeout=180)
        holder.kill()
    err = capsys.readouterr().err
    waiting = next(line for line in err.splitlines() if line.startswith("waiting for"))
    assert f"waiting for 1 cell(s) another driver is training (pid {holder.pid} on" in waiting
    assert f"took over a stale lock of process {holder.pid}" in err
    records = load_records(ledger)
    assert sorted(r.key for r in records) == sorted([first, second])
    assert {r.status for r in records} == {"finished"}
    assert not list(claims.folder.glob("*.claim"))
    assert len(runs_by_status(tmp_path)["FINISHED"]) == 2


def test_a_cell_another_driver_failed_meanwhile_is_not_retrained_by_this_one(tmp_path, capsys):
    path = suite_file(tmp_path)  # two cells
    first, second = (cell_key(cell) for cell in load_suite(path).cells())
    ledger = cells_dir(tmp_path, "t")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    claims = CellClaims(tmp_path / "t", "t")
    claim = OwnerLock(claims.path(second), "x", claims.guard)
    claim.owner["pid"] = holder.pid
    claim.acquire()

    def fail_the_second_cell_there() -> None:  # what the other driver does meanwhile
        deadline = time.monotonic() + 120
        while not (ledger / f"{first}.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        record = CellRecord(key=second, suite="t", status="failed", config={}, error="boom")
        record.wall_time_s = 1.5
        record.save(ledger)
        holder.kill()
        holder.wait()

    other = threading.Thread(target=fail_the_second_cell_there)
    other.start()
    try:
        code = main(["run", "--suite", str(path), "--out", str(tmp_path), "--no-progress"])
    finally:
        other.join(timeout=180)
        holder.kill()
    assert code == 1  # the suite has a failed cell
    assert "1 run by another driver" in capsys.readouterr().out
    by_key = {r.key: r for r in load_records(ledger)}
    assert by_key[second].status == "failed" and by_key[second].error == "boom"  # kept
    assert by_key[first].status == "finished"
    runs = runs_by_status(tmp_path)
    assert [r.data.tags["cell_key"] for r in runs["FINISHED"]] == [first]
    # The next run retries it, as every rerun retries failed cells.
    assert main(["run", "--suite", str(path), "--out", str(tmp_path), "--no-progress"]) == 0
    assert {r.status for r in load_records(ledger)} == {"finished"}


def test_sync_leaves_a_record_claimed_by_a_live_driver_to_it(tmp_path, monkeypatch, capsys):
    path = suite_file(tmp_path, ONE_SEED)
    monkeypatch.setattr(bench.tracking.sync, "draw_cell_figure", _self_interrupt(times=2))
    assert main(["run", "--suite", str(path), "--out", str(tmp_path), "--no-progress"]) == 130
    monkeypatch.undo()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (record,) = load_records(cells_dir(tmp_path, "t"))
    assert not record.mlflow_synced and "RUNNING" in runs_by_status(tmp_path)
    claims = CellClaims(tmp_path / "t", "t")
    with OwnerLock(claims.path(record.key), "x", claims.guard):  # a live driver: this one
        assert main(["sync", "--suite", str(path), "--out", str(tmp_path)]) == 1
        assert "1 record(s) left to the running driver" in capsys.readouterr().err
        assert "RUNNING" in runs_by_status(tmp_path)  # its run was not closed under it
        assert not load_records(cells_dir(tmp_path, "t"))[0].mlflow_synced
    assert main(["sync", "--suite", str(path), "--out", str(tmp_path)]) == 0
    assert "RUNNING" not in runs_by_status(tmp_path)
    assert load_records(cells_dir(tmp_path, "t"))[0].mlflow_synced


def test_two_lock_holders_in_one_process_conflict(tmp_path):
    first = OwnerLock(tmp_path / "x.claim", "x")
    first.acquire()
    with pytest.raises(LockHeld, match="still running"):
        OwnerLock(tmp_path / "x.claim", "x").acquire()
    first.release()
    assert not (tmp_path / "x.claim").exists()


@pytest.mark.slow
def test_two_first_runs_create_the_mlflow_store_without_colliding(tmp_path):
    code = (
        "import sys; from pathlib import Path; from bench.tracking.client import Tracker; "
        "Tracker.for_output(Path(sys.argv[1]), 'pmp-bench/x').open()"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()[-2000:]
    client = MlflowClient(tracking_uri=tracking_uri(tmp_path))
    assert len([e for e in client.search_experiments() if e.name == "pmp-bench/x"]) == 1


def test_a_second_tuning_process_on_one_sqlite_file_is_refused(tmp_path):
    spec = StorageSpec("rdb", f"sqlite:///{tmp_path / 'optuna.db'}")
    refused = pytest.raises(StorageError, match=r"journal file .* PostgreSQL")
    with spec.exclusive(), refused, spec.exclusive():
        pass
    with spec.exclusive():  # released
        pass
    lock = tmp_path / "x.lock"
    with file_lock(lock, blocking=False), pytest.raises(BlockingIOError), file_lock(lock, False):
        pass


def test_tuning_runs_of_dead_trials_are_closed(tmp_path):
    """Trial runs tagged ``run_kind = trial``, and those of stores written before that tag
    existed (``kind = trial``), are closed once their trial is dead, and only then."""
    study = optuna.create_study(study_name="s")
    dead, legacy_dead, alive = study.ask(), study.ask(), study.ask()
    for trial in (dead, legacy_dead):
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    tracker = Tracker.for_output(tmp_path, "pmp-bench/tuning")
    runs = {}
    for trial, tag in ((dead, "run_kind"), (legacy_dead, "kind"), (alive, "run_kind")):
        tags = {"study": "s", tag: "trial", "optuna.trial_number": str(trial.number)}
        runs[trial.number] = tracker.start(f"s#{trial.number}", {}, tags).run_id
    assert close_orphaned_runs(tracker, study, "s") == 2
    client = tracker.open().client
    for trial in (dead, legacy_dead):
        closed = client.get_run(runs[trial.number])
        assert closed.info.status == "KILLED" and "FAIL" in closed.data.tags["pmp.close_reason"]
    assert client.get_run(runs[alive.number]).info.status == "RUNNING"


@pytest.mark.slow
def test_two_drivers_started_together_share_the_suite_and_train_no_cell_twice(tmp_path):
    path = suite_file(tmp_path, TINY.replace("[0, 1]", "[0, 1, 2, 3]"))  # four cells
    drivers = [
        _bench("run", "--suite", str(path), "--out", str(tmp_path), "--no-progress")
        for _ in range(2)
    ]
    outputs = [driver.communicate(timeout=300) for driver in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outputs
    trained = [out.count(": finished test_acc=") for out, _ in outputs]
    assert sum(trained) == 4, outputs  # every cell once, by one of the two
    records = load_records(cells_dir(tmp_path, "t"))
    assert len(records) == 4 and {r.status for r in records} == {"finished"}
    runs = runs_by_status(tmp_path)
    assert set(runs) == {"FINISHED"}  # no run closed as an orphan under a live driver
    keys = [r.data.tags["cell_key"] for r in runs["FINISHED"]]
    assert sorted(keys) == sorted(r.key for r in records)
    assert not list((tmp_path / "t" / "claims").glob("*.claim"))
