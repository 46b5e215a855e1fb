"""The pictures of a study (front, history, importances) and of all studies' fronts.

Every figure is drawn with matplotlib's Agg backend into a PNG at most 960 px wide
(what MLflow's run page and GitHub show unscaled); legends go beside the axes, never
over the points, and constrained layout keeps every label inside the canvas.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

from bench.tuning.importances import few_trials_note
from bench.tuning.pareto import staircase

LEGEND_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8}
SPARSITY_LABEL = "sparsity (fraction of zero weights)"


def _save(fig: Figure, path: Path, dpi: int = 100) -> Path:
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _draw_front(
    ax: Axes,
    points: Sequence[dict[str, Any]],
    front: Sequence[dict[str, Any]],
    *,
    color: str,
    label: str,
    cloud: dict[str, Any],
    ms: float | None = None,
) -> None:
    """Every trial as a faint point, the front as a staircase through its points."""
    ax.scatter([p["sparsity"] for p in points], [p["val_accuracy"] for p in points], **cloud)
    xs, ys = staircase(front)
    ax.plot(xs, ys, color=color, marker="o", ms=ms, label=label)


def _accuracy_axes(ax: Axes, title: str) -> None:
    ax.set(xlabel=SPARSITY_LABEL, ylabel="validation accuracy", title=title)
    ax.set_xlim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def plot_front(
    points: list[dict[str, Any]],
    front: list[dict[str, Any]],
    chosen: dict[str, Any] | None,
    path: Path,
    *,
    title: str,
) -> Path:
    """One study's trials, its Pareto front and the picked point."""
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    if points:
        cloud = {"color": "0.7", "s": 18, "label": "trials"}
        _draw_front(ax, points, front, color="C0", label="Pareto front", cloud=cloud)
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
    _accuracy_axes(ax, title)
    if points:
        ax.legend(**LEGEND_OUTSIDE)
    return _save(fig, path)


def plot_history(study: optuna.Study, path: Path) -> Path:
    """Validation accuracy and sparsity per trial, with the best accuracy so far."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    trials = sorted(trials, key=lambda t: t.number)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 5), sharex=True, layout="constrained")
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
    return _save(fig, path)


def _last_intermediate(trial: FrozenTrial) -> float:
    values = trial.intermediate_values
    return values[max(values)] if values else 0.0


def plot_importances(
    found: dict[str, dict[str, float]], complete: int, path: Path, *, title: str
) -> str:
    """Draw importances per target (and their JSON beside); return the few-trials caveat."""
    fig, axes = plt.subplots(
        1,
        len(found),
        figsize=(min(4.5 * len(found), 9.6), 3.5),
        squeeze=False,
        layout="constrained",
    )
    for ax, (target, values) in zip(axes[0], found.items(), strict=True):
        names = list(values)[::-1]
        ax.barh(names, [values[n] for n in names], color="C0")
        ax.set(xlabel="fANOVA importance", title=f"for {target}")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{title}: parameter importances", fontsize=10)
    few = few_trials_note(complete)
    if few:
        fig.supxlabel(few, fontsize=8, color="C3")
    _save(fig, path)
    path.with_suffix(".json").write_text(json.dumps(found, indent=1))
    return few


def plot_fronts(summaries: list[dict[str, Any]], path: Path, *, title: str) -> Path:
    """Every study's front in one picture, with its hypervolume in the legend."""
    fig, ax = plt.subplots(figsize=(9.5, 5), layout="constrained")
    for i, s in enumerate(sorted(summaries, key=lambda s: s.get("label") or s["study"])):
        color = f"C{i % 10}"
        _draw_front(
            ax,
            s.get("points", []),
            s.get("front", []),
            color=color,
            label=f"{s.get('label') or s['study']} (HV {s['hypervolume']:.3f})",
            cloud={"color": color, "alpha": 0.25, "s": 12},
            ms=4,
        )
    _accuracy_axes(ax, title)
    ax.legend(**LEGEND_OUTSIDE, title="Pareto front")
    return _save(fig, path)
