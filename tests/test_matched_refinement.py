"""The second stage of matching: the penalty refined on the report seeds' median sparsity.

The driver on simulated seed populations (a seed-0 value that misses on the median is
corrected; the first stage's bracket is reused; a cap reports the closest round), the
median of a round with diverged seeds, that a round reads sparsities only, and (slow)
one real study: every reported median within the tolerance, its runs the final round's,
and a rerun training nothing."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from bench.cli import main
from bench.ledger.records import CellRecord
from bench.matched import refinement, study
from bench.matched.calibration import CalibrationRun, propose, within

SEEDS = range(1, 11)


def population(center: float, spread: float = 0.02, shift: float = 0.0):
    """Seed s's sparsity: a logistic in log10(value) moved by a seed-specific offset; the
    median over the seeds sits ``shift`` above seed 0's curve."""
    offsets = {s: shift + spread * math.sin(2.3 * s) for s in SEEDS}

    def sparsity(value: float, offset: float) -> float:
        x = math.log10(value) - math.log10(center)
        return min(max(1.0 / (1.0 + math.exp(-2.5 * x)) + offset, 0.0), 1.0)

    def seed0(value: float) -> CalibrationRun:
        return CalibrationRun(value, sparsity(value, 0.0))

    def round_at(value: float) -> CalibrationRun:
        return refinement.median_round(
            value, {s: (sparsity(value, offsets[s]), False) for s in SEEDS}
        )

    return seed0, round_at


def first_stage(seed0, target: float, initial: float = 1e-3) -> list[CalibrationRun]:
    runs: list[CalibrationRun] = []
    while not (decision := propose(runs, target, initial, max_runs=12)).done:
        runs.append(seed0(decision.value))
    assert decision.reached
    return runs


def drive(round_at, stage, target, *, max_rounds=4):
    start = min(stage, key=lambda r: abs(r.sparsity - target)).value
    rounds: list[CalibrationRun] = []
    while not (
        decision := refinement.refine(
            rounds, stage, target, start, tolerance=0.01, max_rounds=max_rounds
        )
    ).done:
        rounds.append(round_at(decision.value))
    return decision, rounds


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95])
@pytest.mark.parametrize("shift", [-0.03, 0.025])
def test_a_seed0_value_that_misses_on_the_median_is_corrected(target, shift) -> None:
    seed0, round_at = population(center=2e-3, shift=shift)
    stage = first_stage(seed0, target)
    first = round_at(stage[-1].value)
    assert not within(first.sparsity, target, 0.01)  # the case this stage exists for
    decision, rounds = drive(round_at, stage, target)
    assert decision.reached and within(decision.best.sparsity, target, 0.01)
    assert rounds[0].value == stage[-1].value  # the first round starts where seed 0 ended
    assert decision.best is rounds[-1] and len(rounds) <= refinement.MAX_ROUNDS


def test_a_median_already_within_tolerance_is_one_round() -> None:
    seed0, round_at = population(center=2e-3, shift=0.0, spread=0.0)
    decision, rounds = drive(round_at, first_stage(seed0, 0.8), 0.8)
    assert decision.reached and len(rounds) == 1


def test_the_first_stage_bracket_closes_a_side_the_rounds_lack() -> None:
    stage = [CalibrationRun(1e-3, 0.70), CalibrationRun(4e-3, 0.95), CalibrationRun(2e-3, 0.895)]
    rounds = [CalibrationRun(2e-3, 0.93)]  # the median lies above: the low end is seed 0's
    value = refinement.refine(rounds, stage, 0.9, 2e-3, tolerance=0.01).value
    assert 1e-3 < value < 2e-3
    # With no first-stage run below, the bracket is widened on that side instead.
    value = refinement.refine(rounds, stage[1:], 0.9, 2e-3, tolerance=0.01).value
    assert value == pytest.approx(2e-3 / refinement.WIDEN)
    rounds = [CalibrationRun(4e-3, 0.85)]
    value = refinement.refine(rounds, stage[:1], 0.9, 4e-3, tolerance=0.01).value
    assert value == pytest.approx(4e-3 * refinement.WIDEN)


def test_the_cap_reports_the_closest_round_flagged() -> None:
    # A response that jumps over the tolerance band: no value lands inside it.
    def round_at(value: float) -> CalibrationRun:
        return refinement.median_round(
            value, {s: (0.85 if value < 2e-3 else 0.97, False) for s in SEEDS}
        )

    stage = [CalibrationRun(1e-3, 0.85), CalibrationRun(3e-3, 0.97)]
    decision, rounds = drive(round_at, stage, 0.9, max_rounds=3)
    assert not decision.reached and len(rounds) == 3
    assert decision.best in rounds and "closest reported" in decision.reason
    assert abs(decision.best.sparsity - 0.9) == min(abs(r.sparsity - 0.9) for r in rounds)


def test_a_round_median_counts_diverged_seeds_as_above_every_target() -> None:
    seeds = {1: (0.5, False), 2: (0.6, False), 3: (0.0, True), 4: (0.7, False)}
    found = refinement.median_round(1e-3, seeds)
    assert found.sparsity == pytest.approx(0.65) and found.status == "finished"
    assert found.diverged_seeds == [3] and found.seed_sparsity["3"] == 0.0
    most = refinement.median_round(1e-3, {**seeds, 1: (0.0, True), 2: (0.0, True)})
    assert most.status == "diverged" and most.effective_sparsity == math.inf
    with pytest.raises(ValueError, match="at least one seed"):
        refinement.median_round(1e-3, {})


def test_a_round_reads_sparsity_and_status_only() -> None:
    class Sealed(dict):
        """A summary whose test accuracy may not be looked at."""

        def get(self, key, default=None):
            assert key != "test_accuracy", "a refinement round read the test accuracy"
            return super().get(key, default)

        def __getitem__(self, key):
            assert key != "test_accuracy", "a refinement round read the test accuracy"
            return super().__getitem__(key)

    records = [
        CellRecord(
            key=f"k{seed}",
            suite="s",
            status="diverged" if seed == 3 else "finished",
            config={"label": "bsqh@matched-0.9", "seed": seed},
            summary=Sealed(sparsity=0.9 + seed / 100, test_accuracy=0.5),
        )
        for seed in (1, 2, 3)
    ]
    assert study.round_sparsity(records) == {
        "bsqh@matched-0.9": {1: (0.91, False), 2: (0.92, False), 3: (0.93, True)}
    }


@pytest.mark.slow
def test_real_study_matches_every_median_and_reports_the_final_round(tmp_path: Path) -> None:
    """bSQH and GMP on real digits training (a fifth of an epoch, three seeds)."""
    source = Path(study.__file__).parents[1] / "suites" / "matched-digits.toml"
    suite = tmp_path / "tiny.toml"
    suite.write_text(
        source.read_text().replace("seeds = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", "seeds = [1, 2, 3]")
    )
    args = ["matched", "--suite", str(suite), "--methods", "bsqh,gmp-layer"]
    args += ["--epochs", "0.2", "--targets", "0.8", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    folder = tmp_path / "out" / "matched-digits"
    with (folder / "matched.csv").open() as handle:
        rows = {r["method"]: r for r in csv.DictReader(handle)}
    trace = json.loads((folder / "epochs-0.2" / "refinement" / "bsqh@0.8.json").read_text())
    final = trace["runs"][-1]
    assert trace["result"]["value"] == final["value"] == float(rows["bsqh"]["value"])
    assert rows["bsqh"]["refinement_rounds"] == str(len(trace["runs"]))
    for row in rows.values():
        assert row["calibrated"] == "True" and row["within_tolerance"] == "True", row
        assert abs(float(row["sparsity"]) - 0.8) <= 0.01
    # The reported seeds are the final round's runs: the same per-seed sparsities.
    median = sorted(final["seed_sparsity"].values())[1]
    assert float(rows["bsqh"]["sparsity"]) == pytest.approx(median)
    log = folder / "epochs-0.2" / "refinement" / "cells.log"
    trained = log.read_text().count("finished")
    assert trained >= 2 * 3  # GMP's round and bSQH's rounds, three seeds each
    # A rerun resumes: no calibration run, no round and no cell is trained again.
    assert main(args) == 0
    assert log.read_text().count("finished") == trained
    assert json.loads((folder / "epochs-0.2" / "refinement" / "bsqh@0.8.json").read_text()) == trace


def test_a_flat_slope_between_noisy_medians_does_not_jump_past_the_first_stage() -> None:
    """Measured, L0-HC at 0.95 (2 epochs): two rounds at 0.96, then a secant through them
    extrapolated to half the penalty (median 0.76). A rise below the tolerance is noise:
    the bracketing step, towards the first stage's low end, takes over."""
    stage = [
        CalibrationRun(0.01288, 0.907),
        CalibrationRun(0.12883, 1.0),
        CalibrationRun(0.03726, 0.981),
        CalibrationRun(0.01993, 0.955),
    ]
    rounds = [CalibrationRun(0.01993, 0.9612), CalibrationRun(0.01827, 0.9608)]
    value = refinement.refine(rounds, stage, 0.95, 0.01993, tolerance=0.01).value
    assert 0.01288 < value < 0.01827


def test_a_small_real_rise_is_followed_not_crept_along() -> None:
    """Measured, proximal Adam-L0 at 0.8 (4 epochs): a flat response whose seed-0 end lies
    just above; the rounds' own slope makes the step."""
    stage = [CalibrationRun(0.23155, 0.800), CalibrationRun(0.2467, 0.815)]
    rounds = [CalibrationRun(0.23155, 0.781), CalibrationRun(0.24109, 0.786)]
    value = refinement.refine(rounds, stage, 0.8, 0.23155, tolerance=0.01).value
    assert value > 0.26  # the secant: 0.24109 * exp(0.014 / 0.124) = 0.27


def test_once_the_rounds_bracket_the_target_the_step_stays_between_them() -> None:
    """Measured, proximal SGD-L1 at 0.9 (4 epochs): the two rounds nearest the target were
    both above it, and their secant, clamped, crept up from the low end (0.829, 0.838,
    0.850); the bracketing step interpolates between the two sides."""
    stage = [CalibrationRun(0.03621, 0.805), CalibrationRun(0.05204, 1.0)]
    rounds = [
        CalibrationRun(0.04071, 0.826),
        CalibrationRun(0.04519, 0.945),
        CalibrationRun(0.04343, 0.928),
        CalibrationRun(0.04097, 0.829),
    ]
    value = refinement.refine(rounds, stage, 0.9, 0.04071, tolerance=0.01, max_rounds=6).value
    assert 0.0415 < value < 0.04343


def test_a_first_stage_end_the_rounds_crept_up_to_is_widened_past() -> None:
    """Measured, proximal Adam-L0 at 0.8 (4 epochs): rounds at 0.781 to 0.789 up to
    β = 0.2471, seed 0's run above the target at 0.2473; the median's bracket lies beyond."""
    stage = [CalibrationRun(0.23155, 0.802), CalibrationRun(0.2473, 0.812)]
    rounds = [
        CalibrationRun(0.23155, 0.781),
        CalibrationRun(0.24109, 0.786),
        CalibrationRun(0.24535, 0.788),
        CalibrationRun(0.24666, 0.787),
        CalibrationRun(0.24709, 0.789),
    ]
    decision = refinement.refine(rounds, stage, 0.8, 0.23155, tolerance=0.01, max_rounds=8)
    assert not decision.done and decision.value == pytest.approx(0.24709 * refinement.WIDEN)
