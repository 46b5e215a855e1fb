"""Claims computed from the records, each with its verdict and the numbers behind it.

A report that only shows tables leaves the reader to draw conclusions; a report that
states conclusions without numbers cannot be checked. Each claim here is recomputed on
every report, so a regression (say, full-batch bSQH accepting a step that raised the
objective) shows up as "does not hold" instead of as prose that silently went stale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

import optimizers
from bench.matched import labels
from bench.report.significance import (
    ALPHA,
    FAILS,
    HOLDS,
    TOO_FEW_FOR_FAMILY,
    Judged,
    PairedComparison,
    judge,
    paired_compare,
    too_few_seeds,
    verdict_for,
)
from bench.report.stats import GROUP_COLUMNS, chance_accuracy, scored_accuracy

NOT_APPLICABLE = "not applicable"
#: A figure rather than a yes/no statement.
MEASURED = "measured"

#: "Within one point" of the best accuracy: accuracies are fractions, so 0.01.
ONE_POINT = 0.01


@dataclass(frozen=True)
class Claim:
    """One line of the Claims section."""

    statement: str
    verdict: str
    evidence: str

    def markdown(self) -> str:
        """A bullet: statement, bold verdict, then the evidence in parentheses."""
        return f"- {self.statement}: **{self.verdict}** ({self.evidence})"


def _number(value: Any) -> float | None:
    """A finite float, or None for missing values (pandas NA, NaN, None)."""
    if value is None or value is pd.NA:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _accepted_steps(row: pd.Series) -> int:
    """Accepted steps of a cell: attempts minus rejections, else its iterations."""
    attempts, rejected = _number(row.get("attempts")), _number(row.get("rejected_attempts"))
    if attempts is not None and rejected is not None:
        return int(attempts - rejected)
    return int(_number(row.get("iterations")) or 0)


def is_bsqh(optimizer: str) -> bool:
    """Whether a registry name runs the method under study (bSQH: ``bsqh``, ``bsqh-fast``),
    never an ablation such as ``bsqh-parallel``: its ``focus`` trait decides, which
    execution variants inherit and labelled variants do not, not a name prefix."""
    return optimizers.traits(optimizer).focus


def monotone_descent(runs: pd.DataFrame) -> Claim:
    """Full-batch acceptance must never let the objective rise (the paper's descent property).

    Only cells whose objective was measured after each accepted step count
    (``checked_steps`` > 0): a cell that reports the iterate before its step was never
    checked, and counting its zero increases would make the claim hold by default.
    """
    statement = "Full-batch bSQH never increased its objective on an accepted step"
    bsqh = runs["optimizer"].astype(str).map(is_bsqh).astype(bool)
    fullbatch = runs[(runs["mode"] == "fullbatch") & bsqh]
    fullbatch = fullbatch[fullbatch["status"].isin(("finished", "diverged"))]
    if fullbatch.empty:
        return Claim(statement, NOT_APPLICABLE, "no full-batch bSQH cell")
    checked_steps = (
        pd.to_numeric(
            fullbatch["checked_steps"] if "checked_steps" in fullbatch else pd.Series(dtype=float),
            errors="coerce",
        )
        .reindex(fullbatch.index)
        .fillna(0)
    )
    reporting = fullbatch[checked_steps > 0]
    unchecked = len(fullbatch) - len(reporting)
    if reporting.empty:
        return Claim(
            statement,
            NOT_APPLICABLE,
            f"none of the {len(fullbatch)} full-batch bSQH cells checked its objective after "
            "its steps (checked_steps = 0)",
        )
    increases = [int(_number(v) or 0) for v in reporting["accepted_increases"]]
    checked = int(checked_steps[checked_steps > 0].sum())
    evidence = (
        f"{sum(increases)} increases over {checked} checked accepted steps "
        f"({sum(_accepted_steps(row) for _, row in reporting.iterrows())} accepted) "
        f"in {len(reporting)} runs"
    )
    if unchecked:
        evidence += f"; {unchecked} cells not checked and not counted"
    offenders = [f"{key}: {n}" for key, n in zip(reporting["key"], increases, strict=True) if n > 0]
    if offenders:
        evidence += "; cells with increases: " + ", ".join(offenders)
    return Claim(statement, HOLDS if not offenders else FAILS, evidence)


def rejection_share(runs: pd.DataFrame) -> Claim:
    """How often bSQH's acceptance test turns an attempt down: the price of its safeguard."""
    statement = "Share of rejected bSQH attempts"
    attempts = pd.to_numeric(runs["attempts"], errors="coerce")
    reporting = runs[attempts > 0]
    if reporting.empty:
        return Claim(statement, NOT_APPLICABLE, "no cell reports attempts")

    def share(cells: pd.DataFrame) -> str:
        rejected = int(pd.to_numeric(cells["rejected_attempts"], errors="coerce").fillna(0).sum())
        total = int(pd.to_numeric(cells["attempts"], errors="coerce").sum())
        return f"{100 * rejected / total:.1f}% ({rejected} of {total})"

    per_method = "; ".join(
        f"{method}: {share(cells)}" for method, cells in reporting.groupby("method", sort=True)
    )
    evidence = f"{share(reporting)} over {len(reporting)} runs; {per_method}"
    return Claim(statement, MEASURED, evidence)


def _ranked(group: pd.DataFrame) -> pd.DataFrame:
    """Methods with at least one cell, most accurate (median, failures at chance) first."""
    ranked = group[group["n_cells"] > 0].dropna(subset=["acc_median"])
    return ranked.sort_values(["acc_median", "method"], ascending=[False, True])


def paired_seeds(
    runs: pd.DataFrame, where: tuple[Any, Any], a: str, b: str
) -> tuple[list[float], list[float], int]:
    """Test accuracies of methods ``a`` and ``b`` on the seeds both ran, aligned by seed
    (failed cells at chance accuracy), and the number of seeds only one of them ran.

    Pairing is by seed because a seed fixes the initialisation across methods: the
    difference on one seed removes the luck of the draw that both share.
    """
    dataset, model = where
    group = runs[(runs["dataset"] == dataset) & (runs["model"] == model)]
    chance = chance_accuracy(group)
    by_seed = []
    for method in (a, b):
        cells = group[group["method"] == method].drop_duplicates("seed")
        by_seed.append(dict(zip(cells["seed"], scored_accuracy(cells, chance), strict=True)))
    common = sorted(set(by_seed[0]) & set(by_seed[1]))
    unpaired = len(set(by_seed[0]) ^ set(by_seed[1]))
    return [by_seed[0][s] for s in common], [by_seed[1][s] for s in common], unpaired


@dataclass(frozen=True)
class Contest:
    """A comparative statement, A more accurate than B, before its family is judged."""

    statement: str
    context: str  # what the evidence starts with, e.g. which two methods
    comparison: PairedComparison | None  # None: no seed that both methods ran
    unpaired: int
    #: The dataset, model and the two methods, unordered: one test per pair in a family.
    pair: frozenset[Any] = frozenset()


def contest(
    statement: str, context: str, runs: pd.DataFrame, where: tuple[Any, Any], a: str, b: str
) -> Contest:
    """The paired comparison of ``a`` and ``b`` on one dataset x model."""
    values_a, values_b, unpaired = paired_seeds(runs, where, a, b)
    comparison = paired_compare(values_a, values_b) if values_a else None
    return Contest(statement, context, comparison, unpaired, frozenset((where, a, b)))


def most_accurate(table: pd.DataFrame, runs: pd.DataFrame) -> list[Claim | Contest]:
    """Per dataset x model: is the best median significantly above the runner-up's?"""
    claims: list[Claim | Contest] = []
    for where, group in table.groupby(list(GROUP_COLUMNS), sort=True):
        ranked = _ranked(group)
        name = f"{where[0]} × {where[1]}"
        if ranked.empty:
            claims.append(Claim(f"Most accurate method on {name}", NOT_APPLICABLE, "no cell"))
            continue
        best = ranked.iloc[0]
        statement = (
            f"Most accurate method on {name} is {best['method']}, significantly above the runner-up"
        )
        if len(ranked) == 1:
            evidence = f"median test accuracy {best['acc_median']:.3f}, n={best['n_cells']}"
            claims.append(Claim(statement, NOT_APPLICABLE, evidence + "; no other method"))
            continue
        second = ranked.iloc[1]
        context = (
            f"{best['method']} (median {best['acc_median']:.3f}) vs runner-up "
            f"{second['method']} (median {second['acc_median']:.3f})"
        )
        claims.append(contest(statement, context, runs, where, best["method"], second["method"]))
    return claims


def bsqh_against_peers(table: pd.DataFrame, runs: pd.DataFrame) -> list[Contest]:
    """Per dataset x model: each bSQH variant against every other method, on test accuracy.

    The question a reader of the paper asks first; the answer states the paired test, its
    p-value before and after the family's adjustment, or that there are too few seeds for
    one. Picks of ``bench matched`` are compared only when they serve a common target
    sparsity (:mod:`bench.matched.labels`).
    """
    contests = []
    for where, group in table.groupby(list(GROUP_COLUMNS), sort=True):
        present = group[group["n_cells"] > 0]
        mask = present["optimizer"].astype(str).map(is_bsqh).astype(bool)
        ours, others = present[mask], present[~mask]
        for _, mine in ours.sort_values("method").iterrows():
            for _, peer in others.sort_values("method").iterrows():
                if not labels.comparable(mine["method"], peer["method"]):
                    continue  # matched picks for different sparsities
                statement = (
                    f"{mine['method']} is more accurate than {peer['method']} on "
                    f"{where[0]} × {where[1]}"
                )
                context = f"median {mine['acc_median']:.3f} vs {peer['acc_median']:.3f}"
                contests.append(
                    contest(statement, context, runs, where, mine["method"], peer["method"])
                )
    return contests


def family_size_bound(groups: int, optimizers: Sequence[str]) -> int:
    """The most comparative tests a report of ``groups`` dataset x model combinations of
    these methods can hold: per group, each bSQH variant against every other method, plus
    the most-accurate pair. A suite meant for verdicts needs seeds n with
    :func:`bench.report.significance.verdict_possible` (n, this bound)."""
    ours = sum(is_bsqh(o) for o in optimizers)
    return groups * (ours * (len(optimizers) - ours) + 1)


def judge_claims(items: Sequence[Claim | Contest], alpha: float = ALPHA) -> list[Claim]:
    """Every comparative claim of the report judged as one Holm–Bonferroni family.

    The family has one test per pair of methods (on one dataset x model): when the most
    accurate method and its runner-up are also a bSQH variant and a peer, that pair is
    tested once, not counted twice. The family's own line comes first: how many tests, on
    how many seeds, and the smallest adjusted p it could reach, so that "too few seeds for
    this family" is explained where it appears.
    """
    tests: dict[frozenset[Any], PairedComparison] = {}
    for item in items:
        if isinstance(item, Contest) and item.comparison is not None:
            tests.setdefault(item.pair, item.comparison)
    family = judge(list(tests.values()), alpha)
    adjusted = {pair: j.adjusted_p for pair, j in zip(tests, family.judged, strict=True)}
    claims: list[Claim] = []
    if tests:
        verdict = TOO_FEW_FOR_FAMILY if not family.possible else MEASURED
        claims.append(
            Claim(
                "Comparative claims below form one Holm–Bonferroni family", verdict,
                family.summary(),
            )
        )  # fmt: skip
    for item in items:
        if isinstance(item, Claim):
            claims.append(item)
            continue
        if item.comparison is None:
            claims.append(Claim(item.statement, too_few_seeds(0), "no seed ran by both methods"))
            continue
        p = adjusted[item.pair]
        verdict = verdict_for(item.comparison, p, family.smallest_adjusted_p, alpha)
        evidence = f"{item.context}; {Judged(item.comparison, p, verdict, len(tests)).evidence()}"
        if item.unpaired:
            plural = "s" if item.unpaired != 1 else ""
            evidence += f"; left out: {item.unpaired} seed{plural} that only one of the two ran"
        claims.append(Claim(item.statement, verdict, evidence))
    return claims


def sparsest_near_best(table: pd.DataFrame, tolerance: float = ONE_POINT) -> list[Claim]:
    """Per dataset x model: the sparsest method whose median accuracy is near the best."""
    claims = []
    for (dataset, model), group in table.groupby(list(GROUP_COLUMNS), sort=True):
        ranked = _ranked(group)
        where = f"{dataset} × {model}"
        statement = f"Sparsest method within 1 point of the best accuracy on {where}"
        if ranked.empty:
            claims.append(Claim(statement, NOT_APPLICABLE, "no finished cell"))
            continue
        best = ranked.iloc[0]
        near = ranked[ranked["acc_median"] >= best["acc_median"] - tolerance]
        near = near.dropna(subset=["sparsity_median"])
        if near.empty:
            claims.append(Claim(statement, NOT_APPLICABLE, "no sparsity recorded"))
            continue
        pick = near.sort_values(["sparsity_median", "method"], ascending=[False, True]).iloc[0]
        evidence = (
            f"{pick['method']}: median sparsity {pick['sparsity_median']:.3f} at median "
            f"test accuracy {pick['acc_median']:.3f}; best accuracy {best['acc_median']:.3f} "
            f"({best['method']}, sparsity {best['sparsity_median']:.3f}); "
            f"{len(near)} of {len(ranked)} methods within {tolerance:.2f}"
        )
        claims.append(Claim(f"{statement}: {pick['method']}", MEASURED, evidence))
    return claims


def compute_claims(runs: pd.DataFrame, table: pd.DataFrame) -> list[Claim]:
    """Every claim, in the order REPORT.md lists them; the comparative ones (most accurate,
    bSQH against each peer) are judged together as one family."""
    if runs.empty:
        return []
    claims = [monotone_descent(runs), rejection_share(runs)]
    if not table.empty:
        claims += sparsest_near_best(table)
        claims += judge_claims([*most_accurate(table, runs), *bsqh_against_peers(table, runs)])
    return claims
