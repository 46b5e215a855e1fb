"""Accuracy at matched sparsity: picking on validation from a hand-made front, and the
table built from retrained seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.report.significance import bootstrap_median_ci
from bench.tuning import matched

# (trial, validation accuracy, sparsity, status): a front plus dominated and diverged points.
POINTS = [
    {"trial": 0, "val_accuracy": 0.86, "sparsity": 0.10, "status": "finished"},
    {"trial": 1, "val_accuracy": 0.84, "sparsity": 0.55, "status": "finished"},
    {"trial": 2, "val_accuracy": 0.83, "sparsity": 0.82, "status": "finished"},
    {"trial": 3, "val_accuracy": 0.80, "sparsity": 0.60, "status": "finished"},  # dominated
    {"trial": 4, "val_accuracy": 0.70, "sparsity": 0.91, "status": "finished"},
    {"trial": 5, "val_accuracy": 0.95, "sparsity": 0.99, "status": "diverged"},  # never picked
    {"trial": 6, "val_accuracy": 0.70, "sparsity": 0.93, "status": "finished"},  # ties 4, sparser
]


def test_pick_is_most_accurate_point_at_or_above_the_target() -> None:
    assert matched.pick_at_sparsity(POINTS, 0.0)["trial"] == 0
    assert matched.pick_at_sparsity(POINTS, 0.5)["trial"] == 1
    assert matched.pick_at_sparsity(POINTS, 0.55)["trial"] == 1  # >=, not >
    assert matched.pick_at_sparsity(POINTS, 0.8)["trial"] == 2
    assert matched.pick_at_sparsity(POINTS, 0.9)["trial"] == 6  # tie on accuracy: sparser
    assert matched.pick_at_sparsity(POINTS, 0.95) is None  # only the diverged trial is there
    # The rule agrees with brute force at every target.
    for target in (0.0, 0.3, 0.6, 0.85, 0.92):
        best = max(
            (
                p["val_accuracy"]
                for p in POINTS
                if p["sparsity"] >= target and p["status"] != "diverged"
            ),
            default=None,
        )
        pick = matched.pick_at_sparsity(POINTS, target)
        assert (pick is None and best is None) or pick["val_accuracy"] == best


def test_a_trial_picked_for_several_targets_is_trained_once() -> None:
    picks, per_target = matched.picks_for_study("gmp", "quick-gmp", POINTS, (0.5, 0.55, 0.9, 0.95))
    assert [p.trial for p in picks] == [1, 6]
    assert per_target[0.5] is per_target[0.55]
    assert per_target[0.95] == matched.NOT_REACHED
    assert per_target[0.5].cell_label == "gmp@matched-0.5+0.55"
    assert "/" not in per_target[0.9].cell_label


def test_points_at_chance_accuracy_do_not_match_a_sparsity() -> None:
    # A network pruned until it guesses "reaches" every sparsity; with ten classes the
    # floor is 0.1 + 0.1 * 0.9 = 0.19, so trial 7 never serves a target.
    points = [*POINTS, {"trial": 7, "val_accuracy": 0.104, "sparsity": 1.0, "status": "finished"}]
    assert matched.pick_at_sparsity(points, 0.95)["trial"] == 7  # without a floor it would
    picks, per_target = matched.picks_for_study(
        "emsa", "quick-emsa", points, (0.5, 0.9, 0.95), chance=0.1
    )
    assert [p.trial for p in picks] == [1, 6]
    assert per_target[0.95] == matched.ONLY_AT_CHANCE
    rows = matched.matched_rows({"emsa": per_target}, {}, bootstrap_median_ci)
    text = matched.markdown(rows, "quick", [1, 2, 3])
    line = next(line for line in text.splitlines() if line.startswith("| emsa |"))
    assert line.rstrip(" |").endswith("only at chance")


def test_rows_report_retrained_seeds_and_flag_sparsity_below_target() -> None:
    _, per_target = matched.picks_for_study("gmp", "quick-gmp", POINTS, (0.5, 0.9, 0.95))
    results = {
        "gmp@matched-0.5": matched.SeedFigures([0.81, 0.83, 0.82], [0.56, 0.52, 0.49]),
        "gmp@matched-0.9": matched.SeedFigures([0.70, 0.69, 0.72], [0.88, 0.89, 0.87]),
    }
    rows = matched.matched_rows({"gmp": per_target}, results, bootstrap_median_ci)
    by_target = {r["target_sparsity"]: r for r in rows}
    assert by_target[0.5]["test_accuracy"] == pytest.approx(0.82)
    assert by_target[0.5]["n_seeds"] == 3 and not by_target[0.5]["below_target"]
    assert by_target[0.9]["below_target"]  # retrained median 0.88 < 0.9: flagged, kept
    assert by_target[0.95]["trial"] is None
    text = matched.markdown(rows, "quick", [1, 2, 3])
    line = next(line for line in text.splitlines() if line.startswith("| gmp |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1].startswith("0.820 [") and cells[1].endswith("@ 0.520")
    assert cells[2].endswith("(!)") and cells[3] == "not reached"


def test_dry_run_prints_picks_from_the_studies(tmp_path: Path, capsys) -> None:
    studies = tmp_path / "studies"
    import tomllib

    from bench.suites import SUITES_DIR

    raw = tomllib.loads((SUITES_DIR / "quick-tuned.toml").read_text())
    for entry in raw["methods"]:
        study = entry["hparams"][len("tuned:") :]
        (studies / study).mkdir(parents=True)
        (studies / study / "best.json").write_text(json.dumps({"params": {}}))
        front = [dict(p, params={}) for p in POINTS]
        (studies / study / "pareto.json").write_text(json.dumps({"front": front}))
    code = main(["matched-fronts", "--setting", "quick", "--out", str(tmp_path), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "bsqh-mb at sparsity >= 0.8: trial 2 (val acc 0.8300" in out
    assert "gmp at sparsity >= 0.95: not reached" in out


def test_missing_study_is_one_line_error(tmp_path: Path, capsys) -> None:
    code = main(["matched-fronts", "--setting", "quick", "--out", str(tmp_path), "--dry-run"])
    assert code == 2
    assert "make tune" in capsys.readouterr().err


def test_pairwise_compares_methods_only_at_the_same_target() -> None:
    # Three methods at s >= 0.5; at 0.9 only two. bSQH is compared with everyone, the
    # leader with everyone, and nothing across targets.
    per_method = {
        "gmp": matched.picks_for_study("gmp", "q-gmp", POINTS, (0.5, 0.9))[1],
        "bsqh-mb": matched.picks_for_study("bsqh-mb", "q-b", POINTS, (0.5, 0.9))[1],
        "sgd": {0.5: matched.NOT_REACHED, 0.9: matched.NOT_REACHED},
        "l0-hc": matched.picks_for_study("l0-hc", "q-l", POINTS, (0.5,))[1],
    }
    results = {
        "gmp@matched-0.5": matched.SeedFigures([0.80, 0.81, 0.82, 0.83], [0.6] * 4),
        "bsqh-mb@matched-0.5": matched.SeedFigures([0.70, 0.71, 0.72, 0.73], [0.6] * 4),
        "l0-hc@matched-0.5": matched.SeedFigures([0.75, 0.90, 0.60], [0.6] * 3),
        "gmp@matched-0.9": matched.SeedFigures([0.60, 0.61, 0.62], [0.85] * 3),  # short
        "bsqh-mb@matched-0.9": matched.SeedFigures([0.70, 0.71, 0.72], [0.95] * 3),
    }
    rows = matched.pairwise_rows(per_method, results, focus={"bsqh-mb"})
    pairs = {(r["target_sparsity"], r["a"], r["b"]): r for r in rows}
    assert set(pairs) == {
        (0.5, "gmp", "bsqh-mb"),  # the leader at 0.5 against the others
        (0.5, "gmp", "l0-hc"),
        (0.5, "bsqh-mb", "l0-hc"),  # bSQH against the rest
        (0.9, "bsqh-mb", "gmp"),  # the leader at 0.9 is bSQH
    }
    assert pairs[(0.5, "gmp", "bsqh-mb")]["p"] == pytest.approx(2 / 70)  # exact U test
    assert pairs[(0.5, "gmp", "bsqh-mb")]["verdict"] == "holds"
    assert pairs[(0.5, "bsqh-mb", "l0-hc")]["verdict"].startswith("no significant")
    assert pairs[(0.9, "bsqh-mb", "gmp")]["below_target"] == "gmp"
    text = matched.pairwise_markdown(rows)
    assert "| 0.9 | bsqh-mb | gmp (!) |" in text
