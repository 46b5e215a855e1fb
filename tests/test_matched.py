"""Accuracy at matched sparsity: picking on validation from a hand-made front, and the
table built from retrained seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.ledger.records import CellRecord
from bench.report.significance import TOO_FEW_FOR_FAMILY, median_interval
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


def figures(accuracy: list[float], sparsity: list[float], failed=()) -> matched.SeedFigures:
    """Retrained seeds 0, 1, ... of one pick (the same seeds for every method)."""
    return matched.SeedFigures(
        dict(enumerate(accuracy)), dict(enumerate(sparsity)), {}, tuple(failed)
    )


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
    rows = matched.matched_rows({"emsa": per_target}, {})
    text = matched.markdown(rows, "quick", [1, 2, 3])
    line = next(line for line in text.splitlines() if line.startswith("| emsa |"))
    assert line.rstrip(" |").endswith("only at chance")


def test_rows_report_retrained_seeds_and_flag_sparsity_below_target() -> None:
    _, per_target = matched.picks_for_study("gmp", "quick-gmp", POINTS, (0.5, 0.9, 0.95))
    results = {
        "gmp@matched-0.5": figures([0.81, 0.83, 0.82], [0.56, 0.52, 0.49]),
        "gmp@matched-0.9": figures([0.70, 0.69, 0.72, 0.71], [0.88, 0.89, 0.87, 0.88]),
    }
    rows = matched.matched_rows({"gmp": per_target}, results)
    by_target = {r["target_sparsity"]: r for r in rows}
    row = by_target[0.5]
    assert row["test_accuracy"] == pytest.approx(0.82)
    assert row["n_seeds"] == 3 and row["n_failed"] == 0 and not row["below_target"]
    # Three seeds: the interval of the median is the range, and its exact level is 75 %.
    assert (row["test_accuracy_low"], row["test_accuracy_high"]) == (0.81, 0.83)
    assert row["interval_level"] == pytest.approx(0.75)
    assert (row["sparsity_low"], row["sparsity_high"]) == (0.49, 0.56)
    assert by_target[0.9]["interval_level"] == pytest.approx(0.875)  # four seeds
    assert by_target[0.9]["below_target"]  # retrained median 0.88 < 0.9: flagged, kept
    assert by_target[0.95]["trial"] is None
    text = matched.markdown(rows, "quick", [1, 2, 3])
    assert "95%" not in text and "bootstrap" not in text
    line = next(line for line in text.splitlines() if line.startswith("| gmp |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "0.820 [0.810, 0.830] (75 %) @ 0.520"
    assert cells[2].endswith("(87.5 %) @ 0.880 (!)") and cells[3] == "not reached"


def test_a_failed_seed_counts_at_chance_in_the_table_and_the_tests() -> None:
    def record(label: str, seed: int, status: str, accuracy: float | None) -> CellRecord:
        return CellRecord(
            key=f"{label}-{seed}",
            suite="quick-matched",
            status=status,
            config={"label": label, "seed": seed},
            summary={"test_accuracy": accuracy, "sparsity": 0.9, "num_classes": 10},
        )

    # The leader's seed 3 diverged with a last accuracy of 0.9: dropping it, or keeping
    # 0.9, would hide the failure; it enters at chance, 1 / 10.
    records = [record("gmp@matched-0.9", s, "finished", 0.80 + s / 100) for s in range(4)]
    records += [record("bsqh-mb@matched-0.9", s, "finished", 0.70 + s / 100) for s in range(3)]
    records.append(record("bsqh-mb@matched-0.9", 3, "diverged", 0.9))
    assert matched.classes_of(records, [None]) == 10
    results = matched.retrained_figures(records, 10)
    assert results["bsqh-mb@matched-0.9"].test_accuracy[3] == pytest.approx(0.1)
    per_method = {
        "gmp": matched.picks_for_study("gmp", "q-gmp", POINTS, (0.9,))[1],
        "bsqh-mb": matched.picks_for_study("bsqh-mb", "q-b", POINTS, (0.9,))[1],
    }
    rows = {r["method"]: r for r in matched.matched_rows(per_method, results)}
    assert rows["bsqh-mb"]["n_seeds"] == 4 and rows["bsqh-mb"]["n_failed"] == 1
    assert rows["bsqh-mb"]["test_accuracy"] == pytest.approx(0.705)  # median of 0.1, .70-.72
    assert "1 of 4 failed" in matched.markdown(list(rows.values()), "quick", [0, 1, 2, 3])
    (pair,) = matched.pairwise_rows(per_method, results, focus={"bsqh-mb"})
    assert (pair["a"], pair["b"], pair["n_pairs"]) == ("gmp", "bsqh-mb", 4)
    assert pair["effect_size"] == pytest.approx(1.0)  # gmp better on every seed, failed one too
    # Without the number of classes a failed seed cannot be scored: an error, not a drop.
    with pytest.raises(ValueError, match="did not finish"):
        matched.retrained_figures(records, matched.classes_of(records[:0], [None]))
    assert matched.classes_of([], [0.1]) == 10


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


def _studies(out: Path) -> None:
    """Tuned fronts for every method of the quick setting (each the hand-made POINTS)."""
    import tomllib

    from bench.suites import SUITES_DIR

    raw = tomllib.loads((SUITES_DIR / "quick-tuned.toml").read_text())
    for entry in raw["methods"]:
        study = out / "studies" / entry["hparams"][len("tuned:") :]
        study.mkdir(parents=True)
        (study / "best.json").write_text(json.dumps({"params": {}}))
        front = [dict(p, params={}) for p in POINTS]
        (study / "pareto.json").write_text(json.dumps({"front": front, "chance_accuracy": 0.1}))


def test_run_scores_failed_seeds_at_chance_and_writes_paired_tables(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    # Training is replaced by ledger records (the command's own code reads them back):
    # bsqh-mb's last seed diverges, so it must count at chance, 0.1, not vanish.
    from bench.commands import matched_fronts
    from bench.runner import SuiteOutcome, cell_key, cells_dir

    def fake_run_suite(suite, out, device, progress=False):
        seeds = sorted({cell.seed for cell in suite.cells()})
        for cell in suite.cells():
            label = cell.method.label
            diverged = label.startswith("bsqh-mb@") and cell.seed == seeds[-1]
            CellRecord(
                key=cell_key(cell),
                suite=suite.name,
                status="diverged" if diverged else "finished",
                config=cell.config(),
                summary={
                    "test_accuracy": 0.9 if diverged else 0.7 + 0.01 * seeds.index(cell.seed),
                    "sparsity": 0.96,
                },
            ).save(cells_dir(out, suite.name))
        return SuiteOutcome(ran=len(suite.cells()), skipped=0, failed=0, diverged=1)

    monkeypatch.setattr(matched_fronts, "run_suite", fake_run_suite)
    monkeypatch.setattr(matched_fronts, "write_report", lambda *a, **k: None)
    _studies(tmp_path)
    code = main(["matched-fronts", "--out", str(tmp_path), "--targets", "0.9", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    studies = tmp_path / "studies"
    import csv

    rows = {r["method"]: r for r in csv.DictReader((studies / "matched-quick.csv").open())}
    assert rows["bsqh-mb"]["n_failed"] == "1"
    # Ten seeds at 0.70, 0.71, ...: the diverged one at 0.1 gives the median 0.735;
    # dropped it would be 0.74, kept at its last accuracy 0.9 it would be 0.745 (gmp's).
    assert float(rows["bsqh-mb"]["test_accuracy"]) == pytest.approx(0.735)
    assert float(rows["gmp"]["test_accuracy"]) == pytest.approx(0.745)
    pairs = list(csv.DictReader((studies / "matched-quick-pairwise.csv").open()))
    (pair,) = [p for p in pairs if {p["a"], p["b"]} == {"bsqh-mb", "gmp"}]
    assert pair["n_pairs"] == "10" and int(pair["family_size"]) == len(pairs)
    # Nine tied seeds and one failure: bSQH is behind, but one seed is no evidence.
    sign = 1 if pair["a"] == "gmp" else -1
    assert sign * float(pair["effect_size"]) > 0 and float(pair["p_holm"]) == 1.0
    assert pair["verdict"].startswith("no significant difference")
    text = (studies / "matched-quick.md").read_text()
    assert "failed" in text and "Holm" in text and (studies / "matched-quick.png").is_file()


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
    # At 0.9 the seeds differ far more than the methods do (seed 5 is a bad
    # initialisation for both), yet bSQH is ahead on every seed: only a paired test sees
    # it. Six pairs give the smallest two-sided p, 2 / 2^6.
    base = [0.60, 0.75, 0.68, 0.80, 0.71, 0.40]
    results = {
        "gmp@matched-0.5": figures([0.80, 0.81, 0.82, 0.83], [0.6] * 4),
        "bsqh-mb@matched-0.5": figures([0.70, 0.71, 0.72, 0.73], [0.6] * 4),
        "l0-hc@matched-0.5": figures([0.75, 0.90, 0.60], [0.6] * 3),
        "gmp@matched-0.9": figures(base, [0.85] * 6),  # short of the target
        "bsqh-mb@matched-0.9": figures([v + 0.01 for v in base], [0.95] * 6),
    }
    rows = matched.pairwise_rows(per_method, results, focus={"bsqh-mb"})
    pairs = {(r["target_sparsity"], r["a"], r["b"]): r for r in rows}
    assert set(pairs) == {
        (0.5, "gmp", "bsqh-mb"),  # the leader at 0.5 against the others
        (0.5, "gmp", "l0-hc"),
        (0.5, "bsqh-mb", "l0-hc"),  # bSQH against the rest
        (0.9, "bsqh-mb", "gmp"),  # the leader at 0.9 is bSQH
    }
    # s >= 0.5: a family of 3 tests on 4 and 3 pairs can reach 3 x 2 / 2^4 at best.
    leader = pairs[(0.5, "gmp", "bsqh-mb")]
    assert leader["n_pairs"] == 4 and leader["p"] == pytest.approx(2 / 2**4)
    assert leader["family_size"] == 3 and leader["smallest_holm_p"] == pytest.approx(3 * 2 / 16)
    assert leader["median_difference"] == pytest.approx(0.10)
    assert {r["verdict"] for r in rows if r["target_sparsity"] == 0.5} == {TOO_FEW_FOR_FAMILY}
    assert pairs[(0.5, "bsqh-mb", "l0-hc")]["n_pairs"] == 3  # the seeds both ran
    # s >= 0.9: one test, six pairs, every one favouring bSQH by 0.01.
    ours = pairs[(0.9, "bsqh-mb", "gmp")]
    assert ours["p"] == pytest.approx(2 / 2**6) and ours["p_holm"] == pytest.approx(2 / 2**6)
    assert ours["effect_size"] == pytest.approx(1.0)
    assert ours["median_difference"] == pytest.approx(0.01)
    expected = median_interval([0.01] * 6)
    assert (ours["difference_low"], ours["interval_level"]) == pytest.approx(
        (expected.low, expected.level)
    )
    assert ours["verdict"] == "holds"
    assert ours["below_target"] == "gmp"
    text = matched.pairwise_markdown(rows)
    assert "| 0.9 | bsqh-mb | gmp (!) |" in text
    assert "Wilcoxon signed-rank" in text and "Mann" not in text
    assert "s ≥ 0.5: 3 paired tests; smallest attainable Holm-adjusted p = 0.375: " in text


def test_pairwise_leaves_out_seeds_only_one_method_ran() -> None:
    per_method = {
        "gmp": matched.picks_for_study("gmp", "q-gmp", POINTS, (0.5,))[1],
        "bsqh-mb": matched.picks_for_study("bsqh-mb", "q-b", POINTS, (0.5,))[1],
    }
    results = {
        "gmp@matched-0.5": figures([0.80, 0.81, 0.82, 0.83, 0.84], [0.6] * 5),
        "bsqh-mb@matched-0.5": figures([0.70, 0.71, 0.72], [0.6] * 3),
    }
    (row,) = matched.pairwise_rows(per_method, results)
    assert row["n_pairs"] == 3 and row["median_a"] == pytest.approx(0.81)


def test_tables_and_figure_are_written(tmp_path: Path) -> None:
    import csv

    per_method = {
        "gmp": matched.picks_for_study("gmp", "q-gmp", POINTS, (0.5, 0.95))[1],
        "bsqh-mb": matched.picks_for_study("bsqh-mb", "q-b", POINTS, (0.5,))[1],
    }
    results = {
        "gmp@matched-0.5": figures([0.80, 0.81, 0.82, 0.83], [0.6] * 4),
        "bsqh-mb@matched-0.5": figures([0.70, 0.1, 0.72, 0.73], [0.6] * 4, failed=(1,)),
    }
    rows = matched.matched_rows(per_method, results)
    pairs = matched.pairwise_rows(per_method, results, focus={"bsqh-mb"})
    matched.write_csv(rows, tmp_path / "m.csv")
    matched.write_csv(pairs, tmp_path / "p.csv", matched.PAIRWISE_COLUMNS)
    written = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert [r["n_failed"] for r in written] == ["0", "", "1"]  # the 0.95 row: not reached
    assert written[2]["interval_level"] == "0.875"
    (pair,) = csv.DictReader((tmp_path / "p.csv").open())
    assert pair["verdict"] == TOO_FEW_FOR_FAMILY and pair["n_pairs"] == "4"
    matched.plot(rows, tmp_path / "m.png", "test")
    assert (tmp_path / "m.png").stat().st_size > 0
