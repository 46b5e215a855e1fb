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
   suite's seeds (fresh seeds, not the tuning seed; the same seeds, hence the same
   initialisations, for every method), and its test accuracy and sparsity are reported as
   medians over seeds with the order-statistic interval and its exact level
   (:func:`bench.report.significance.median_interval`). A seed that did not finish counts
   at chance accuracy, never dropped (:func:`bench.report.significance.scored_accuracy`).
   A trial picked for several targets
   is trained once; its label ``<method>@matched-<s1>+<s2>`` names the targets it serves.
   The retrained sparsity can fall short of s (another seed prunes differently); the
   table shows it and flags the row rather than hiding it.

3. **Compare at each target**: paired by seed, the leader and each bSQH method against
   the others that reached the target (:func:`pairwise_rows`); the tests of one target
   form one Holm–Bonferroni family.

Tuning never saw test accuracy, and nothing here feeds test accuracy back into a choice.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.ledger.records import CellRecord
from bench.matched import labels
from bench.matched.study import SeedFigures, seed_figures
from bench.report.significance import (
    ALPHA,
    PAIRED_TEST_NAME,
    TOO_FEW_FOR_FAMILY,
    judge,
    level_text,
    median_interval,
    paired_compare,
)
from bench.tuning.pareto import useful_accuracy_floor

MATCHED_SPARSITIES = (0.5, 0.8, 0.9, 0.95)
LABEL_SEPARATOR = labels.SEPARATOR


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
        return labels.label(self.label, self.targets)


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


# --------------------------------------------------------------------------- seeds


def classes_of(records: Iterable[CellRecord], chances: Iterable[float | None]) -> int | None:
    """The number of classes failed seeds are scored with (chance = 1 / classes): as the
    cells recorded it, else from a front's ``chance_accuracy``; None when neither says."""
    for record in records:
        value = record.summary.get("num_classes")
        if value:
            return int(value)
    for chance in chances:
        if chance:
            return round(1.0 / chance)
    return None


def retrained_figures(
    records: Sequence[CellRecord], num_classes: int | None
) -> dict[str, SeedFigures]:
    """Per cell label, the seeds' test accuracy (failed seeds at chance) and sparsity.

    Raises ValueError when a seed failed and ``num_classes`` is unknown: dropping it
    would favour the method that fails.
    """
    if num_classes is None:
        failed = [r for r in records if r.status != "finished"]
        if failed:
            raise ValueError(
                f"{len(failed)} retrained cell(s) did not finish (e.g. "
                f"{failed[0].config.get('label')!r} seed {failed[0].config.get('seed')}) and "
                "neither a cell nor pareto.json records the number of classes to score them "
                "at chance (1 / classes); a failed seed cannot be dropped instead"
            )
        num_classes = 2  # unused: every cell finished
    return seed_figures(records, num_classes)


# --------------------------------------------------------------------------- table

COLUMNS = (
    "method",
    "target_sparsity",
    "trial",
    "val_accuracy",
    "val_sparsity",
    "cell_label",
    "n_seeds",  # every retrained seed, failed ones included
    "n_failed",  # seeds that did not finish, counted at chance accuracy
    "test_accuracy",
    "test_accuracy_low",
    "test_accuracy_high",
    "interval_level",  # exact coverage of both intervals of the row
    "sparsity",
    "sparsity_low",
    "sparsity_high",
    "below_target",
    "missing",  # why no trial serves the target: "not reached" or "only at chance"
)


def matched_rows(
    per_method: dict[str, dict[float, MatchedPick | str]],
    results: Mapping[str, SeedFigures],
) -> list[dict[str, Any]]:
    """One row per method and target: the pick and, over its retrained seeds, the median
    test accuracy and sparsity with their order-statistic intervals."""
    rows = []
    for method, per_target in per_method.items():
        for target, pick in per_target.items():
            row: dict[str, Any] = dict.fromkeys(COLUMNS)
            row.update(method=method, target_sparsity=target)
            if isinstance(pick, str):
                row["missing"] = pick
                rows.append(row)
                continue
            row.update(
                trial=pick.trial,
                val_accuracy=pick.val_accuracy,
                val_sparsity=pick.val_sparsity,
                cell_label=pick.cell_label,
                n_seeds=0,
                n_failed=0,
            )
            seeds = results.get(pick.cell_label)
            if seeds is not None and seeds.test_accuracy:
                order = sorted(seeds.test_accuracy)
                accuracy = [seeds.test_accuracy[s] for s in order]
                sparsity = [seeds.sparsity[s] for s in order]
                acc, spa = median_interval(accuracy), median_interval(sparsity)
                row.update(
                    n_seeds=len(order),
                    n_failed=len(seeds.failed),
                    test_accuracy=statistics.median(accuracy),
                    test_accuracy_low=acc.low,
                    test_accuracy_high=acc.high,
                    interval_level=acc.level,
                    sparsity=statistics.median(sparsity),
                    sparsity_low=spa.low,
                    sparsity_high=spa.high,
                    below_target=statistics.median(sparsity) < target,
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
        f"{', '.join(map(str, seeds))} (the same seeds for every method) and evaluated on "
        "**test**. Entries: median test accuracy over seeds [order-statistic interval of "
        "the median] (its exact coverage level: with fewer than 6 seeds the interval is "
        "the range, 75 % for 3 seeds, 87.5 % for 4), then the retrained median sparsity. A "
        "seed that did not finish counts at chance accuracy (*k failed*), never dropped. "
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
                entries.append(f"trial {r['trial']}: no retrained seed")
                continue
            text = (
                f"{_num(r['test_accuracy'])} [{_num(r['test_accuracy_low'])}, "
                f"{_num(r['test_accuracy_high'])}] ({level_text(r['interval_level'])}) "
                f"@ {_num(r['sparsity'])}"
            )
            if r["n_failed"]:
                text += f", {r['n_failed']} of {r['n_seeds']} failed"
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
    "n_pairs",  # seeds both retrained (the same seeds: the same initialisations)
    "median_a",
    "median_b",
    "median_difference",  # of the per-seed differences a - b
    "difference_low",
    "difference_high",
    "interval_level",
    "p",  # exact two-sided Wilcoxon signed-rank test
    "p_holm",  # Holm-adjusted within the target's family
    "effect_size",
    "effect_name",
    "family_size",
    "smallest_holm_p",  # the smallest adjusted p the target's family can reach
    "verdict",  # of "a is more accurate than b at this target"
    "below_target",  # a side whose retrained median sparsity fell short of the target
)


def _contenders(
    per_method: dict[str, dict[float, MatchedPick | str]],
    results: Mapping[str, SeedFigures],
    target: float,
) -> dict[str, SeedFigures]:
    """The methods with retrained seeds at ``target``, and those seeds' figures."""
    here = {}
    for method, per_target in per_method.items():
        pick = per_target.get(target)
        figures = results.get(pick.cell_label) if isinstance(pick, MatchedPick) else None
        if figures is not None and figures.test_accuracy:
            here[method] = figures
    return here


def _pairs(accuracy: dict[str, float], focus: Collection[str]) -> list[tuple[str, str]]:
    """The leader against every other method, then each focus method against the rest,
    every pair once."""
    leader = max(sorted(accuracy), key=lambda m: accuracy[m])
    pairs = [(leader, m) for m in sorted(accuracy) if m != leader]
    done = {frozenset(pair) for pair in pairs}
    for mine in sorted(m for m in accuracy if m in focus):
        for other in sorted(accuracy):
            if other != mine and frozenset((mine, other)) not in done:
                pairs.append((mine, other))
                done.add(frozenset((mine, other)))
    return pairs


def pairwise_rows(
    per_method: dict[str, dict[float, MatchedPick | str]],
    results: Mapping[str, SeedFigures],
    focus: Collection[str] = (),
    alpha: float = ALPHA,
) -> list[dict[str, Any]]:
    """At each target: the leader (highest median test accuracy, failed seeds at chance)
    against every other method there, and each ``focus`` method (the labels whose method
    runs bSQH, as ``optimizers.algorithm`` says: never the ablation ``bsqh-parallel``,
    whatever its label) against every other method there.

    Only methods compared at the *same* target: a pick at s ≥ 0.5 against one at 0.95 is
    a comparison of sparsities, not of methods. The picks are retrained with the same
    seeds, so each row is the exact paired test of the report
    (:func:`bench.report.significance.paired_compare`) on the seeds both ran, and the rows
    of one target form one Holm–Bonferroni family (:func:`bench.report.significance.judge`):
    its verdict, of "A is more accurate than B", needs a Holm-adjusted p ≤ ``alpha``, and
    where the family cannot reach ``alpha`` at all every row says so. A pair with no seed
    in common is left out.
    """
    targets = sorted({t for per_target in per_method.values() for t in per_target})
    rows = []
    for target in targets:
        here = _contenders(per_method, results, target)
        if len(here) < 2:
            continue
        median = {m: statistics.median(f.test_accuracy.values()) for m, f in here.items()}
        tests = []
        for a, b in _pairs(median, focus):
            common = sorted(set(here[a].test_accuracy) & set(here[b].test_accuracy))
            if common:
                values_a = [here[a].test_accuracy[s] for s in common]
                values_b = [here[b].test_accuracy[s] for s in common]
                tests.append((a, b, values_a, values_b, paired_compare(values_a, values_b)))
        family = judge([t[-1] for t in tests], alpha)
        for (a, b, values_a, values_b, _), judged in zip(tests, family.judged, strict=True):
            c = judged.comparison
            short = [m for m in (a, b) if statistics.median(here[m].sparsity.values()) < target]
            rows.append(
                {
                    "target_sparsity": target,
                    "a": a,
                    "b": b,
                    "n_pairs": c.n,
                    "median_a": statistics.median(values_a),
                    "median_b": statistics.median(values_b),
                    "median_difference": c.median_difference,
                    "difference_low": c.interval.low,
                    "difference_high": c.interval.high,
                    "interval_level": c.interval.level,
                    "p": c.p_value,
                    "p_holm": judged.adjusted_p,
                    "effect_size": c.effect_size,
                    "effect_name": c.effect_name,
                    "family_size": judged.family_size,
                    "smallest_holm_p": family.smallest_adjusted_p,
                    "verdict": judged.verdict,
                    "below_target": " ".join(short),
                }
            )
    return rows


def pairwise_markdown(rows: list[dict[str, Any]], alpha: float = ALPHA) -> str:
    """The pairwise tests as a Markdown section (appended to the matched table)."""
    lines = [
        "## Pairwise at each target",
        "",
        "At each target sparsity, the most accurate method (median test accuracy, failed "
        "seeds at chance) against every other method that reached it, and each bSQH method "
        f"against every other; {PAIRED_TEST_NAME} on the seeds' test accuracies (the same "
        "seeds, so the same initialisations, for every method). *A − B*: the median of the "
        "per-seed differences with its order-statistic interval and exact level; *r*: the "
        "matched-pairs rank-biserial correlation (+1: A better on every seed). The tests "
        'of one target form one Holm–Bonferroni family; *verdict* is that of "A is more '
        f'accurate than B" at Holm-adjusted p ≤ {alpha:g}. With n seeds the smallest p is '
        "2 / 2^n, so a family of m tests reaches m · 2 / 2^n at best; where that exceeds "
        f"{alpha:g} every verdict of the target reads *too few seeds for this family*. "
        "*(!)* marks a method whose retrained median sparsity fell below the target. The "
        "methods meet the target, not each other's sparsity: compare the sparsities in "
        "the table above.",
        "",
    ]
    for target in sorted({r["target_sparsity"] for r in rows}):
        first = next(r for r in rows if r["target_sparsity"] == target)
        floor = first["smallest_holm_p"]
        lines.append(
            f"- s ≥ {target:g}: {first['family_size']} paired tests; smallest attainable "
            f"Holm-adjusted p = {floor:.3g}" + (f": {TOO_FEW_FOR_FAMILY}" if floor > alpha else "")
        )
    if rows:
        lines.append("")
    lines += [
        "| s ≥ | A | B | median A | median B | A − B | p | Holm p | r | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        short = set(r["below_target"].split())
        a, b = (m + (" (!)" if m in short else "") for m in (r["a"], r["b"]))
        difference = (
            f"{_num(r['median_difference'])} [{_num(r['difference_low'])}, "
            f"{_num(r['difference_high'])}] ({level_text(r['interval_level'])})"
        )
        lines.append(
            f"| {r['target_sparsity']:g} | {a} | {b} | {_num(r['median_a'])} | "
            f"{_num(r['median_b'])} | {difference} (n={r['n_pairs']}) | {_num(r['p'], '.3g')} | "
            f"{_num(r['p_holm'], '.3g')} | {_num(r['effect_size'], '+.2f')} | {r['verdict']} |"
        )
    if not rows:
        lines.append("| – | – | – | – | – | – | – | – | – | no target with two methods |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Test accuracy (median, order-statistic interval as bars) against the retrained
    sparsity, a line per method; the intervals' levels are in the table."""
    fig, ax = plt.subplots(figsize=(8.5, 5))
    methods = sorted({r["method"] for r in rows})
    for i, method in enumerate(methods):
        points = sorted(
            (
                (
                    r["sparsity"],
                    r["test_accuracy"],
                    r["test_accuracy_low"],
                    r["test_accuracy_high"],
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
        ylabel="test accuracy (median, interval of the median)",
        title=title,
    )
    ax.grid(alpha=0.3)
    if methods:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
