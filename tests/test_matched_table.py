"""The matched-sparsity tables: per-method rows with the ±tolerance flag, the paired
comparison against the reference (columns, Holm within a target, verdicts), failures
scored at chance, and the figure."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bench.ledger.records import CellRecord
from bench.matched import table
from bench.matched.study import Calibrated, SeedFigures, seed_figures
from bench.report import significance

SEEDS = list(range(1, 11))


def entry(label: str, target: float, reached: bool = True) -> Calibrated:
    return Calibrated(label, target, "beta", 1e-3, reached, 4, target, "within tolerance")


def figures(accuracies: list[float], sparsity: float, failed: tuple[int, ...] = ()) -> SeedFigures:
    return SeedFigures(
        dict(zip(SEEDS, accuracies, strict=True)),
        dict.fromkeys(SEEDS, sparsity),
        dict.fromkeys(SEEDS, round((1 - sparsity) * 1864)),
        failed,
    )


BASE = [0.80 + 0.005 * i for i in range(10)]
CALIBRATED = [entry(m, 0.9) for m in ("bsqh", "better", "worse", "same")] + [
    entry("missed", 0.9, reached=False)
]
FIGURES = {
    "bsqh@matched-0.9": figures(BASE, 0.90),
    "better@matched-0.9": figures([a + 0.03 for a in BASE], 0.905),
    "worse@matched-0.9": figures([a - 0.02 - 0.001 * i for i, a in enumerate(BASE)], 0.915),
    "same@matched-0.9": figures([a + (0.01 if i % 2 else -0.01) for i, a in enumerate(BASE)], 0.9),
}


def test_matched_rows_flag_the_tolerance_and_say_why_a_target_is_missing() -> None:
    rows = {r["method"]: r for r in table.matched_rows(CALIBRATED, FIGURES, 6.0, 0.01)}
    assert set(rows) == {"bsqh", "better", "worse", "same", "missed"}
    assert all(set(r) == set(table.MATCHED_COLUMNS) for r in rows.values())
    assert rows["better"]["within_tolerance"] is True  # 0.905: inside ±0.01
    assert rows["worse"]["within_tolerance"] is False  # 0.915: outside
    assert rows["missed"]["missing"].startswith("not reached")
    assert rows["missed"]["n_seeds"] is None
    bsqh = rows["bsqh"]
    assert bsqh["n_seeds"] == 10 and bsqh["test_accuracy"] == pytest.approx(0.8225)
    interval = significance.median_interval(BASE)
    assert (bsqh["test_accuracy_low"], bsqh["test_accuracy_high"]) == (interval.low, interval.high)
    assert bsqh["interval_level"] == pytest.approx(interval.level) and bsqh["interval_level"] > 0.95
    text = table.matched_markdown(list(rows.values()), 6.0, 0.01)
    assert "(!)" in text.split("| worse |")[1].splitlines()[0]
    assert "(!)" not in text.split("| better |")[1].splitlines()[0]


def test_paired_rows_compare_every_method_with_the_reference_under_holm(tmp_path: Path) -> None:
    rows = table.paired_rows(FIGURES, CALIBRATED, "bsqh", 6.0)
    assert [r["method"] for r in rows] == ["better", "worse", "same"]
    assert all(tuple(r) == table.PAIRED_COLUMNS for r in rows)
    by = {r["method"]: r for r in rows}
    assert by["better"]["median_difference"] == pytest.approx(0.03)
    assert by["better"]["n_pairs"] == 10
    raw = [by[m]["p"] for m in ("better", "worse", "same")]
    assert [by[m]["p_holm"] for m in ("better", "worse", "same")] == significance.holm(raw)
    assert by["better"]["p"] == pytest.approx(2 / 2**10)  # every seed favours it
    assert by["better"]["smallest_holm_p"] == pytest.approx(3 * 2 / 2**10)
    assert by["better"]["verdict"] == "more accurate than bsqh"
    assert by["worse"]["verdict"] == "less accurate than bsqh"
    assert by["same"]["verdict"] == "no difference shown"
    assert by["better"]["effect_size"] == pytest.approx(1.0)
    path = tmp_path / "paired.csv"
    table.write_csv(rows, path, table.PAIRED_COLUMNS)
    with path.open() as handle:
        assert tuple(next(csv.reader(handle))) == table.PAIRED_COLUMNS
    # Four pairs and three tests: no verdict is attainable (3 * 2 / 16 > 0.05).
    few = {
        k: SeedFigures(
            *(dict(list(d.items())[:4]) for d in (v.test_accuracy, v.sparsity, v.nonzeros))
        )
        for k, v in FIGURES.items()
    }
    assert {r["verdict"] for r in table.paired_rows(few, CALIBRATED, "bsqh", 6.0)} == {
        "too few seeds for this family"
    }


def test_a_failed_seed_counts_at_chance_not_dropped() -> None:
    def record(seed: int, status: str, accuracy: float | None) -> CellRecord:
        return CellRecord(
            key=f"k{seed}",
            suite="s",
            status=status,
            config={"label": "bsqh@matched-0.9", "seed": seed},
            summary={"test_accuracy": accuracy, "sparsity": 0.9, "nonzeros": 186},
        )

    found = seed_figures([record(1, "finished", 0.8), record(2, "diverged", 0.7)], 10)
    figures_ = found["bsqh@matched-0.9"]
    assert figures_.test_accuracy == {1: 0.8, 2: 0.1}
    assert figures_.failed == (2,)


def test_figure_is_written_at_a_readable_size(tmp_path: Path) -> None:
    from PIL import Image

    rows = table.matched_rows(CALIBRATED, FIGURES, 6.0, 0.01) + table.matched_rows(
        CALIBRATED, FIGURES, 2.0, 0.01
    )
    path = tmp_path / "matched.png"
    table.plot(rows, path, "test")
    width, height = Image.open(path).size
    assert 600 <= width <= 1000 and height <= 700


def test_a_row_with_few_pairs_does_not_silence_the_complete_rows() -> None:
    partial = dict(FIGURES)
    short = FIGURES["worse@matched-0.9"]
    partial["worse@matched-0.9"] = SeedFigures(
        *(dict(list(d.items())[:3]) for d in (short.test_accuracy, short.sparsity, short.nonzeros))
    )
    by = {r["method"]: r for r in table.paired_rows(partial, CALIBRATED, "bsqh", 6.0)}
    assert by["worse"]["verdict"] == "too few seeds for this family"
    assert by["worse"]["smallest_holm_p"] == pytest.approx(3 * 2 / 2**3)
    assert by["better"]["verdict"] == "more accurate than bsqh"


def test_a_capped_entry_shows_its_closest_round_flagged_in_both_tables() -> None:
    capped = Calibrated("capped", 0.9, "beta", 2e-3, False, 12, 0.93, "cap", rounds=4)
    found = {**FIGURES, "capped@matched-0.9": figures([a - 0.05 for a in BASE], 0.925)}
    rows = {r["method"]: r for r in table.matched_rows([*CALIBRATED, capped], found, 6.0, 0.01)}
    assert rows["capped"]["missing"] is None and rows["capped"]["n_seeds"] == 10
    assert rows["capped"]["calibrated"] is False and rows["capped"]["refinement_rounds"] == 4
    assert rows["capped"]["within_tolerance"] is False
    text = table.matched_markdown(list(rows.values()), 6.0, 0.01)
    assert text.split("| capped |")[1].splitlines()[0].rstrip(" |").endswith("(!)")
    paired = {r["method"]: r for r in table.paired_rows(found, [*CALIBRATED, capped], "bsqh", 6.0)}
    assert paired["capped"]["matched"] is False and paired["better"]["matched"] is True
    assert paired["worse"]["matched"] is False  # 0.915: its own median misses
    lines = table.paired_markdown(list(paired.values()), 6.0).splitlines()
    assert any(line.startswith("| 0.9 | capped (!) |") for line in lines)
    assert any(line.startswith("| 0.9 | better |") for line in lines)
