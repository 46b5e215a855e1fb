"""Faults a probe of bad inputs and signals found: each is refused or survived cleanly.

A user's mistake (a suite name that would escape ``--out``, a file that is not UTF-8, a
tuned-settings file cut short, a data option out of range, a ledger record of the
wrong shape) ends in one ``error:`` line with exit status 2, or in a quarantined record
that is trained again; nothing is written outside the output folder; SIGTERM takes the
path of Ctrl-C.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import bench.runner
import bench.tracking.client
import bench.tracking.report_run
from bench.cli import main
from bench.ledger.records import LedgerWarning, load_records
from bench.runner import cells_dir, run_suite
from bench.suites import load_suite
from bench.tracking.client import EXPERIMENT_PREFIX, Tracker, tracking_uri
from bench.tracking.names import REPORT_DIR_TAG, REPORT_KIND, RUN_KIND_TAG
from tests.test_inputs import suite_text

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single ``error:`` line a user's mistake prints (never an internal error)."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "internal error" not in err and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------- names and paths


@pytest.mark.parametrize(
    "name",
    ["../escaped", "{tmp}/absolute-suite", "a\\u0000b", "o'q", "a b", ".hidden", "x" * 101, ""],
)
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_suite_name_that_is_no_plain_folder_name_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, dry_run: bool
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    path = work / "s.toml"
    name = name.format(tmp=tmp_path)  # an absolute path: must not escape the test's folder
    path.write_text(suite_text().replace('name = "t"', f'name = "{name}"'))
    before = files_under(tmp_path)
    args = ["run", "--suite", str(path), "--out", str(work / "out"), "--no-progress"]
    assert main(args + (["--dry-run"] if dry_run else [])) == 2
    assert "key 'name'" in one_error_line(capsys)
    assert files_under(tmp_path) == before


def test_a_tuned_study_name_outside_the_studies_folder_is_refused_before_any_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    (tmp_path / "system-tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-tmp"))
    work.mkdir()
    path = work / "s-tuned.toml"
    path.write_text(suite_text(hparams='"tuned:../../escaped-study"'))
    before = files_under(tmp_path)
    code = main(["tune-all", "--setting", str(path), "--out", str(work / "out"), "--trials", "1"])
    assert code == 2
    assert "escaped-study" in one_error_line(capsys)
    assert files_under(tmp_path) == before
    assert main(["run", "--suite", str(path), "--out", str(work / "out"), "--dry-run"]) == 2
    assert "study name" in one_error_line(capsys)


# --------------------------------------------------------------------------- files a user wrote


def test_a_suite_file_that_is_not_utf8_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(suite_text(top='description = "caf\xe9"').encode("latin-1"))
    assert main(["run", "--suite", str(path), "--out", str(tmp_path), "--dry-run"]) == 2
    err = one_error_line(capsys)
    assert str(path) in err and "UTF-8" in err and "0xe9" in err


def test_truncated_tuned_settings_are_named_with_the_remedy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    best = tmp_path / "out" / "studies" / "mine" / "best.json"
    best.parent.mkdir(parents=True)
    best.write_text('{"params": {"lr": 0.')
    path = tmp_path / "s.toml"
    path.write_text(suite_text(hparams='"tuned:mine"'))
    assert main(["run", "--suite", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = one_error_line(capsys)
    assert str(best) in err and "bench tune --study mine" in err


# --------------------------------------------------------------------------- the ledger


TWO_METHODS = (
    '[[methods]]\nname = "sgd"\nbatch_size = 32\nhparams = { lr = 0.1 }\n'
    '[[methods]]\nname = "adam"\nbatch_size = 32\nhparams = { lr = 0.01 }\n'
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A suite of two cells (sgd, adam), trained once for the ledger tests to copy."""
    folder = tmp_path_factory.mktemp("trained")
    path = folder / "t.toml"
    path.write_text(suite_text().split("[[methods]]")[0] + TWO_METHODS)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        outcome = run_suite(load_suite(path), folder / "out", CPU, progress=False, models=False)
    assert outcome.ran == 2 and outcome.failed == 0
    return folder


def ledger_copy(trained: Path, tmp_path: Path) -> tuple[Path, Path, dict[str, Path]]:
    """The trained suite file and output folder copied, and its record files by label."""
    shutil.copytree(trained, tmp_path, dirs_exist_ok=True)
    ledger = cells_dir(tmp_path / "out", "t")
    by_label = {json.loads(p.read_text())["config"]["label"]: p for p in ledger.glob("*.json")}
    return tmp_path / "t.toml", tmp_path / "out", by_label


def edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.update(summary="oops"), "field 'summary' must be an object"),
        (
            lambda d: d["summary"].update(test_accuracy="high"),
            "summary figure 'test_accuracy' must be a number, true/false or null",
        ),
        (lambda d: d.update(wall_time_s="long"), "field 'wall_time_s' must be a finite number"),
        (lambda d: d.update(curve={"a": 1}), "field 'curve' must be a list of objects"),
        (lambda d: d.update(resumes=-1), "field 'resumes' must be an integer >= 0"),
        (lambda d: d.update(status="great"), "status must be one of"),
        (lambda d: d["config"]["hparams"].update(lr=0.5), "does not hash to its key"),
    ],
)
def test_a_record_of_the_wrong_shape_is_quarantined_and_its_cell_trained_again(
    trained: Path, tmp_path: Path, change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    *_, by_label = ledger_copy(trained, tmp_path)
    edit(by_label["sgd"], change)
    with pytest.warns(LedgerWarning, match=re.escape(reason)):
        records = load_records(by_label["sgd"].parent)
    assert [r.config["label"] for r in records] == ["adam"]
    assert (by_label["sgd"].parent / "quarantine" / by_label["sgd"].name).is_file()


def test_a_record_copied_over_another_cells_file_is_quarantined_and_both_cells_reported_once(
    trained: Path, tmp_path: Path
) -> None:
    path, out, by_label = ledger_copy(trained, tmp_path)
    shutil.copyfile(by_label["sgd"], by_label["adam"])
    with pytest.warns(LedgerWarning, match="holds the record of cell"):
        outcome = run_suite(load_suite(path), out, CPU, progress=False, models=False)
    assert (outcome.ran, outcome.skipped) == (1, 1)
    records = load_records(by_label["sgd"].parent)
    assert sorted(r.config["label"] for r in records) == ["adam", "sgd"]
    assert all(p.stem == r.key for p, r in zip(sorted(by_label.values()), records, strict=True))


def test_newer_summary_figures_and_the_capped_status_are_accepted(
    trained: Path, tmp_path: Path
) -> None:
    *_, by_label = ledger_copy(trained, tmp_path)

    def newer(data: dict[str, Any]) -> None:
        data["status"] = "capped"
        data["summary"].update(interference_share=0.25, interference_note="quiet")

    edit(by_label["sgd"], newer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LedgerWarning)
        records = {r.config["label"]: r for r in load_records(by_label["sgd"].parent)}
    assert records["sgd"].status == "capped"
    assert records["sgd"].summary["interference_share"] == 0.25


# --------------------------------------------------------------------------- SIGTERM


def _mlflow_runs(out: Path, suite: str = "t") -> list[Any]:
    client = MlflowClient(tracking_uri=tracking_uri(out))
    experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + suite)
    return client.search_runs([experiment.experiment_id], "tags.run_kind = 'cell'")


def test_sigterm_during_training_records_the_cell_killed_closes_its_run_and_exits_143(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.toml"
    path.write_text(suite_text())
    real = bench.runner.train_cell

    def terminated_after_an_evaluation(*args: Any, on_eval: Any, **kwargs: Any) -> Any:
        def evaluate(point: dict[str, Any]) -> None:
            on_eval(point)
            os.kill(os.getpid(), signal.SIGTERM)  # as a batch system's stop would land

        return real(*args, on_eval=evaluate, **kwargs)

    monkeypatch.setattr(bench.runner, "train_cell", terminated_after_an_evaluation)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["run", "--suite", str(path), "--out", str(tmp_path), "--no-progress"]) == 143
    assert signal.getsignal(signal.SIGTERM) == before  # the CLI's handler is gone again
    assert capsys.readouterr().err.strip().endswith("terminated (SIGTERM)")
    (record,) = load_records(cells_dir(tmp_path, "t"))
    assert record.status == "killed" and record.error == "terminated (SIGTERM)"
    assert len(record.curve) == 1 and record.mlflow_synced
    (run,) = _mlflow_runs(tmp_path)
    assert run.info.status == "KILLED" and run.info.run_id == record.mlflow_run_id
    assert not list((tmp_path / "t" / "claims").glob("*.claim"))


@pytest.mark.slow
def test_sigterm_to_a_running_suite_takes_the_path_of_ctrl_c(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(suite_text().replace("epochs = 1", "epochs = 50"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = ["run", "--suite", str(path), "--out", str(tmp_path), "--no-progress"]
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", *command],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    claims = tmp_path / "t" / "claims"
    deadline = time.monotonic() + 120
    while not any(claims.glob("*.claim")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    process.terminate()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "Traceback" not in err
    (record,) = load_records(cells_dir(tmp_path, "t"))
    assert record.status == "killed" and record.error == "terminated (SIGTERM)"
    assert [r.info.status for r in _mlflow_runs(tmp_path)] == ["KILLED"]
    assert not list(claims.glob("*.claim"))


# --------------------------------------------------------------------------- data that does not fit


@pytest.mark.parametrize(
    ("data", "method", "expected"),
    [
        ("train_subset = 100000", "batch_size = 32", "train_subset must be an integer in [1, 512]"),
        ("", "batch_size = 5000", "key 'batch_size': batch_size 5000 of method 'sgd' exceeds"),
    ],
)
def test_data_options_beyond_the_loaded_data_are_refused_before_any_cell_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: str, method: str, expected: str
) -> None:
    path = tmp_path / "t.toml"
    path.write_text(suite_text(data=data).replace("batch_size = 32", method))
    assert main(["run", "--suite", str(path), "--out", str(tmp_path), "--no-progress"]) == 2
    err = one_error_line(capsys)
    assert str(path) in err and expected in err
    assert not cells_dir(tmp_path, "t").exists() or not list(cells_dir(tmp_path, "t").iterdir())


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("label", "train-labels-idx1-ubyte: label 200 outside 0..9"),
        ("count", "train-images-idx3-ubyte: has 12 images but"),
    ],
)
def test_mnist_format_files_that_disagree_are_a_data_error_not_an_internal_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, expected: str
) -> None:
    from bench.data.locate import IDX_FILES

    folder = tmp_path / "mnist"
    folder.mkdir()
    labels = np.arange(12, dtype=np.uint8) % 10
    if damage == "label":
        labels[3] = 200
    arrays = {
        "train_images": np.zeros((12, 4, 4), np.uint8),
        "train_labels": labels if damage == "label" else labels[:10],
        "test_images": np.zeros((5, 4, 4), np.uint8),
        "test_labels": np.zeros(5, np.uint8),
    }
    for key, array in arrays.items():  # IDX: magic (type 0x08, ndim), sizes, bytes
        header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(
            f">{array.ndim}I", *array.shape
        )
        (folder / IDX_FILES[key]).write_bytes(header + array.tobytes())
    assert main(["data", "--dataset", "mnist", "--root", str(tmp_path)]) == 2
    err = one_error_line(capsys)
    assert expected in err


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00garbage\x81", b'{"op_code": 0, "worker_id": "w", "study_name": "s"\n'],
)
def test_a_journal_storage_that_is_garbage_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    journal = tmp_path / "journal.log"
    journal.write_bytes(content)
    args = ["tune", "--method", "sgd", "--model", "cnn-tiny", "--dataset", "synthetic"]
    args += ["--trials", "1", "--budget-epochs", "1", "--quiet", "--out", str(tmp_path)]
    assert main([*args, "--storage", str(journal)]) == 2
    err = one_error_line(capsys)
    assert str(journal) in err and "not an Optuna journal or is damaged" in err and "line 1" in err


# --------------------------------------------------------------------------- MLflow


def test_tag_values_with_quotes_are_quoted_in_filters(tmp_path: Path) -> None:
    tracker = Tracker(tracking_uri(tmp_path), "quotes")
    ids = {
        name: tracker.create_run(name, {}, {"suite": name}) for name in ("o'q", 'say "hi"', "plain")
    }
    for name, run_id in ids.items():
        assert [r.info.run_id for r in tracker.running_runs({"suite": name})] == [run_id]
    with pytest.raises(ValueError, match="both quote characters"):
        tracker.running_runs({"suite": 'it\'s "both"'})


def test_a_report_run_a_dead_process_left_running_is_ended_killed_and_its_folder_removed(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, out, _ = ledger_copy(trained, tmp_path)
    folder = out / "t"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftovers = [
        folder / f".report-tmp-{socket.gethostname()}-{dead.pid}-abc_1",
        folder / f".report-old-{socket.gethostname()}-{dead.pid}-xyz",
    ]
    elsewhere = folder / ".report-tmp-another-host-1-abc"  # cannot be checked: kept
    for leftover in [*leftovers, elsewhere]:
        (leftover / "figures").mkdir(parents=True)
    tracker = Tracker.for_output(out, EXPERIMENT_PREFIX + "t")
    tags = {RUN_KIND_TAG: REPORT_KIND, REPORT_DIR_TAG: str(folder.resolve())}
    orphan = tracker.create_run("report", {}, tags)  # as a SIGTERMed report leaves it

    assert main(["report", "--suite", str(path), "--out", str(out)]) == 0
    assert not any(p.exists() for p in leftovers) and elsewhere.is_dir()
    client = MlflowClient(tracking_uri=tracking_uri(out))
    run = client.get_run(orphan)
    assert run.info.status == "KILLED"
    assert "stopped without closing it" in run.data.tags["pmp.close_reason"]


def test_an_interrupted_report_run_is_ended_killed(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, out, _ = ledger_copy(trained, tmp_path)

    def terminated(*args: Any, **kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)

    monkeypatch.setattr(bench.tracking.report_run, "_copy", terminated)
    assert main(["report", "--suite", str(path), "--out", str(out)]) == 143
    client = MlflowClient(tracking_uri=tracking_uri(out))
    experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + "t")
    (run,) = client.search_runs([experiment.experiment_id], "tags.run_kind = 'report'")
    assert run.info.status == "KILLED"
    assert "terminated (SIGTERM)" in run.data.tags["pmp.close_reason"]
    assert not list((out / "t").glob(".report-*"))


def test_the_run_of_a_quarantined_record_is_marked_replaced_once_its_cell_is_retrained(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.toml"
    path.write_text(suite_text())
    suite = load_suite(path)
    run_suite(suite, tmp_path, CPU, progress=False, models=False)
    (record_file,) = cells_dir(tmp_path, "t").glob("*.json")
    old_run = json.loads(record_file.read_text())["mlflow_run_id"]
    edit(record_file, lambda d: d["summary"].update(test_accuracy="high"))
    with pytest.warns(LedgerWarning):
        assert run_suite(suite, tmp_path, CPU, progress=False, models=False).ran == 1
    runs = {r.info.run_id: r for r in _mlflow_runs(tmp_path)}
    current = [r for r in runs.values() if r.data.tags.get("status") != "replaced"]
    assert [r.info.status for r in current] == ["FINISHED"]
    replaced = runs[old_run]
    assert replaced.info.status == "FAILED" and replaced.data.tags["status"] == "replaced"
    (new,) = load_records(record_file.parent)
    assert new.mlflow_run_id in replaced.data.tags["pmp.close_reason"]


def test_a_description_longer_than_mlflow_takes_is_cut_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    long = "a benchmark " * 50_000  # 600,000 characters
    path.write_text(suite_text(top=f'description = "{long}"'))
    assert main(["run", "--suite", str(path), "--out", str(tmp_path), "--no-progress"]) == 0
    (record,) = load_records(cells_dir(tmp_path, "t"))
    assert record.mlflow_synced
    client = MlflowClient(tracking_uri=tracking_uri(tmp_path))
    note = client.get_experiment_by_name(EXPERIMENT_PREFIX + "t").tags["mlflow.note.content"]
    assert 1000 < len(note) <= 20_000 and note.endswith("the full text is in the suite file]")


def test_make_dashboard_before_any_study_says_how_to_make_one(tmp_path: Path) -> None:
    venv = Path(sys.executable).parents[1]
    if shutil.which("make") is None or not (venv / ".installed").is_file():
        pytest.skip("needs make and an installed virtual environment (its .installed stamp)")
    env = {k: v for k, v in os.environ.items() if k != "OPTUNA_STORAGE"}
    done = subprocess.run(
        ["make", "-s", "dashboard", f"VENV={venv}", f"OUT={tmp_path}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"error: no study yet: {tmp_path}/optuna.db does not exist" in done.stderr
    assert "make tune" in done.stderr


class _Silent(http.server.BaseHTTPRequestHandler):
    """A tracking server that accepts connections and never answers in time."""

    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Silent.requests.append(self.path)
        time.sleep(2)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


def test_after_the_first_timeout_the_store_is_left_alone_for_the_rest_of_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setattr(bench.tracking.client, "RETRY_PAUSE_S", 0.0)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Silent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    path = tmp_path / "t.toml"
    path.write_text(suite_text().replace("seeds = [0]", "seeds = [0, 1]"))
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{server.server_port}")
        outcome = run_suite(load_suite(path), tmp_path, CPU, progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert outcome.ran == 2 and outcome.unsynced == 2
    assert len(_Silent.requests) == 1  # the first call timed out; nothing was sent after it
    for record in load_records(cells_dir(tmp_path, "t")):
        assert record.status == "finished" and "timed out" in str(record.mlflow_error)


def test_the_sql_stores_traceback_for_a_full_disk_is_not_printed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging
    import sqlite3

    import sqlalchemy

    import bench.tracking.client  # noqa: F401  (installs the filter)

    logger = logging.getLogger("mlflow.store.db.utils")
    full = sqlite3.OperationalError("database or disk is full")
    with caplog.at_level(logging.DEBUG):
        try:  # what mlflow.store.db.utils does before it raises MlflowException
            raise sqlalchemy.exc.OperationalError("INSERT INTO metrics", {}, full)
        except sqlalchemy.exc.OperationalError as error:
            logger.exception(
                "SQLAlchemy database error. The following exception is caught.\n%s", error
            )
        logger.warning("other messages of that logger stay")
    assert [r.getMessage() for r in caplog.records] == ["other messages of that logger stay"]


class _Collected:
    """An object whose weakref callback raises what a signal handler raised inside GC."""


def _interrupt_inside_a_gc_callback(error: BaseException) -> None:
    import gc
    import weakref

    def callback(_: object) -> None:
        raise error

    thing = _Collected()
    ref = weakref.ref(thing, callback)
    del thing
    gc.collect()
    del ref


def test_a_signal_swallowed_by_a_gc_callback_under_a_guard_is_not_printed(capfd) -> None:
    from bench.training.interrupts import InterruptGuard, Terminated, terminate_like_ctrl_c

    # Under a guard the signal was counted and its check raises it: no traceback printed.
    with terminate_like_ctrl_c(), InterruptGuard() as guard:
        _interrupt_inside_a_gc_callback(Terminated())
        assert "Traceback" not in capfd.readouterr().err
        guard.pending = 1  # what the guard's handler counted when the signal arrived
        guard.signum = __import__("signal").SIGTERM
        with pytest.raises(Terminated):
            guard.check()
    # Other unraisable errors still reach the hook that was there before.
    # Other unraisable errors, and an interrupt outside any guard, still reach the hook
    # that was there before.
    seen: list[BaseException] = []
    previous, sys.unraisablehook = sys.unraisablehook, lambda u: seen.append(u.exc_value)
    try:
        with terminate_like_ctrl_c():
            _interrupt_inside_a_gc_callback(ValueError("kept"))
            _interrupt_inside_a_gc_callback(KeyboardInterrupt("outside"))
    finally:
        sys.unraisablehook = previous
    assert [str(e) for e in seen] == ["kept", "outside"]
