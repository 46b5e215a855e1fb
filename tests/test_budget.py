"""Clock-free budgets: the stopping rule, the safety cap, interference, reproducibility."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from bench.data import load_dataset
from bench.ledger.records import load_records
from bench.report import budgets, write_report
from bench.runner import cells_dir, run_suite
from bench.suites import load_suite
from bench.training.budget import Budget, BudgetError
from bench.training.interference import SLOW_FACTOR, STARVED_FACTOR, detect
from bench.training.loop import train_cell

CPU = torch.device("cpu")

SUITE = """
name = "{name}"
datasets = ["synthetic"]
models = ["cnn-tiny"]
seeds = [0]
[data]
val_fraction = 0.2
[budget]
{budget}
[eval]
every_epochs = 0.5
train_eval_size = 128
[[methods]]
name = "sgd"
batch_size = 32
hparams = {{ lr = 0.1 }}
[[methods]]
name = "bsqh"
batch_size = 32
hparams = {{ eps = 1.0, beta = 1e-4, max_retries = 3 }}
"""


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def suite_with(tmp_path, budget: str, name: str = "t"):
    path = tmp_path / f"{name}.toml"
    path.write_text(SUITE.format(budget=budget, name=name))
    return load_suite(path)


# ------------------------------------------------------------------- the budget itself


def test_budget_units_give_their_step_counts() -> None:
    assert Budget.from_config({"epochs": 2.5}).max_steps(per_epoch=10) == 25
    assert Budget.from_config({"steps": 7}).max_steps(per_epoch=10) == 7
    assert Budget.from_config({"passes": 40}).max_steps(per_epoch=10) is None
    passes = Budget.from_config({"passes": 40})
    assert not passes.spent(steps=19, passes=39.5, per_epoch=10)
    assert passes.spent(steps=20, passes=40.0, per_epoch=10)


@pytest.mark.parametrize(
    "table",
    [{}, {"safety_cap_seconds": 5}, {"device_seconds": 5, "epochs": 1}, {"epochs": 1, "steps": 3}],
)
def test_budgets_without_exactly_one_count_are_refused(table) -> None:
    with pytest.raises(BudgetError):
        Budget.from_config(table)


# ------------------------------------------------------------------- interference


def test_quiet_steps_are_not_flagged() -> None:
    cpu = [10.0 + (i % 3) * 0.5 for i in range(200)]  # two torch threads: CPU > wall
    wall = [c * 0.6 for c in cpu]
    found = detect(cpu, wall)
    assert found["interference"] is False
    assert found["slowed_step_share"] == 0 and found["starved_step_share"] == 0
    assert found["wall_cpu_ratio"] == pytest.approx(0.6)


def test_a_sustained_hog_starves_every_step() -> None:
    """All steps slowed alike: the median cannot see it, CPU time against wall can."""
    cpu = [10.0] * 100
    wall = [10.0 * STARVED_FACTOR * 1.6] * 100
    found = detect(cpu, wall)
    assert found["slowed_step_share"] == 0
    assert found["starved_step_share"] == 1.0 and found["interference"] is True
    assert found["wall_cpu_ratio"] == pytest.approx(STARVED_FACTOR * 1.6)


def test_a_load_spike_slows_some_steps() -> None:
    times = [5.0] * 90 + [5.0 * SLOW_FACTOR * 2] * 10  # CUDA-like: event times only
    found = detect(times)
    assert found["slowed_step_share"] == pytest.approx(0.1)
    assert found["interference"] is True and found["starved_step_share"] is None
    few = detect([5.0] * 99 + [100.0])  # one slow step of 100 is noise, not interference
    assert few["interference"] is False


def test_no_steps_no_verdict_and_mismatched_lengths_are_refused() -> None:
    assert detect([])["interference"] is None
    with pytest.raises(ValueError, match="2 wall times for 3 steps"):
        detect([1.0, 1.0, 1.0], [1.0, 1.0])


# ------------------------------------------------------------------- the runner


def test_a_tiny_safety_cap_records_capped_cells_that_the_report_lists(tmp_path) -> None:
    suite = suite_with(tmp_path, "epochs = 1\nsafety_cap_seconds = 1e-9")
    outcome = run_suite(suite, tmp_path, CPU, progress=False, models=False)
    assert outcome.failed == 0
    records = load_records(cells_dir(tmp_path, "t"))
    assert {r.status for r in records} == {"capped"}
    for record in records:
        assert record.summary["iterations"] == 1  # any step takes longer than a nanosecond
        assert record.curve[-1]["iteration"] == 1  # and the last step got its evaluation
        assert "safety cap of 1e-09" in record.error
    paths = write_report(records, tmp_path / "report", suite="t")
    text = paths.report_md.read_text()
    assert "## Diverged, capped, failed and killed cells" in text
    assert text.count("| capped |") == 2
    runs = paths.runs_csv.read_text().splitlines()
    assert runs[0].split(",")[6] == "status" and all(",capped," in row for row in runs[1:])
    # a rerun trains capped cells again: the cap is a clock, a quieter run may not hit it
    assert run_suite(suite, tmp_path, CPU, progress=False, models=False).ran == 2


def test_a_pass_budget_charges_bsqh_its_retries(tmp_path) -> None:
    suite = suite_with(tmp_path, "passes = 60")
    run_suite(suite, tmp_path, CPU, progress=False, models=False)
    records = {r.config["label"]: r for r in load_records(cells_dir(tmp_path, "t"))}
    for record in records.values():
        s = record.summary
        assert record.status == "finished"
        spent = s["forward_passes"] + s["backward_passes"]
        assert spent >= 60  # stopped at the first step that reached the budget
        assert s["iterations"] == record.curve[-1]["iteration"]
    assert records["sgd"].summary["iterations"] == 30  # one forward and one backward a step
    assert records["bsqh"].summary["iterations"] < 30  # a sweep and its retries cost more


def test_the_report_names_cells_with_interference(tmp_path) -> None:
    suite = suite_with(tmp_path, "steps = 3")
    run_suite(suite, tmp_path, CPU, progress=False, models=False)
    records = load_records(cells_dir(tmp_path, "t"))
    for record in records:
        assert isinstance(record.summary["interference"], bool)
        assert record.summary["starved_step_share"] is not None
    flagged = records[0]
    flagged.summary.update(interference=True, slowed_step_share=0.5, starved_step_share=0.25)
    for record in records[1:]:
        record.summary["interference"] = False
    text = write_report(records, tmp_path / "r", suite="t").report_md.read_text()
    label = flagged.config["label"]
    assert f"slowed the training steps of 1 of 2 cells: {label}/seed0 (slowed 50%" in text


@pytest.mark.slow
def test_a_cell_trained_twice_gives_identical_results() -> None:
    """The stopping rule reads no clock, so the same cell repeats bit for bit."""
    suite = load_suite("smoke")
    data = load_dataset("digits", **suite.data["digits"])
    for cell in suite.cells()[-2:]:  # prox-sgd-l0 and bsqh: sparsity moves
        cell = dataclasses.replace(cell, budget={"epochs": 1})
        first, second = (train_cell(cell, data, CPU, progress=False) for _ in range(2))
        for key in ("test_accuracy", "sparsity", "nonzeros", "iterations", "objective"):
            assert first.summary[key] == second.summary[key], (cell.name, key)
        assert [p["test_accuracy"] for p in first.curve] == [
            p["test_accuracy"] for p in second.curve
        ]


# ------------------------------------------------------------------- ranking across budgets


def sweep_runs(accuracies: dict[str, dict[float, list[float | None]]]) -> pd.DataFrame:
    """runs.csv-like rows: ``{method: {epochs: [accuracy per seed, None = diverged]}}``."""
    rows = [
        {
            "method": f"{method}@{epochs:g}ep",
            "dataset": "d",
            "model": "m",
            "seed": seed,
            "status": "finished" if accuracy is not None else "diverged",
            "test_accuracy": accuracy,
            "budget_amount": epochs,
            "budget_unit": "epochs",
        }
        for method, by_budget in accuracies.items()
        for epochs, values in by_budget.items()
        for seed, accuracy in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_a_ranking_that_holds_says_so() -> None:
    runs = sweep_runs(
        {"a": {2: [0.7, 0.8, 0.9], 6: [0.85] * 3}, "b": {2: [0.6] * 3, 6: [0.8, 0.8, 0.9]}}
    )
    ranks = budgets.ranking(runs)
    assert ranks.set_index(["method", "budget_amount"])["rank"].to_dict() == {
        ("a", 2): 1,
        ("a", 6): 1,
        ("b", 2): 2,
        ("b", 6): 2,
    }
    text = "\n".join(budgets.section(runs))
    assert "| a | 0.800 (1) | 0.850 (1) |" in text
    assert "**The ranking holds** from 2 to 6 epochs" in text


def test_a_flip_is_named_and_failed_seeds_count_as_zero() -> None:
    runs = sweep_runs(
        {
            "a": {2: [0.8] * 3, 6: [0.9, None, None]},  # two diverged seeds: median 0
            "b": {2: [0.7] * 3, 6: [0.75] * 3},
            "c": {2: [0.5] * 3, 6: [0.6] * 3},
        }
    )
    assert budgets.flips(budgets.ranking(runs)) == [("a", "b"), ("a", "c")]
    text = "\n".join(budgets.section(runs))
    assert "**The ranking flips** from 2 to 6 epochs: a ahead of b, then behind" in text


def test_one_budget_adds_no_section() -> None:
    runs = sweep_runs({"a": {6: [0.8]}, "b": {6: [0.7]}})
    assert budgets.section(runs) == []
