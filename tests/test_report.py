"""The report stage: synthetic cell records in, CSV, PNG and Markdown checked against them.

The records are built by hand so that every number the report prints (medians, spreads,
time to target, claim counts) can be recomputed here from the inputs, independently of
the report's own code.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.ledger.records import CellRecord
from bench.report import ReportPaths, write_report
from bench.report.stats import seed_band, spans_decades, target_hit, time_to_target
from bench.training.metrics import CURVE_FIELDS, SUMMARY_FIELDS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TARGET = 0.8
SUITE = "synthetic"

# Test accuracy at each evaluation point, per (method, seed). Evaluation i of seed s
# happens at device time i * (s + 1) seconds, so seeds are evaluated at different times.
ACCURACIES = {
    ("bsqh-full", 0): [0.10, 0.50, 0.85, 0.90, 0.91],
    ("bsqh-full", 1): [0.10, 0.60, 0.82, 0.88, 0.93],
    ("bsqh-full", 2): [0.10, 0.40, 0.81, 0.86, 0.89],
    ("sgd-mini", 0): [0.10, 0.70, 0.81, 0.84],
    ("sgd-mini", 1): [0.10, 0.50, 0.79, 0.80],
    ("sgd-mini", 2): [0.10, 0.50, 0.60, 0.70],
    ("adam-mini", 0): [0.10, 0.30, 0.50, 0.60],
    ("adam-mini", 1): [0.10, 0.40, 0.55, 0.65],
    ("adam-mini", 2): [0.10, 0.35, 0.52, 0.62],
}
OPTIMIZER = {"bsqh-full": "bsqh", "sgd-mini": "sgd", "adam-mini": "adam"}
MODE = {"bsqh-full": "fullbatch", "sgd-mini": "minibatch", "adam-mini": "minibatch"}
HPARAMS = {
    "bsqh-full": {"eps": 0.5, "beta": 1e-3, "sigma": 2.0, "zeta": 0.9},
    "sgd-mini": {"lr": 0.05, "momentum": 0.9},
    "adam-mini": {"lr": 1e-3, "betas": [0.9, 0.999]},
}
SPARSITY = {"bsqh-full": 0.6, "sgd-mini": 0.0, "adam-mini": 0.1}
PRUNABLE = 10_000
NUM_CLASSES = 10  # a failed cell counts at chance, 0.1, in medians and comparisons
CHANCE = 1 / NUM_CLASSES


def curve_point(method: str, seed: int, i: int, accuracy: float) -> dict:
    """One evaluation point with every CURVE_FIELDS key; eps only for bSQH."""
    is_bsqh = OPTIMIZER[method] == "bsqh"
    sparsity = SPARSITY[method] * i / 4 + 0.01 * seed
    return {
        "iteration": 10 * i,
        "epoch": float(i),
        "device_time_s": float(i * (seed + 1)),
        "objective": 2.0 / (1 + i) + 0.01 * seed,
        "train_loss": 1.5 / (1 + i),
        "val_accuracy": accuracy - 0.01,
        "test_accuracy": accuracy,
        "sparsity": sparsity,
        "nonzeros": round(PRUNABLE * (1 - sparsity)),
        "nonzero_macs": round(50_000 * (1 - sparsity)),
        "eps": 0.5 * 0.9**i if is_bsqh else None,
        "accept_rate": (1.0 - 0.05 * i) if is_bsqh else None,
        "forward_passes": 30 * i if is_bsqh else 10 * i,
        "backward_passes": 10 * i,
    }


def make_record(
    method: str,
    seed: int,
    *,
    dataset: str = "digits",
    model: str = "lenet",
    status: str = "finished",
    accuracies: list[float] | None = None,
    accepted_increases: int = 0,
    checked: bool = True,
    error: str | None = None,
) -> CellRecord:
    """A cell as the runner would record it; a failed cell has no curve and no summary."""
    accuracies = ACCURACIES.get((method, seed), [0.1, 0.3]) if accuracies is None else accuracies
    curve = [curve_point(method, seed, i, a) for i, a in enumerate(accuracies)]
    if status == "diverged":
        curve[-1]["objective"] = float("nan")
    summary: dict = {}
    if curve and status != "failed":
        last = curve[-1]
        summary = {f: last.get(f) for f in SUMMARY_FIELDS if f in last}
        summary["device_time_s"] = last["device_time_s"]
        summary.update(
            eval_time_s=0.5,
            warmup_time_s=0.25,
            iterations=last["iteration"],
            epochs=last["epoch"],
            num_classes=NUM_CLASSES,
        )
        if OPTIMIZER[method] == "bsqh":
            summary.update(attempts=40 + seed, rejected_attempts=3 + seed)
            summary["accepted_increases"] = accepted_increases
            # the descent check ran on every accepted step, unless ``checked`` is False
            summary["checked_steps"] = (
                (37 if checked else 0) if MODE[method] == "fullbatch" else None
            )
    if status == "failed":
        curve = []
    key = f"{dataset}-{model}-{method}-s{seed}"
    return CellRecord(
        key=key,
        suite=SUITE,
        status=status,
        config={
            "label": method,
            "method": OPTIMIZER[method],
            "hparams": HPARAMS[method],
            "model": model,
            "model_options": {},
            "dataset": dataset,
            "data": {},
            "seed": seed,
            "mode": MODE[method],
            "batch_size": None if MODE[method] == "fullbatch" else 64,
            "chunk_size": None,
            "budget": {"epochs": 4},
        },
        summary=summary,
        curve=curve,
        layer_sparsity={"0.weight": 0.5},
        environment={
            "device": "cpu",
            "device_name": "Test CPU",
            "torch": "2.4.0",
            "python": "3.11.2",
            "git_commit": "abc123",
            "platform": "linux",
        },
        mlflow_run_id=f"run-{key}",
        error=error,
        wall_time_s=2.0 + seed,
    )


def suite_records(bsqh_increases: int = 0) -> list[CellRecord]:
    """Three methods x three seeds on digits, one diverged and one failed cell, and a
    second dataset x model with SGD alone (no eps anywhere there)."""
    records = [
        make_record(method, seed, accepted_increases=bsqh_increases if seed == 1 else 0)
        for (method, seed) in ACCURACIES
    ]
    records.append(
        make_record(
            "adam-mini",
            3,
            status="diverged",
            accuracies=[0.1, 0.45, 0.5],
            error="objective became nan at iteration 20",
        )
    )
    records.append(
        make_record(
            "sgd-mini", 3, status="failed", error="Traceback ...\nRuntimeError: out of memory"
        )
    )
    records += [
        make_record("sgd-mini", s, dataset="fashion-mnist", model="mlp", accuracies=[0.1, 0.7])
        for s in (0, 1)
    ]
    return records


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportPaths, list[CellRecord]]:
    records = suite_records()
    out = tmp_path_factory.mktemp("report")
    paths = write_report(
        records, out, suite=SUITE, target_accuracy=TARGET, description="Synthetic suite."
    )
    return paths, records


def section(text: str, heading: str) -> str:
    """The text under a Markdown heading, up to the next heading of the same or higher level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1 :]
    stops = [rest.find("\n" + "#" * n + " ") for n in range(1, len(level) + 1)]
    stops = [s for s in stops if s >= 0]
    return rest[: min(stops)] if stops else rest


def table_row(text: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    line = next(line for line in text.splitlines() if line.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_runs_csv_one_row_per_cell_with_values(report) -> None:
    paths, records = report
    runs = pd.read_csv(paths.runs_csv)
    required = [
        *("method", "optimizer", "model", "dataset", "seed", "mode", "status"),
        *("test_accuracy", "val_accuracy", "sparsity", "nonzeros", "nonzero_macs"),
        *("device_time_s", "eval_time_s", "warmup_time_s", "iterations", "epochs"),
        *("accept_rate", "eps", "rejected_attempts", "attempts", "accepted_increases"),
        *("forward_passes", "backward_passes", "wall_time_s", "mlflow_run_id", "key", "error"),
    ]
    assert set(required) <= set(runs.columns)
    assert {"hp_lr", "hp_eps", "hp_momentum", "hp_betas"} <= set(runs.columns)
    assert len(runs) == len(records)
    assert sorted(runs["key"]) == sorted(r.key for r in records)

    by_key = runs.set_index("key")
    for record in records:
        row = by_key.loc[record.key]
        assert row["method"] == record.config["label"]
        assert row["optimizer"] == record.config["method"]
        assert row["status"] == record.status
        assert row["seed"] == record.config["seed"]
        assert row["wall_time_s"] == pytest.approx(record.wall_time_s)
        for name in ("test_accuracy", "sparsity", "nonzeros", "device_time_s", "attempts"):
            expected = record.summary.get(name)
            if expected is None:
                assert pd.isna(row[name])
            else:
                assert row[name] == pytest.approx(expected)
        for name, value in record.config["hparams"].items():
            if not isinstance(value, list):
                assert row[f"hp_{name}"] == pytest.approx(value)
    failed = by_key.loc["digits-lenet-sgd-mini-s3"]
    assert "out of memory" in failed["error"]
    assert by_key.loc["digits-lenet-adam-mini-s0", "hp_betas"] == "[0.9, 0.999]"
    # Counts stay integers in the file even though the failed cell has none.
    text = pd.read_csv(paths.runs_csv, dtype=str, keep_default_na=False)
    assert all(v == "" or v.isdigit() for v in text["nonzeros"])
    assert (text["nonzeros"] == "").sum() == 1


def test_curves_csv_one_row_per_point(report) -> None:
    paths, records = report
    curves = pd.read_csv(paths.curves_csv)
    lead = ["method", "optimizer", "model", "dataset", "seed", "mode", "status", "key"]
    assert list(curves.columns[: len(lead)]) == lead
    assert set(CURVE_FIELDS) <= set(curves.columns)
    assert len(curves) == sum(len(r.curve) for r in records)
    for record in records:
        points = curves[curves["key"] == record.key]
        assert points["test_accuracy"].tolist() == [p["test_accuracy"] for p in record.curve]
        assert points["device_time_s"].tolist() == [p["device_time_s"] for p in record.curve]
    sgd = curves[curves["optimizer"] == "sgd"]
    assert sgd["eps"].isna().all()
    bsqh = curves[curves["optimizer"] == "bsqh"]
    assert bsqh["eps"].notna().all()


def test_figures_are_real_pngs(report) -> None:
    paths, _ = report
    names = {p.name for p in paths.figures}
    for stem in ("digits__lenet__", "fashion-mnist__mlp__"):
        for kind in (
            "train_loss_curves",
            "test_accuracy_curves",
            "sparsity_curves",
            "objective_by_penalty",
            "accuracy_vs_sparsity",
            "layer_sparsity",
        ):
            assert f"{stem}{kind}.png" in names
    # J mixes each method's own penalty: never on one shared axis.
    assert not any("objective_curves" in name or "objective_vs" in name for name in names)
    assert "digits__lenet__bsqh_eps_accept_rate.png" in names
    # No method on fashion-mnist x mlp has eps: that figure is skipped, not drawn empty.
    assert "fashion-mnist__mlp__bsqh_eps_accept_rate.png" not in names
    for path in paths.figures:
        assert path.parent == paths.report_md.parent / "figures"
        data = path.read_bytes()
        assert len(data) > 1000
        assert data.startswith(PNG_MAGIC)


def _scored(records: list[CellRecord], method: str) -> list[float]:
    """Test accuracy of every digits cell of ``method``, failed cells at chance."""
    return [
        r.summary["test_accuracy"] if r.status == "finished" else CHANCE
        for r in records
        if r.config["label"] == method and r.config["dataset"] == "digits"
    ]


def test_report_tables_count_failed_cells_at_chance(report) -> None:
    paths, records = report
    text = paths.report_md.read_text()
    assert text.startswith(f"# Benchmark report: {SUITE}")
    assert "Synthetic suite." in text
    setup = section(text, "## Setup")
    assert "Test CPU (cpu)" in setup and "2.4.0" in setup and "abc123" in setup
    assert "finished 11, diverged 1, capped 0, failed 1, killed 0" in setup

    digits = section(text, "### digits × lenet")
    for method in ("bsqh-full", "sgd-mini", "adam-mini"):
        done = [
            r.summary
            for r in records
            if r.config["label"] == method and r.config["dataset"] == "digits"
            if r.status == "finished"
        ]
        finals = [s["test_accuracy"] for s in done]
        assert finals == [ACCURACIES[(method, seed)][-1] for seed in range(3)]
        scored = _scored(records, method)
        row = table_row(digits, method)
        assert row[1] == str(len(scored))  # every cell, failed ones included
        spread = (max(scored) - min(scored)) / 2
        assert row[3] == f"{statistics.median(scored):.3f} ± {spread:.3f}"
        assert row[4] == f"{statistics.median(s['sparsity'] for s in done):.3f}"
        assert row[5] == f"{statistics.median(s['nonzeros'] for s in done):,.0f}"
        assert row[6] == f"{statistics.median(s['device_time_s'] for s in done):.2f}"
    # adam's diverged seed (last good accuracy 0.5) counts at 0.1: median of
    # 0.60, 0.65, 0.62 and 0.1 is (0.60 + 0.62) / 2.
    assert table_row(digits, "adam-mini")[3].startswith("0.610 ± ")
    assert table_row(digits, "adam-mini")[2] == "1 diverged"
    assert table_row(digits, "sgd-mini")[2] == "1 failed"
    assert table_row(digits, "bsqh-full")[2] == "0"
    assert "counts at **chance accuracy**" in text
    # Accept rate for bSQH only: final accept rate 1 - 0.05 * 4 on every seed.
    assert table_row(digits, "bsqh-full")[-1] == "0.800"
    assert table_row(digits, "sgd-mini")[-1] == "–"
    assert "](figures/digits__lenet__objective_by_penalty.png)" in digits
    assert "](figures/digits__lenet__bsqh_eps_accept_rate.png)" in digits
    assert "### fashion-mnist × mlp" in text


def _expected_target(method: str) -> tuple[list[float], list[float]]:
    """Per seed: device time and test accuracy where validation accuracy first reaches it."""
    times, tests = [], []
    for seed in range(3):
        accuracies = ACCURACIES[(method, seed)]
        for i, accuracy in enumerate(accuracies):
            if curve_point(method, seed, i, accuracy)["val_accuracy"] >= TARGET:
                times.append(float(i * (seed + 1)))
                tests.append(accuracy)
                break
    return times, tests


def test_time_to_target_selects_on_validation_and_reports_test(report) -> None:
    paths, records = report
    text = paths.report_md.read_text()
    assert "**validation** accuracy" in text and "**test** accuracy" in text
    digits = section(text, "### digits × lenet")
    header = table_row(digits, "Method")
    column = header.index(f"Time to val {TARGET:g} [s]")
    assert header[column + 1] == "Test acc. then"
    for method in ("bsqh-full", "sgd-mini", "adam-mini"):
        times, tests = _expected_target(method)
        row = table_row(digits, method)
        n = len(_scored(records, method))  # a failed cell never reaches the target
        missed = n - len(times)
        padded = sorted(times + [float("inf")] * missed)
        if not times:
            assert row[column] == f"not reached ({n}/{n})" and row[column + 1] == "–"
            continue
        middle = statistics.median(padded) if missed < n / 2 else float("inf")
        text_time = f"{middle:.2f}" if middle != float("inf") else ""
        if missed:
            assert row[column].endswith(f"not reached ({missed}/{n})")
        if text_time:
            assert row[column].startswith(text_time)
        assert row[column + 1] == f"{statistics.median(tests):.3f}"


def test_time_to_target_takes_first_crossing_of_validation() -> None:
    curve = pd.DataFrame(
        {
            "device_time_s": [0.0, 1.5, 3.0, 4.5],
            "val_accuracy": [0.2, 0.81, 0.7, 0.9],
            "test_accuracy": [0.9, 0.5, 0.95, 0.2],  # never used to select the moment
        }
    )
    assert time_to_target(curve, 0.8) == 1.5
    assert target_hit(curve, 0.8) == (1.5, 0.5)
    assert time_to_target(curve, 0.95) is None


def test_claims_count_accepted_increases_and_rejections(report) -> None:
    paths, records = report
    claims = section(paths.report_md.read_text(), "## Claims")
    bsqh = [r for r in records if r.config["method"] == "bsqh"]
    accepted = sum(r.summary["attempts"] - r.summary["rejected_attempts"] for r in bsqh)
    line = next(line for line in claims.splitlines() if "never increased" in line)
    checked = sum(r.summary["checked_steps"] for r in bsqh)
    assert (
        f"**holds** (0 increases over {checked} checked accepted steps ({accepted} accepted) "
        f"in {len(bsqh)} runs)"
    ) in line

    rejected = sum(r.summary["rejected_attempts"] for r in bsqh)
    attempts = sum(r.summary["attempts"] for r in bsqh)
    line = next(line for line in claims.splitlines() if "rejected bSQH attempts" in line)
    assert f"{100 * rejected / attempts:.1f}% ({rejected} of {attempts})" in line

    line = next(line for line in claims.splitlines() if "Most accurate method on digits" in line)
    # bSQH beats SGD on each of the 3 seeds both ran (SGD's failed seed 3 has no bSQH
    # partner): p = 2 / 2^3 = 0.25 at best, and the family of 2 comparisons could reach
    # 2 x 0.25 = 0.5 at best, so there is no verdict, said as such.
    assert "bsqh-full" in line and "**too few seeds for this family**" in line
    assert "(wins/losses/ties 3/0/0)" in line and "rank-biserial r = +1.00" in line
    # The runner-up pair (bsqh-full, sgd-mini) is also "bsqh-full against sgd-mini": one
    # test, so the family has 2 (adam-mini is the other), not 3.
    assert "p = 0.25" in line and "Holm-adjusted p = 0.5 (family of 2)" in line
    assert "left out: 1 seed that only one of the two ran" in line
    # The differences 0.07, 0.13, 0.19 are their own range: the 75 % interval of 3.
    assert "median paired difference 0.130 [0.070, 0.190] (75 %)" in line
    family = next(line for line in claims.splitlines() if line.startswith("- Comparative"))
    assert "2 paired tests on 3 seeds; smallest attainable Holm-adjusted p = 0.5" in family
    line = next(line for line in claims.splitlines() if "Most accurate method on fashion" in line)
    assert "**not applicable**" in line  # one method there
    line = next(
        line for line in claims.splitlines() if "within 1 point" in line and "digits" in line
    )
    assert "bsqh-full" in line


def test_claim_fails_when_an_accepted_step_raised_the_objective(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the text matters here; the figures of such a suite are the report fixture's.
    import bench.report

    monkeypatch.setattr(bench.report, "draw_figures", lambda *args, **kwargs: [])
    monkeypatch.setattr(bench.report.comparison, "draw_profile", lambda *args, **kwargs: None)
    paths = write_report(suite_records(bsqh_increases=2), tmp_path, suite=SUITE)
    claims = section(paths.report_md.read_text(), "## Claims")
    line = next(line for line in claims.splitlines() if "never increased" in line)
    assert "**does not hold** (2 increases over" in line
    assert "digits-lenet-bsqh-full-s1: 2" in line
    # Without a target the column is omitted.
    assert "Time to" not in paths.report_md.read_text()


def test_unfinished_cells_are_listed(report) -> None:
    paths, _ = report
    listed = section(paths.report_md.read_text(), "## Diverged, capped, failed and killed cells")
    diverged = table_row(listed, "digits-lenet-adam-mini-s3")
    assert "diverged" in diverged
    assert "objective became nan at iteration 20" in diverged
    # Last good evaluation: the one before the NaN objective (iteration 10, accuracy 0.45).
    assert diverged[6] == "10" and diverged[9] == "0.450"
    failed = table_row(listed, "digits-lenet-sgd-mini-s3")
    assert "failed" in failed and "RuntimeError: out of memory" in failed


def test_seed_band_interpolates_onto_shared_span() -> None:
    # Seed a: y = t on [0, 10]; seed b: y = 2t on [0, 8], evaluated at other times.
    curves = pd.DataFrame(
        {
            "method": "m",
            "key": ["a"] * 3 + ["b"] * 5,
            "device_time_s": [0.0, 5.0, 10.0, 0.0, 2.0, 4.0, 6.0, 8.0],
            "objective": [0.0, 5.0, 10.0, 0.0, 4.0, 8.0, 12.0, 16.0],
        }
    )
    band = seed_band(curves, "objective")
    assert band["device_time_s"].min() == 0.0 and band["device_time_s"].max() == 8.0
    t = band["device_time_s"].to_numpy()
    np.testing.assert_allclose(band["low"], t)
    np.testing.assert_allclose(band["high"], 2 * t)
    np.testing.assert_allclose(band["median"], 1.5 * t)
    assert (band["n_seeds"] == 2).all()
    assert spans_decades([0.01, 5.0]) and not spans_decades([0.1, 5.0, 0.0])


def test_empty_suite_still_writes_every_file(tmp_path: Path) -> None:
    paths = write_report([], tmp_path, suite="empty", target_accuracy=0.9)
    assert pd.read_csv(paths.runs_csv).empty
    assert pd.read_csv(paths.curves_csv).empty
    assert paths.figures == []
    assert "No cells were recorded." in paths.report_md.read_text()


def test_comparison_files_and_sections(report) -> None:
    """targets.csv covers every cell x grid target; the profile is a share."""
    from bench.report.profiles import ACCURACY_GRID, PROFILE_TAUS, SPARSITY_GRID

    paths, records = report
    targets = pd.read_csv(paths.targets_csv)
    assert len(targets) == len(records) * len(ACCURACY_GRID) * len(SPARSITY_GRID)
    # bsqh-full seed 0 reaches validation accuracy 0.84 >= 0.8 at evaluation 2 (t = 2 s),
    # where its sparsity is 0.6 * 2 / 4 = 0.3: the joint target (0.8, 0.5) waits for
    # evaluation 4 (t = 4 s), whose test accuracy is 0.91.
    row = targets[
        (targets["key"] == "digits-lenet-bsqh-full-s0")
        & (targets["accuracy"] == 0.8)
        & (targets["sparsity"] == 0.5)
    ]
    assert row["time_s"].tolist() == [4.0] and row["test_accuracy"].tolist() == [0.91]
    # Test accuracy 0.85 at t = 2 does not meet (0.85, 0): validation is 0.84 there.
    row = targets[
        (targets["key"] == "digits-lenet-bsqh-full-s0")
        & (targets["accuracy"] == 0.85)
        & (targets["sparsity"] == 0.0)
    ]
    assert row["time_s"].tolist() == [3.0]
    failed = targets[targets["key"] == "digits-lenet-adam-mini-s3"]
    assert np.isinf(failed["time_s"]).all()  # a diverged cell never solves a problem
    profile = pd.read_csv(paths.profile_csv)
    assert set(profile["tau"]) == set(PROFILE_TAUS)
    assert profile["rho"].between(0, 1).all()
    for _, part in profile.groupby("method"):
        assert part.sort_values("tau")["rho"].is_monotonic_increasing
    text = paths.report_md.read_text()
    ci = section(text, "## Medians with confidence intervals")
    bsqh = table_row(section(ci, "### digits × lenet"), "bsqh-full")
    # median of 0.91, 0.93, 0.89 is 0.91; with 3 seeds the interval is their range,
    # whose exact level is 1 - 2 / 2^3 = 75 %, and that is what is printed
    assert bsqh[1] == "3" and bsqh[2] == "0"
    assert bsqh[3] == "0.910 [0.890, 0.930] (75 %)"
    sgd = table_row(section(ci, "### digits × lenet"), "sgd-mini")
    # 0.84, 0.80, 0.70 and the failed seed at 0.1: four values, the range at 87.5 %
    assert sgd[2] == "1" and sgd[3] == "0.750 [0.100, 0.840] (87.5 %)"
    assert "95 %" in ci and "percentile" not in ci
    assert "## Joint time-to-target" in text and "## Performance profile" in text
    assert (paths.report_md.parent / "figures" / "performance_profile.png").read_bytes()[
        :8
    ] == PNG_MAGIC
