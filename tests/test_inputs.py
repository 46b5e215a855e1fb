"""Bad inputs fail at load time, naming the key, flag or path; exploding training is caught.

Each case is one of the inputs a fault probe found accepted: a suite number that is not
finite, an option key nobody reads, a flag of ``inf``, a folder that cannot be written,
and a learning rate that blows the objective up while it stays finite.
"""

from __future__ import annotations

import dataclasses
import errno
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import bench.ledger.writable
import optimizers
from bench.cli import main
from bench.data import load_dataset
from bench.ledger.records import load_records
from bench.report import write_report
from bench.runner import cell_key, cells_dir, run_suite
from bench.suites import (
    DEFAULT_EVAL_EVERY_EPOCHS,
    DEFAULT_TRAIN_EVAL_SIZE,
    Cell,
    MethodSpec,
    SuiteError,
    load_suite,
)
from bench.training.loop import DIVERGENCE_FACTOR, divergence_limit, train_cell
from bench.training.numerics import PRECISIONS, numerics
from optimizers import registry
from optimizers.hparams import HParams, hparam

CPU = torch.device("cpu")
TUNE = ["tune", "--method", "sgd", "--model", "cnn-tiny", "--dataset", "digits", "--quiet"]
ONE = ["--trials", "1", "--budget-epochs", "1"]

BASE = """name = "t"
datasets = ["synthetic"]
models = ["cnn-tiny"]
seeds = [0]
{top}
[data]
val_fraction = 0.25
{data}
[budget]
epochs = 1
{budget}
[eval]
every_epochs = 0.5
train_eval_size = 128
{eval}
{tables}
[[methods]]
name = "sgd"
batch_size = 32
hparams = {hparams}
"""


def suite_text(
    *,
    top: str = "",
    data: str = "",
    budget: str = "",
    eval: str = "",
    tables: str = "",
    hparams: str = "{ lr = 0.1 }",
) -> str:
    return BASE.format(top=top, data=data, budget=budget, eval=eval, tables=tables, hparams=hparams)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# --------------------------------------------------------------------------- suite numbers


def test_the_base_suite_loads(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, suite_text()))
    assert suite.budget == {"epochs": 1}
    assert suite.data["synthetic"] == {"val_fraction": 0.25}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"budget": "safety_cap_seconds = inf"}, "budget.safety_cap_seconds"),
        ({"budget": "safety_cap_seconds = nan"}, "budget.safety_cap_seconds"),
        ({"budget": "safety_cap_seconds = -inf"}, "budget.safety_cap_seconds"),
        ({"budget": "safety_cap_seconds = 0"}, "budget.safety_cap_seconds"),
    ],
)
def test_budget_must_be_finite_and_positive(tmp_path: Path, change: dict, key: str) -> None:
    with pytest.raises(SuiteError, match=rf"key '{key}': must be a positive number.*got"):
        load_suite(write(tmp_path, suite_text(**change)))


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("epochs = 1\n", "device_seconds = 12\n", "a clock is no longer a budget"),
        ("epochs = 1\n", "epochs = 1\ndevice_seconds = 12\n", "a clock is no longer a budget"),
        ("epochs = 1\n", "safety_cap_seconds = 12\n", "exactly one clock-free stopping rule"),
        ("epochs = 1\n", "epochs = 1\nsteps = 10\n", r"given: epochs, steps"),
        ("epochs = 1\n", "steps = 10.5\n", "budget.steps': must be a positive integer"),
        ("epochs = 1\n", "passes = [10, 10]\n", "must be non-empty and distinct"),
        ("epochs = 1\n", "hours = 1\n", "budget.hours': unknown key"),
    ],
)
def test_a_budget_is_one_clock_free_count(tmp_path: Path, old: str, new: str, problem: str):
    """A suite that stops on a clock (alone or beside a count) is refused on load."""
    with pytest.raises(SuiteError, match=problem):
        load_suite(write(tmp_path, suite_text().replace(old, new, 1)))


def test_a_list_of_budgets_is_an_axis_of_the_grid(tmp_path: Path) -> None:
    text = suite_text().replace("epochs = 1\n", "epochs = [1, 2.5]\nsafety_cap_seconds = 9\n")
    suite = load_suite(write(tmp_path, text))
    cells = suite.cells()
    assert [c.method.label for c in cells] == ["sgd@1ep", "sgd@2.5ep"]
    assert [c.budget for c in cells] == [
        {"epochs": 1, "safety_cap_seconds": 9},
        {"epochs": 2.5, "safety_cap_seconds": 9},
    ]
    assert suite.budget == cells[0].budget
    one = dataclasses.replace(suite, budget={"epochs": 3})  # how a study sets its budget
    assert [c.method.label for c in one.cells()] == ["sgd"]


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_epochs_must_be_finite_and_positive(tmp_path: Path, value: str) -> None:
    text = suite_text().replace("epochs = 1\n", f"epochs = {value}\n", 1)
    with pytest.raises(SuiteError, match=r"key 'budget.epochs': must be a positive number"):
        load_suite(write(tmp_path, text))


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("every_epochs = 0.5", "every_epochs = inf", "eval.every_epochs"),
        ("every_epochs = 0.5", "every_epochs = nan", "eval.every_epochs"),
        ("every_epochs = 0.5", "every_epochs = 0.0", "eval.every_epochs"),
        ("train_eval_size = 128", "train_eval_size = 2.5", "eval.train_eval_size"),
        ("train_eval_size = 128", "train_eval_size = 0", "eval.train_eval_size"),
    ],
)
def test_eval_numbers(tmp_path: Path, old: str, new: str, key: str) -> None:
    with pytest.raises(SuiteError, match=rf"key '{key}': must be a positive"):
        load_suite(write(tmp_path, suite_text().replace(old, new)))


@pytest.mark.parametrize("value", ["nan", "inf", "0", "1.5", "-0.1"])
def test_target_accuracy_in_unit_interval(tmp_path: Path, value: str) -> None:
    with pytest.raises(SuiteError, match=r"key 'target_accuracy': must be a number in \(0, 1\]"):
        load_suite(write(tmp_path, suite_text(top=f"target_accuracy = {value}")))


@pytest.mark.parametrize("value", ['"bf16"', '"float64"', "32"])
def test_precision_names_the_allowed_values(tmp_path: Path, value: str) -> None:
    with pytest.raises(SuiteError, match=r"key 'precision': must be one of \['float32', 'tf32'\]"):
        load_suite(write(tmp_path, suite_text(top=f"precision = {value}")))


def test_precision_defaults_to_float32_and_enters_every_cell_key(tmp_path: Path) -> None:
    plain = load_suite(write(tmp_path, suite_text()))
    (tmp_path / "tf32").mkdir()
    tf32 = load_suite(write(tmp_path / "tf32", suite_text(top='precision = "tf32"')))
    assert {c.precision for c in plain.cells()} == {"float32"}
    assert {c.config()["precision"] for c in tf32.cells()} == {"tf32"}
    assert {cell_key(c) for c in plain.cells()}.isdisjoint(cell_key(c) for c in tf32.cells())


def test_numerics_sets_tf32_and_the_autotuner_and_restores_them() -> None:
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    autotune = torch.backends.cudnn.benchmark
    for precision, tf32 in PRECISIONS.items():
        with numerics(precision):
            assert torch.backends.cudnn.allow_tf32 is tf32
            assert torch.backends.cuda.matmul.allow_tf32 is tf32
            assert torch.backends.cudnn.benchmark is True
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == flags
    assert torch.backends.cudnn.benchmark is autotune


# --------------------------------------------------------------------------- [data]


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ("val_fraction = 1.5", "data.val_fraction", r"open interval \(0, 1\), got 1.5"),
        ("val_fraction = nan", "data.val_fraction", r"open interval \(0, 1\), got nan"),
        ("split_seed = -1", "data.split_seed", r"integer >= 0, got -1"),
        ("split_seed = 1.5", "data.split_seed", r"integer >= 0, got 1.5"),
        ("train_subset = 0", "data.train_subset", r"integer >= 1, got 0"),
        ("test_subset = 2.5", "data.test_subset", r"integer >= 1, got 2.5"),
        ("root = 3", "data.root", r"folder path"),
        ("[data.synthetic]\nval_fraction = 1.0", "data.synthetic.val_fraction", r"\(0, 1\)"),
        ("[data.digits]\ntrain_subset = -5", "data.digits.train_subset", r">= 1, got -5"),
        ("[data.synthetic]\nnoise = -1.0", "data.synthetic.noise", r"noise=-1.0.*>= 0"),
        ("[data.synthetic]\nn_train = inf", "data.synthetic.n_train", r"n_train=inf.*integer"),
    ],
)
def test_data_values_are_checked_at_load(tmp_path: Path, data: str, key: str, problem: str) -> None:
    # The [data] table's own keys are replaced so that val_fraction appears once.
    text = suite_text(data=data).replace("val_fraction = 0.25\n", "", 1)
    with pytest.raises(SuiteError, match=rf"key '{key}': .*{problem}"):
        load_suite(write(tmp_path, text))


def test_unknown_dataset_option_names_key_and_allowed_keys(tmp_path: Path) -> None:
    text = suite_text(data="[data.synthetic]\nn_trian = 100")
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, text))
    message = str(info.value)
    assert "key 'data.synthetic.n_trian'" in message
    for allowed in ("n_train", "n_test", "noise", "val_fraction", "split_seed", "root"):
        assert allowed in message
    # A dataset whose loader takes no options of its own lists only the split options.
    with pytest.raises(SuiteError, match=r"data.digits.n_train'.*allowed options: root, split"):
        load_suite(write(tmp_path, suite_text(data="[data.digits]\nn_train = 100")))
    # Loader options are per dataset: not in the [data] defaults every dataset shares.
    with pytest.raises(SuiteError, match=r"key 'data.n_train': unknown key"):
        load_suite(write(tmp_path, suite_text(data="n_train = 100")))


def test_valid_dataset_options_reach_the_loader(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, suite_text(data="[data.synthetic]\nn_train = 64")))
    (cell,) = suite.cells()
    assert cell.data == {"val_fraction": 0.25, "n_train": 64}
    assert sum(load_dataset("synthetic", **cell.data).sizes()[s] for s in ("train", "val")) == 64


# --------------------------------------------------------------------------- [model_options]


def test_unknown_model_option_fails_at_load(tmp_path: Path) -> None:
    text = suite_text(tables='[model_options.cnn-tiny]\nactt = "relu"')
    with pytest.raises(
        SuiteError, match=r"key 'model_options.cnn-tiny.actt': unknown option 'actt'.*act"
    ):
        load_suite(write(tmp_path, text))


@pytest.mark.parametrize("value", ['"foo"', "3", "true"])
def test_bad_model_option_value_fails_at_load(tmp_path: Path, value: str) -> None:
    text = suite_text(tables=f"[model_options.cnn-tiny]\nact = {value}")
    with pytest.raises(
        SuiteError, match=r"key 'model_options.cnn-tiny.act': .*allowed values: relu, tanh"
    ):
        load_suite(write(tmp_path, text))


def test_valid_model_option_loads(tmp_path: Path) -> None:
    text = suite_text(tables='[model_options.cnn-tiny]\nact = "relu"')
    assert load_suite(write(tmp_path, text)).cells()[0].model_options == {"act": "relu"}


# --------------------------------------------------------------------------- hyperparameters


@pytest.mark.parametrize(
    ("hparams", "pattern"),
    [
        ("{ chunk_size = 100 }", r"hparams.chunk_size': is set by the runner"),
        ("{ loss_fn = 1 }", r"hparams.loss_fn': is set by the runner"),
        ("{ lr = inf }", r"hparams': lr must be a finite number > 0, got inf"),
        ("{ lr = nan }", r"hparams': lr must be a finite number > 0, got nan"),
        ("{ lrr = 0.1 }", r"hparams': .*lrr"),
        ("{ lr = 1e40 }", r"hparams.lr': 1e\+40 does not fit in float32"),
    ],
)
def test_hyperparameters_checked_at_load(tmp_path: Path, hparams: str, pattern: str) -> None:
    with pytest.raises(SuiteError, match=pattern):
        load_suite(write(tmp_path, suite_text(hparams=hparams)))


@dataclass(frozen=True)
class _ToyHParams(HParams):
    rate: float = hparam(0.1, "step size", low=0.0, low_open=True)


class _NeverBuilt:
    """A method that must not be constructed while a suite is validated."""

    def __init__(self, model, hp, *, chunk_size=None):
        raise AssertionError("suite validation built the method")


def test_hyperparameters_use_the_dataclass_not_a_toy_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    registry.register("test-typed", hparams=_ToyHParams)(_NeverBuilt)  # chunk_size: read
    text = suite_text(hparams="{ rate = 0.5 }").replace('name = "sgd"', 'name = "test-typed"')
    (method,) = load_suite(write(tmp_path, text)).methods
    assert method.hparams == {"rate": 0.5}
    for bad, pattern in [
        ("{ rate = -1.0 }", r"rate must be a finite number > 0, got -1.0"),
        ("{ rate = inf }", r"rate must be a finite number > 0, got inf"),
        ("{ rte = 1.0 }", r"unknown hyperparameter.*rte.*allowed: rate"),
        ("{ chunk_size = 8 }", r"hparams.chunk_size': is set by the runner"),
    ]:
        with pytest.raises(SuiteError, match=pattern):
            load_suite(write(tmp_path, text.replace("{ rate = 0.5 }", bad)))


# --------------------------------------------------------------------------- defaults


def test_eval_defaults_are_shared_by_suites_and_tune(tmp_path: Path) -> None:
    from bench.cli import build_parser
    from bench.commands.tune import setting_from_flags

    text = suite_text().replace("every_epochs = 0.5\ntrain_eval_size = 128\n", "")
    suite = load_suite(write(tmp_path, text))
    args = build_parser("tune").parse_args([*TUNE, "--budget-epochs", "1", "--trials", "1"])
    setting, _ = setting_from_flags(args, "sgd")
    assert suite.eval_every_epochs == setting.eval_every_epochs == DEFAULT_EVAL_EVERY_EPOCHS
    assert suite.train_eval_size == setting.train_eval_size == DEFAULT_TRAIN_EVAL_SIZE


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        ([*TUNE, "--trials", "1", "--safety-cap-seconds", "inf"], "--safety-cap-seconds"),
        ([*TUNE, "--trials", "1", "--safety-cap-seconds", "nan"], "--safety-cap-seconds"),
        ([*TUNE, "--trials", "1", "--budget-epochs", "-1"], "--budget-epochs"),
        ([*TUNE, *ONE, "--eval-every", "inf"], "--eval-every"),
        (
            [*TUNE, *ONE, "--val-fraction", "1.5"],
            "--val-fraction",
        ),
        ([*TUNE, *ONE, "--split-seed", "-2"], "--split-seed"),
        ([*TUNE, *ONE, "--batch-size", "2.5"], "--batch-size"),
        (
            [*TUNE, *ONE, "--min-sparsity", "nan"],
            "--min-sparsity",
        ),
        ([*TUNE, "--trials", "0", "--budget-epochs", "1"], "--trials"),
        ([*TUNE, *ONE, "--workers", "0"], "--workers"),
        (["tune-all", "--trials", "-3"], "--trials"),
    ],
)
def test_numeric_flags_are_finite_and_in_range(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- unwritable paths


def _blocked(tmp_path: Path) -> Path:
    """A folder path that cannot be created: a regular file sits where its parent should be."""
    (tmp_path / "a-file").write_text("not a folder")
    return tmp_path / "a-file" / "out"


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_run_refuses_an_out_folder_it_cannot_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _blocked(tmp_path)
    assert main(["run", "--suite", "smoke", "--out", str(out), "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert f"output folder {out} is not writable" in line and "--out" in line


def test_tune_refuses_an_out_folder_it_cannot_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _blocked(tmp_path)
    argv = [*TUNE, *ONE, "--out", str(out)]
    assert main(argv) == 2
    assert f"output folder {out} is not writable" in _one_error_line(capsys)


@pytest.fixture
def read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that refuses writes like a read-only mount (errno EROFS).

    As root, permissions do not stop writes, so the probe is made to fail the way the
    kernel fails it for a read-only mount; as another user, the folder is also made
    read-only for real.
    """
    folder = tmp_path / "read-only"
    folder.mkdir()
    real_probe = bench.ledger.writable._write_probe

    def probe(path: Path) -> None:
        if path == folder or folder in path.parents:
            raise OSError(errno.EROFS, "Read-only file system")
        real_probe(path)

    monkeypatch.setattr(bench.ledger.writable, "_write_probe", probe)
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_run_refuses_a_read_only_out(read_only: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--suite", "smoke", "--out", str(read_only), "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert f"output folder {read_only} is not writable (Read-only file system)" in line


@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_tune_refuses_storage_in_a_read_only_folder(
    tmp_path: Path, read_only: Path, storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = read_only / ("study.log" if storage == "journal" else "optuna.db")
    url = str(target) if storage == "journal" else f"sqlite:///{target}"
    argv = [*TUNE, *ONE, "--out", str(tmp_path / "out")]
    assert main([*argv, "--storage", url]) == 2
    line = _one_error_line(capsys)
    assert str(read_only) in line and "not writable" in line and "--storage" in line


def test_full_disk_says_to_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bench.ledger.writable, "_write_probe", full)
    with pytest.raises(
        bench.ledger.writable.PathNotWritable, match=r"No space left.*free some space"
    ):
        bench.ledger.writable.ensure_writable_dir(tmp_path / "x", "output folder", flag="--out")


def test_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    bench.ledger.writable.ensure_writable_dir(tmp_path / "new" / "folder", "output folder")
    assert list((tmp_path / "new" / "folder").iterdir()) == []


# --------------------------------------------------------------------------- divergence


def _cell(lr: float) -> Cell:
    spec = MethodSpec(
        label="sgd",
        name="sgd",
        mode="minibatch",
        batch_size=32,
        chunk_size=None,
        hparams={"lr": lr},
    )
    return Cell(
        suite="t",
        method=spec,
        model="cnn-tiny",
        model_options={},
        dataset="synthetic",
        data={},
        seed=0,
        budget={"epochs": 2},
        eval_every_epochs=0.5,
        train_eval_size=192,
    )


def test_exploding_but_finite_training_is_diverged() -> None:
    data = load_dataset("synthetic", n_train=256, n_test=64, val_fraction=0.25)
    result = train_cell(_cell(1e6), data, CPU, progress=False)
    assert result.status == "diverged"
    reason = result.summary["diverged_reason"]
    assert f"exceeds {DIVERGENCE_FACTOR:g} x its initial" in reason
    exploded = float(reason.split()[1])
    assert math.isfinite(exploded)  # finite: the old NaN/inf rule would call this finished
    assert exploded > divergence_limit(result.curve[0]["objective"])
    # Only points below the limit make the curve; the summary holds the last good one.
    assert all(
        p["objective"] <= divergence_limit(result.curve[0]["objective"]) for p in result.curve
    )
    assert result.summary["objective"] == result.curve[-1]["objective"]

    healthy = train_cell(_cell(0.1), data, CPU, progress=False)
    assert healthy.status == "finished" and "diverged_reason" not in healthy.summary


@pytest.mark.slow
def test_diverged_cells_stay_in_runs_csv_and_count_at_chance(tmp_path: Path) -> None:
    """A diverged cell is neither dropped nor credited with its last figures: it stays in
    runs.csv with its status and counts at chance accuracy in medians and claims."""
    text = suite_text(hparams="{ lr = 0.1 }") + (
        '\n[[methods]]\nlabel = "sgd-explodes"\nname = "sgd"\nbatch_size = 32\n'
        "hparams = { lr = 1e6 }\n"
    )
    suite = load_suite(write(tmp_path, text))
    outcome = run_suite(suite, tmp_path / "out", CPU, progress=False)
    assert (outcome.ran, outcome.diverged, outcome.failed) == (2, 1, 0)
    records = {r.config["label"]: r for r in load_records(cells_dir(tmp_path / "out", "t"))}
    exploded = records["sgd-explodes"]
    assert exploded.status == "diverged" and "exceeds" in exploded.error
    assert records["sgd"].status == "finished"
    # Even with the best accuracy on record, a diverged cell is scored as a guessing network.
    exploded.summary["test_accuracy"] = 1.0
    chance = 1 / records["sgd"].summary["num_classes"]
    paths = write_report(list(records.values()), tmp_path / "report", suite="t")

    import pandas as pd

    runs = pd.read_csv(paths.runs_csv)
    assert dict(zip(runs["method"], runs["status"], strict=True)) == {
        "sgd": "finished",
        "sgd-explodes": "diverged",
    }
    report = paths.report_md.read_text()
    claims = report[report.index("Most accurate") :].splitlines()[0]
    assert claims.index("sgd (median") < claims.index("sgd-explodes")  # sgd leads
    assert f"sgd-explodes (median {chance:.3f})" in claims
    rows = [line for line in report.splitlines() if line.startswith("| sgd-explodes")]
    accuracy_rows = [line for line in rows if f"{chance:.3f}" in line]
    assert accuracy_rows, rows  # the results table scores the seed at chance
    assert all("| 1.000" not in line for line in accuracy_rows)  # not its last figures
    assert "diverged" in report[report.index("sgd-explodes") :]


def test_divergence_rule_is_the_documented_one() -> None:
    assert divergence_limit(2.3) == pytest.approx(DIVERGENCE_FACTOR * 2.3 + 1.0)
    assert divergence_limit(0.0) > 0  # a perfect start still leaves room for noise
    assert optimizers.runtime_options("sgd")  # post_step_loss is a runtime option
