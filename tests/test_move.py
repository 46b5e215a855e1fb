"""``bench move``: an output folder moved or copied keeps a working MLflow store.

The end-to-end test trains one smoke cell (a run with artifacts and a logged model),
moves the folder, deletes every trace of the old place, and reads the run's artifact
and the model back through MLflow from the new one.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.runner import run_suite
from bench.suites import load_suite
from bench.tracking.client import EXPERIMENT_PREFIX, tracking_uri
from bench.tracking.colours import run_colour
from bench.tracking.meta import load_model
from bench.tracking.names import RUN_COLOUR_TAG
from bench.tracking.relocate import LOCATION_COLUMNS, STORE_NAME


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def locations(out: Path) -> list[str]:
    """Every artifact location the store in ``out`` records."""
    with sqlite3.connect(out / STORE_NAME) as connection:
        return [
            value
            for table, column in LOCATION_COLUMNS
            for (value,) in connection.execute(f"SELECT {column} FROM {table}")
            if value
        ]


@pytest.mark.slow
def test_moved_and_copied_folders_read_artifacts_and_models_from_their_new_place(
    tmp_path, capsys
) -> None:
    original = tmp_path / "first"
    run_suite(load_suite("smoke"), original, torch.device("cpu"), only="sgd/*", progress=False)
    old_uri = original.resolve().as_uri()
    assert any(value.startswith(old_uri + "/") for value in locations(original))

    copied, moved = tmp_path / "copied", tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    assert main(["move", "--copy", str(original), str(copied)]) == 0
    assert (original / STORE_NAME).exists()  # a copy leaves the source as it was
    assert main(["move", str(original), str(moved)]) == 0
    assert "moved to" in capsys.readouterr().out and not original.exists()
    shutil.rmtree(copied)  # the copy is independent of the moved folder too

    recorded = [value for value in locations(moved) if "mlflow-artifacts" in value]
    assert recorded and all(v.startswith(moved.resolve().as_uri() + "/") for v in recorded)
    mlmodels = list((moved / "mlflow-artifacts").rglob("MLmodel"))
    assert mlmodels and all(old_uri not in path.read_text() for path in mlmodels)

    client = MlflowClient(tracking_uri=tracking_uri(moved))
    experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + "smoke")
    (run,) = client.search_runs([experiment.experiment_id], "tags.run_kind = 'cell'")
    assert run.data.tags[RUN_COLOUR_TAG] == run_colour("sgd")  # the method's fixed colour
    fetched = Path(client.download_artifacts(run.info.run_id, "curve.json", str(tmp_path)))
    assert (
        fetched.read_bytes()
        == (moved / "mlflow-artifacts" / run.info.run_id / "artifacts" / "curve.json").read_bytes()
    )
    (model,) = client.search_logged_models([experiment.experiment_id])
    assert model.artifact_location.startswith(moved.resolve().as_uri() + "/")
    network = load_model(tracking_uri(moved), f"models:/{model.model_id}")
    assert isinstance(network, torch.nn.Module)
    assert network(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_move_refuses_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    source, taken = tmp_path / "out", tmp_path / "taken"
    source.mkdir()
    taken.mkdir()

    def refusal(*argv: str) -> str:
        assert main(["move", *argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        return lines[0]

    assert "holds no MLflow store" in refusal(str(source), str(tmp_path / "new"))
    (source / STORE_NAME).touch()
    assert "exists" in refusal(str(source), str(taken))
    assert "inside the source" in refusal(str(source), str(source / "sub"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in refusal(str(source), str(tmp_path / "n"))
    assert source.exists() and not (tmp_path / "new").exists()
