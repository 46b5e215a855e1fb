"""Tuning seeds: every method's study repeated with other seeds, and the spread they show.

Why: a pick made by one TPE run from one training initialisation is partly luck, and a
method whose ranking rests on it would be ranked by that luck. ``tune-all`` therefore
runs each method's study with :data:`TUNING_SEEDS` (3) tuning seeds: seed k trains every
trial with training seed ``--seed + k`` and samples with TPE seed ``--sampler-seed + k``.
Seed 0's study keeps the setting's study name (``quick-bsqh-mb``), so the suite's
``hparams = "tuned:<study>"`` and ``make matched`` read it as before; seeds 1 and 2 are
``<study>.t1`` and ``<study>.t2``. The suite evaluates seed 0's pick: choosing among the
seeds' picks by validation accuracy would be a fourth selection on the validation split
and a larger search for no stated reason. The other seeds say how far the result moves:
the tuning report lists every seed's picked configuration, its validation accuracy and
sparsity, and per method the spread (max - min over seeds) of the best and of the picked
validation accuracy and of the hypervolume.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bench.report.markdown import table

#: Tuning seeds per method by default (``tune-all --tuning-seeds``).
TUNING_SEEDS = 3
#: What separates a study's name from its tuning seed (a character study names allow).
SEED_SEPARATOR = ".t"

SEED_COLUMNS = (
    "label",
    "tuning_seed",
    "study",
    "finished",
    "best_val_accuracy",
    "hypervolume",
    "picked_trial",
    "picked_val_accuracy",
    "picked_sparsity",
    "picked_params",
)
SPREAD_COLUMNS = (
    "label",
    "seeds",
    "best_val_accuracy_min",
    "best_val_accuracy_max",
    "best_val_accuracy_spread",
    "picked_val_accuracy_spread",
    "picked_sparsity_spread",
    "hypervolume_spread",
    "same_pick_params",
)
SEED_NOTE = (
    "Every tuning seed's pick (seed k: training seed and TPE seed shifted by k). The tuned "
    "suite evaluates seed 0's pick; a spread is max - min over the seeds. "
    "`same_pick_params`: whether every seed picked the same values (rounded to 3 digits)."
)


def study_name(base: str, seed: int) -> str:
    """The study of tuning seed ``seed``: ``base`` for seed 0, ``<base>.t<seed>`` otherwise."""
    if seed < 0:
        raise ValueError(f"a tuning seed must be >= 0, got {seed}")
    return base if seed == 0 else f"{base}{SEED_SEPARATOR}{seed}"


def _round(value: Any) -> Any:
    return float(f"{value:.3g}") if isinstance(value, float) else value


def seed_rows(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per study (label, tuning seed) with its pick, in label then seed order."""
    rows = []
    for s in summaries:
        picked = s.get("picked") or {}
        params = picked.get("params")
        rows.append(
            {
                "label": s.get("label"),
                "tuning_seed": int(s.get("tuning_seed") or 0),
                "study": s["study"],
                "finished": s.get("finished"),
                "best_val_accuracy": s.get("best_val_accuracy"),
                "hypervolume": s.get("hypervolume"),
                "picked_trial": picked.get("trial"),
                "picked_val_accuracy": picked.get("val_accuracy"),
                "picked_sparsity": picked.get("sparsity"),
                "picked_params": None
                if params is None
                else json.dumps({k: _round(v) for k, v in sorted(params.items())}),
            }
        )
    return sorted(rows, key=lambda r: (str(r["label"]), r["tuning_seed"]))


def _spread(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) - min(known) if known else None


def spread_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per label: how far the tuning seeds' results lie apart."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_label.setdefault(str(row["label"]), []).append(row)
    spreads = []
    for label, group in sorted(by_label.items()):
        best = [r["best_val_accuracy"] for r in group]
        known = [b for b in best if b is not None]
        picks = {r["picked_params"] for r in group}
        spreads.append(
            {
                "label": label,
                "seeds": len(group),
                "best_val_accuracy_min": min(known) if known else None,
                "best_val_accuracy_max": max(known) if known else None,
                "best_val_accuracy_spread": _spread(best),
                "picked_val_accuracy_spread": _spread([r["picked_val_accuracy"] for r in group]),
                "picked_sparsity_spread": _spread([r["picked_sparsity"] for r in group]),
                "hypervolume_spread": _spread([r["hypervolume"] for r in group]),
                "same_pick_params": len(picks) == 1 and None not in picks,
            }
        )
    return spreads


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def seed_markdown(summaries: Sequence[dict[str, Any]]) -> list[str]:
    """The tuning-seed section of the tuning report: spreads, then every seed's pick."""
    rows = seed_rows(summaries)
    spreads = spread_rows(rows)
    return [
        "## Tuning seeds",
        "",
        SEED_NOTE,
        "",
        *table(SPREAD_COLUMNS, ([_text(r[c]) for c in SPREAD_COLUMNS] for r in spreads)),
        "",
        *table(SEED_COLUMNS, ([_text(r[c]) for c in SEED_COLUMNS] for r in rows)),
    ]
