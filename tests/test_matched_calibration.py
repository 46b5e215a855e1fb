"""Sparsity matched by construction: the calibration driver on known responses, its
±tolerance acceptance, resuming a killed calibration, the matched suite's rules, and one
real calibration on digits (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.cli import main
from bench.matched import calibration, study
from bench.matched.calibration import CalibrationRun, Trace, calibrate, propose, within
from bench.suites import load_suite


def logistic(center: float, ceiling: float = 1.0, noise: float = 0.0):
    """A sparsity response monotone in log(value) (plus a fixed, non-monotone wiggle)."""

    def train(value: float) -> CalibrationRun:
        x = math.log10(value) - math.log10(center)
        wiggle = noise * math.sin(37.0 * math.log(value))
        s = min(max(ceiling / (1.0 + math.exp(-2.5 * x)) + wiggle, 0.0), 1.0)
        return CalibrationRun(value=value, sparsity=s)

    return train


def drive(train, target, initial, **kw) -> tuple[calibration.Decision, list[CalibrationRun]]:
    runs: list[CalibrationRun] = []
    while True:
        decision = propose(runs, target, initial, **kw)
        if decision.done:
            return decision, runs
        runs.append(train(decision.value))


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95])
@pytest.mark.parametrize("initial", [1e-6, 1e-3, 10.0])
def test_monotone_response_is_matched_within_tolerance(target: float, initial: float) -> None:
    decision, runs = drive(logistic(center=2e-3), target, initial, max_runs=12)
    assert decision.reached, (decision, runs)
    assert within(decision.best.sparsity, target, 0.01)
    assert len(runs) <= 12
    # The accepted run is the last one: the driver stops at the first hit.
    assert decision.best == runs[-1]


def test_noisy_non_monotone_response_still_converges_or_stops_at_the_cap() -> None:
    for target in (0.5, 0.8, 0.9, 0.95):
        decision, runs = drive(logistic(center=1e-2, noise=0.02), target, 1e-3, max_runs=8)
        assert len(runs) <= 8
        if decision.reached:
            assert within(decision.best.sparsity, target, 0.01)
        else:
            assert decision.reason.startswith("not reached")
    # At least the easy targets are met despite the wiggle.
    assert drive(logistic(center=1e-2, noise=0.02), 0.5, 1e-3, max_runs=8)[0].reached


def test_unreachable_target_is_reported_with_the_closest_run() -> None:
    decision, runs = drive(logistic(center=1e-3, ceiling=0.7), 0.9, 1e-3, max_runs=8)
    assert not decision.reached
    assert "not reached" in decision.reason
    assert decision.best == min(runs, key=lambda r: abs(r.sparsity - 0.9))


def test_acceptance_is_plus_minus_tolerance() -> None:
    assert within(0.89, 0.9, 0.01) and within(0.91, 0.9, 0.01)
    assert not within(0.8899, 0.9, 0.01) and not within(0.9101, 0.9, 0.01)
    runs = [CalibrationRun(1e-3, 0.8899), CalibrationRun(1e-1, 0.9101)]
    assert not propose(runs, 0.9, 1e-3).done  # neither is accepted: keep searching
    runs.append(CalibrationRun(1e-2, 0.905))
    decision = propose(runs, 0.9, 1e-3)
    assert decision.done and decision.reached and decision.best.value == 1e-2


def test_bracket_bisects_in_log_space_and_a_diverged_run_counts_as_too_much() -> None:
    runs = [CalibrationRun(1e-3, 0.2), CalibrationRun(1e-1, 0.0, status="diverged")]
    low, high = calibration.bracket(runs, 0.9)
    assert (low.value, high.value) == (1e-3, 1e-1)
    value = propose(runs, 0.9, 1e-3).value
    # Inside the safeguarded middle of the log bracket.
    fraction = (math.log(value) - math.log(1e-3)) / (math.log(1e-1) - math.log(1e-3))
    assert calibration.SAFEGUARD - 1e-9 <= fraction <= 1 - calibration.SAFEGUARD + 1e-9
    # A diverged run is never the answer, even with sparsity reported 0.9.
    assert propose([CalibrationRun(1e-2, 0.9, status="diverged")], 0.9, 1e-2).value < 1e-2


def test_initial_penalty_must_be_positive() -> None:
    with pytest.raises(ValueError, match="initial penalty must be > 0"):
        propose([], 0.5, 0.0)


def test_killed_calibration_resumes_without_redoing_finished_runs(tmp_path: Path) -> None:
    path = tmp_path / "bsqh@0.9.json"
    meta = {"method": "bsqh", "target": 0.9}
    response = logistic(center=2e-3)
    trained: list[float] = []

    def killed_after_two(value: float) -> CalibrationRun:
        if len(trained) == 2:
            raise KeyboardInterrupt
        trained.append(value)
        return response(value)

    with pytest.raises(KeyboardInterrupt):
        calibrate(Trace.open(path, meta), killed_after_two, 0.9, 1e-5)
    saved = json.loads(path.read_text())
    assert [r["value"] for r in saved["runs"]] == trained and "result" not in saved

    resumed: list[float] = []

    def counting(value: float) -> CalibrationRun:
        resumed.append(value)
        return response(value)

    decision = calibrate(Trace.open(path, meta), counting, 0.9, 1e-5)
    uninterrupted, runs = drive(response, 0.9, 1e-5)
    assert decision.reached and decision.best == uninterrupted.best
    assert trained + resumed == [r.value for r in runs]  # nothing retrained, nothing skipped
    assert json.loads(path.read_text())["result"]["reached"] is True
    # A finished calibration trains nothing more; a changed setting starts afresh.
    calibrate(Trace.open(path, meta), pytest.fail, 0.9, 1e-5)
    assert Trace.open(path, {**meta, "target": 0.8}).runs == []


def test_suite_rules(tmp_path: Path) -> None:
    suite = load_suite("matched-digits")
    study.check_suite(suite)
    knobs = {m.label: study.sparsity_knob(m) for m in suite.methods}
    assert knobs["bsqh"] == "beta" and knobs["l0-hc"] == "lam"
    assert knobs["gmp-layer"] == knobs["gmp-global"] == "final_sparsity"
    assert len(suite.seeds) >= 10 and study.CALIBRATION_SEED not in suite.seeds
    text = Path(study.__file__).parents[1] / "suites" / "matched-digits.toml"
    bad = tmp_path / "bad.toml"
    bad.write_text(text.read_text().replace("seeds = [1,", "seeds = [0, 1,"))
    with pytest.raises(study.MatchedError, match="seed 0 calibrates"):
        study.check_suite(load_suite(bad))
    bad.write_text(text.read_text().replace("max_retries = 5, beta = 1e-3", "max_retries = 5"))
    with pytest.raises(study.MatchedError, match=r"hparams\.beta is the initial penalty"):
        study.check_suite(load_suite(bad))


def test_cli_rejects_bad_targets_and_reference(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["matched", "--targets", "0.5,1.2", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "1.2" in capsys.readouterr().err
    code = main(["matched", "--reference", "nope", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "'nope'" in err and "bsqh" in err


def test_the_default_reference_is_the_method_under_study(tmp_path: Path, capsys) -> None:
    """The default --reference is the suite's method whose trait says it is studied; a
    suite without one must name its reference."""
    import re

    text = (Path(study.__file__).parents[1] / "suites" / "matched-digits.toml").read_text()
    blocks = text.split("[[methods]]")
    kept = [b for b in blocks[1:] if not re.search(r'^name = "bsqh"$', b, re.MULTILINE)]
    assert len(kept) == len(blocks) - 2  # the bSQH entry, and only it, is gone
    suite = tmp_path / "no-focus.toml"
    suite.write_text("[[methods]]".join([blocks[0], *kept]))
    code = main(["matched", "--suite", str(suite), "--no-train", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "has no method under study" in err and "pass --reference" in err


@pytest.mark.slow
def test_real_calibration_on_digits(tmp_path: Path) -> None:
    """bSQH's beta calibrated on real digits training (a fraction of an epoch per run)."""
    import torch

    from bench.data import load_dataset

    suite = study.at_budget(load_suite("matched-digits"), 0.5)
    method = next(m for m in suite.methods if m.label == "bsqh")
    data = load_dataset("digits", device=torch.device("cpu"), val_fraction=0.15)
    train = study.validation_run(suite, method, "beta", data, torch.device("cpu"))
    found = study.calibrate_method(
        suite, method, [0.5], tmp_path, train, tolerance=0.02, max_runs=10, say=lambda _: None
    )
    (entry,) = found
    trace = json.loads((tmp_path / "bsqh@0.5.json").read_text())
    assert len(trace["runs"]) == entry.calibration_runs >= 1
    assert entry.reached, trace
    assert abs(entry.val_sparsity - 0.5) <= 0.02
    assert trace["result"]["value"] == entry.value


def test_steep_curved_response_is_not_crept_up_on() -> None:
    """Proximal L1's measured shape: 0.50 at 0.0322, 0.88 at 0.0384, 1.0 from 0.053."""

    def steep(value: float) -> CalibrationRun:
        x = (math.log(value) - math.log(0.0322)) / (math.log(0.0384) - math.log(0.0322))
        return CalibrationRun(
            value, min(1.0, max(0.0, 0.5 + 0.38 * x**0.5 if x > 0 else 0.5 * math.exp(x)))
        )

    decision, runs = drive(steep, 0.8, 0.0322, max_runs=8)
    assert decision.reached, [(r.value, r.sparsity) for r in runs]


def test_a_new_starting_value_or_cap_keeps_the_runs(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    trace = Trace.open(path, {"target": 0.9, "initial": 1e-3, "max_runs": 8})
    trace.add(CalibrationRun(1e-3, 0.5))
    again = Trace.open(path, {"target": 0.9, "initial": 2e-3, "max_runs": 10})
    assert again.runs == [CalibrationRun(1e-3, 0.5)]


def test_cli_rejects_unknown_method_labels(tmp_path: Path, capsys) -> None:
    code = main(["matched", "--methods", "bsqh,nope", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --methods") and "nope" in err and "gmp-global" in err


def test_no_train_reads_what_exists_and_trains_nothing(tmp_path: Path, capsys) -> None:
    import csv

    args = ["matched", "--no-train", "--epochs", "1", "--targets", "0.5", "--out", str(tmp_path)]
    assert main([*args, "--methods", "bsqh,gmp-layer"]) == 0
    folder = tmp_path / "matched-digits"
    with (folder / "matched.csv").open() as handle:
        rows = {r["method"]: r for r in csv.DictReader(handle)}
    assert rows["bsqh"]["missing"].startswith("not reached (calibration not finished")
    assert rows["gmp-layer"]["missing"] == "no retrained seed"
    assert rows["gmp-layer"]["value"] == "0.5"  # GMP's final_sparsity is the target itself
    assert (folder / "MATCHED.md").is_file() and (folder / "matched.png").is_file()
    traces = list(folder.glob("epochs-1/calibration/*.json"))
    assert all(json.loads(t.read_text())["runs"] == [] for t in traces)  # nothing trained
    assert not (folder / "epochs-1" / "matched-digits-e1" / "cells").exists()
