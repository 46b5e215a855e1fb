"""Claims computed from the records, each with its verdict and the numbers behind it.

A report that only shows tables leaves the reader to draw conclusions; a report that
states conclusions without numbers cannot be checked. Each claim here is recomputed on
every report, so a regression (say, full-batch bSQH accepting a step that raised the
objective) shows up as "does not hold" instead of as prose that silently went stale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.report.stats import GROUP_COLUMNS

HOLDS = "holds"
FAILS = "does not hold"
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


def monotone_descent(runs: pd.DataFrame) -> Claim:
    """Full-batch acceptance must never let the objective rise (the paper's descent property)."""
    statement = "Full-batch bSQH never increased its objective on an accepted step"
    reporting = runs[(runs["mode"] == "fullbatch") & runs["accepted_increases"].notna()]
    if reporting.empty:
        return Claim(statement, NOT_APPLICABLE, "no full-batch cell reports accepted_increases")
    increases = [int(_number(v) or 0) for v in reporting["accepted_increases"]]
    accepted = sum(_accepted_steps(row) for _, row in reporting.iterrows())
    evidence = f"{sum(increases)} increases over {accepted} accepted steps in {len(reporting)} runs"
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
    """Methods with at least one finished seed, most accurate (by median) first."""
    ranked = group[group["n_finished"] > 0].dropna(subset=["acc_median"])
    return ranked.sort_values(["acc_median", "method"], ascending=[False, True])


def most_accurate(table: pd.DataFrame) -> list[Claim]:
    """Per dataset x model: is the best median also clear of the runner-up on every seed?"""
    claims = []
    for (dataset, model), group in table.groupby(list(GROUP_COLUMNS), sort=True):
        ranked = _ranked(group)
        where = f"{dataset} × {model}"
        if ranked.empty:
            claims.append(
                Claim(f"Most accurate method on {where}", NOT_APPLICABLE, "no finished cell")
            )
            continue
        best = ranked.iloc[0]
        statement = (
            f"Most accurate method on {where} is {best['method']}, "
            "every seed above every seed of the runner-up"
        )
        evidence = (
            f"median test accuracy {best['acc_median']:.3f}, seeds "
            f"{best['acc_min']:.3f}–{best['acc_max']:.3f}, n={best['n_finished']}"
        )
        if len(ranked) == 1:
            claims.append(Claim(statement, NOT_APPLICABLE, evidence + "; no other method"))
            continue
        second = ranked.iloc[1]
        evidence += (
            f"; runner-up {second['method']} {second['acc_median']:.3f}, seeds "
            f"{second['acc_min']:.3f}–{second['acc_max']:.3f}, n={second['n_finished']}"
        )
        verdict = HOLDS if best["acc_min"] > second["acc_max"] else FAILS
        claims.append(Claim(statement, verdict, evidence))
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
    """Every claim, in the order REPORT.md lists them."""
    if runs.empty:
        return []
    claims = [monotone_descent(runs), rejection_share(runs)]
    if not table.empty:
        claims += most_accurate(table) + sparsest_near_best(table)
    return claims
