"""Statistics of the report: bootstrap intervals, the exact U test, seed thresholds,
joint time-to-target and performance profiles, each against hand-computed cases."""

from __future__ import annotations

import itertools
import math
from itertools import combinations, pairwise

import numpy as np
import pandas as pd
import pytest

from bench.report.claims import (
    bsqh_against_peers,
    family_size_bound,
    judge_claims,
    monotone_descent,
    most_accurate,
)
from bench.report.profiles import (
    joint_target_hit,
    joint_time_to_target,
    performance_ratios,
    problem_matrix,
    profile,
    target_times,
)
from bench.report.significance import (
    Interval,
    bootstrap_median_ci,
    failure_accuracy,
    holm,
    judge,
    mann_whitney_u,
    median_interval,
    order_statistic_level,
    paired_compare,
    scored_accuracy,
    smallest_holm_p,
    smallest_p,
    smallest_paired_p,
    verdict_possible,
)
from bench.report.stats import method_table


def test_bootstrap_interval_contains_the_median_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (5, 20, 80, 320):
        values = rng.normal(0.8, 0.05, size=n)
        centre, low, high = bootstrap_median_ci(values)
        assert centre == pytest.approx(float(np.median(values)))
        assert low <= centre <= high
        widths.append(high - low)
    assert all(a > b for a, b in pairwise(widths))


def test_bootstrap_is_reproducible_and_handles_degenerate_input() -> None:
    values = [0.7, 0.9, 0.8, 0.85]
    assert bootstrap_median_ci(values) == bootstrap_median_ci(values)
    assert bootstrap_median_ci([0.5]) == (0.5, 0.5, 0.5)
    assert all(math.isnan(v) for v in bootstrap_median_ci([None, float("nan")]))
    # A bootstrap median never leaves the range of the data.
    _, low, high = bootstrap_median_ci(values)
    assert min(values) <= low and high <= max(values)


def test_mann_whitney_hand_computed_small_cases() -> None:
    # 3 vs 3, complete separation: U = 9; only 2 of the C(6,3) = 20 splits are that
    # extreme (U = 0 or 9), so p = 0.1.
    u, p = mann_whitney_u([4, 5, 6], [1, 2, 3])
    assert u == 9 and p == pytest.approx(0.1)
    assert smallest_p(3, 3) == pytest.approx(0.1)
    # Swapping the groups mirrors U and keeps p.
    u2, p2 = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert u2 == 0 and p2 == pytest.approx(p)
    # Identical groups: U at its mean, p = 1.
    assert mann_whitney_u([1, 1], [1, 1]) == (2.0, 1.0)
    with pytest.raises(ValueError, match="both groups"):
        mann_whitney_u([], [1.0])


def test_mann_whitney_with_ties_matches_brute_force() -> None:
    a, b = [0.8, 0.8, 0.9, 0.7], [0.8, 0.6, 0.7]
    pooled = np.array(a + b)
    # Midranks by hand: values sorted 0.6 | 0.7 0.7 | 0.8 0.8 0.8 | 0.9.
    midrank = {0.6: 1.0, 0.7: 2.5, 0.8: 5.0, 0.9: 7.0}
    ranks = np.array([midrank[v] for v in pooled])
    observed = ranks[:4].sum() - 10
    splits = [ranks[list(i)].sum() - 10 for i in combinations(range(7), 4)]
    expected = np.mean([abs(s - 6) >= abs(observed - 6) - 1e-9 for s in splits])
    u, p = mann_whitney_u(a, b)
    assert u == pytest.approx(observed) and p == pytest.approx(expected)


def test_mann_whitney_against_scipy_without_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for n, m in ((3, 3), (4, 5), (6, 4), (8, 8)):
        a, b = rng.normal(0, 1, n), rng.normal(0.7, 1, m)
        u, p = mann_whitney_u(a, b)
        ref = stats.mannwhitneyu(a, b, alternative="two-sided", method="exact")
        assert u == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)


def _runs(values: dict[str, list[float]], optimizer: dict[str, str] | None = None) -> pd.DataFrame:
    rows = [
        {
            "dataset": "d",
            "model": "m",
            "method": method,
            "optimizer": (optimizer or {}).get(method, method),
            "status": "finished",
            "seed": i,
            "test_accuracy": v,
        }
        for method, seeds in values.items()
        for i, v in enumerate(seeds)
    ]
    return pd.DataFrame(rows)


def _table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for method, cells in runs.groupby("method"):
        rows.append(
            {
                "dataset": "d",
                "model": "m",
                "method": method,
                "optimizer": cells["optimizer"].iloc[0],
                "n_finished": len(cells),
                "n_cells": len(cells),
                "acc_median": float(cells["test_accuracy"].median()),
                "sparsity_median": 0.5,
            }
        )
    return pd.DataFrame(rows)


def _separated(n: int, gap: float = 0.3) -> tuple[list[float], list[float]]:
    better = [0.9 + 0.001 * i for i in range(n)]
    return better, [v - gap + 0.002 * (i % 3) for i, v in enumerate(better)]


def test_a_family_that_cannot_reach_alpha_says_too_few_seeds() -> None:
    # Four paired seeds, B beaten on every one: p = 2 / 2^4 = 0.125 at best. No verdict.
    a, b = _separated(4)
    runs = _runs({"a": a, "b": b})
    family, claim = judge_claims(most_accurate(_table(runs), runs))
    assert claim.verdict == "too few seeds for this family"
    assert family.verdict == "too few seeds for this family"
    assert "smallest attainable Holm-adjusted p = 0.125" in family.evidence
    assert "p = 0.125, rank-biserial r = +1.00" in claim.evidence
    assert "(87.5 %)" in claim.evidence  # the interval of 4 differences is their range


def test_ten_paired_seeds_give_a_verdict_with_holm_adjusted_p() -> None:
    a, b = _separated(10)
    runs = _runs({"bsqh-mb": a, "gmp": b, "sgd": list(a)}, {"bsqh-mb": "bsqh"})
    table = _table(runs)
    claims = judge_claims(bsqh_against_peers(table, runs))
    family, *tests = claims
    assert family.verdict == "measured" and "2 paired tests on 10 seeds" in family.evidence
    verdicts = {c.statement.split(" on ")[0]: c for c in tests}
    over_gmp = verdicts["bsqh-mb is more accurate than gmp"]
    # Raw p = 2 / 1024 against gmp and 1 against sgd; Holm multiplies the smallest by 2.
    assert over_gmp.verdict == "holds"
    assert "p = 0.00195" in over_gmp.evidence and "Holm-adjusted p = 0.00391" in over_gmp.evidence
    # sgd here is bsqh-mb's equal on every seed: ten zero differences, p = 1.
    assert verdicts["bsqh-mb is more accurate than sgd"].verdict.startswith(
        "no significant difference"
    )


def test_failed_seeds_count_at_chance_not_dropped() -> None:
    a, b = _separated(10, gap=0.02)
    runs = _runs({"bsqh-mb": a, "gmp": b}, {"bsqh-mb": "bsqh"})
    runs["num_classes"] = 10
    # Six of bsqh's seeds diverge (their last good accuracy stays high); dropping them
    # would leave 4 seeds all better than gmp's. Counted at chance they lose.
    failing = (runs["method"] == "bsqh-mb") & (runs["seed"] < 6)
    runs.loc[failing, "status"] = "diverged"
    runs.loc[(runs["method"] == "bsqh-mb") & (runs["seed"] == 6), "status"] = "capped"
    table = method_table(runs.assign(mode="minibatch", sparsity=0.5), pd.DataFrame())
    row = table.set_index("method").loc["bsqh-mb"]
    assert (
        row["n_failures"] == 7
        and row["n_failed"] == 0
        and row["n_diverged"] == 6
        and row["n_capped"] == 1
    )
    assert row["acc_median"] == pytest.approx(0.1) and row["acc_chance"] == pytest.approx(0.1)
    _, claim = judge_claims(bsqh_against_peers(table, runs))
    assert claim.verdict == "does not hold"
    assert "(wins/losses/ties 3/7/0)" in claim.evidence


def test_descent_claim_ignores_unchecked_cells() -> None:
    base = {"mode": "fullbatch", "optimizer": "bsqh", "status": "finished", "iterations": 10}
    runs = pd.DataFrame(
        [
            {**base, "key": "checked", "accepted_increases": 0, "checked_steps": 10},
            # Not checked (objective of the iterate before each step): its 0 means nothing,
            # and even a recorded increase there is not evidence either way.
            {**base, "key": "unchecked", "accepted_increases": 0, "checked_steps": 0},
            {**base, "key": "gd", "optimizer": "prox-sgd-l0", "checked_steps": 0},
        ]
    )
    claim = monotone_descent(runs)
    assert claim.verdict == "holds"
    assert "over 10 checked accepted steps" in claim.evidence and "in 1 runs" in claim.evidence
    assert "1 cells not checked" in claim.evidence
    only_unchecked = runs[runs["key"] != "checked"]
    assert monotone_descent(only_unchecked).verdict == "not applicable"


# --------------------------------------------------------------------------- targets


def _curve(times, accuracies, sparsities, tests=None) -> pd.DataFrame:
    """A curve whose validation accuracy is ``accuracies``; test accuracy differs on
    purpose (default 1 - validation), so a selection on test would pick other moments."""
    tests = [1 - a for a in accuracies] if tests is None else tests
    return pd.DataFrame(
        {
            "device_time_s": times,
            "val_accuracy": accuracies,
            "test_accuracy": tests,
            "sparsity": sparsities,
        }
    )


def test_joint_time_to_target_needs_both_figures_at_once() -> None:
    curve = _curve([0, 1, 2, 3, 4], [0.1, 0.85, 0.80, 0.86, 0.9], [0.0, 0.2, 0.85, 0.7, 0.9])
    assert joint_time_to_target(curve, 0.8, 0.0) == 1  # accuracy alone: t = 1
    assert joint_time_to_target(curve, 0.0, 0.8) == 2  # sparsity alone: t = 2
    assert joint_time_to_target(curve, 0.8, 0.8) == 2  # both at t = 2
    assert joint_time_to_target(curve, 0.85, 0.8) == 4  # t = 3 has accuracy, not sparsity
    assert joint_time_to_target(curve, 0.95, 0.0) is None


def test_joint_target_selects_on_validation_and_reports_test() -> None:
    # Test accuracy crosses 0.8 at t = 0 already; validation only at t = 2.
    curve = _curve([0, 1, 2], [0.5, 0.7, 0.82], [0.9, 0.9, 0.9], tests=[0.9, 0.6, 0.78])
    assert joint_target_hit(curve, 0.8, 0.5) == (2.0, 0.78)


def test_target_times_cover_grid_and_mark_misses_infinite() -> None:
    runs = pd.DataFrame(
        [
            {
                "dataset": "d",
                "model": "m",
                "method": "a",
                "seed": 0,
                "key": "k",
                "status": "finished",
            },
            {
                "dataset": "d",
                "model": "m",
                "method": "b",
                "seed": 0,
                "key": "x",
                "status": "failed",
            },
        ]
    )
    curves = _curve([0, 1], [0.5, 0.9], [0.0, 0.6]).assign(key="k")
    # The failed cell has a curve that meets every target: it still never solves one.
    curves = pd.concat([curves, curves.assign(key="x")], ignore_index=True)
    times = target_times(runs, curves, accuracies=(0.8, 0.95), sparsities=(0.5,))
    assert list(times["method"]) == ["a", "a", "b", "b"]  # failures are problems too
    assert times["time_s"].tolist() == [1.0, math.inf, math.inf, math.inf]
    assert times["test_accuracy"].tolist()[0] == pytest.approx(0.1)
    ratios, unsolved = performance_ratios(problem_matrix(times))
    assert unsolved == 1 and ratios.loc[ratios.index[0], "b"] == math.inf


def _problems(table: dict[str, list[float]]) -> pd.DataFrame:
    """A times table: problem p (as seed) x method, inf = never solved."""
    rows = [
        {"dataset": "d", "model": "m", "seed": p, "accuracy": 0.8, "sparsity": 0.5,
         "method": method, "time_s": t}
        for method, times in table.items()
        for p, t in enumerate(times)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_performance_profile_on_a_hand_made_table() -> None:
    inf = math.inf
    times = _problems(
        {
            "fast": [1.0, 2.0, 10.0, 4.0, inf],
            "steady": [2.0, 2.0, 5.0, 8.0, inf],
            "slow": [10.0, inf, 100.0, inf, inf],
        }
    )
    ratios, unsolved = performance_ratios(problem_matrix(times))
    assert unsolved == 1 and len(ratios) == 4  # problem 4: nobody solved it
    taus = [1.0, 2.0, 4.0, 10.0, 25.0]
    rho = profile(ratios, taus)
    # Wins (ties count for both): fast wins 0, 1, 3; steady wins 1, 2.
    assert rho.loc[1.0, "fast"] == pytest.approx(3 / 4)
    assert rho.loc[1.0, "steady"] == pytest.approx(2 / 4)
    assert rho.loc[2.0, "fast"] == 1.0 and rho.loc[2.0, "steady"] == 1.0
    # slow: ratios 10, inf, 20, inf -> solves half, and only from tau = 10 on.
    assert rho["slow"].tolist() == [0.0, 0.0, 0.0, 0.25, 0.5]
    for method in rho.columns:
        assert np.all(np.diff(rho[method].to_numpy()) >= 0)  # monotone in tau
    assert rho.loc[25.0, "fast"] == 1.0  # solved every kept problem


def test_performance_profile_with_a_best_time_of_zero() -> None:
    times = _problems({"a": [0.0, 1.0], "b": [0.5, 1.0]})
    ratios, _ = performance_ratios(problem_matrix(times))
    rho = profile(ratios, [1.0, 1e6])
    assert rho.loc[1.0, "a"] == 1.0 and rho.loc[1.0, "b"] == 0.5
    assert rho.loc[1e6, "b"] == 0.5  # never as fast as an instant win


def test_matched_picks_are_compared_only_at_a_common_target() -> None:
    runs = _runs(
        {
            "bsqh-mb@matched-0.5": [0.6, 0.61, 0.62, 0.63],
            "bsqh-mb@matched-0.9+0.95": [0.7, 0.71, 0.72, 0.73],
            "gmp@matched-0.5+0.8": [0.8, 0.81, 0.82, 0.83],
            "gmp@matched-0.95": [0.5, 0.51, 0.52, 0.53],
            "sgd": [0.8, 0.81, 0.82, 0.83],
        },
        optimizer={"bsqh-mb@matched-0.5": "bsqh", "bsqh-mb@matched-0.9+0.95": "bsqh"},
    )
    pairs = {c.statement.split(" on ")[0] for c in bsqh_against_peers(_table(runs), runs)}
    assert pairs == {
        "bsqh-mb@matched-0.5 is more accurate than gmp@matched-0.5+0.8",
        "bsqh-mb@matched-0.9+0.95 is more accurate than gmp@matched-0.95",
        "bsqh-mb@matched-0.5 is more accurate than sgd",  # not a matched pick: always
        "bsqh-mb@matched-0.9+0.95 is more accurate than sgd",
    }


# --------------------------------------------------------------- paired statistics API


def test_median_interval_levels_by_hand() -> None:
    # Four values: only the range is possible, level 1 - 2 / 2^4 = 0.875.
    assert median_interval([0.9, 0.7, 0.8, 0.85]) == Interval(0.7, 0.9, 0.875)
    # Three values: 1 - 2 / 8 = 0.75; one value: a point with level 0.
    assert median_interval([3, 1, 2]).level == pytest.approx(0.75)
    assert median_interval([5.0]) == Interval(5.0, 5.0, 0.0)
    # Ten values: k = 2 gives 1 - 2 (1 + 10) / 1024 = 0.9785 >= 0.95; k = 3 gives
    # 1 - 2 (1 + 10 + 45) / 1024 = 0.8906 < 0.95, so (x_(2), x_(9)).
    interval = median_interval(range(10, 0, -1))
    assert (interval.low, interval.high) == (2.0, 9.0)
    assert interval.level == pytest.approx(1 - 2 * 11 / 1024)
    assert median_interval(range(10), level=0.85) == Interval(2.0, 7.0, 1 - 2 * 56 / 1024)
    assert order_statistic_level(6, 1) == pytest.approx(1 - 2 / 64)
    assert interval.label(".2f") == "[2.00, 9.00] (97.9 %)"


def test_median_interval_rejects_failures_and_bad_levels() -> None:
    with pytest.raises(ValueError, match=r"nan.*position 1"):
        median_interval([0.5, float("nan"), 0.7])
    with pytest.raises(ValueError, match="not finite"):
        median_interval([None, 0.7])
    with pytest.raises(ValueError, match="at least one value"):
        median_interval([])
    with pytest.raises(ValueError, match="level must lie"):
        median_interval([1, 2], level=1.0)


@pytest.mark.parametrize("n", [4, 7, 12])
def test_printed_level_matches_simulated_coverage(n: int) -> None:
    """The level printed beside an interval is its coverage of the true median, for
    skewed and symmetric continuous distributions alike."""
    rng = np.random.default_rng(20 + n)
    samples = 1500
    distributions = {  # name: (draws, true median)
        "normal": (rng.normal(0.8, 0.05, (samples, n)), 0.8),
        "exponential": (rng.exponential(1.0, (samples, n)), math.log(2)),
        "beta(2,5)": (rng.beta(2, 5, (samples, n)), float(stats_beta_median(2, 5))),
    }
    for name, (draws, true_median) in distributions.items():
        intervals = [median_interval(row) for row in draws]
        level = intervals[0].level
        assert all(i.level == level for i in intervals)
        covered = np.mean([i.low <= true_median <= i.high for i in intervals])
        error = math.sqrt(level * (1 - level) / samples)
        assert abs(covered - level) <= 4 * error + 1e-9, (name, covered, level)


def stats_beta_median(a: float, b: float) -> float:
    return float(pytest.importorskip("scipy.stats").beta(a, b).median())


def _brute_force_signed_rank_p(d: np.ndarray) -> float:
    """Enumerate every sign pattern of the Pratt midranks: the definition of the p."""
    magnitudes = np.abs(d)
    ranks = np.array([np.mean(np.flatnonzero(np.sort(magnitudes) == m) + 1) for m in magnitudes])
    signs = np.sign(d)
    observed = float((ranks * signs).sum())
    nonzero = np.flatnonzero(signs != 0)
    extreme = 0
    for flips in itertools.product((-1, 1), repeat=len(nonzero)):
        statistic = float((ranks[nonzero] * np.array(flips)).sum())
        extreme += abs(statistic) >= abs(observed) - 1e-9
    return extreme / 2 ** len(nonzero)


def test_paired_p_matches_scipy_exact_without_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    for n in (4, 6, 10, 15):
        a = rng.normal(0.8, 0.02, n)
        b = a - rng.normal(0.01, 0.02, n)
        result = paired_compare(a, b)
        ref = stats.wilcoxon(a, b, method="exact")
        assert result.p_value == pytest.approx(ref.pvalue)
        assert result.n == n and result.smallest_p == pytest.approx(2 / 2**n)


def test_paired_p_with_ties_and_zeros_matches_brute_force() -> None:
    a = np.array([0.80, 0.75, 0.10, 0.90, 0.85, 0.70, 0.60, 0.88])
    b = np.array([0.78, 0.77, 0.10, 0.86, 0.83, 0.68, 0.10, 0.90])
    d = a - b  # one zero (both failed at chance), tied magnitudes 0.02
    result = paired_compare(a, b)
    assert result.p_value == pytest.approx(_brute_force_signed_rank_p(np.round(d, 12)))
    assert (result.wins, result.losses, result.ties) == (5, 2, 1)
    assert result.median_difference == pytest.approx(float(np.median(d)))
    assert result.interval == median_interval(np.round(d, 12))


def test_paired_effect_size_by_hand_and_orientation() -> None:
    a, b = [0.9, 0.8, 0.85, 0.7], [0.8, 0.75, 0.84, 0.6]
    result = paired_compare(a, b)
    # A better on every seed: r = +1 and p is the smallest possible, 2 / 16.
    assert result.effect_size == 1.0 and result.p_value == pytest.approx(0.125)
    assert result.favours_a and result.effect_name == "rank-biserial r"
    # d = 0.1, 0.05, 0.01, 0.1: ranks 3.5, 2, 1, 3.5; lowering A's third seed below B's
    # makes R+ = 9, R- = 1, r = (9 - 1) / 10 = 0.8.
    assert paired_compare([0.9, 0.8, 0.83, 0.7], b).effect_size == pytest.approx(0.8)
    # Lower is better (a loss, a time): the same numbers now favour B.
    flipped = paired_compare(a, b, higher_is_better=False)
    assert flipped.effect_size == -1.0 and not flipped.favours_a
    assert flipped.p_value == result.p_value and flipped.median_difference > 0
    # Identical methods: nothing to see, p = 1.
    same = paired_compare([0.5, 0.6], [0.5, 0.6])
    assert same.p_value == 1.0 and same.effect_size == 0.0 and same.ties == 2
    assert "p = 0.125, rank-biserial r = +1.00" in result.evidence()
    assert "(87.5 %)" in result.evidence()


def test_paired_compare_rejects_misaligned_or_failed_values() -> None:
    with pytest.raises(ValueError, match="aligned by seed, got 3 and 2"):
        paired_compare([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"paired_compare: b.*not finite"):
        paired_compare([1, 2], [1, float("inf")])
    with pytest.raises(ValueError, match="at least one pair"):
        paired_compare([], [])


def test_holm_by_hand() -> None:
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06
    # (the running maximum keeps the order of the raw p-values).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []
    assert holm([0.2]) == [0.2]
    with pytest.raises(ValueError, match="p-values in"):
        holm([0.1, float("nan")])


def test_holm_against_statsmodels_style_reference() -> None:
    rng = np.random.default_rng(9)
    for m in (2, 5, 12):
        p = rng.uniform(0, 0.2, m)
        adjusted = np.array(holm(p))
        order = np.argsort(p)
        expected = np.maximum.accumulate(np.minimum(1, (m - np.arange(m)) * p[order]))
        assert adjusted[order] == pytest.approx(expected)
        assert np.all(adjusted >= p)


def test_attainable_family_verdicts() -> None:
    assert smallest_paired_p(4) == pytest.approx(0.125)
    assert smallest_holm_p(4, 1) == pytest.approx(0.125)
    assert not verdict_possible(4, 1)  # four seeds: never, even alone
    assert smallest_holm_p(10, 4) == pytest.approx(4 * 2 / 1024)
    assert verdict_possible(10, 4)
    assert smallest_holm_p(6, 2) == pytest.approx(0.0625)
    assert not verdict_possible(6, 2) and verdict_possible(6, 2, alpha=0.1)
    assert smallest_holm_p(3, 20) == 1.0
    with pytest.raises(ValueError, match="n_tests"):
        smallest_holm_p(10, 0)


def test_failed_cells_score_chance_accuracy() -> None:
    assert failure_accuracy(10) == pytest.approx(0.1)
    assert scored_accuracy(0.83, "finished", 10) == 0.83
    for status in ("diverged", "capped", "failed", "killed"):
        assert scored_accuracy(0.83, status, 10) == pytest.approx(0.1)
    assert scored_accuracy(float("nan"), "finished", 10) == pytest.approx(0.1)
    assert scored_accuracy(None, "finished", 4) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="num_classes"):
        failure_accuracy(1)


def test_judge_a_family_by_hand() -> None:
    ten_up = paired_compare([0.9 + 0.01 * i for i in range(10)], [0.5] * 10)  # p = 2 / 1024
    ten_down = paired_compare([0.5] * 10, [0.9 + 0.01 * i for i in range(10)])
    mixed = paired_compare([0.6, 0.4, 0.7, 0.3, 0.8, 0.2, 0.55, 0.45, 0.65, 0.35], [0.5] * 10)
    four = paired_compare([0.9, 0.8, 0.85, 0.7], [0.5] * 4)  # can never reach 0.05 alone
    family = judge([ten_up, ten_down, mixed, four])
    # Floor: 4 tests x 2 / 2^10 = 0.0078 (the 10-seed tests), so verdicts are possible.
    assert family.possible and family.smallest_adjusted_p == pytest.approx(8 / 1024)
    verdicts = [j.verdict for j in family.judged]
    assert verdicts[0] == "holds" and verdicts[1] == "does not hold"
    assert verdicts[2].startswith("no significant difference") and verdicts[3] == (
        "too few seeds (n=4)"
    )
    assert [j.adjusted_p for j in family.judged] == pytest.approx(holm([c.p_value for c in (
        ten_up, ten_down, mixed, four)]))  # fmt: skip
    assert "Holm-adjusted p = 0.00781 (family of 4)" in family.judged[0].evidence()
    # The same four-seed test alone: a family that cannot reach alpha at all.
    alone = judge([four])
    assert not alone.possible and alone.judged[0].verdict == "too few seeds for this family"
    assert "smallest attainable Holm-adjusted p = 0.125" in alone.summary()
    assert judge([]).judged == () and judge([]).summary() == "no paired comparison"


@pytest.mark.parametrize("suite", ["quick-tuned", "paper"])
def test_comparative_suites_have_seeds_for_a_verdict(suite: str) -> None:
    """The suites meant for comparisons can reach a verdict: their report's Holm family
    (at its largest) has a smallest attainable adjusted p at or below alpha."""
    import tomllib

    from bench.suites import SUITES_DIR

    spec = tomllib.loads((SUITES_DIR / f"{suite}.toml").read_text())
    seeds = len(spec["seeds"])
    groups = len(spec["datasets"]) * len(spec["models"])
    bound = family_size_bound(groups, [m["name"] for m in spec["methods"]])
    assert seeds >= 10
    assert verdict_possible(seeds, bound), (suite, seeds, bound, smallest_holm_p(seeds, bound))


def test_family_size_bound_by_hand() -> None:
    # Two bSQH variants against three others, plus the most-accurate pair, per group.
    assert family_size_bound(1, ["bsqh", "bsqh-fast", "sgd", "gmp", "emsa"]) == 7
    assert family_size_bound(9, ["bsqh"] * 2 + ["x"] * 8) == 153
    assert family_size_bound(2, ["sgd", "adam"]) == 2
