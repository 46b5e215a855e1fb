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

#: Curve figures that compare every method on one axis: (column, file kind, axis label).
TIME_SERIES = tuple(
    (m.name, f"{m.name}_curves", str(m.figure)) for m in FIGURE_METRICS if m.comparable
)
#: Figures of values that depend on each method's penalty: one panel per penalty family.
PER_PENALTY = tuple(
    (m.name, f"{m.name}_by_penalty", str(m.figure)) for m in FIGURE_METRICS if not m.comparable
)
#: The x axes of a curve figure: (curve column, axis label). ``passes`` is added here.
X_AXES = (
    ("device_time_s", "device time of training steps [s]"),
    ("epoch", "epochs (passes over the training split)"),
    ("passes", "forward + backward passes (network-equivalent)"),
)
SCATTER_KIND = "accuracy_vs_sparsity"
EPS_KIND = "bsqh_eps_accept_rate"
LAYER_KIND = "layer_sparsity"
FIGSIZE = (7.0, 4.5)
DPI = 110
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")
#: Horizontal spread of coinciding scatter points, as a share of the axis range.
JITTER = 0.012


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


def _new_axes(
    ncols: int = 1, nrows: int = 1, *, width: float | None = None
) -> tuple[Figure, list[Axes]]:
    with sns.axes_style("whitegrid"):
        figure = Figure(
            figsize=(width or FIGSIZE[0] * ncols, FIGSIZE[1] * (0.8 if nrows > 1 else 1) * nrows)
        )
        FigureCanvasAgg(figure)
        axes = figure.subplots(nrows, ncols, squeeze=False)
    return figure, [ax for row in axes for ax in row]


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


def with_passes(curves: pd.DataFrame) -> pd.DataFrame:
    """The curves with ``passes`` = forward + backward passes, the work-based x axis."""
    frame = curves.copy()
    forward = pd.to_numeric(frame["forward_passes"], errors="coerce").astype(float)
    backward = pd.to_numeric(frame["backward_passes"], errors="coerce").astype(float)
    frame["passes"] = forward + backward
    return frame


def _band_panel(
    ax: Axes,
    curves: pd.DataFrame,
    y: str,
    x: str,
    x_label: str,
    colours: dict[str, tuple[float, float, float]],
    *,
    legend: bool,
) -> bool:
    """One panel: per method the median over seeds of ``y`` against ``x`` and its band."""
    log_x = spans_decades(curves[x])
    band = seed_band(curves, y, log_x=log_x, x=x)
    if band.empty:
        ax.set_axis_off()
        return False
    methods = [m for m in colours if m in set(band["method"])]
    for method in methods:
        part = band[band["method"] == method]
        ax.plot(part[x], part["median"], color=colours[method], label=method)
        ax.fill_between(part[x], part["low"], part["high"], color=colours[method], alpha=0.2)
        if len(part) == 1:
            ax.plot(part[x], part["median"], "o", color=colours[method])
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x_label + (" (log scale)" if log_x else ""))
    if legend:
        ax.legend(fontsize=8)
    return True


def _curves(
    curves: pd.DataFrame,
    y: str,
    label: str,
    title: str,
    palette: dict[str, tuple[float, float, float]],
    path: Path,
) -> Path | None:
    """``y`` against device time, epochs and passes: median over seeds, min-max band."""
    if not pd.to_numeric(curves[y], errors="coerce").notna().any():
        return None
    figure, axes = _new_axes(ncols=len(X_AXES), width=5.2 * len(X_AXES))
    colours = {m: palette[m] for m in sorted(curves["method"].unique())}
    drawn = False
    for i, (ax, (x, x_label)) in enumerate(zip(axes, X_AXES, strict=True)):
        drawn |= _band_panel(ax, curves, y, x, x_label, colours, legend=i == 0)
        ax.set_ylabel(label if i == 0 else "")
    if not drawn:
        return None
    figure.suptitle(f"{title}: {label}\nmedian over seeds, band = min–max across seeds")
    return _save(figure, path)


def _per_penalty(
    curves: pd.DataFrame,
    families: dict[str, str],
    y: str,
    label: str,
    title: str,
    palette: dict[str, tuple[float, float, float]],
    path: Path,
) -> Path | None:
    """``y`` against device time with one panel per penalty family (J = CE + R differs)."""
    frame = curves.assign(family=curves["key"].map(families).fillna("unknown"))
    if not pd.to_numeric(frame[y], errors="coerce").notna().any():
        return None
    groups = sorted(frame["family"].unique())
    ncols = min(3, len(groups))
    nrows = -(-len(groups) // ncols)
    figure, axes = _new_axes(ncols=ncols, nrows=nrows, width=5.2 * ncols)
    for ax in axes[len(groups) :]:
        ax.set_axis_off()
    for ax, family in zip(axes, groups, strict=False):
        part = frame[frame["family"] == family]
        colours = {m: palette[m] for m in sorted(part["method"].unique())}
        _band_panel(ax, part, y, *X_AXES[0], colours, legend=True)
        ax.set_title(f"R: {family}", fontsize=9)
        ax.set_ylabel(label)
    figure.suptitle(
        f"{title}: {label}\\none panel per penalty (J of different penalties is not "
        "comparable; see the cross-entropy figure)"
    )
    return _save(figure, path)


def _scatter(
    runs: pd.DataFrame, title: str, palette: dict[str, tuple[float, float, float]], path: Path
) -> Path | None:
    """Final test accuracy against sparsity: one marker per seed, a labelled X per median.

    Methods that do not sparsify all sit at sparsity 0, often at nearly the same
    accuracy; each method gets its own marker shape and a small fixed horizontal offset,
    and every median is labelled, so coinciding points stay distinguishable.
    """
    points = _numeric(runs, ["sparsity", "test_accuracy"]).dropna(
        subset=["sparsity", "test_accuracy"]
    )
    if points.empty:
        return None
    figure, (ax,) = _new_axes()
    methods = sorted(points["method"].unique())
    span = max(float(points["sparsity"].max() - points["sparsity"].min()), 0.2)
    offsets = {m: (i - (len(methods) - 1) / 2) * JITTER * span for i, m in enumerate(methods)}
    for i, method in enumerate(methods):
        cells = points[points["method"] == method]
        marker = MARKERS[i % len(MARKERS)]
        ax.scatter(
            cells["sparsity"] + offsets[method],
            cells["test_accuracy"],
            marker=marker,
            s=45,
            alpha=0.75,
            color=palette[method],
            edgecolors="white",
            linewidths=0.5,
            label=method,
        )
        mx, my = median(cells["sparsity"]), median(cells["test_accuracy"])
        ax.scatter(
            [mx + offsets[method]], [my], marker=marker, s=170, color=palette[method],
            edgecolors="black", linewidths=1.2, zorder=3,
        )  # fmt: skip
        ax.annotate(
            method, (mx + offsets[method], my), xytext=(6, 4 + 9 * (i % 3)),
            textcoords="offset points", fontsize=7, color=palette[method],
        )  # fmt: skip
    ax.set_xlabel("final sparsity (fraction of zero weights; methods offset slightly)")
    ax.set_ylabel("final test accuracy")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{title}\none small marker per seed, large outlined marker = median")
    return _save(figure, path)


MODE_TITLES = {"fullbatch": "full-batch (one iteration = one pass)", "minibatch": "mini-batch"}


def _eps_accept(
    curves: pd.DataFrame, title: str, palette: dict[str, tuple[float, float, float]], path: Path
) -> Path | None:
    """bSQH's eps and running accept rate over iterations, one row of panels per mode.

    Full-batch runs take a handful of iterations where mini-batch ones take thousands;
    sharing an axis would flatten one of them.
    """
    with_eps = curves.groupby("method")["eps"].transform(lambda s: s.notna().any())
    data = _numeric(curves[with_eps.astype(bool)], ["iteration", "eps", "accept_rate"])
    if data.empty:
        return None
    modes = [m for m in ("minibatch", "fullbatch") if m in set(data["mode"])]
    modes += sorted(set(data["mode"].dropna()) - set(modes))
    figure, axes = _new_axes(ncols=2, nrows=len(modes))
    for row, mode in enumerate(modes):
        part_mode = data[data["mode"] == mode]
        methods = sorted(part_mode["method"].unique())
        pair = axes[2 * row : 2 * row + 2]
        for ax, column, label in zip(
            pair, ("eps", "accept_rate"), ("eps", "accept rate"), strict=True
        ):
            part = part_mode.dropna(subset=["iteration", column])
            if part.empty:
                ax.set_axis_off()
                continue
            sns.lineplot(
                data=part, x="iteration", y=column, hue="method",
                hue_order=[m for m in methods if m in set(part["method"])],
                palette={m: palette[m] for m in methods}, units="key", estimator=None,
                alpha=0.8, marker="o" if mode == "fullbatch" else None, ax=ax,
            )  # fmt: skip
            values = part[column].to_numpy(float)
            if column == "eps" and np.all(values > 0) and spans_decades(values, 1.0):
                ax.set_yscale("log")
            ax.set_xlabel("iteration")
            ax.set_ylabel(label)
            ax.set_title(MODE_TITLES.get(mode, str(mode)), fontsize=9)
    figure.suptitle(f"{title}: bSQH eps and accept rate (one line per seed)")
    return _save(figure, path)


def _layers(
    layers: pd.DataFrame, title: str, palette: dict[str, tuple[float, float, float]], path: Path
) -> Path | None:
    """Final sparsity of every prunable layer, median over seeds, one bar per method."""
    if layers.empty:
        return None
    order = list(dict.fromkeys(layers["layer"]))  # the model's order, as recorded
    table = layers.groupby(["layer", "method"])["sparsity"].median().reset_index()
    methods = sorted(table["method"].unique())
    figure, (ax,) = _new_axes(width=max(FIGSIZE[0], 1.2 * len(order) + 2))
    sns.barplot(
        data=table, x="layer", y="sparsity", hue="method", order=order, hue_order=methods,
        palette={m: palette[m] for m in methods}, ax=ax,
    )  # fmt: skip
    ax.set_ylim(0, 1)
    ax.set_xlabel("prunable layer (parameter name)")
    ax.set_ylabel("final sparsity (median over seeds)")
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{title}: sparsity per layer")
    return _save(figure, path)


def draw_figures(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    out_dir: Path,
    layers: pd.DataFrame | None = None,
) -> list[FigureFile]:
    """Every figure for every dataset x model with a finished cell, under ``out_dir``."""
    out_dir = Path(out_dir)
    palette = method_palette(runs["method"])
    done = runs[runs["status"] == FINISHED]
    done_curves = with_passes(curves[curves["key"].isin(set(done["key"]))])
    families = dict(zip(done["key"], done["penalty"], strict=True)) if "penalty" in done else {}
    written: list[FigureFile] = []
    for (dataset, model), cells in done.groupby(list(GROUP_COLUMNS), sort=True):
        where = f"{dataset} × {model}"
        stem = f"{slug(dataset)}__{slug(model)}__"
        keys = set(cells["key"])
        group_curves = done_curves[done_curves["key"].isin(keys)]
        planned: list[tuple[str, str, Path | None]] = []
        for y, kind, label in TIME_SERIES:
            drawn = _curves(group_curves, y, label, where, palette, out_dir / f"{stem}{kind}.png")
            planned.append((kind, f"{label} vs device time, epochs and passes", drawn))
        for y, kind, label in PER_PENALTY:
            path = out_dir / f"{stem}{kind}.png"
            drawn = _per_penalty(group_curves, families, y, label, where, palette, path)
            planned.append((kind, f"{label} per penalty vs device time", drawn))
        drawn = _scatter(cells, where, palette, out_dir / f"{stem}{SCATTER_KIND}.png")
        planned.append((SCATTER_KIND, "final test accuracy vs sparsity", drawn))
        drawn = _eps_accept(group_curves, where, palette, out_dir / f"{stem}{EPS_KIND}.png")
        planned.append((EPS_KIND, "bSQH eps and accept rate", drawn))
        if layers is not None and len(layers):
            group_layers = layers[layers["key"].isin(keys)]
            drawn = _layers(group_layers, where, palette, out_dir / f"{stem}{LAYER_KIND}.png")
            planned.append((LAYER_KIND, "final sparsity per layer", drawn))
        written += [
            FigureFile(str(dataset), str(model), kind, caption, drawn)
            for kind, caption, drawn in planned
            if drawn is not None
        ]
    return written
