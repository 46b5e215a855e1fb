"""What a study leaves behind: trials.csv, best/pareto JSON, figures, hypervolume tables.

Files under ``<out>/studies/<study>/``:

- ``trials.csv``: every trial (Optuna's table, dict-valued attributes as JSON).
- ``pareto.json``: the Pareto front of (validation accuracy, sparsity) over COMPLETE
  trials, with each point's hyperparameters, and its dominated hypervolume.
- ``best.json``: ``{"params": {...}, "study", "objective", "values", "trial",
  "picked_by", ...}``: what a suite's ``hparams = "tuned:<study>"`` resolves to.
- ``summary.json``: counts, hypervolume, the pick and notes (read by ``tune-all``).
- ``pareto-front.png``, ``history.png``, ``importances.png`` (the last one is skipped,
  with a note in ``summary.json``, when fewer than two trials completed or no parameter
  or target varies: importances are undefined then).

How a point is picked (``picked_by`` says which rule applied): among COMPLETE trials
that did not diverge, the most accurate one whose sparsity is at least ``S``
(``--min-sparsity``, default 0.5) and whose accuracy is clearly above chance (by at least
``ABOVE_CHANCE_SHARE`` of the way from chance to 1: 0.19 for ten classes); ties go to the
sparser, then the earlier trial. Such a point always lies on the Pareto front. If no trial
qualifies (always the case for ``sgd`` and ``adam``, which produce no exact zeros, and for
a method whose only sparse points are pruned to guessing), the most accurate trial
overall is picked and ``picked_by`` records the fallback. The same rule serves ``accuracy`` studies,
where it is the best feasible trial. Pruned trials are never picked: they did not train
for the whole budget.

Hypervolume: the area of the (accuracy, sparsity) region dominated by the front, with
reference point (0, 0); both axes lie in [0, 1], so it does too. Methods that never
produce zeros have hypervolume 0 by construction; their rows still show their accuracy.
Because a fully pruned network still scores chance accuracy, the table also gives the
hypervolume above chance, reference point (1 / classes, 0), which such points do not
inflate.
``tune-all`` writes ``<out>/studies/hypervolume-<setting>.{csv,md}`` and one plot of all
methods' fronts, ``<out>/studies/pareto-fronts-<setting>.png``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

DEFAULT_MIN_SPARSITY = 0.5
#: Below this many COMPLETE trials fANOVA importances are noisy: the figure says so.
FEW_TRIALS_FOR_IMPORTANCE = 20
#: Legends go beside the axes, never over the points.
LEGEND_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8}
REFERENCE_POINT = (0.0, 0.0)


# --------------------------------------------------------------------------- geometry


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` dominates ``b`` when maximising: at least as good everywhere, better somewhere."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )


def pareto_indices(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (maximising every coordinate); equal points stay."""
    return [
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p) for j, q in enumerate(points) if j != i)
    ]


def hypervolume_2d(
    points: Sequence[Sequence[float]], reference: Sequence[float] = REFERENCE_POINT
) -> float:
    """Area dominated by ``points`` (maximising both coordinates) above ``reference``.

    Sort the front by the first coordinate, descending; each point then adds the
    rectangle between its first coordinate and the reference, and between its second
    coordinate and the previous (lower) one. Points not strictly above the reference in
    both coordinates add nothing.
    """
    rx, ry = reference
    kept = [(float(x), float(y)) for x, y in points if x > rx and y > ry]
    front = sorted({kept[i] for i in pareto_indices(kept)}, key=lambda p: (-p[0], p[1]))
    area, previous_y = 0.0, ry
    for x, y in front:  # x descends, so y ascends along a front
        if y > previous_y:
            area += (x - rx) * (y - previous_y)
            previous_y = y
    return area


# --------------------------------------------------------------------------- points


def trial_points(study: optuna.Study) -> list[dict[str, Any]]:
    """COMPLETE trials as points: number, val_accuracy, sparsity, status, hparams."""
    points = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        values = trial.values or []
        accuracy = attrs.get("val_accuracy", values[0] if values else 0.0)
        sparsity = attrs.get("sparsity", values[1] if len(values) > 1 else 0.0)
        points.append(
            {
                "trial": trial.number,
                "val_accuracy": float(accuracy),
                "sparsity": float(sparsity),
                "status": attrs.get("status", "finished"),
                "params": dict(attrs.get("hparams") or trial.params),
            }
        )
    return points


def front_of(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Pareto-optimal points, sorted by sparsity."""
    coords = [(p["val_accuracy"], p["sparsity"]) for p in points]
    front = [points[i] for i in pareto_indices(coords)]
    return sorted(front, key=lambda p: (p["sparsity"], -p["val_accuracy"], p["trial"]))


#: A sparse point is worth picking only this far (as a share of the way from chance
#: accuracy to 1) above chance: a network pruned until it guesses is sparse but useless.
ABOVE_CHANCE_SHARE = 0.1


def pick(
    points: list[dict[str, Any]], min_sparsity: float, chance: float | None = None
) -> tuple[dict[str, Any] | None, str]:
    """The point a suite should use, and the rule that picked it (module docstring)."""
    usable = [p for p in points if p["status"] != "diverged"]
    if not usable:
        return None, "no COMPLETE trial that did not diverge"

    def key(p: dict[str, Any]) -> tuple[float, float, int]:
        return (-p["val_accuracy"], -p["sparsity"], p["trial"])

    floor = 0.0 if chance is None else chance + ABOVE_CHANCE_SHARE * (1.0 - chance)
    sparse = [p for p in usable if p["sparsity"] >= min_sparsity and p["val_accuracy"] > floor]
    if sparse:
        return min(sparse, key=key), (
            f"most accurate trial with sparsity >= {min_sparsity:g} (validation split)"
        )
    return min(usable, key=key), (
        f"most accurate trial overall: no trial reached sparsity >= {min_sparsity:g} "
        f"with validation accuracy above {floor:.3g} (fallback; validation split)"
    )


# --------------------------------------------------------------------------- files


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def write_trials_csv(study: optuna.Study, path: Path) -> None:
    frame = study.trials_dataframe(multi_index=False)
    frame = frame.drop(columns=[c for c in frame.columns if c.endswith("traceback")])
    frame = frame.map(_jsonable)
    frame.to_csv(path, index=False)


def write_study_outputs(
    study: optuna.Study,
    directory: Path,
    *,
    objective: str,
    min_sparsity: float,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Write every per-study file into ``directory`` and return the summary."""
    directory.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    counts = {state.name: 0 for state in TrialState}
    surplus = 0
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
        surplus += bool(trial.user_attrs.get("surplus"))
    points = trial_points(study)
    front = front_of(points)
    coords = [(p["val_accuracy"], p["sparsity"]) for p in points]
    hypervolume = hypervolume_2d(coords)
    chance = info.get("chance_accuracy")
    above_chance = hypervolume_2d(coords, reference=(chance, 0.0)) if chance else None
    chosen, picked_by = pick(points, min_sparsity, chance)

    write_trials_csv(study, directory / "trials.csv")
    (directory / "pareto.json").write_text(
        json.dumps(
            {
                "study": study.study_name,
                "objective": objective,
                "axes": ["val_accuracy", "sparsity"],
                "reference_point": list(REFERENCE_POINT),
                "hypervolume": hypervolume,
                "hypervolume_above_chance": above_chance,
                "chance_accuracy": chance,
                "complete_trials": len(points),
                "front": front,
            },
            indent=1,
        )
    )
    best_path = directory / "best.json"
    if chosen is not None:
        best_path.write_text(
            json.dumps(
                {
                    "params": chosen["params"],
                    "study": study.study_name,
                    "objective": objective,
                    "values": {
                        "val_accuracy": chosen["val_accuracy"],
                        "sparsity": chosen["sparsity"],
                    },
                    "trial": chosen["trial"],
                    "picked_by": picked_by,
                    "min_sparsity": min_sparsity,
                    "on_pareto_front": any(p["trial"] == chosen["trial"] for p in front),
                    **info,
                },
                indent=1,
                default=str,
            )
        )
    else:
        notes.append(f"no best.json: {picked_by}")
        best_path.unlink(missing_ok=True)

    plot_front(points, front, chosen, directory / "pareto-front.png", title=study.study_name)
    plot_history(study, directory / "history.png")
    importance_note = plot_importances(study, objective, directory / "importances.png")
    if importance_note:
        notes.append(importance_note)

    summary = {
        "study": study.study_name,
        "objective": objective,
        "min_sparsity": min_sparsity,
        "trials": counts,
        "finished": counts["COMPLETE"] + counts["PRUNED"],
        "surplus": surplus,
        "front_size": len(front),
        "hypervolume": hypervolume,
        "hypervolume_above_chance": above_chance,
        "best_val_accuracy": max((p["val_accuracy"] for p in points), default=None),
        "max_sparsity": max((p["sparsity"] for p in points), default=None),
        "picked": None
        if chosen is None
        else {
            "trial": chosen["trial"],
            "val_accuracy": chosen["val_accuracy"],
            "sparsity": chosen["sparsity"],
            "picked_by": picked_by,
        },
        "front": [
            {"trial": p["trial"], "val_accuracy": p["val_accuracy"], "sparsity": p["sparsity"]}
            for p in front
        ],
        "points": [
            {"trial": p["trial"], "val_accuracy": p["val_accuracy"], "sparsity": p["sparsity"]}
            for p in points
        ],
        "notes": notes,
        **info,
    }
    (directory / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


# --------------------------------------------------------------------------- figures


def _staircase(front: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """x (sparsity) and y (accuracy) of the dominated region's upper boundary."""
    xs: list[float] = []
    ys: list[float] = []
    for p in sorted(front, key=lambda p: p["sparsity"]):
        if xs:
            xs.append(xs[-1])
            ys.append(p["val_accuracy"])
        xs.append(p["sparsity"])
        ys.append(p["val_accuracy"])
    return xs, ys


def plot_front(
    points: list[dict[str, Any]],
    front: list[dict[str, Any]],
    chosen: dict[str, Any] | None,
    path: Path,
    *,
    title: str,
) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    if points:
        ax.scatter(
            [p["sparsity"] for p in points],
            [p["val_accuracy"] for p in points],
            color="0.7",
            s=18,
            label="trials",
        )
        xs, ys = _staircase(front)
        ax.plot(xs, ys, color="C0", marker="o", label="Pareto front")
    if chosen is not None:
        ax.scatter(
            [chosen["sparsity"]],
            [chosen["val_accuracy"]],
            marker="*",
            s=180,
            color="C3",
            zorder=5,
            label=f"picked (trial {chosen['trial']})",
        )
    if not points:
        ax.text(0.5, 0.5, "no COMPLETE trials", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="sparsity (fraction of zero weights)", ylabel="validation accuracy", title=title)
    ax.set_xlim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if points:
        ax.legend(**LEGEND_OUTSIDE)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_history(study: optuna.Study, path: Path) -> None:
    """Validation accuracy and sparsity per trial, with the best accuracy so far."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    trials = sorted(trials, key=lambda t: t.number)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 5), sharex=True)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    top.scatter(
        [t.number for t in complete],
        [t.user_attrs.get("val_accuracy", 0.0) for t in complete],
        s=18,
        label="complete",
    )
    if pruned:
        last = [_last_intermediate(t) for t in pruned]
        top.scatter([t.number for t in pruned], last, marker="x", color="C1", label="pruned")
    best, xs, ys = -math.inf, [], []
    for t in complete:
        best = max(best, t.user_attrs.get("val_accuracy", 0.0))
        xs.append(t.number)
        ys.append(best)
    if xs:
        top.step(xs, ys, where="post", color="C3", label="best so far")
    top.set(ylabel="validation accuracy", title=f"{study.study_name}: optimization history")
    top.grid(alpha=0.3)
    if trials:
        top.legend(**LEGEND_OUTSIDE)
    bottom.scatter(
        [t.number for t in complete], [t.user_attrs.get("sparsity", 0.0) for t in complete], s=18
    )
    bottom.set(xlabel="trial number", ylabel="sparsity")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.grid(alpha=0.3)
    if not trials:
        top.text(0.5, 0.5, "no finished trials", ha="center", va="center", transform=top.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _last_intermediate(trial: FrozenTrial) -> float:
    values = trial.intermediate_values
    return values[max(values)] if values else 0.0


def importances(study: optuna.Study, objective: str) -> tuple[dict[str, dict[str, float]], str]:
    """fANOVA importances per target (accuracy, and sparsity for Pareto studies).

    Returns the importances and a note naming what was skipped and why (empty if
    nothing was). Importances need at least two COMPLETE trials, a parameter that takes
    two values, and a target that varies; otherwise they are undefined.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}, f"importances skipped: {len(complete)} COMPLETE trial(s), need >= 2"
    varying = [
        name
        for name in {n for t in complete for n in t.params}
        if len({json.dumps(t.params.get(name)) for t in complete}) > 1
    ]
    if not varying:
        return {}, "importances skipped: no parameter varies across COMPLETE trials"
    targets = {"val_accuracy": "val_accuracy"}
    if objective == "pareto":
        targets["sparsity"] = "sparsity"
    result: dict[str, dict[str, float]] = {}
    skipped = []
    for name, attr in targets.items():
        values = {round(float(t.user_attrs.get(attr, 0.0)), 12) for t in complete}
        if len(values) < 2:
            skipped.append(f"{name} (constant across trials)")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result[name] = optuna.importance.get_param_importances(
                    study,
                    evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                    target=lambda t, attr=attr: float(t.user_attrs.get(attr, 0.0)),
                )
        except Exception as error:  # degenerate data: skip with the reason
            skipped.append(f"{name} ({type(error).__name__}: {error})")
    note = f"importances skipped for: {', '.join(skipped)}" if skipped else ""
    return result, note


def plot_importances(study: optuna.Study, objective: str, path: Path) -> str:
    """Draw the importances; return a note if some or all were skipped."""
    found, note = importances(study, objective)
    if not found:
        path.unlink(missing_ok=True)
        return note
    fig, axes = plt.subplots(1, len(found), figsize=(4.5 * len(found), 3.5), squeeze=False)
    for ax, (target, values) in zip(axes[0], found.items(), strict=True):
        names = list(values)[::-1]
        ax.barh(names, [values[n] for n in names], color="C0")
        ax.set(xlabel="fANOVA importance", title=f"for {target}")
        ax.grid(axis="x", alpha=0.3)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    fig.suptitle(f"{study.study_name}: parameter importances", fontsize=10)
    if complete < FEW_TRIALS_FOR_IMPORTANCE:
        few = (
            f"from {complete} trials only (< {FEW_TRIALS_FOR_IMPORTANCE}): fANOVA importances "
            "this few trials are indicative, not reliable"
        )
        fig.text(0.5, 0.005, few, ha="center", va="bottom", fontsize=8, color="C3")
        note = "; ".join(n for n in (note, f"importances {few}") if n)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    (path.with_suffix(".json")).write_text(json.dumps(found, indent=1))
    return note


# --------------------------------------------------------------------------- overview

TABLE_COLUMNS = (
    "label",
    "method",
    "mode",
    "study",
    "finished",
    "failed",
    "front_size",
    "hypervolume",
    "hv_above_chance",
    "best_val_accuracy",
    "max_sparsity",
    "picked_val_accuracy",
    "picked_sparsity",
    "picked_trial",
)


def hypervolume_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per study, most hypervolume first."""
    rows = []
    for s in summaries:
        picked = s.get("picked") or {}
        rows.append(
            {
                "label": s.get("label"),
                "method": s.get("method"),
                "mode": s.get("mode"),
                "study": s["study"],
                "finished": s["finished"],
                "failed": s["trials"]["FAIL"] - s.get("surplus", 0),
                "front_size": s["front_size"],
                "hypervolume": s["hypervolume"],
                "hv_above_chance": s.get("hypervolume_above_chance"),
                "best_val_accuracy": s["best_val_accuracy"],
                "max_sparsity": s["max_sparsity"],
                "picked_val_accuracy": picked.get("val_accuracy"),
                "picked_sparsity": picked.get("sparsity"),
                "picked_trial": picked.get("trial"),
            }
        )
    return sorted(rows, key=lambda r: (-r["hypervolume"], -(r["best_val_accuracy"] or 0)))


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_overview(
    summaries: list[dict[str, Any]], directory: Path, name: str, *, caption: str = ""
) -> dict[str, Path]:
    """The hypervolume table (CSV + Markdown) and one plot of every study's front."""
    import csv

    directory.mkdir(parents=True, exist_ok=True)
    rows = hypervolume_rows(summaries)
    csv_path = directory / f"hypervolume-{name}.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(TABLE_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    md_path = directory / f"hypervolume-{name}.md"
    header = f"# Dominated hypervolume per method: setting {name}\n\n"
    note = (
        "`hypervolume`: area dominated by the method's Pareto front in (validation accuracy, "
        "sparsity), reference point (0, 0); larger is better. Methods that produce no exact "
        "zeros have hypervolume 0 by construction. `hv_above_chance` uses the reference point "
        "(chance accuracy, 0) instead, so fully pruned networks that only guess add nothing.\n\n"
    )
    md_path.write_text(header + (caption + "\n\n" if caption else "") + note + markdown_table(rows))

    fig, ax = plt.subplots(figsize=(9.5, 5))
    for i, s in enumerate(sorted(summaries, key=lambda s: s.get("label") or s["study"])):
        color = f"C{i % 10}"
        label = s.get("label") or s["study"]
        points = s.get("points", [])
        ax.scatter(
            [p["sparsity"] for p in points],
            [p["val_accuracy"] for p in points],
            color=color,
            alpha=0.25,
            s=12,
        )
        xs, ys = _staircase(s.get("front", []))
        ax.plot(xs, ys, color=color, marker="o", ms=4, label=f"{label} (HV {s['hypervolume']:.3f})")
    ax.set(
        xlabel="sparsity (fraction of zero weights)",
        ylabel="validation accuracy",
        title=f"Pareto fronts, setting {name}" + (f"\n{caption}" if caption else ""),
    )
    ax.set_xlim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="Pareto front")
    fig.tight_layout()
    png_path = directory / f"pareto-fronts-{name}.png"
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return {"csv": csv_path, "markdown": md_path, "figure": png_path}
