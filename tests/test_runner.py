"""The suite runner end to end: MLflow records, the ledger, resume, failures, timing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

import bench.training.metrics
from bench.ledger.records import load_records
from bench.runner import cell_key, cells_dir, run_suite
from bench.suites import SuiteError, load_suite
from bench.tracking.client import EXPERIMENT_PREFIX, tracking_uri
from optimizers import SGDHParams, register
from optimizers.registry import _METHODS

CPU = torch.device("cpu")


def write_suite(path: Path, body: str, *, name: str = "t", methods: str | None = None) -> Path:
    methods = (
        methods
        or """
[[methods]]
name = "sgd"
batch_size = 32
hparams = { lr = 0.1 }

[[methods]]
name = "bsqh"
batch_size = 32
hparams = { eps = 1.0, beta = 1e-3, max_retries = 3 }
"""
    )
    path.write_text(f'name = "{name}"\n' + body + methods)
    return path


TINY = """
datasets = ["synthetic"]
models = ["cnn-tiny"]
seeds = [0, 1]
[data]
val_fraction = 0.2
[budget]
epochs = 1
[eval]
every_epochs = 0.5
train_eval_size = 128
"""


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def runs_of(out: Path, suite: str, kind: str = "cell"):
    """The suite's runs of ``kind`` (``cell``, or ``report``: the report run)."""
    client = MlflowClient(tracking_uri=tracking_uri(out))
    experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + suite)
    return client, client.search_runs(
        [experiment.experiment_id], f"tags.run_kind = '{kind}'", max_results=1000
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    suite = load_suite("smoke")
    outcome = run_suite(suite, out, CPU, progress=False)
    return suite, out, outcome


def test_smoke_suite_records_every_cell_in_mlflow(smoke):
    suite, out, outcome = smoke
    assert outcome.ran == len(suite.cells()) == 4 and outcome.exit_code == 0
    client, runs = runs_of(out, "smoke")
    assert len(runs) == 4
    by_method = {r.data.tags["label"]: r for r in runs}
    assert set(by_method) == {"sgd", "adam", "prox-sgd-l0", "bsqh"}
    for label, run in by_method.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["status"] == "finished"
        assert run.data.tags["dataset"] == "digits" and run.data.tags["model"] == "cnn-tiny"
        params = run.data.params
        assert params["model"] == "cnn-tiny" and params["dataset"] == "digits"
        assert params["seed"] == "0" and params["mode"] == "minibatch"
        assert params["torch"] == torch.__version__ and params["git_commit"]
        assert "hparams.lr" in params or "hparams.eps" in params
        history = client.get_metric_history(run.info.run_id, "device_time_s")
        times = [m.value for m in sorted(history, key=lambda m: m.step)]
        assert len(times) == 5  # iteration 0 and four evaluations over two epochs
        assert times == sorted(times) and times[0] == 0.0
        for key in ["objective", "train_loss", "val_accuracy", "test_accuracy", "sparsity"]:
            assert len(client.get_metric_history(run.info.run_id, key)) == 5
        assert "iteration" not in run.data.metrics  # it is every metric's step instead
        has_eps = bool(client.get_metric_history(run.info.run_id, "eps"))
        assert has_eps == (label == "bsqh")
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"layer_sparsity.json", "curve.json", "cell.png"} <= artifacts
    bsqh = by_method["bsqh"].data.metrics
    assert 0 < bsqh["accept_rate"] <= 1 and bsqh["sparsity"] > 0
    for run in runs:  # complete runs say so; summary-only figures are final.* tags
        assert run.data.tags["pmp.complete"] == "true"
        assert {"final.iterations", "final.eval_time_s"} <= set(run.data.tags)
        assert "test_accuracy" in run.data.metrics and "epoch" in run.data.metrics
        # No single-point metric charts, one name per idea (the `epoch` curve, no `epochs`).
        single = [k for k in run.data.metrics if not k.startswith("system/")
                  and len(client.get_metric_history(run.info.run_id, k)) < 2]  # fmt: skip
        assert not single, single
        assert not [k for k in run.data.metrics if k.startswith("final") or k.endswith("_at")]


def test_smoke_runs_follow_mlflow_conventions(smoke):
    """What MLflow's UI reads: experiment kind and note, source, user, description,
    dataset inputs per split, system metrics, the seed and one name per meaning."""
    suite, out, _ = smoke
    client, runs = runs_of(out, "smoke")
    experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + "smoke")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.tags["mlflow.note.content"] == suite.description
    for run in runs:
        tags, params = run.data.tags, run.data.params
        if params["git_commit"] != "unknown":
            assert tags["mlflow.source.git.commit"] == params["git_commit"]
        assert tags["mlflow.source.name"] and tags["mlflow.user"]
        assert tags["label"] in tags["mlflow.note.content"]
        assert tags["method"] == params["method"] and tags["label"] == params["label"]
        assert run.info.run_name == f"{tags['label']}/s0" and tags["seed"] == "0"
        assert "null" not in params.values() and "chunk_size" not in params
        inputs = run.inputs.dataset_inputs
        assert {i.dataset.name for i in inputs} == {"digits"}
        assert sorted(t.value for i in inputs for t in i.tags) == ["test", "train", "validation"]
        digests = {i.dataset.digest for i in run.inputs.dataset_inputs}
        assert len(digests) == 3  # three different splits
        assert any(k.startswith("system/") for k in run.data.metrics)
        # A curve, not one sample: one at every evaluation (5) besides the timed ones.
        cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
        assert len({m.step for m in cpu}) >= 5


def test_logged_model_reloads_to_the_recorded_accuracy(smoke):
    """A finished cell's MLflow model, loaded back, scores the recorded test accuracy."""
    from bench.data import load_dataset
    from bench.tracking.meta import load_model
    from bench.training.evaluation import accuracy

    suite, out, _ = smoke
    _, runs = runs_of(out, "smoke")
    records = {r.key: r for r in load_records(cells_dir(out, "smoke"))}
    run = next(r for r in runs if r.data.tags["label"] == "bsqh")
    (output,) = run.outputs.model_outputs
    client = MlflowClient(tracking_uri(out))
    # Logged in the run's experiment (the run table's Models column lists those), with
    # its files in the store's artifact folder, not in ./mlruns of the working directory.
    logged = client.get_logged_model(output.model_id)
    assert logged.experiment_id == run.info.experiment_id
    assert logged.source_run_id == run.info.run_id
    assert Path(logged.artifact_location.removeprefix("file://")).is_relative_to(out.resolve())
    found = client.search_logged_models([run.info.experiment_id])
    assert {m.source_run_id for m in found} == {r.info.run_id for r in runs}
    model = load_model(tracking_uri(out), f"models:/{output.model_id}")
    cell = next(c for c in suite.cells() if c.method.label == "bsqh")
    splits = load_dataset(cell.dataset, device="cpu", **cell.data)
    recorded = records[run.data.tags["cell_key"]].summary["test_accuracy"]
    assert accuracy(model, splits.test_x, splits.test_y) == recorded
    assert run.data.metrics["test_accuracy"] == recorded
    # The model's own metrics are the trained network's (the last point), named by cell.
    record = records[run.data.tags["cell_key"]]
    assert logged.name == "bsqh-s0" and output.step == record.curve[-1]["iteration"]
    assert logged.metrics and {m.key for m in logged.metrics} >= {"test_accuracy", "sparsity"}
    for metric in logged.metrics:
        assert metric.step == output.step and metric.value == record.curve[-1][metric.key]


def test_ledger_and_rerun_adds_no_runs(smoke):
    suite, out, _ = smoke
    records = load_records(cells_dir(out, "smoke"))
    assert {r.key for r in records} == {cell_key(c) for c in suite.cells()}
    for record in records:
        assert record.status == "finished"
        assert record.summary["device_time_s"] > 0
        assert record.curve[-1]["iteration"] == record.summary["iterations"]
    again = run_suite(suite, out, CPU, progress=False)
    assert again.ran == 0 and again.skipped == 4
    _, runs = runs_of(out, "smoke")
    assert len(runs) == 4


def test_interrupted_suite_resumes_and_marks_the_run_killed(tmp_path, monkeypatch):
    suite = load_suite(write_suite(tmp_path / "t.toml", TINY))
    real = bench.training.loop.train_cell
    calls = {"n": 0}

    def interrupt_second(cell, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(cell, *args, **kwargs)

    monkeypatch.setattr("bench.runner.train_cell", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, tmp_path, CPU, progress=False)
    records = load_records(cells_dir(tmp_path, "t"))
    assert sorted(r.status for r in records) == ["finished", "killed"]
    killed = next(r for r in records if r.status == "killed")
    assert killed.error == "interrupted (Ctrl-C)" and killed.mlflow_synced
    _, runs = runs_of(tmp_path, "t")
    assert {r.info.run_id: r.info.status for r in runs}[killed.mlflow_run_id] == "KILLED"
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    assert not list((tmp_path / "t" / "claims").glob("*.claim"))  # let go on the way out

    monkeypatch.setattr("bench.runner.train_cell", real)
    outcome = run_suite(suite, tmp_path, CPU, progress=False)
    assert outcome.skipped == 1 and outcome.ran == 3  # the killed cell runs again
    assert {r.status for r in load_records(cells_dir(tmp_path, "t"))} == {"finished"}


def test_a_failing_cell_is_recorded_and_the_suite_goes_on(tmp_path, monkeypatch):
    suite = load_suite(write_suite(tmp_path / "t.toml", TINY))
    real = bench.training.loop.train_cell

    def fail_bsqh(cell, *args, **kwargs):
        if cell.method.name == "bsqh" and cell.seed == 1:
            raise RuntimeError("simulated out-of-memory")
        return real(cell, *args, **kwargs)

    monkeypatch.setattr("bench.runner.train_cell", fail_bsqh)
    outcome = run_suite(suite, tmp_path, CPU, progress=False)
    assert outcome.failed == 1 and outcome.ran == 4 and outcome.exit_code == 1
    failed = [r for r in load_records(cells_dir(tmp_path, "t")) if r.status == "failed"]
    assert len(failed) == 1 and "simulated out-of-memory" in failed[0].error
    _, runs = runs_of(tmp_path, "t")
    assert sorted(r.info.status for r in runs).count("FAILED") == 1
    # A rerun retries only the failed cell.
    monkeypatch.setattr("bench.runner.train_cell", real)
    again = run_suite(suite, tmp_path, CPU, progress=False)
    assert again.ran == 1 and again.failed == 0


class _NanAfterThree:
    """A method whose objective turns NaN at its fourth step (tests divergence handling)."""

    def __init__(self, model, hp=None):
        self.model = model
        self.hp = hp if hp is not None else SGDHParams()
        self.inner = __import__("optimizers").make("sgd", model, **self.hp.as_dict())
        self.steps = 0

    def step(self, x, y):
        self.steps += 1
        stats = self.inner.step(x, y)
        if self.steps >= 4:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(float("nan"))
        return stats

    def objective(self, x, y):
        return self.inner.objective(x, y)


@pytest.fixture
def nan_method():
    register("test-nan-after-three", hparams=SGDHParams)(_NanAfterThree)
    yield "test-nan-after-three"
    _METHODS.pop("test-nan-after-three")


def test_diverged_cell_keeps_last_good_figures_and_the_suite_goes_on(tmp_path, nan_method):
    methods = f"""
[[methods]]
name = "{nan_method}"
batch_size = 16
[[methods]]
name = "sgd"
batch_size = 16
hparams = {{ lr = 0.1 }}
"""
    suite = load_suite(
        write_suite(tmp_path / "t.toml", TINY.replace("[0, 1]", "[0]"), methods=methods)
    )
    outcome = run_suite(suite, tmp_path, CPU, progress=False)
    assert outcome.diverged == 1 and outcome.failed == 0 and outcome.exit_code == 0
    records = {r.config["label"]: r for r in load_records(cells_dir(tmp_path, "t"))}
    diverged = records[nan_method]
    assert diverged.status == "diverged" and "nan" in diverged.error.lower()
    assert diverged.curve and all(p["objective"] == p["objective"] for p in diverged.curve)
    assert diverged.summary["test_accuracy"] == diverged.curve[-1]["test_accuracy"]
    assert records["sgd"].status == "finished"
    _, runs = runs_of(tmp_path, "t")
    assert {r.data.tags["status"] for r in runs} == {"diverged", "finished"}


def test_device_time_excludes_evaluation(tmp_path, monkeypatch):
    """A fake clock that only evaluation advances: none of it may reach device time."""

    class Clock:
        now = 0.0

        @classmethod
        def perf_counter(cls) -> float:
            return cls.now

        process_time = perf_counter  # the CPU time axis: evaluation must not reach it either

    real_accuracy = bench.training.metrics.accuracy

    def slow_accuracy(*args, **kwargs):
        Clock.now += 100.0
        return real_accuracy(*args, **kwargs)

    monkeypatch.setattr("bench.training.timing.time", Clock)
    monkeypatch.setattr("bench.training.metrics.accuracy", slow_accuracy)
    suite = load_suite(write_suite(tmp_path / "t.toml", TINY.replace("[0, 1]", "[0]")))
    run_suite(suite, tmp_path, CPU, progress=False)
    for record in load_records(cells_dir(tmp_path, "t")):
        evaluations = len(record.curve)
        assert evaluations == 3
        assert record.summary["eval_time_s"] == evaluations * 2 * 100.0  # val + test per point
        assert record.summary["device_time_s"] == 0.0
        assert record.summary["step_wall_time_s"] == 0.0


def test_fullbatch_bsqh_records_monotone_descent(tmp_path):
    methods = """
[[methods]]
label = "bsqh-full"
name = "bsqh"
mode = "fullbatch"
chunk_size = 100
hparams = { eps = 0.5, beta = 1e-3 }
"""
    body = (
        TINY.replace("[0, 1]", "[0]")
        .replace("epochs = 1", "epochs = 8")
        .replace("every_epochs = 0.5", "every_epochs = 2")
    )
    suite = load_suite(write_suite(tmp_path / "t.toml", body, methods=methods))
    run_suite(suite, tmp_path, CPU, progress=False)
    (record,) = load_records(cells_dir(tmp_path, "t"))
    assert record.summary["iterations"] == 8 and record.summary["accepted_increases"] == 0
    assert len(record.curve) == 5
    objectives = [p["objective"] for p in record.curve]
    assert objectives[-1] < objectives[0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("learning_rate = 3\n" + TINY, "key 'learning_rate': unknown key"),
        (TINY.replace('["cnn-tiny"]', '["resnet"]'), "key 'models': unknown model 'resnet'"),
        (
            TINY.replace("epochs = 1", "epochs = -1"),
            "key 'budget.epochs': must be a positive number",
        ),
        (TINY.replace("seeds = [0, 1]", "seeds = [0, 0]"), "key 'seeds'"),
        (TINY.replace("val_fraction", "val_frac"), "key 'data.val_frac': unknown key"),
    ],
)
def test_bad_suite_files_name_the_file_and_key(tmp_path, body, message):
    path = write_suite(tmp_path / "bad.toml", body)
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    assert str(path) in str(error.value) and message in str(error.value)


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        (
            '[[methods]]\nname = "lbfgs"\nbatch_size = 8\n',
            "methods[0].name': unknown method 'lbfgs'",
        ),
        (
            '[[methods]]\nname = "sgd"\n',
            "methods[0].batch_size': mini-batch mode needs a batch_size",
        ),
        (
            '[[methods]]\nname = "bsqh"\nbatch_size = 8\nhparams = { eps = -1.0 }\n',
            "methods[0].hparams': eps must be a finite number > 0, got -1.0",
        ),
        (
            '[[methods]]\nname = "bsqh"\nbatch_size = 8\nhparams = "tuned:nope"\n',
            "no studies folder was given",
        ),
        (
            '[[methods]]\nname = "sgd"\nbatch_size = 8\n' * 2,
            "'sgd' is used twice",
        ),
    ],
)
def test_bad_method_entries(tmp_path, methods, message):
    path = write_suite(tmp_path / "bad.toml", TINY, methods=methods)
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    assert message in str(error.value)


def test_unknown_suite_name_lists_the_shipped_ones():
    with pytest.raises(SuiteError, match=r"unknown suite 'nope'; shipped suites: .*quick.*smoke"):
        load_suite("nope")


def test_report_command_writes_tables_figures_and_report(smoke):
    import pandas as pd

    from bench.cli import main

    _, out, _ = smoke
    assert main(["report", "--suite", "smoke", "--out", str(out)]) == 0
    folder = out / "smoke"
    runs = pd.read_csv(folder / "runs.csv")
    required = {
        "method",
        "model",
        "dataset",
        "seed",
        "mode",
        "status",
        "test_accuracy",
        "val_accuracy",
        "sparsity",
        "nonzeros",
        "device_time_s",
        "iterations",
        "mlflow_run_id",
    }
    assert required <= set(runs.columns) and len(runs) == 4
    client, mlflow_runs = runs_of(out, "smoke")
    assert set(runs["mlflow_run_id"]) == {r.info.run_id for r in mlflow_runs}
    # The report run joined the experiment; it counts as no cell.
    (report_run,) = runs_of(out, "smoke", "report")[1]
    experiment = report_run.info.experiment_id
    assert len(client.search_runs([experiment])) == len(mlflow_runs) + 1
    logged = {a.path for a in client.list_artifacts(report_run.info.run_id, "figures")}
    assert {f"figures/{p.name}" for p in (folder / "figures").glob("*.png")} == logged
    curves = pd.read_csv(folder / "curves.csv")
    assert len(curves) == 4 * 5 and {"device_time_s", "objective", "eps"} <= set(curves.columns)
    pngs = list((folder / "figures").glob("*.png"))
    assert len(pngs) >= 5
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000 for p in pngs)
    report = (folder / "REPORT.md").read_text()
    for label in ["sgd", "adam", "prox-sgd-l0", "bsqh"]:
        assert f"| {label} |" in report


def test_report_without_records_says_how_to_get_them(tmp_path, capsys):
    from bench.cli import main

    assert main(["report", "--suite", "smoke", "--out", str(tmp_path)]) == 2
    assert "run `python -m bench run --suite smoke" in capsys.readouterr().err


def test_fast_variants_run_through_the_runner(tmp_path):
    """bsqh-fast and a graphed baseline (eager on a CPU) fit the same runner contract."""
    methods = """
[[methods]]
name = "sgd-graph"
batch_size = 32
hparams = { lr = 0.1 }
[[methods]]
name = "bsqh-fast"
batch_size = 32
hparams = { eps = 1.0, beta = 1e-3 }
[[methods]]
label = "bsqh-fast-full"
name = "bsqh-fast"
mode = "fullbatch"
hparams = { eps = 0.5, beta = 1e-3 }
"""
    body = TINY.replace("[0, 1]", "[0]").replace("epochs = 1", "epochs = 4")
    suite = load_suite(write_suite(tmp_path / "t.toml", body, methods=methods))
    outcome = run_suite(suite, tmp_path, CPU, progress=False)
    assert outcome.failed == 0 and outcome.diverged == 0
    records = {r.config["label"]: r for r in load_records(cells_dir(tmp_path, "t"))}
    assert records["sgd-graph"].summary["eps"] is None
    for label in ["bsqh-fast", "bsqh-fast-full"]:
        summary = records[label].summary
        assert 0 < summary["accept_rate"] <= 1 and summary["eps"] > 0
        assert summary["attempts"] == summary["iterations"]  # max_retries = 0: one per step
    assert records["bsqh-fast-full"].summary["accepted_increases"] == 0
