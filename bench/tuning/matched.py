"""Accuracy at matched sparsity: validation picks a point of each front, test reports it.

The question a reader of a sparse-training paper asks first is "how accurate is each
method at sparsity s?". A tuned Pareto front answers it on the *validation* split; the
test split must not be used for the choice. So, for each method and target sparsity s
(:data:`MATCHED_SPARSITIES`):

1. **Pick** (validation only): among the study's COMPLETE, non-diverged trials, the one
   with the highest validation accuracy whose sparsity is ≥ s; ties go to the sparser,
   then the earlier trial. That point is always on the Pareto front. No trial reached s:
   the method has no entry at s ("not reached"), which is itself the answer. A point
   whose validation accuracy is not clearly above chance
   (:func:`bench.tuning.pareto.useful_accuracy_floor`, the same floor that picks a
   suite's ``best.json``) does not count: a network pruned until it guesses "reaches"
   every sparsity and would only spend retraining time to report chance accuracy. Such
   targets read "only at chance" instead of "not reached".
2. **Retrain and test**: the picked configuration is trained again with the evaluation
   suite's seeds (fresh seeds, not the tuning seed), and its test accuracy and sparsity
   are reported as medians with bootstrap intervals. A trial picked for several targets
   is trained once; its label ``<method>@matched-<s1>+<s2>`` names the targets it serves.
   The retrained sparsity can fall short of s (another seed prunes differently); the
   table shows it and flags the row rather than hiding it.

Tuning never saw test accuracy, and nothing here feeds test accuracy back into a choice.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench import matched_labels
from bench.report.claims import verdict
from bench.report.significance import TEST_NAME, compare
from bench.tuning.pareto import useful_accuracy_floor

MATCHED_SPARSITIES = (0.5, 0.8, 0.9, 0.95)
LABEL_SEPARATOR = matched_labels.SEPARATOR


def pick_at_sparsity(
    points: Iterable[dict[str, Any]], target: float, floor: float = 0.0
) -> dict[str, Any] | None:
    """The most accurate (validation) non-diverged point with sparsity ≥ ``target`` and
    validation accuracy above ``floor``."""
    usable = [
        p
        for p in points
        if p.get("status", "finished") != "diverged"
        and p["sparsity"] >= target
        and p["val_accuracy"] > floor
    ]
    if not usable:
        return None
    return min(usable, key=lambda p: (-p["val_accuracy"], -p["sparsity"], p["trial"]))


@dataclass
class MatchedPick:
    """One trial of one method, and the target sparsities it was picked for."""

    label: str  # the method's label in the setting
    study: str
    trial: int
    val_accuracy: float
    val_sparsity: float
    params: dict[str, Any]
    targets: list[float] = field(default_factory=list)

    @property
    def cell_label(self) -> str:
        """The label of the retrained cells: the method and the targets this point serves."""
        return matched_labels.label(self.label, self.targets)


#: A target no working point reached: nothing at all reached it, or only chance-level points.
NOT_REACHED = "not reached"
ONLY_AT_CHANCE = "only at chance"


def picks_for_study(
    label: str,
    study: str,
    points: Sequence[dict[str, Any]],
    targets: Sequence[float],
    chance: float | None = None,
) -> tuple[list[MatchedPick], dict[float, MatchedPick | str]]:
    """The distinct picks of one study and, per target, the pick serving it, or why none
    does (:data:`NOT_REACHED`, :data:`ONLY_AT_CHANCE`)."""
    floor = useful_accuracy_floor(chance)
    by_trial: dict[int, MatchedPick] = {}
    per_target: dict[float, MatchedPick | str] = {}
    for target in targets:
        point = pick_at_sparsity(points, target, floor)
        if point is None:
            reached = pick_at_sparsity(points, target) is not None
            per_target[target] = ONLY_AT_CHANCE if reached else NOT_REACHED
            continue
        pick = by_trial.get(point["trial"])
        if pick is None:
            pick = by_trial[point["trial"]] = MatchedPick(
                label=label,
                study=study,
                trial=int(point["trial"]),
                val_accuracy=float(point["val_accuracy"]),
                val_sparsity=float(point["sparsity"]),
                params=dict(point.get("params") or {}),
            )
        pick.targets.append(target)
        per_target[target] = pick
    return list(by_trial.values()), per_target


def front_points(pareto_json: Path) -> tuple[list[dict[str, Any]], float | None]:
    """The front a study wrote (``pareto.json``; each point carries its hyperparameters)
    and the chance accuracy of its data set (None when the study did not record it)."""
    data = json.loads(Path(pareto_json).read_text())
    return list(data.get("front") or []), data.get("chance_accuracy")


# --------------------------------------------------------------------------- table

COLUMNS = (
    "method",
    "target_sparsity",
    "trial",
    "val_accuracy",
    "val_sparsity",
    "cell_label",
    "n_seeds",
    "test_accuracy",
    "test_accuracy_ci_low",
    "test_accuracy_ci_high",
    "sparsity",
    "sparsity_ci_low",
    "sparsity_ci_high",
    "below_target",
    "missing",  # why no trial serves the target: "not reached" or "only at chance"
)


@dataclass(frozen=True)
class SeedFigures:
    """Per-seed test accuracy and sparsity of a retrained pick (finished cells only)."""

    test_accuracy: list[float]
    sparsity: list[float]


def matched_rows(
    per_method: dict[str, dict[float, MatchedPick | str]],
    results: dict[str, SeedFigures],
    interval: Any,
) -> list[dict[str, Any]]:
    """One row per method and target; ``interval(values)`` gives (median, low, high)."""
    rows = []
    for method, per_target in per_method.items():
        for target, pick in per_target.items():
            row: dict[str, Any] = {c: None for c in COLUMNS}
            row.update(method=method, target_sparsity=target)
            if isinstance(pick, str):
                row["missing"] = pick
            else:
                seeds = results.get(pick.cell_label, SeedFigures([], []))
                acc, acc_low, acc_high = interval(seeds.test_accuracy)
                spa, spa_low, spa_high = interval(seeds.sparsity)
                row.update(
                    trial=pick.trial,
                    val_accuracy=pick.val_accuracy,
                    val_sparsity=pick.val_sparsity,
                    cell_label=pick.cell_label,
                    n_seeds=len(seeds.test_accuracy),
                    test_accuracy=acc,
                    test_accuracy_ci_low=acc_low,
                    test_accuracy_ci_high=acc_high,
                    sparsity=spa,
                    sparsity_ci_low=spa_low,
                    sparsity_ci_high=spa_high,
                    below_target=bool(math.isfinite(spa) and spa < target),
                )
            rows.append(row)
    return rows


def _num(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def markdown(rows: list[dict[str, Any]], setting: str, seeds: Sequence[int]) -> str:
    """The accuracy-at-sparsity table: methods as rows, target sparsities as columns."""
    targets = sorted({r["target_sparsity"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    cells = {(r["method"], r["target_sparsity"]): r for r in rows}
    lines = [
        f"# Test accuracy at matched sparsity: setting {setting}",
        "",
        "For each method and target sparsity s, the trial of its study with the highest "
        "**validation** accuracy among those with sparsity ≥ s was retrained with seeds "
        f"{', '.join(map(str, seeds))} and evaluated on **test**. Entries: median test "
        "accuracy [95% bootstrap CI] over seeds, then the retrained median sparsity; "
        "*not reached*: no trial of the study reached s; *only at chance*: the trials "
        "that reached s were not clearly above chance accuracy on validation (pruned until "
        "they guess), so none was retrained; *(!)*: the retrained sparsity "
        "fell below s. `matched-<setting>.csv` has every figure, including the trial and "
        "its validation accuracy.",
        "",
        "| Method | " + " | ".join(f"s ≥ {t:g}" for t in targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for method in methods:
        entries = []
        for target in targets:
            r = cells.get((method, target))
            if r is None or r["trial"] is None:
                entries.append((r or {}).get("missing") or NOT_REACHED)
                continue
            if not r["n_seeds"]:
                entries.append(f"trial {r['trial']}: no finished seed")
                continue
            text = (
                f"{_num(r['test_accuracy'])} [{_num(r['test_accuracy_ci_low'])}, "
                f"{_num(r['test_accuracy_ci_high'])}] @ {_num(r['sparsity'])}"
            )
            entries.append(text + (" (!)" if r["below_target"] else ""))
        lines.append(f"| {method} | " + " | ".join(entries) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, Any]], path: Path, columns: Sequence[str] = COLUMNS) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------------- pairwise

PAIRWISE_COLUMNS = (
    "target_sparsity",
    "a",
    "b",
    "n_a",
    "n_b",
    "median_a",
    "median_b",
    "u",
    "p",
    "verdict",  # of "a is more accurate than b at this target"
    "below_target",  # a side whose retrained median sparsity fell short of the target
)


def pairwise_rows(
    per_method: dict[str, dict[float, MatchedPick | str]],
    results: dict[str, SeedFigures],
    focus: Collection[str] = (),
) -> list[dict[str, Any]]:
    """At each target: the leader (highest median test accuracy) against every other
    method there, and each ``focus`` method (the labels whose method runs bSQH, as
    ``optimizers.algorithm`` says: never the ablation ``bsqh-parallel``, whatever its
    label) against every other method there.

    Only methods compared at the *same* target: a pick at s ≥ 0.5 against one at 0.95 is
    a comparison of sparsities, not of methods. Each row is one exact two-sided
    Mann–Whitney U test on the seeds' test accuracies (the report's test, the same
    verdicts: at least 3 seeds a side, p ≤ 0.05).
    """
    targets = sorted({t for per_target in per_method.values() for t in per_target})
    rows = []
    for target in targets:
        seeds: dict[str, list[float]] = {}
        sparsity: dict[str, list[float]] = {}
        for method, per_target in per_method.items():
            pick = per_target.get(target)
            figures = results.get(pick.cell_label) if isinstance(pick, MatchedPick) else None
            if figures is not None and figures.test_accuracy:
                seeds[method] = figures.test_accuracy
                sparsity[method] = figures.sparsity
        if len(seeds) < 2:
            continue
        leader = max(sorted(seeds), key=lambda m: statistics.median(seeds[m]))
        pairs = [(leader, m) for m in sorted(seeds) if m != leader]
        done = {frozenset(pair) for pair in pairs}
        for mine in sorted(m for m in seeds if m in focus):
            for other in sorted(seeds):
                if other != mine and frozenset((mine, other)) not in done:
                    pairs.append((mine, other))
                    done.add(frozenset((mine, other)))
        for a, b in pairs:
            comparison = compare(a, seeds[a], b, seeds[b])
            short = [m for m in (a, b) if statistics.median(sparsity[m]) < target]
            rows.append(
                {
                    "target_sparsity": target,
                    "a": a,
                    "b": b,
                    "n_a": comparison.n_a,
                    "n_b": comparison.n_b,
                    "median_a": comparison.median_a,
                    "median_b": comparison.median_b,
                    "u": comparison.u,
                    "p": comparison.p,
                    "verdict": verdict(comparison),
                    "below_target": " ".join(short),
                }
            )
    return rows


def pairwise_markdown(rows: list[dict[str, Any]]) -> str:
    """The pairwise tests as a Markdown section (appended to the matched table)."""
    lines = [
        "## Pairwise at each target",
        "",
        "At each target sparsity, the most accurate method (median test accuracy) against "
        f"every other method that reached it, and each bSQH method against every "
        f"other; {TEST_NAME} on the seeds' test accuracies. *verdict* is that of "
        '"A is more accurate than B" (at least 3 seeds a side, p ≤ 0.05); *(!)* marks a '
        "method whose retrained median sparsity fell below the target. The methods meet "
        "the target, not each other's sparsity: compare the sparsities in the table above.",
        "",
        "| s ≥ | A | B | median A | median B | U | p | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        short = set(r["below_target"].split())
        a, b = (m + (" (!)" if m in short else "") for m in (r["a"], r["b"]))
        lines.append(
            f"| {r['target_sparsity']:g} | {a} | {b} | {_num(r['median_a'])} "
            f"(n={r['n_a']}) | {_num(r['median_b'])} (n={r['n_b']}) | {_num(r['u'], 'g')} | "
            f"{_num(r['p'], '.3g')} | {r['verdict']} |"
        )
    if not rows:
        lines.append("| – | – | – | – | – | – | – | no target with two methods |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Test accuracy (median, CI bars) against the retrained sparsity, a line per method."""
    fig, ax = plt.subplots(figsize=(8.5, 5))
    methods = sorted({r["method"] for r in rows})
    for i, method in enumerate(methods):
        points = sorted(
            (
                (
                    r["sparsity"],
                    r["test_accuracy"],
                    r["test_accuracy_ci_low"],
                    r["test_accuracy_ci_high"],
                )
                for r in rows
                if r["method"] == method and r["n_seeds"]
            ),
            key=lambda p: p[0],
        )
        if not points:
            continue
        x = [p[0] for p in points]
        y = [p[1] for p in points]
        err = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=f"C{i % 10}", label=method)
    for target in sorted({r["target_sparsity"] for r in rows}):
        ax.axvline(target, color="0.8", lw=0.8, ls="--", zorder=0)
    ax.set(
        xlabel="retrained sparsity (median over seeds)",
        ylabel="test accuracy (median, 95% bootstrap CI)",
        title=title,
    )
    ax.grid(alpha=0.3)
    if methods:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
