"""A cell stopped mid-training resumes from its checkpoint and ends as if never stopped."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.data import DataCache
from bench.ledger.checkpoints import CellCheckpoints, checkpoint_path
from bench.ledger.records import load_records
from bench.runner import cells_dir
from bench.suites import load_suite
from bench.tracking.client import EXPERIMENT_PREFIX, tracking_uri
from bench.training.interrupts import InterruptGuard, Terminated
from bench.training.loop import batches, train_cell
from tests.test_reliability import SGD, _bench, _wait_for
from tests.test_runner import TINY, write_suite

CPU = torch.device("cpu")
#: Summary figures that measure time: they differ between any two runs.
TIMES = {
    "device_time_s", "eval_time_s", "warmup_time_s", "step_wall_time_s",
    # the machine's load while the steps ran (bench.training.interference): measured, not computed
    "interference", "slowed_step_share", "starved_step_share", "wall_cpu_ratio",
}  # fmt: skip


def one_cell(tmp_path: Path, method: str, mode: str = "minibatch", epochs: int = 2):
    batch = "" if mode == "fullbatch" else "batch_size = 32\n"
    body = TINY.replace("[0, 1]", "[0]").replace("epochs = 1", f"epochs = {epochs}")
    methods = f'[[methods]]\nname = "{method}"\nmode = "{mode}"\n{batch}'
    (cell,) = load_suite(write_suite(tmp_path / "t.toml", body, methods=methods)).cells()
    return cell


def without_times(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in TIMES}


@pytest.mark.parametrize(
    ("method", "mode", "signum"),
    [("sgd", "minibatch", signal.SIGTERM), ("bsqh", "minibatch", signal.SIGINT),
     ("l0-hc", "minibatch", signal.SIGINT), ("gmp", "minibatch", signal.SIGINT),
     ("bsqh", "fullbatch", signal.SIGINT)],
)  # fmt: skip
def test_a_cell_interrupted_at_a_step_boundary_resumes_to_the_same_figures(
    tmp_path, method, mode, signum
):
    cell = one_cell(tmp_path, method, mode, epochs=2 if mode == "minibatch" else 6)
    data = DataCache(CPU).get(cell.dataset, cell.data)
    straight = train_cell(cell, data, CPU, progress=False)

    path = tmp_path / "checkpoints" / "cell.pt"
    seen = []

    def interrupt_at_the_second_point(point):
        seen.append(point)
        if len(seen) == 2:
            os.kill(os.getpid(), signum)  # Ctrl-C or SIGTERM: answered at the step boundary

    expected = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    with InterruptGuard() as guard, pytest.raises(expected):
        train_cell(
            cell, data, CPU, progress=False, on_eval=interrupt_at_the_second_point,
            checkpoints=CellCheckpoints(path, None, guard),
        )  # fmt: skip
    assert path.exists()

    replayed = []
    resumed_from = CellCheckpoints(path, None)
    resumed = train_cell(
        cell, data, CPU, progress=False, on_eval=replayed.append, checkpoints=resumed_from
    )
    assert resumed_from.resumes == 1 and resumed_from.resumed_from_step > 0
    assert resumed.status == straight.status
    assert without_times(resumed.summary) == without_times(straight.summary)
    assert [without_times(p) for p in resumed.curve] == [without_times(p) for p in straight.curve]
    assert len(replayed) == len(straight.curve)  # restored points are logged again too
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_periodic_checkpoints_are_written_and_an_unreadable_one_starts_afresh(tmp_path):
    cell = one_cell(tmp_path, "sgd")
    data = DataCache(CPU).get(cell.dataset, cell.data)
    path = tmp_path / "c.pt"
    checkpoints = CellCheckpoints(path, 1e-9)  # due at every step boundary
    train_cell(cell, data, CPU, progress=False, checkpoints=checkpoints)
    assert path.exists()  # the last one (the runner deletes it once the record is final)
    assert not list(tmp_path.glob(".tmp-*"))
    path.write_bytes(b"not a checkpoint")
    again = CellCheckpoints(path, None)
    with pytest.warns(UserWarning, match="cannot be read"):
        train_cell(cell, data, CPU, progress=False, checkpoints=again)
    assert again.resumes == 0
    with pytest.raises(ValueError, match="must be > 0 seconds"):
        CellCheckpoints(path, 0.0)


def test_the_batch_stream_resumes_at_any_position(tmp_path):
    cell = one_cell(tmp_path, "sgd")
    data = DataCache(CPU).get(cell.dataset, cell.data)
    stream = batches(cell, data)
    drawn = [next(stream) for _ in range(40)]
    for start in (0, 3, 17, 39):
        x, y = next(batches(cell, data, start=start))
        assert torch.equal(x, drawn[start][0]) and torch.equal(y, drawn[start][1])


@pytest.mark.slow
def test_a_bench_run_interrupted_mid_cell_resumes_on_the_next_run(tmp_path):
    body = TINY.replace("[0, 1]", "[0]").replace("epochs = 1", "epochs = 10")
    path = write_suite(tmp_path / "t.toml", body, methods=SGD)
    out, reference = tmp_path / "out", tmp_path / "reference"
    args = ("run", "--suite", str(path), "--no-progress")
    process = _bench(*args, "--out", str(out), "--checkpoint-minutes", "0.002")
    cell_checkpoints = out / "t" / "checkpoints"
    # A periodic checkpoint (every 0.12 s) exists only once the cell is training.
    _wait_for(lambda: any(cell_checkpoints.glob("*.pt")) or process.poll() is not None)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)  # what SLURM sends before its time limit
    whole = _bench(*args, "--out", str(reference))
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    (killed,) = load_records(cells_dir(out, "t"))
    assert killed.status == "killed" and killed.error == "terminated (SIGTERM)"
    stored = checkpoint_path(cells_dir(out, "t"), killed.key)
    assert stored.exists()

    rerun = _bench(*args, "--out", str(out))
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    records = load_records(cells_dir(out, "t"))
    assert len(records) == 1, [(r.key, r.status, r.error) for r in records]
    (record,) = records
    assert record.status == "finished" and record.resumes == 1
    assert record.resumed_from_step > 0
    assert not stored.exists()  # deleted once the record is final
    _, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err
    (uninterrupted,) = load_records(cells_dir(reference, "t"))
    assert without_times(record.summary) == without_times(uninterrupted.summary)

    client = MlflowClient(tracking_uri=tracking_uri(out))
    experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + "t")
    (run,) = client.search_runs(
        [experiment.experiment_id], "tags.run_kind = 'cell' and tags.status = 'finished'"
    )
    assert run.data.tags["resumed_from_step"] == str(record.resumed_from_step)
    assert run.data.tags["resumes"] == "1" and run.data.tags["status"] == "finished"


def test_a_bad_checkpoint_interval_is_one_error_line(tmp_path, capsys):
    path = write_suite(tmp_path / "t.toml", TINY, methods=SGD)
    args = ["run", "--suite", str(path), "--out", str(tmp_path), "--checkpoint-minutes", "-1"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert "--checkpoint-minutes: must be a finite number >= 0, got '-1'" in capsys.readouterr().err
