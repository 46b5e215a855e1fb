"""Statistics of the report: bootstrap intervals, the exact U test, seed thresholds,
joint time-to-target and performance profiles, each against hand-computed cases."""

from __future__ import annotations

import math
from itertools import combinations, pairwise

import numpy as np
import pandas as pd
import pytest

from bench.report.claims import bsqh_against_peers, monotone_descent, most_accurate
from bench.report.profiles import (
    joint_time_to_target,
    performance_ratios,
    problem_matrix,
    profile,
    target_times,
)
from bench.report.significance import (
    bootstrap_median_ci,
    compare,
    mann_whitney_u,
    smallest_p,
)


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
                "acc_median": float(cells["test_accuracy"].median()),
                "sparsity_median": 0.5,
            }
        )
    return pd.DataFrame(rows)


def test_a_claim_on_fewer_than_three_seeds_gives_no_verdict() -> None:
    runs = _runs({"a": [0.9, 0.91], "b": [0.5, 0.52, 0.51]})
    (claim,) = most_accurate(_table(runs), runs)
    assert claim.verdict == "too few seeds (n=2)"
    # Four seeds each, fully separated: p = 2 / C(8, 4) = 0.029 < 0.05, a verdict.
    runs = _runs({"a": [0.9, 0.91, 0.92, 0.93], "b": [0.5, 0.52, 0.51, 0.53]})
    (claim,) = most_accurate(_table(runs), runs)
    assert claim.verdict == "holds" and "p = 0.0286" in claim.evidence
    # Three vs three can never reach 0.05: said as such, not as a failure.
    runs = _runs({"a": [0.9, 0.91, 0.92], "b": [0.5, 0.52, 0.51]})
    (claim,) = most_accurate(_table(runs), runs)
    assert claim.verdict.startswith("no significant difference")
    assert "smallest p attainable with 3 vs 3 seeds is 0.1" in claim.evidence


def test_bsqh_against_each_peer_states_direction() -> None:
    runs = _runs(
        {"bsqh-mb": [0.6, 0.61, 0.62, 0.63], "gmp": [0.8, 0.81, 0.82, 0.83], "sgd": [0.7]},
        optimizer={"bsqh-mb": "bsqh"},
    )
    claims = {c.statement: c for c in bsqh_against_peers(_table(runs), runs)}
    assert claims["bsqh-mb is more accurate than gmp on d × m"].verdict == "does not hold"
    assert claims["bsqh-mb is more accurate than sgd on d × m"].verdict == "too few seeds (n=1)"
    assert compare("x", [1, 2, 3], "y", []).p is None


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


def _curve(times, accuracies, sparsities) -> pd.DataFrame:
    return pd.DataFrame(
        {"device_time_s": times, "test_accuracy": accuracies, "sparsity": sparsities}
    )


def test_joint_time_to_target_needs_both_figures_at_once() -> None:
    curve = _curve([0, 1, 2, 3, 4], [0.1, 0.85, 0.80, 0.86, 0.9], [0.0, 0.2, 0.85, 0.7, 0.9])
    assert joint_time_to_target(curve, 0.8, 0.0) == 1  # accuracy alone: t = 1
    assert joint_time_to_target(curve, 0.0, 0.8) == 2  # sparsity alone: t = 2
    assert joint_time_to_target(curve, 0.8, 0.8) == 2  # both at t = 2
    assert joint_time_to_target(curve, 0.85, 0.8) == 4  # t = 3 has accuracy, not sparsity
    assert joint_time_to_target(curve, 0.95, 0.0) is None


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
    times = target_times(runs, curves, accuracies=(0.8, 0.95), sparsities=(0.5,))
    assert list(times["method"]) == ["a", "a"]  # failed cells are not problems
    assert times["time_s"].tolist() == [1.0, math.inf]


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
