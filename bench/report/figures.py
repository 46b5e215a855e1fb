"""The report's PNG figures: one file per dataset x model and kind of plot.

Figures are built as bare ``matplotlib.figure.Figure`` objects on an Agg canvas instead of
through ``pyplot``: nothing touches the global backend or figure registry, so the report
runs headless (CI, a GPU box without a display) and no figure outlives its function.
Like the tables, the figures use finished cells only; the others are listed in REPORT.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.metrics import FIGURE_METRICS
from bench.report.stats import FINISHED, GROUP_COLUMNS, median, seed_band, spans_decades

#: (curve column, file kind, axis label) of the plots against device time.
TIME_SERIES = tuple((m.name, f"{m.name}_vs_time", str(m.figure)) for m in FIGURE_METRICS)
SCATTER_KIND = "accuracy_vs_sparsity"
EPS_KIND = "bsqh_eps_accept_rate"
FIGSIZE = (7.0, 4.5)
DPI = 110


@dataclass(frozen=True)
class FigureFile:
    """A written figure and what it shows, for the Markdown that embeds it."""

    dataset: str
    model: str
    kind: str
    caption: str
    path: Path


def slug(text: object) -> str:
    """A file-name-safe form of a dataset or model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "unnamed"


def method_palette(methods: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per method for the whole report, so a method looks the same everywhere."""
    ordered = sorted(set(methods))
    colours = sns.color_palette("tab10" if len(ordered) <= 10 else "husl", len(ordered))
    return dict(zip(ordered, colours, strict=True))


def _new_axes(ncols: int = 1) -> tuple[Figure, list[Axes]]:
    with sns.axes_style("whitegrid"):
        figure = Figure(figsize=(FIGSIZE[0] * ncols, FIGSIZE[1]))
        FigureCanvasAgg(figure)
        axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    figure.clear()
    return path


def _numeric(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Plain float columns: seaborn does not take pandas' nullable integers everywhere."""
    frame = frame.copy()
    for column in columns:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def _time_series(
    curves: pd.DataFrame,
    y: str,
    label: str,
    title: str,
    palette: dict[str, tuple[float, float, float]],
    path: Path,
) -> Path | None:
    """Median over seeds with a min-max band against device time, one line per method."""
    log_x = spans_decades(curves["device_time_s"])
    band = seed_band(curves, y, log_x=log_x)
    if band.empty:
        return None
    figure, (ax,) = _new_axes()
    methods = sorted(band["method"].unique())
    colours = {m: palette[m] for m in methods}
    sns.lineplot(
        data=band,
        x="device_time_s",
        y="median",
        hue="method",
        hue_order=methods,
        palette=colours,
        estimator=None,
        errorbar=None,
        ax=ax,
    )
    for method, part in band.groupby("method", sort=False):
        ax.fill_between(
            part["device_time_s"], part["low"], part["high"], color=colours[method], alpha=0.2
        )
        if len(part) == 1:
            ax.plot(part["device_time_s"], part["median"], "o", color=colours[method])
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("device time of training steps [s]" + (" (log scale)" if log_x else ""))
    ax.set_ylabel(label)
    ax.set_title(f"{title}\nmedian over seeds, band = min–max across seeds")
    return _save(figure, path)


def _scatter(
    runs: pd.DataFrame, title: str, palette: dict[str, tuple[float, float, float]], path: Path
) -> Path | None:
    """Final test accuracy against sparsity: one dot per seed, a cross at each median."""
    points = _numeric(runs, ["sparsity", "test_accuracy"]).dropna(
        subset=["sparsity", "test_accuracy"]
    )
    if points.empty:
        return None
    figure, (ax,) = _new_axes()
    methods = sorted(points["method"].unique())
    colours = {m: palette[m] for m in methods}
    sns.scatterplot(
        data=points,
        x="sparsity",
        y="test_accuracy",
        hue="method",
        hue_order=methods,
        palette=colours,
        s=45,
        alpha=0.8,
        ax=ax,
    )
    for method, cells in points.groupby("method", sort=True):
        ax.scatter(
            [median(cells["sparsity"])],
            [median(cells["test_accuracy"])],
            marker="X",
            s=170,
            color=colours[method],
            edgecolors="black",
            linewidths=1.0,
            zorder=3,
        )
    ax.set_xlabel("final sparsity (fraction of zero weights)")
    ax.set_ylabel("final test accuracy")
    ax.set_title(f"{title}\none dot per seed, X = median per method")
    return _save(figure, path)


def _eps_accept(
    curves: pd.DataFrame, title: str, palette: dict[str, tuple[float, float, float]], path: Path
) -> Path | None:
    """bSQH's eps and running accept rate over iterations, one line per seed."""
    with_eps = curves.groupby("method")["eps"].transform(lambda s: s.notna().any())
    data = _numeric(curves[with_eps.astype(bool)], ["iteration", "eps", "accept_rate"])
    if data.empty:
        return None
    figure, (left, right) = _new_axes(ncols=2)
    methods = sorted(data["method"].unique())
    colours = {m: palette[m] for m in methods}
    for ax, column, label in ((left, "eps", "eps"), (right, "accept_rate", "accept rate")):
        part = data.dropna(subset=["iteration", column])
        if part.empty:
            ax.set_axis_off()
            continue
        sns.lineplot(
            data=part,
            x="iteration",
            y=column,
            hue="method",
            hue_order=[m for m in methods if m in set(part["method"])],
            palette=colours,
            units="key",
            estimator=None,
            alpha=0.8,
            ax=ax,
        )
        values = part[column].to_numpy(float)
        if column == "eps" and np.all(values > 0) and spans_decades(values, 1.0):
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
    figure.suptitle(f"{title}: bSQH eps and accept rate (one line per seed)")
    return _save(figure, path)


def draw_figures(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: Path) -> list[FigureFile]:
    """Every figure for every dataset x model with a finished cell, under ``out_dir``."""
    out_dir = Path(out_dir)
    palette = method_palette(runs["method"])
    done = runs[runs["status"] == FINISHED]
    done_curves = curves[curves["key"].isin(set(done["key"]))]
    written: list[FigureFile] = []
    for (dataset, model), cells in done.groupby(list(GROUP_COLUMNS), sort=True):
        where = f"{dataset} × {model}"
        stem = f"{slug(dataset)}__{slug(model)}__"
        group_curves = done_curves[done_curves["key"].isin(set(cells["key"]))]
        planned: list[tuple[str, str, Path | None]] = []
        for y, kind, label in TIME_SERIES:
            path = out_dir / f"{stem}{kind}.png"
            drawn = _time_series(group_curves, y, label, where, palette, path)
            planned.append((kind, f"{label} vs device time", drawn))
        path = out_dir / f"{stem}{SCATTER_KIND}.png"
        drawn = _scatter(cells, where, palette, path)
        planned.append((SCATTER_KIND, "final test accuracy vs sparsity", drawn))
        path = out_dir / f"{stem}{EPS_KIND}.png"
        drawn = _eps_accept(group_curves, where, palette, path)
        planned.append((EPS_KIND, "bSQH eps and accept rate", drawn))
        written += [
            FigureFile(str(dataset), str(model), kind, caption, drawn)
            for kind, caption, drawn in planned
            if drawn is not None
        ]
    return written
