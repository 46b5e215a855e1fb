"""bench.analysis: a suite's results as DataFrames, and the README's worked example."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from bench import analysis
from bench.data import DataCache
from bench.ledger.records import CellRecord
from bench.report.frames import ID_COLUMNS
from bench.runner import cell_key, cells_dir
from bench.suites import load_suite
from bench.training.loop import train_cell
from tests.test_custom_models import readme_example
from tests.test_runner import TINY, write_suite

CPU = torch.device("cpu")
METHODS = """
[[methods]]
name = "sgd"
batch_size = 32
hparams = { lr = 0.1 }
[[methods]]
name = "prox-sgd-l0"
batch_size = 32
hparams = { lr = 0.1, beta = 1e-3 }
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A tiny suite named like the README's example, recorded in ``<tmp>/results``.

    Its cells are trained and recorded as the runner records them, without MLflow (which
    the analysis never reads): the ledger is all ``load`` needs.
    """
    folder = tmp_path_factory.mktemp("analysis")
    body = TINY.replace("[0, 1]", "[0]").replace("epochs = 1", "epochs = 0.5")
    path = write_suite(folder / "smoke.toml", body, name="smoke", methods=METHODS)
    suite = load_suite(path)
    data = DataCache(CPU)
    for cell in suite.cells():
        result = train_cell(cell, data.get(cell.dataset, cell.data), CPU, progress=False)
        CellRecord(
            key=cell_key(cell),
            suite=suite.name,
            status=result.status,
            config=cell.config(),
            summary=result.summary,
            curve=result.curve,
            layer_sparsity=result.layer_sparsity,
            layer_sizes=result.layer_sizes,
        ).save(cells_dir(folder / "results", suite.name))
    return folder, path


def test_load_builds_runs_and_curves_from_the_ledger(results):
    folder, path = results
    loaded = analysis.load(folder / "results", "smoke")
    assert loaded.suite == "smoke"
    assert len(loaded.records) == len(loaded.runs) == 2  # 2 methods x 1 seed
    assert list(loaded.runs.columns[: len(ID_COLUMNS)]) == list(ID_COLUMNS)
    assert set(loaded.runs.method) == {"sgd", "prox-sgd-l0"}
    for record in loaded.records:
        row = loaded.runs[loaded.runs.key == record.key].iloc[0]
        assert row.test_accuracy == record.summary["test_accuracy"]
        points = loaded.curves[loaded.curves.key == record.key]
        assert list(points.iteration) == [p["iteration"] for p in record.curve]
        layers = loaded.layers[loaded.layers.key == record.key]
        assert set(layers.layer) == set(record.layer_sparsity)
        # each prunable layer with its weight count: together they are the set whose
        # zeros the summary's sparsity counts
        total = sum(layers["size"])
        assert total == sum(record.layer_sizes.values()) > 0
        zeros = total - record.summary["nonzeros"]
        assert record.summary["sparsity"] == pytest.approx(zeros / total)
    by_file = analysis.load(folder / "results", path)  # the suite file works as well
    pd.testing.assert_frame_equal(by_file.runs, loaded.runs)


def test_a_suite_without_a_ledger_names_the_folder_and_what_is_there(results):
    folder, _ = results
    with pytest.raises(FileNotFoundError, match=r"no ledger of suite 'quick'.*suites there: smoke"):
        analysis.load(folder / "results", "quick")


def test_the_readme_example_runs_on_a_suite_output(results, monkeypatch, capsys):
    folder, _ = results
    monkeypatch.chdir(folder)  # the example reads "results", as `make bench` writes it
    exec(compile(readme_example("analysis"), "README.md:analysis", "exec"), {})
    printed = capsys.readouterr().out
    assert "test_accuracy" in printed and "prox-sgd-l0" in printed and "sgd" in printed
