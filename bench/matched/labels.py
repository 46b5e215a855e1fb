"""The labels of accuracy-at-matched-sparsity cells: ``<method>@matched-<s1>+<s2>...``.

One grammar for the two places that read it: ``bench matched`` writes the labels
(:mod:`bench.tuning.matched`) and the report's claims (:mod:`bench.report.claims`) must
compare two such cells only when they serve a common target sparsity; a pick for s ≥ 0.5
against one for s ≥ 0.95 compares sparsities, not methods.
"""

from __future__ import annotations

from collections.abc import Sequence

SEPARATOR = "@matched-"


def label(method: str, targets: Sequence[float]) -> str:
    """The label of the cells retraining one pick of ``method`` for these targets."""
    return f"{method}{SEPARATOR}" + "+".join(f"{s:g}" for s in targets)


def targets(cell_label: str) -> frozenset[float] | None:
    """The targets a matched label serves, or None for any other label."""
    if SEPARATOR not in cell_label:
        return None
    try:
        return frozenset(float(s) for s in cell_label.rsplit(SEPARATOR, 1)[1].split("+"))
    except ValueError:
        return None


def comparable(a: str, b: str) -> bool:
    """Whether two methods' cells answer one question: always, unless both are matched
    picks that serve no common target."""
    ta, tb = targets(a), targets(b)
    return ta is None or tb is None or bool(ta & tb)
