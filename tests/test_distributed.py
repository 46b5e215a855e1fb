"""Suites on Dask (``bench run --scheduler``): results, MLflow runs and every fault.

Every cluster and server these tests start binds to 127.0.0.1 and is stopped by the test.
A live MLflow server (``mlflow server``) is started once for the module: on PostgreSQL
when ``PMP_BENCH_TEST_POSTGRES`` names one (``.ci/run`` does), else on a SQLite file
behind the server, which is one writer and so safe.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil
import pytest
import torch
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.distributed.server import ensure_database, server_command, wait_until_up
from bench.distributed.spec import SchedulerSpec, SchedulerSpecError, parse_scheduler
from bench.distributed.suite import is_live_store, run_suite_distributed
from bench.ledger.records import load_records
from bench.runner import cells_dir
from bench.suites import load_suite
from bench.tracking.client import EXPERIMENT_PREFIX, Tracker, tracking_uri
from tests.test_runner import write_suite

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ENV = "PMP_BENCH_TEST_POSTGRES"
#: Cells long enough to be killed in the middle: 1,500 SGD steps on synthetic data (a few s).
LONG = """
datasets = ["synthetic"]
models = ["cnn-tiny"]
seeds = [0, 1, 2]
[data]
val_fraction = 0.2
[budget]
steps = 1500
[eval]
every_epochs = 1
train_eval_size = 128
"""
SGD = '[[methods]]\nname = "sgd"\nbatch_size = 32\nhparams = { lr = 0.1 }\n'


@pytest.fixture(autouse=True)
def _default_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runs_of(uri: str, suite: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + suite)
    return client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []


def assert_one_finished_run_per_cell(uri: str, suite: str, keys: set[str]) -> list:
    """Exactly one FINISHED run per cell key, and nothing left RUNNING."""
    runs = runs_of(uri, suite)
    finished = Counter(r.data.tags["cell_key"] for r in runs if r.info.status == "FINISHED")
    assert finished == Counter(keys)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    return runs


# --------------------------------------------------------------------------- the flag


@pytest.mark.parametrize(
    "text, spec",
    [
        ("local:2", SchedulerSpec("local", workers=2)),
        ("local-cuda", SchedulerSpec("local-cuda")),
        ("tcp://127.0.0.1:8786", SchedulerSpec("address", address="tcp://127.0.0.1:8786")),
        (
            "tcp://node-3.cluster:8786",
            SchedulerSpec("address", address="tcp://node-3.cluster:8786"),
        ),
    ],
)
def test_scheduler_specs_parse(text, spec):
    assert parse_scheduler(text) == spec


@pytest.mark.parametrize(
    "text", ["local:0", "local", "local:-1", "local:two", "gpu", "tcp://host", "tcp://h:0", ""]
)
def test_a_bad_scheduler_names_the_value_and_the_allowed_forms(text, capsys):
    with pytest.raises(SchedulerSpecError, match=r"local:N .*local-cuda.*tcp://HOST:PORT"):
        parse_scheduler(text)
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--suite", "smoke", "--scheduler", text])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument --scheduler: {text!r} is not a scheduler" in error


def test_only_a_server_or_database_store_is_written_by_workers():
    assert not is_live_store("sqlite:////tmp/out/mlflow.db")
    assert not is_live_store("file:///tmp/mlruns") and not is_live_store("/tmp/mlruns")
    assert is_live_store("http://127.0.0.1:5001") and is_live_store("postgresql://u@h/db")
    assert is_live_store("postgresql+psycopg2://u@h/db")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_local_cuda_without_cuda_is_one_line_and_trains_nothing(tmp_path, capsys):
    code = main(["run", "--suite", "smoke", "--out", str(tmp_path), "--scheduler", "local-cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: --scheduler local-cuda needs a CUDA device")
    assert not load_records(cells_dir(tmp_path, "smoke"))


@pytest.mark.slow
def test_an_unreachable_scheduler_is_one_line_within_10_s_and_trains_nothing(tmp_path, capsys):
    address = f"tcp://127.0.0.1:{free_port()}"
    began = time.monotonic()
    code = main(["run", "--suite", "smoke", "--out", str(tmp_path), "--scheduler", address])
    took = time.monotonic() - began
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and took < 10, (code, took)
    assert len(err) == 1 and err[0].startswith(
        f"error: cannot reach the Dask scheduler at {address}"
    )
    assert not load_records(cells_dir(tmp_path, "smoke"))
    from tests.test_tuning import SETTING

    setting = tmp_path / "tiny-tuned.toml"
    setting.write_text(SETTING)
    tune = ["tune", "--setting", str(setting), "--out", str(tmp_path / "t"), "--method", "sgd"]
    began = time.monotonic()
    assert main([*tune, "--trials", "2", "--scheduler", address]) == 2
    assert time.monotonic() - began < 10
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err


# --------------------------------------------------------------------------- suites


@pytest.mark.slow
def test_local_2_runs_the_smoke_suite_with_the_default_sqlite_store(tmp_path):
    suite = load_suite("smoke")
    outcome = run_suite_distributed(
        suite, tmp_path, "cpu", parse_scheduler("local:2"), progress=False
    )
    assert (outcome.ran, outcome.failed, outcome.exit_code) == (4, 0, 0)
    records = load_records(cells_dir(tmp_path, "smoke"))
    assert {r.status for r in records} == {"finished"} and len(records) == 4
    assert all(r.mlflow_synced and r.summary["device_time_s"] > 0 for r in records)
    runs = assert_one_finished_run_per_cell(
        tracking_uri(tmp_path), "smoke", {r.key for r in records}
    )
    client = MlflowClient(tracking_uri(tmp_path))
    for run in runs:  # the driver rebuilt each run: curve, inputs, artifacts, model
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 5
        assert len(run.inputs.dataset_inputs) == 3 and run.outputs.model_outputs
        assert {"curve.json", "cell.png"} <= {
            a.path for a in client.list_artifacts(run.info.run_id)
        }
    again = run_suite_distributed(
        suite, tmp_path, "cpu", parse_scheduler("local:2"), progress=False
    )
    assert (again.ran, again.skipped) == (0, 4)


@pytest.mark.slow
def test_two_drivers_at_once_share_the_suite_and_train_no_cell_twice(tmp_path):
    suite = load_suite(write_suite(tmp_path / "t.toml", LONG, methods=SGD))  # three cells
    results: dict[int, object] = {}

    def drive(index: int) -> None:
        try:
            results[index] = run_suite_distributed(
                suite, tmp_path, "cpu", parse_scheduler("local:1"), progress=False
            )
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(results) == 2 and not [r for r in results.values() if isinstance(r, Exception)]
    # Each cell was trained by exactly one driver; each driver returned with all of them.
    assert sum(r.ran for r in results.values()) == 3, results
    for outcome in results.values():
        assert outcome.ran + outcome.elsewhere + outcome.skipped == 3 and not outcome.failed
    records = load_records(cells_dir(tmp_path, "t"))
    assert len(records) == 3 and {r.status for r in records} == {"finished"}
    assert_one_finished_run_per_cell(tracking_uri(tmp_path), "t", {r.key for r in records})
    assert not list((tmp_path / "t" / "claims").glob("*.claim"))


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_keeps_finished_cells_and_a_rerun_finishes(tmp_path):
    seeds = list(range(8))
    path = write_suite(tmp_path / "t.toml", LONG.replace("[0, 1, 2]", str(seeds)), methods=SGD)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "bench", "run", "--suite", str(path), "--out", str(tmp_path)]
    process = subprocess.Popen(
        [*command, "--scheduler", "local:2", "--no-progress", "--no-models"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ledger = cells_dir(tmp_path, "t")
    deadline = time.monotonic() + 240
    while not load_records(ledger) and process.poll() is None:
        assert time.monotonic() < deadline, "no cell finished"
        time.sleep(0.1)
    workers = psutil.Process(process.pid).children(recursive=True)
    assert workers, "the cluster's processes are children of the driver"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    _, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive, f"worker processes still running: {alive}"
    kept = load_records(ledger)
    assert kept and {r.status for r in kept} <= {"finished", "killed"}
    assert len(kept) < len(seeds)  # the cells not yet started were not run
    finished_before = {r.key for r in kept if r.status == "finished"}
    assert main(["run", "--suite", str(path), "--out", str(tmp_path), "--no-progress"]) == 0
    records = load_records(ledger)
    assert len(records) == len(seeds) and {r.status for r in records} == {"finished"}
    assert finished_before <= {r.key for r in records}
    assert_one_finished_run_per_cell(tracking_uri(tmp_path), "t", {r.key for r in records})


# --------------------------------------------------------------------------- live MLflow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """An ``mlflow server`` on 127.0.0.1: PostgreSQL-backed when the CI provides one."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    url = os.environ.get(POSTGRES_ENV)
    if url:
        from sqlalchemy.engine import make_url

        backend = make_url(url).set(database=f"pmp_mlflow_{uuid.uuid4().hex[:10]}")
        backend = backend.render_as_string(hide_password=False)
        ensure_database(backend)
    else:
        backend = f"sqlite:///{folder / 'server.db'}"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        server_command(backend, folder / "artifacts", port, workers=1),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_up(uri, server)
        yield uri, backend
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
        if url:
            _drop_database(backend)


def _drop_database(url: str) -> None:
    """Leave the CI's PostgreSQL server as the test found it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from bench.tuning.storage import _with_installed_driver

    target = make_url(_with_installed_driver(url))
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{target.database}"'))
    finally:
        admin.dispose()


@pytest.mark.slow
def test_local_2_logs_the_smoke_suite_live_to_an_mlflow_server(
    tmp_path, monkeypatch, mlflow_server
):
    uri, backend = mlflow_server
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"{POSTGRES_ENV} is not set: no PostgreSQL behind the MLflow server")
    assert backend.startswith("postgresql")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    suite = load_suite("smoke")
    outcome = run_suite_distributed(
        suite, tmp_path, "cpu", parse_scheduler("local:2"), progress=False
    )
    assert (outcome.ran, outcome.exit_code) == (4, 0)
    records = load_records(cells_dir(tmp_path, "smoke"))
    runs = assert_one_finished_run_per_cell(uri, "smoke", {r.key for r in records})
    client = MlflowClient(uri)
    for run in runs:  # the worker logged it live: curve, system metrics; its pid is the tag
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 5
        assert any(k.startswith("system/") for k in run.data.metrics)
        assert run.data.tags["pmp.driver_pid"] != str(os.getpid())


@pytest.mark.slow
def test_a_worker_killed_mid_cell_is_retried_and_its_run_ends_killed(
    tmp_path, monkeypatch, mlflow_server
):
    from distributed import Client, LocalCluster

    uri, _ = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    suite = load_suite(write_suite(tmp_path / "t.toml", LONG, name="k", methods=SGD))
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    )
    client = Client(cluster)
    killed: list[int] = []

    def kill_a_worker_mid_cell() -> None:
        pids = set(client.run(os.getpid).values())
        mlflow = MlflowClient(uri)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            for run in runs_of(uri, "k"):
                pid = int(run.data.tags.get("pmp.driver_pid", 0))
                trained = mlflow.get_metric_history(run.info.run_id, "val_accuracy")
                if run.info.status == "RUNNING" and pid in pids and len(trained) >= 2:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_worker_mid_cell)
    killer.start()
    try:
        spec = SchedulerSpec("address", address=cluster.scheduler_address)
        outcome = run_suite_distributed(suite, tmp_path, "cpu", spec, progress=False)
    finally:
        killer.join()
        client.close()
        cluster.close()
    assert killed, "no cell was seen running"
    assert (outcome.ran, outcome.failed) == (3, 0)
    records = load_records(cells_dir(tmp_path, "k"))
    assert len(records) == 3 and {r.status for r in records} == {"finished"}
    runs = assert_one_finished_run_per_cell(uri, "k", {r.key for r in records})
    orphans = [
        r
        for r in runs
        if r.data.tags.get("pmp.driver_pid") == str(killed[0]) and r.info.status != "FINISHED"
    ]
    assert len(orphans) == 1 and orphans[0].info.status == "KILLED"
    assert "the cell was run again" in orphans[0].data.tags["pmp.close_reason"]
    retried = orphans[0].data.tags["cell_key"]
    assert retried in {r.key for r in records}


# --------------------------------------------------------------------------- tuning


@pytest.mark.slow
def test_a_study_on_two_dask_workers_ends_with_exactly_n_trials(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from bench.tuning.storage import JOURNAL_NAME, StorageSpec
    from tests.test_tuning import SETTING

    setting = tmp_path / "tiny-tuned.toml"
    setting.write_text(SETTING)
    out = tmp_path / "out"
    args = ["tune", "--setting", str(setting), "--out", str(out), "--method", "sgd", "--quiet"]
    assert main([*args, "--study", "dask", "--trials", "5", "--scheduler", "local:2"]) == 0
    storage = StorageSpec("journal", str(out / JOURNAL_NAME)).open()
    study = optuna.load_study(study_name="dask", storage=storage)
    done = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert sorted(t.number for t in done) == sorted({t.number for t in done}) and len(done) == 5
    assert all(t.user_attrs.get("surplus") for t in study.get_trials(states=(TrialState.FAIL,)))
    pids = {t.user_attrs["worker_pid"] for t in done}
    assert os.getpid() not in pids  # the trials trained on the cluster's workers
    # The workers wrote the trial runs into the SQLite MLflow store side by side.
    client = MlflowClient(tracking_uri(out))
    experiment = client.get_experiment_by_name("pmp-bench/tuning")
    runs = client.search_runs([experiment.experiment_id], "tags.run_kind = 'trial'")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 5
    assert not [t for t in done if t.user_attrs.get("mlflow_synced") is False]
    # A rerun with a larger N adds the difference, no more.
    assert main([*args, "--study", "dask", "--trials", "6", "--scheduler", "local:2"]) == 0
    study = optuna.load_study(study_name="dask", storage=storage)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 6


def test_tune_refuses_workers_together_with_a_scheduler(tmp_path, capsys):
    from tests.test_tuning import SETTING

    setting = tmp_path / "tiny-tuned.toml"
    setting.write_text(SETTING)
    code = main(
        [
            "tune",
            "--setting",
            str(setting),
            "--out",
            str(tmp_path),
            "--method",
            "sgd",
            "--trials",
            "2",
            "--workers",
            "2",
            "--scheduler",
            "local:2",
        ]
    )
    assert code == 2
    assert "with --scheduler drop it" in capsys.readouterr().err


def _write_runs(uri: str, index: int, runs: int, points: int) -> None:
    tracker = Tracker(uri, "concurrent")
    for r in range(runs):
        run_id = tracker.create_run(
            f"w{index}-r{r}", {"worker": index, "run": r}, {"w": str(index)}
        )
        for step in range(points):
            tracker.log_metrics(run_id, {"loss": 1.0 / (step + 1)}, step=step, timestamp_ms=0)
        tracker.log_json(run_id, "curve.json", {"points": points})
        tracker.end(run_id, "FINISHED")


@pytest.mark.slow
def test_concurrent_writers_on_one_sqlite_mlflow_store_lose_nothing(tmp_path):
    """Why tuning workers on one machine may share the SQLite store: 3 processes at once."""
    import multiprocessing

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracker(
        uri, "concurrent", lock_path=tmp_path / ".mlflow.lock"
    ).open()  # schema, as the bench does
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_runs, args=(uri, i, 4, 40)) for i in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=240)
    assert [w.exitcode for w in writers] == [0, 0, 0]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("concurrent")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 12
    for run in runs:
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 40


MMAPPED_FOR_A_BUFFER = """
import ctypes, sys, torch
from bench.distributed.allocator import keep_freed_buffers
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_buffers() if sys.argv[1] == "undo" else False
before = libc.mallinfo2().hblkhd
buffer = torch.ones(128, 6, 28, 28)  # one LeNet-5 activation at batch 128: 2.4 MB
print(applied, libc.mallinfo2().hblkhd - before)
"""


def _has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _has_mallinfo2(), reason="glibc >= 2.33 (mallopt, mallinfo2)")
def test_dasks_allocator_setting_is_undone_in_the_worker_process():
    # Under Dask's MALLOC_TRIM_THRESHOLD_ glibc serves every activation buffer with its
    # own mmap (its pages faulted in again at every step); with the thresholds set, the
    # buffer comes from the heap, where a freed one is reused. glibc's own count of
    # mmapped bytes tells which, independent of page sizes.
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}

    def mmapped(mode: str) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", MMAPPED_FOR_A_BUFFER, mode],
            env=env, cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        return out[0], int(out[1])

    kept, under_dask = mmapped("keep")
    undone, with_thresholds = mmapped("undo")
    assert kept == "False" and undone == "True"
    assert under_dask >= 128 * 6 * 28 * 28 * 4  # the whole buffer is a fresh mapping
    assert with_thresholds == 0


@pytest.mark.slow
def test_a_cell_task_undoes_dasks_allocator_setting_in_its_worker(tmp_path):
    from bench.distributed import allocator
    from bench.distributed.cells import CellTask, run_cell_task
    from bench.distributed.cluster import open_cluster

    suite = load_suite(
        write_suite(tmp_path / "t.toml", LONG.replace("[0, 1, 2]", "[0]"), methods=SGD)
    )
    with open_cluster(parse_scheduler("local:1")) as cluster:
        (before,) = cluster.client.run(allocator.state).values()
        assert tuple(before) == ("65536", None)  # Dask's setting, not undone yet
        task = CellTask(
            cell=suite.cells()[0],
            key="k",
            ledger=str(tmp_path),
            device="cpu",
            experiment="e",
            experiment_tags={},
            tracking_uri=None,
            models=False,
            threads=1,
        )
        outcome = cluster.client.submit(run_cell_task, task, pure=False).result()
        assert outcome.record.status == "finished"
        (after,) = cluster.client.run(allocator.state).values()
        assert tuple(after) == ("65536", True)
