"""Does the ranking of methods hold across budgets, or flip as training converges?

A suite with several budgets (``[budget] epochs = [2, 6, 18]``) labels its cells
``<method>@<budget>``. Per dataset x model and budget, the methods are ranked by median
test accuracy over seeds; a cell that did not finish (diverged, capped, failed, killed)
counts as accuracy 0, a failure rather than a missing value, so a method cannot climb
the ranking by losing its bad seeds. The section prints the medians and ranks side by
side and names every pair of methods whose order at the longest budget is the reverse
of their order at the shortest: the ranking *holds* when there is none, else it *flips*.
"""

from __future__ import annotations

from itertools import combinations

import pandas as pd

from bench.report.markdown import fmt, table
from bench.report.stats import FINISHED, GROUP_COLUMNS

BUDGET_MARK = "@"


def ranking(runs: pd.DataFrame) -> pd.DataFrame:
    """Median test accuracy and rank (1 = best; ties share the best rank) per dataset,
    model, budget and method; empty unless the runs span several budgets."""
    columns = [*GROUP_COLUMNS, "budget_amount", "budget_unit", "method", "median", "rank"]
    if runs.empty or runs["budget_amount"].dropna().nunique() < 2:
        return pd.DataFrame(columns=columns)
    frame = runs.assign(
        base=runs["method"].astype(str).str.rsplit(BUDGET_MARK, n=1).str[0],
        accuracy=pd.to_numeric(runs["test_accuracy"], errors="coerce").where(
            runs["status"] == FINISHED, 0.0
        ),
    ).dropna(subset=["budget_amount"])
    keys = [*GROUP_COLUMNS, "budget_amount", "budget_unit", "base"]
    medians = frame.groupby(keys, sort=True)["accuracy"].median().reset_index()
    medians["rank"] = (
        medians.groupby([*GROUP_COLUMNS, "budget_amount"])["accuracy"]
        .rank(ascending=False, method="min")
        .astype(int)
    )
    medians = medians.rename(columns={"base": "method", "accuracy": "median"})
    return medians[columns]


def flips(ranks: pd.DataFrame) -> list[tuple[str, str]]:
    """Pairs (a, b) with a strictly ahead of b at the shortest budget and strictly
    behind it at the longest, for one dataset x model."""
    budgets = sorted(ranks["budget_amount"].unique())
    first = ranks[ranks["budget_amount"] == budgets[0]].set_index("method")["median"]
    last = ranks[ranks["budget_amount"] == budgets[-1]].set_index("method")["median"]
    found = []
    for a, b in combinations(sorted(set(first.index) & set(last.index)), 2):
        before, after = first[a] - first[b], last[a] - last[b]
        if before * after < 0:
            found.append((a, b) if before > 0 else (b, a))
    return found


def section(runs: pd.DataFrame) -> list[str]:
    """The report's "Ranking across budgets" section; nothing for a one-budget suite."""
    ranks = ranking(runs)
    if ranks.empty:
        return []
    lines = [
        "## Ranking across budgets",
        "",
        "Median test accuracy over seeds (rank in brackets, 1 = best) at each budget; "
        "a cell that did not finish counts as accuracy 0. A pair *flips* when its order "
        "at the longest budget is the reverse of its order at the shortest.",
        "",
    ]
    for (dataset, model), group in ranks.groupby(list(GROUP_COLUMNS), sort=True):
        budgets = sorted(group["budget_amount"].unique())
        unit = group["budget_unit"].iloc[0]
        header = ["Method", *(f"{b:g} {unit}" for b in budgets)]
        rows = []
        for method, cells in group.groupby("method", sort=True):
            by_budget = cells.set_index("budget_amount")
            rows.append(
                [method]
                + [
                    f"{fmt(by_budget.loc[b, 'median'])} ({by_budget.loc[b, 'rank']})"
                    if b in by_budget.index
                    else "–"
                    for b in budgets
                ]
            )
        flipped = flips(group)
        verdict = (
            f"**The ranking holds** from {budgets[0]:g} to {budgets[-1]:g} {unit}: no pair "
            "of methods changes order."
            if not flipped
            else f"**The ranking flips** from {budgets[0]:g} to {budgets[-1]:g} {unit}: "
            + "; ".join(f"{a} ahead of {b}, then behind" for a, b in flipped)
            + "."
        )
        lines += [f"### {dataset} × {model}", "", *table(header, rows), "", verdict, ""]
    return lines
