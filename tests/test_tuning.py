"""Optuna tuning: studies end to end, resume, concurrent workers, test-split isolation, bad input.

Everything trains cnn-tiny on scikit-learn digits for half an epoch, so a trial takes a
second or two; one output folder (and so one MLflow database) is shared by the module.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

import bench.tuning.objective as objective_module
import bench.tuning.validation as validation_module
import optimizers
from bench.cli import main
from bench.data import load_dataset
from bench.silence import silenced
from bench.suites import load_suite
from bench.tracking.client import tracking_uri
from bench.training.loop import train_cell
from bench.tuning import hypervolume_2d, pareto_indices, pick, space_for, tunable_methods
from bench.tuning.cleanup import fail_dead_trials
from bench.tuning.pareto import front_of
from bench.tuning.settings import load_setting
from bench.tuning.spaces import SpaceError
from bench.tuning.storage import JOURNAL_NAME, SQLITE_NAME, StorageSpec

SETTING = """\
name = "tiny-tuned"
description = "digits, cnn-tiny, half an epoch: the tuning tests' setting"
datasets = ["digits"]
models = ["cnn-tiny"]
seeds = [0]

[data]
val_fraction = 0.2

[budget]
epochs = 0.5

[eval]
every_epochs = 0.25
train_eval_size = 200

[[methods]]
name = "sgd"
batch_size = 64
hparams = "tuned:tiny-sgd"

[[methods]]
name = "bsqh"
batch_size = 64
hparams = "tuned:tiny-bsqh"
"""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def setting_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("setting") / "tiny-tuned.toml"
    path.write_text(SETTING)
    return path


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tune-out")


def tune(setting: Path, out: Path, *extra: str) -> int:
    return main(["tune", "--setting", str(setting), "--out", str(out), "--quiet", *extra])


def load(out: Path, name: str, storage: str | None = None) -> optuna.Study:
    url = storage or f"sqlite:///{out / SQLITE_NAME}"
    spec = StorageSpec("journal", url) if "://" not in url else StorageSpec("rdb", url)
    return optuna.load_study(study_name=name, storage=spec.open())


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))


# --------------------------------------------------------------------------- end to end


def test_three_trial_study_end_to_end(setting_file: Path, out: Path, tmp_path: Path) -> None:
    assert tune(setting_file, out, "--method", "bsqh", "--trials", "3") == 0

    study = load(out, "tiny-bsqh")
    done = finished(study)
    assert len(done) == 3 and len(study.trials) == 3
    assert {"eps", "sigma", "zeta", "eta", "beta", "gamma", "inner_steps"} <= set(done[0].params)
    assert "sweep" not in done[0].params  # bsqh is the sequential sweep
    assert study.user_attrs["pmp_bench"]["space_version"] >= 1
    # Readable metadata, one key each, and the dashboard's note explaining the study.
    attrs = study.user_attrs
    assert attrs["method"] == "bsqh" and attrs["objective"] == "pareto"
    assert attrs["space.eps"].startswith("[") and attrs["space.eps"].endswith("log")
    assert "never read" in attrs["split"]
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / SQLITE_NAME}")
    system = storage.get_study_system_attrs(storage.get_study_id_from_name("tiny-bsqh"))
    notes = [v for k, v in system.items() if "note" in k]
    if notes:  # optuna-dashboard installed (the dashboard extra)
        assert any("Search space" in json.dumps(v) for v in notes)

    # MLflow: one parent run for the study, one nested run per trial.
    client = MlflowClient(tracking_uri(out))
    experiment = client.get_experiment_by_name("pmp-bench/tuning")
    runs = client.search_runs([experiment.experiment_id], "tags.study = 'tiny-bsqh'")
    parents = [r for r in runs if r.data.tags.get("run_kind") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 3 and {c.data.tags["run_kind"] for c in children} == {"trial"}
    assert {c.data.tags["optuna.trial_number"] for c in children} == {"0", "1", "2"}
    child = children[0]
    assert "hparams.eps" in child.data.params
    assert {"value_val_accuracy", "value_sparsity", "val_accuracy"} <= set(child.data.metrics)
    history = client.get_metric_history(child.info.run_id, "val_accuracy")
    assert len(history) >= 2  # intermediate points, not only the final value
    # Logged as a cell's run is: summary-only figures as final.* tags, no final_* copies.
    for c in children:
        assert not [k for k in c.data.metrics if k.startswith("final")], c.data.metrics
        assert {"final.iterations", "final.eval_time_s", "final.warmup_time_s"} <= set(c.data.tags)
        assert not {"iterations", "eval_time_s", "epochs"} & set(c.data.metrics)
        assert {"curve.json", "layer_sparsity.json"} <= {
            a.path for a in client.list_artifacts(c.info.run_id)
        }

    directory = out / "studies" / "tiny-bsqh"
    csv = (directory / "trials.csv").read_text().strip().splitlines()
    assert len(csv) == 1 + 3 and "values_val_accuracy" in csv[0]
    for name in ("pareto-front.png", "history.png", "importances.png"):
        data = (directory / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
    pareto = json.loads((directory / "pareto.json").read_text())
    assert pareto["front"] and 0 <= pareto["hypervolume"] <= 1
    # Reference at chance, so points that only guess add no area.
    assert pareto["chance_accuracy"] and pareto["reference_point"] == [
        pareto["chance_accuracy"],
        0.0,
    ]
    summary = json.loads((directory / "summary.json").read_text())
    assert any("3 trials only (< 20)" in note for note in summary["notes"])

    best = json.loads((directory / "best.json").read_text())
    assert best["study"] == "tiny-bsqh" and best["picked_by"]
    # The dashboard shows the pick (study attributes) and never a guessing network as best.
    study = load(out, "tiny-bsqh")
    assert study.user_attrs["picked_trial"] == best["trial"]
    assert study.user_attrs["picked_by"] == best["picked_by"]
    floor = 0.1 + 0.1 * 0.9  # ten classes: chance 0.1, the useful floor 0.19
    for trial in finished(study):
        expected = floor - trial.user_attrs["val_accuracy"]
        assert trial.constraints["above_chance"] == pytest.approx(expected)
    for trial in study.best_trials:
        assert trial.user_attrs["val_accuracy"] > floor
    assert best["params"]["max_retries"] == 5  # the fixed part of the space travels too
    suite = tmp_path / "suite.toml"
    suite.write_text(
        SETTING.replace('name = "tiny-tuned"', 'name = "tiny-suite"').split("[[methods]]")[0]
        + '[[methods]]\nname = "bsqh"\nbatch_size = 64\nhparams = "tuned:tiny-bsqh"\n'
    )
    loaded = load_suite(suite, studies_dir=out / "studies")
    # the tuned values, completed by the defaults of what was not searched
    assert loaded.methods[0].hparams == optimizers.effective_hparams("bsqh", **best["params"])
    assert loaded.methods[0].tuned_from == "tiny-bsqh"


def test_tune_all_runs_every_method_with_three_tuning_seeds(
    setting_file: Path, tmp_path: Path
) -> None:
    """Seed k trains with --seed + k and samples with --sampler-seed + k; seed 0 keeps the
    setting's study name (what the suite reads); the report lists every seed's pick."""
    code = main(
        ["tune-all", "--setting", str(setting_file), "--out", str(tmp_path), "--quiet",
         "--only", "sgd", "--trials", "1", "--seed", "5", "--sampler-seed", "7"]
    )  # fmt: skip
    assert code == 0
    studies = tmp_path / "studies"
    seeds = {}
    for k, name in enumerate(["tiny-sgd", "tiny-sgd.t1", "tiny-sgd.t2"]):
        summary = json.loads((studies / name / "summary.json").read_text())
        assert (summary["tuning_seed"], summary["training_seed"]) == (k, 5 + k)
        assert summary["sampler_seed"] == 7 + k and summary["picked"]["params"]
        seeds[k] = summary["picked"]["params"]
        study = load(tmp_path, name)
        assert study.user_attrs["pmp_bench"]["setting"]["seed"] == 5 + k
    assert (studies / "tiny-sgd" / "best.json").is_file()  # what tuned:tiny-sgd reads
    assert len({json.dumps(p, sort_keys=True) for p in seeds.values()}) == 3  # three TPE seeds
    report = (studies / "hypervolume-tiny.md").read_text()
    assert "1 trials per study, 3 tuning seed(s) per method" in report
    section = report[report.index("## Tuning seeds") :]
    assert all(f"| {name} |" in section for name in ("tiny-sgd", "tiny-sgd.t1", "tiny-sgd.t2"))
    assert "| sgd | 3 |" in section  # the spread row over the three seeds


@pytest.mark.slow
def test_resume_adds_trials_up_to_n(setting_file: Path, out: Path) -> None:
    args = ("--method", "sgd", "--study", "resume")
    assert tune(setting_file, out, *args, "--trials", "2") == 0
    assert tune(setting_file, out, *args, "--trials", "4") == 0
    assert tune(setting_file, out, *args, "--trials", "4") == 0  # nothing left to do
    study = load(out, "resume")
    numbers = [t.number for t in finished(study)]
    assert len(numbers) == 4 and sorted(set(numbers)) == [0, 1, 2, 3]
    assert len(study.trials) == 4


def test_crashed_trial_is_failed_with_its_error_and_not_counted(
    setting_file: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return train_cell(*args, **kwargs)

    monkeypatch.setattr(objective_module, "train_cell", flaky)
    assert tune(setting_file, out, "--method", "sgd", "--study", "crash", "--trials", "2") == 0
    study = load(out, "crash")
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and "simulated crash" in failed[0].user_attrs["error"]
    assert len(finished(study)) == 2  # the crash was replaced


@pytest.mark.slow
def test_two_workers_on_a_journal_reach_exactly_n(setting_file: Path, out: Path) -> None:
    code = tune(
        setting_file, out, "--method", "sgd", "--study", "pair", "--trials", "4", "--workers", "2"
    )
    assert code == 0
    journal = out / JOURNAL_NAME
    assert journal.is_file()
    study = load(out, "pair", str(journal))
    numbers = [t.number for t in finished(study)]
    assert len(numbers) == 4 and len(set(numbers)) == 4
    pids = {t.user_attrs["worker_pid"] for t in finished(study)}
    assert os.getpid() not in pids and len(pids) >= 1
    # Anything beyond the N finished trials is a surplus trial that trained nothing.
    for trial in study.get_trials(states=(TrialState.FAIL,)):
        assert trial.user_attrs.get("surplus") is True
    # One worker resumes a journal study (the default storage follows the study).
    assert tune(setting_file, out, "--method", "sgd", "--study", "pair", "--trials", "5") == 0
    assert len(finished(load(out, "pair", str(journal)))) == 5


def test_accuracy_objective_prunes_and_counts_pruned_trials(
    setting_file: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pruner that stops every trial after its second evaluation point.
    monkeypatch.setattr(
        validation_module,
        "make_pruner",
        lambda plan: optuna.pruners.ThresholdPruner(upper=-1.0, n_warmup_steps=1),
    )
    args = ("--method", "sgd", "--study", "acc", "--objective", "accuracy")
    assert tune(setting_file, out, *args, "--min-sparsity", "0", "--trials", "2") == 1
    study = load(out, "acc")
    assert len(study.directions) == 1
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert len(pruned) == 2 and all(len(t.intermediate_values) == 2 for t in pruned)
    # Pruned trials count as finished, but best.json needs a trial that used its budget.
    assert not (out / "studies" / "acc" / "best.json").exists()

    monkeypatch.undo()
    assert tune(setting_file, out, *args, "--min-sparsity", "0", "--trials", "3") == 0
    study = load(out, "acc")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 1 and complete[0].user_attrs["sparsity"] >= 0
    best = json.loads((out / "studies" / "acc" / "best.json").read_text())
    assert best["objective"] == "accuracy" and best["trial"] == complete[0].number


# --------------------------------------------------------------------------- test split


class _GuardedSplits:
    """DataSplits stand-in that counts (and refuses) every use of the test tensors."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.test_accesses = 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("test_"):
            self.test_accesses += 1
            raise AssertionError(f"the tuner touched {name}")
        return getattr(self._inner, name)


def test_tuning_never_touches_the_test_split(
    setting_file: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guards: list[_GuardedSplits] = []

    def guarded_load(*args: Any, **kwargs: Any) -> _GuardedSplits:
        guards.append(_GuardedSplits(load_dataset(*args, **kwargs)))
        return guards[-1]

    monkeypatch.setattr(objective_module, "load_dataset", guarded_load)
    assert tune(setting_file, out, "--method", "sgd", "--study", "guard", "--trials", "2") == 0
    assert guards and all(g.test_accesses == 0 for g in guards)
    study = load(out, "guard")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2
    assert not study.get_trials(states=(TrialState.FAIL,))

    # The guard is not vacuous: the runner's evaluation on test trips it.
    setting = load_setting(setting_file)
    cell = setting.cell(setting.target("sgd"), {"lr": 0.1})
    with pytest.raises(AssertionError, match="test_"):
        train_cell(cell, guards[0], objective_module.resolve_device("cpu"), progress=False)
    assert guards[0].test_accesses > 0


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    monkeypatch.setattr(objective_module, "train_cell", lambda *a, **k: calls.append(a))
    return calls


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "nope", "--trials", "2"], "unknown method 'nope'; available: adam"),
        (["--method", "sgd", "--trials", "2", "--space", "lr=0.1:0.001"], "inverted range"),
        (["--method", "sgd", "--trials", "2", "--space", "lr=0.1:0.1"], "empty range"),
        (["--method", "sgd", "--trials", "2", "--space", "lr=-1:0.1"], "log-scale"),
        (["--method", "sgd", "--trials", "2", "--space", "momentum=0.5:1.5"], "rejected"),
        (["--method", "sgd", "--trials", "2", "--space", "nope=1:2"], "no searched parameter"),
        (["--method", "bsqh", "--trials", "2", "--space", "inner_steps=,"], "has no choices"),
        (
            ["--method", "sgd", "--trials", "2", "--storage", "postgresql://u:p@127.0.0.1:9/x"],
            "cannot reach storage postgresql",
        ),
        (["--method", "sgd", "--trials", "2", "--storage", "nosuchdb://x/y"], "cannot use storage"),
        (
            ["--method", "sgd", "--trials", "2", "--workers", "2", "--storage", "sqlite:///x.db"],
            "SQLite is not safe",
        ),
        (["--method", "sgd", "--trials", "2", "--budget-epochs", "3"], "--setting fixes"),
        (["--method", "bsqh", "--trials", "2", "--mode", "fullbatch"], "no entry for method"),
    ],
)
def test_bad_input_fails_before_training(
    setting_file: Path,
    tmp_path: Path,
    no_training: list[Any],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert tune(setting_file, tmp_path, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert ":p@" not in err  # a storage password is never printed
    assert not no_training
    assert not (tmp_path / SQLITE_NAME).exists() and not (tmp_path / "studies").exists()


def test_bad_input_without_a_setting(
    tmp_path: Path, no_training: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["tune", "--out", str(tmp_path), "--trials", "2"]
    assert main([*base, "--method", "sgd", "--dataset", "digits"]) == 2
    assert "pass --setting, or both --model and --dataset" in capsys.readouterr().err
    assert main([*base, "--method", "sgd", "--model", "cnn-tiny", "--dataset", "digits"]) == 2
    assert "pass a budget" in capsys.readouterr().err
    assert main([*base, "--method", "nope", "--model", "cnn-tiny", "--dataset", "digits"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    code = main(
        [*base, "--method", "sgd", "--model", "cnn-tiny", "--dataset", "digits",
         "--budget-epochs", "1", "--batch-size", "100000"]
    )  # fmt: skip
    assert code == 2 and "exceeds" in capsys.readouterr().err
    assert main(["tune-all", "--setting", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown setting 'nope'" in capsys.readouterr().err
    assert not no_training


@pytest.mark.slow  # reuses the study of test_resume_adds_trials_up_to_n (slow)
def test_resuming_with_another_objective_or_budget_fails(
    setting_file: Path, out: Path, tmp_path: Path, no_training: list[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # "resume" was created by test_resume_adds_trials_up_to_n with the pareto objective.
    args = ("--method", "sgd", "--study", "resume", "--trials", "9")
    if not (out / "studies" / "resume").exists():
        pytest.skip("needs the study of test_resume_adds_trials_up_to_n")
    assert tune(setting_file, out, *args, "--objective", "accuracy") == 2
    assert "created with --objective pareto" in capsys.readouterr().err
    other = tmp_path / "other.toml"
    other.write_text(SETTING.replace("epochs = 0.5", "epochs = 0.75"))
    assert tune(other, out, *args) == 2
    assert "different setting" in capsys.readouterr().err
    assert not no_training


# --------------------------------------------------------------------------- units


def test_hypervolume_of_a_hand_example() -> None:
    points = [(0.9, 0.1), (0.5, 0.5), (0.2, 0.8), (0.4, 0.4), (0.0, 0.9)]
    # Rectangles of the front sorted by accuracy: 0.9*0.1 + 0.5*0.4 + 0.2*0.3; the
    # dominated (0.4, 0.4) adds nothing and (0.0, 0.9) lies on the reference line. With
    # reference (0.1, 0.1) only (0.5, 0.5) and (0.2, 0.8) lie strictly above it.
    assert math.isclose(hypervolume_2d(points), 0.35)
    assert sorted(pareto_indices(points)) == [0, 1, 2, 4]
    assert hypervolume_2d([]) == 0.0
    assert hypervolume_2d([(0.8, 0.0)]) == 0.0  # a dense method encloses no area
    assert math.isclose(hypervolume_2d([(0.5, 0.5), (0.5, 0.5)]), 0.25)
    assert math.isclose(hypervolume_2d(points, reference=(0.1, 0.1)), 0.4 * 0.4 + 0.1 * 0.3)


def test_overview_table_and_plot(tmp_path: Path) -> None:
    """tune-all's table: one row per study in suite order (no ranking), surplus not counted."""
    import csv

    from bench.tuning.overview import TABLE_COLUMNS, write_overview

    def summary(label: str, points: list[tuple[float, float]], crashed: int, surplus: int) -> dict:
        dots = [{"trial": i, "val_accuracy": a, "sparsity": s} for i, (a, s) in enumerate(points)]
        front = [dots[i] for i in pareto_indices(points)]
        return {"study": f"s-{label}", "label": label, "method": label, "mode": "minibatch",
                "finished": len(points), "trials": {"FAIL": crashed + surplus}, "surplus": surplus,
                "front_size": len(front), "hypervolume": hypervolume_2d(points, (0.1, 0.0)),
                "hypervolume_reference": [0.1, 0.0],
                "best_val_accuracy": max(a for a, _ in points),
                "max_sparsity": max(s for _, s in points), "picked": dots[0],
                "points": dots, "front": front}  # fmt: skip

    dense = summary("sgd", [(0.9, 0.0), (0.8, 0.0)], crashed=0, surplus=2)
    sparse = summary("bsqh", [(0.85, 0.6), (0.5, 0.9)], crashed=1, surplus=0)
    paths = write_overview([dense, sparse], tmp_path, "x", caption="one caption")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["label"] for r in rows] == ["sgd", "bsqh"]  # as given, not ranked
    assert [r["failed"] for r in rows] == ["0", "1"]  # surplus trials are not failures
    # Above chance: (0.85 - 0.1) x 0.6 + (0.5 - 0.1) x (0.9 - 0.6).
    assert math.isclose(float(rows[1]["hypervolume"]), 0.75 * 0.6 + 0.4 * 0.3)
    assert rows[1]["hv_reference"] == "(0.1, 0)"
    markdown = paths["markdown"].read_text().splitlines()
    first = markdown[: markdown.index("## Tuning seeds")]
    table = [line for line in first if line.startswith("|")]
    assert table[0] == "| " + " | ".join(TABLE_COLUMNS) + " |" and len(table) == 2 + 2
    assert "one caption" in markdown and markdown[0].endswith("setting x")
    assert any("**not a ranking**" in line for line in markdown)
    assert paths["figure"].read_bytes().startswith(PNG_MAGIC)


def test_tuning_seeds_spread_and_every_picked_configuration_in_the_report(
    tmp_path: Path,
) -> None:
    from bench.tuning.overview import write_overview
    from bench.tuning.seeds import seed_rows, spread_rows, study_name

    assert [study_name("quick-sgd", k) for k in range(3)] == [
        "quick-sgd",
        "quick-sgd.t1",
        "quick-sgd.t2",
    ]
    with pytest.raises(ValueError, match="tuning seed must be >= 0"):
        study_name("quick-sgd", -1)

    def summary(seed: int, best: float, picked: float, lr: float) -> dict:
        dot = {"trial": seed, "val_accuracy": picked, "sparsity": 0.5, "params": {"lr": lr}}
        return {"study": study_name("s-bsqh", seed), "label": "bsqh", "method": "bsqh",
                "mode": "minibatch", "tuning_seed": seed, "finished": 8,
                "trials": {"FAIL": 0}, "front_size": 1, "hypervolume": 0.2 + seed / 10,
                "best_val_accuracy": best, "max_sparsity": 0.5, "picked": dot,
                "points": [dot], "front": [dot]}  # fmt: skip

    summaries = [summary(0, 0.80, 0.78, 0.1), summary(1, 0.84, 0.80, 0.1),
                 summary(2, 0.82, 0.81, 0.0123456)]  # fmt: skip
    (spread,) = spread_rows(seed_rows(summaries))
    assert spread["seeds"] == 3 and spread["same_pick_params"] is False
    assert math.isclose(spread["best_val_accuracy_spread"], 0.04)
    assert math.isclose(spread["picked_val_accuracy_spread"], 0.03)
    assert math.isclose(spread["hypervolume_spread"], 0.2)
    text = write_overview(summaries, tmp_path, "x")["markdown"].read_text()
    section = text[text.index("## Tuning seeds") :]
    for name in ("s-bsqh", "s-bsqh.t1", "s-bsqh.t2"):
        assert f"| {name} |" in section
    assert '{"lr": 0.1}' in section and '{"lr": 0.0123}' in section  # every pick, rounded
    assert "| 0.0400 |" in section


def test_pick_rule() -> None:
    def point(trial: int, acc: float, sparsity: float, status: str = "finished") -> dict:
        return {"trial": trial, "val_accuracy": acc, "sparsity": sparsity, "status": status,
                "params": {}}  # fmt: skip

    points = [point(0, 0.9, 0.1), point(1, 0.8, 0.6), point(2, 0.7, 0.9), point(4, 0.8, 0.5)]
    chosen, rule = pick(points, 0.5)
    assert chosen["trial"] == 1 and "sparsity >= 0.5" in rule  # ties go to the sparser
    assert chosen in front_of(points)
    chosen, rule = pick(points, 0.95)
    assert chosen["trial"] == 0 and "fallback" in rule
    # A diverged trial is never picked, whatever its figures say.
    chosen, _ = pick([*points, point(3, 0.95, 0.7, "diverged")], 0.5)
    assert chosen["trial"] == 1
    assert pick([point(0, 0.9, 0.0, "diverged")], 0.5)[0] is None
    # A network pruned until it guesses (10 classes: chance 0.1, floor 0.19) is not picked.
    guessing = [point(0, 0.58, 0.2), point(1, 0.104, 0.9997), point(2, 0.18, 0.8)]
    chosen, rule = pick(guessing, 0.5, chance=0.1)
    assert chosen["trial"] == 0 and "fallback" in rule and "above 0.19" in rule
    chosen, _ = pick([*guessing, point(3, 0.2, 0.6)], 0.5, chance=0.1)
    assert chosen["trial"] == 3


def test_every_method_has_a_valid_space() -> None:
    assert set(tunable_methods()) >= {
        "sgd", "adam", "prox-sgd-l0", "prox-sgd-l1", "prox-adam-l0", "bsqh", "gmp", "l0-hc",
        "emsa",
    }  # fmt: skip
    for method in tunable_methods():
        for mode in ("minibatch", "fullbatch"):
            space_for(method, mode).validate()
    assert space_for("bsqh").fixed == {"max_retries": 5}
    if "bsqh-fast" in tunable_methods():  # the fast mode has no retries
        assert space_for("bsqh-fast").fixed == {"max_retries": 0}
        assert space_for("bsqh-fast").names() == space_for("bsqh").names()
    assert "max_retries" not in space_for("bsqh", "fullbatch").fixed
    narrowed = space_for("bsqh").with_overrides(["eps=0.5:2", "inner_steps=1,2"])
    params = {p.name: p for p in narrowed.params}
    assert (params["eps"].low, params["eps"].high, params["eps"].log) == (0.5, 2.0, True)
    assert params["inner_steps"].choices == (1, 2)
    with pytest.raises(SpaceError, match="not an integer"):
        space_for("bsqh").with_overrides(["inner_steps=one"])
    with pytest.raises(SpaceError, match="unknown method"):
        space_for("nope")


def test_bsqh_is_never_tuned_as_the_parallel_ablation() -> None:
    """The parallel sweep is proximal gradient: only ``bsqh-parallel`` runs it, by name."""
    for method in tunable_methods():
        if optimizers.algorithm(method) == "bsqh":
            for mode in ("minibatch", "fullbatch"):
                assert "sweep" not in space_for(method, mode).names(), method
    with pytest.raises(SpaceError, match="no searched parameter 'sweep'"):
        space_for("bsqh").with_overrides(["sweep=parallel"])
    ablation = space_for("bsqh-parallel")
    assert ablation.names() == space_for("bsqh").names()  # the same ranges, its own name
    assert optimizers.effective_hparams("bsqh-parallel")["sweep"] == "parallel"
    assert optimizers.variant_label("bsqh-parallel").startswith("ablation: proximal gradient")
    assert optimizers.registry.description("bsqh-parallel").startswith("[ablation")
    # Every method's J at the space's corners: bsqh's corners never run the parallel sweep.
    for value in ablation.params:
        assert value.name != "sweep"


def test_shared_knobs_are_searched_for_all_or_none(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.tuning import spaces

    assert spaces.knob_asymmetries() == []
    penalised = [m for m in spaces.own_spaces() if not spaces.report_only(m)]
    assert {"prox-sgd-l0", "bsqh", "emsa", "emsa-l0", "l0-hc"} <= set(penalised)
    assert {m for m in spaces.own_spaces() if spaces.report_only(m)} == {"sgd", "adam", "gmp"}
    for method in penalised:
        assert "gamma" in space_for(method).names(), method
    for method in ("sgd", "prox-sgd-l0", "prox-sgd-l1", "gmp"):  # the SGD family
        assert "momentum" in space_for(method).names(), method
    assert "weight_decay" not in space_for("adam").names()
    # R's weights are declared on the shared dataclass but searched only where R applies.
    assert {"beta", "gamma"} <= set(optimizers.hparams_class("sgd").searches())
    assert not {"beta", "gamma"} & set(space_for("sgd").names())
    # The check catches a breach: gamma searched by one penalised method only.
    declared = spaces.own_spaces()
    declared["prox-sgd-l0"] = tuple(p for p in declared["prox-sgd-l0"] if p.name != "gamma")
    monkeypatch.setattr(spaces, "own_spaces", lambda: declared)
    assert spaces.knob_asymmetries() == [
        "'prox-sgd-l0' does not search 'gamma', which the rule gamma='all' requires"
    ]


def test_trials_grow_with_the_dimension_of_the_space() -> None:
    from bench.tuning.spaces import MIN_TRIALS, TRIALS_PER_DIMENSION, trials_for

    assert (TRIALS_PER_DIMENSION, MIN_TRIALS) == (4, 8)
    assert trials_for(space_for("adam")) == 8  # 1 parameter: the floor
    assert trials_for(space_for("prox-sgd-l0")) == 16  # lr, momentum, beta, gamma
    assert trials_for(space_for("bsqh")) == 4 * 7
    for method in tunable_methods():
        space = space_for(method)
        assert trials_for(space) == max(8, 4 * len(space.names()))


def test_quick_setting_matches_the_quick_suite() -> None:
    """quick-tuned.toml evaluates what tune-all tunes, on quick.toml's data and budget."""
    setting = load_setting("quick")
    assert {t.study for t in setting.targets} == {f"quick-{t.label}" for t in setting.targets}
    quick = Path(__file__).parent.parent / "bench" / "suites" / "quick.toml"
    if not quick.is_file():
        pytest.skip("bench/suites/quick.toml not present")
    suite = load_suite(quick)
    assert setting.budget == suite.budget
    assert setting.data == suite.data[setting.dataset]
    assert (setting.eval_every_epochs, setting.train_eval_size) == (
        suite.eval_every_epochs,
        suite.train_eval_size,
    )
    assert {(m.label, m.name, m.mode, m.batch_size, m.chunk_size) for m in suite.methods} == {
        (t.label, t.method, t.mode, t.batch_size, t.chunk_size) for t in setting.targets
    }


def test_a_setting_tunes_at_its_suite_precision(setting_file: Path, tmp_path: Path) -> None:
    """Trials train at the precision the tuned suite will run at, and a study records it."""
    tf32_file = tmp_path / "tiny-tf32-tuned.toml"
    tf32_file.write_text('precision = "tf32"\n' + setting_file.read_text())
    plain, tf32 = load_setting(setting_file), load_setting(tf32_file)
    target = plain.targets[0]
    assert plain.cell(target, {}).precision == "float32"
    assert tf32.cell(target, {}).precision == "tf32"
    assert plain.fingerprint(target) != tf32.fingerprint(target)


def test_trials_of_dead_workers_are_failed(tmp_path: Path) -> None:
    """A trial left RUNNING by a killed worker on this host is failed, so a rerun replaces it."""
    import socket

    storage = StorageSpec("journal", str(tmp_path / JOURNAL_NAME)).open()
    study = optuna.create_study(storage=storage, study_name="dead")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    orphan, alive = study.ask(), study.ask()
    for trial, pid in ((orphan, int(dead.stdout)), (alive, os.getpid())):
        trial.set_user_attr("worker_host", socket.gethostname())
        trial.set_user_attr("worker_pid", pid)
    assert fail_dead_trials(study) == [orphan.number]
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [t.number for t in failed] == [orphan.number]
    assert "died" in failed[0].user_attrs["error"]
    assert study.get_trials(states=(TrialState.RUNNING,))[0].number == alive.number


def test_orphaned_running_trials_are_failed(tmp_path: Path) -> None:
    storage = StorageSpec("journal", str(tmp_path / JOURNAL_NAME)).open()
    study = optuna.create_study(storage=storage, study_name="orphan")
    orphan = study.ask()  # its worker died before claiming it
    assert fail_dead_trials(study) == []
    assert fail_dead_trials(study, orphan_after_s=0.0) == [orphan.number]
    assert "no worker claimed it" in study.trials[0].user_attrs["error"]


@pytest.mark.slow
def test_a_worker_waits_for_trials_running_elsewhere_and_replaces_dead_ones(
    setting_file: Path, out: Path
) -> None:
    """The last trial runs in another (here: fake) worker, which then dies."""
    import socket

    args = ("--method", "sgd", "--study", "handover")
    assert tune(setting_file, out, *args, "--trials", "1") == 0
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    reaper = threading.Thread(target=other.wait)  # a zombie would still look alive
    reaper.start()
    with silenced(UserWarning):  # ask() outside optimize() on a heartbeat storage
        elsewhere = load(out, "handover").ask()
    elsewhere.set_user_attr("worker_host", socket.gethostname())
    elsewhere.set_user_attr("worker_pid", other.pid)
    assert tune(setting_file, out, *args, "--trials", "2") == 0  # waits, then replaces it
    reaper.join()
    study = load(out, "handover")
    assert len(finished(study)) == 2
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [t.number for t in failed] == [elsewhere.number]
    assert "died" in failed[0].user_attrs["error"]


def _large_result_worker(index: int, results) -> None:
    """A spawned worker whose result is far larger than a pipe's buffer (~64 KiB)."""
    from bench.tuning.workers import WorkerOutcome

    results.put((index, WorkerOutcome(ran=1, notes=["x" * 400_000]), None))


@pytest.mark.slow
def test_worker_results_are_drained_before_joining() -> None:
    """Joining a worker before reading its large result would wait forever."""
    import multiprocessing
    import threading

    from bench.tuning.workers import collect_results

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_large_result_worker, args=(i, results)) for i in range(2)]
    for process in processes:
        process.start()
    outcome = []
    collector = threading.Thread(target=lambda: outcome.append(collect_results(processes, results)))
    collector.start()
    collector.join(timeout=120)
    assert not collector.is_alive(), "collect_results deadlocked on a large worker result"
    assert outcome[0].ran == 2 and not outcome[0].gave_up
    assert [len(n) for n in outcome[0].notes] == [400_000, 400_000]
