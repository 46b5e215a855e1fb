"""The report's PNG figures: one file per dataset x model and kind of plot.

Figures are built as bare ``matplotlib.figure.Figure`` objects on an Agg canvas instead of
through ``pyplot``: nothing touches the global backend or figure registry, so the report
runs headless (CI, a GPU box without a display) and no figure outlives its function.
Like the tables, the figures use finished cells only; the others are listed in REPORT.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.report.stats import FINISHED, GROUP_COLUMNS, median, seed_band, spans_decades
from bench.training.metrics import FIGURE_METRICS

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
#: Inches at :data:`DPI`: every figure is at most 7 x 100 = 700 px wide, what MLflow's
#: run page shows uncut at a 1280 px window (sidebar and assistant panel open) and
#: GitHub without scaling.
FIGSIZE = (7.0, 4.2)
MAX_WIDTH_IN = 7.0
DPI = 100
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")
SEED_LINE = {"linewidth": 0.8, "alpha": 0.45}
MEDIAN_LINE = {"linewidth": 2.0}
#: A note on a figure's bottom edge (what lines and markers mean), instead of a 2nd title.
NOTE = {"fontsize": 7.5, "color": "0.3"}


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
    ncols: int = 1, nrows: int = 1, *, width: float | None = None, height: float | None = None
) -> tuple[Figure, list[Axes]]:
    """A figure at most :data:`MAX_WIDTH_IN` wide whose layout engine keeps titles,
    labels and figure legends inside the canvas and off each other (constrained layout;
    the PNG is exactly figsize x DPI, never grown by a tight bounding box)."""
    with sns.axes_style("whitegrid"):
        figure = Figure(
            figsize=(
                min(width or FIGSIZE[0] * ncols, MAX_WIDTH_IN),
                height or FIGSIZE[1] * (0.85 if nrows > 1 else 1) * nrows,
            ),
            layout="constrained",
        )
        FigureCanvasAgg(figure)
        axes = figure.subplots(nrows, ncols, squeeze=False)
    return figure, [ax for row in axes for ax in row]


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    figure.clear()
    return path


def _legend_below(figure: Figure, axes: Sequence[Axes], *, note: str | None = None) -> None:
    """One legend for the figure, below the panels (it never covers a line), titled by
    an optional note saying what the marks mean."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if not label.startswith("_"):
                handles.setdefault(label, handle)
    if handles or note:
        legend = figure.legend(
            list(handles.values()), list(handles), loc="outside lower center",
            ncols=max(1, min(len(handles), 4)), fontsize=8, frameon=False,
            title=note, title_fontsize=NOTE["fontsize"],
        )  # fmt: skip
        legend.get_title().set_color(NOTE["color"])


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


def _symlog_threshold(values: pd.Series) -> float | None:
    """The smallest positive value when ``values`` span decades (a log-like axis), else None.

    A plain log axis would drop the first evaluation (x = 0: no time spent, no pass done);
    a symmetric-log axis, linear below this threshold, keeps it.
    """
    if not spans_decades(values):
        return None
    present = pd.to_numeric(values, errors="coerce").to_numpy(float)
    present = present[np.isfinite(present) & (present > 0)]
    return float(present.min()) if len(present) else None


def _band_panel(
    ax: Axes,
    curves: pd.DataFrame,
    y: str,
    x: str,
    x_label: str,
    colours: dict[str, tuple[float, float, float]],
) -> bool:
    """One panel: per method each seed's curve (thin), the median and min-max band over
    seeds where all seeds have data (thick), and each seed's final value (a dot).

    The median stops where the fastest seed stops (beyond that it would mix seeds that
    have data with seeds that do not); the seeds' own lines and end dots carry each curve
    to its end, so a method is never shown stopping short of where its seeds finished.
    """
    frame = _numeric(curves, [x, y]).dropna(subset=[x, y])
    if frame.empty:
        ax.set_axis_off()
        return False
    threshold = _symlog_threshold(frame[x])
    band = seed_band(frame, y, log_x=False, x=x)
    for method, colour in colours.items():
        cells = frame[frame["method"] == method]
        if cells.empty:
            continue
        for _, cell in cells.groupby("key", sort=True):
            cell = cell.sort_values(x)
            ax.plot(cell[x], cell[y], color=colour, **SEED_LINE)
            ax.plot(cell[x].iloc[-1:], cell[y].iloc[-1:], "o", color=colour, ms=4)
        part = band[band["method"] == method]
        ax.plot(part[x], part["median"], color=colour, label=method, **MEDIAN_LINE)
        ax.fill_between(part[x], part["low"], part["high"], color=colour, alpha=0.15, lw=0)
    if threshold is not None:
        ax.set_xscale("symlog", linthresh=threshold, linscale=0.5)
        ax.set_xlim(left=0)
    ax.set_xlabel(x_label + (" (log scale above the first step)" if threshold else ""))
    return True


def _curves(
    curves: pd.DataFrame,
    y: str,
    label: str,
    title: str,
    palette: dict[str, tuple[float, float, float]],
    path: Path,
) -> Path | None:
    """``y`` against device time, epochs and passes: seeds, median over seeds, band."""
    if not pd.to_numeric(curves[y], errors="coerce").notna().any():
        return None
    figure, axes = _new_axes(ncols=2, nrows=2, width=MAX_WIDTH_IN, height=6.4)
    colours = {m: palette[m] for m in sorted(curves["method"].unique())}
    drawn = False
    for i, (ax, (x, x_label)) in enumerate(zip(axes, X_AXES, strict=False)):
        drawn |= _band_panel(ax, curves, y, x, SHORT_X.get(x, x_label), colours)
        ax.set_ylabel(label if i % 2 == 0 else "", fontsize=9)
    if not drawn:
        return None
    key = axes[len(X_AXES)]  # the fourth cell of the grid: legend and what marks mean
    key.set_axis_off()
    handles = [h for ax in axes for h in ax.get_legend_handles_labels()[0]]
    names = [n for ax in axes for n in ax.get_legend_handles_labels()[1]]
    unique = dict(zip(names, handles, strict=True))
    key.legend(
        list(unique.values()), list(unique), loc="center", fontsize=8, frameon=False,
        title=CURVE_NOTE, title_fontsize=NOTE["fontsize"],
    )  # fmt: skip
    figure.suptitle(f"{title}: {label}", fontsize=10)
    return _save(figure, path)


#: Short x labels for the three narrow panels of a curve figure.
SHORT_X = {
    "device_time_s": "device time [s]",
    "epoch": "epochs",
    "passes": "forward + backward passes",
}
CURVE_NOTE = (
    "thin: one seed, dot: its final value\nthick: median over seeds where all have data\n"
    "band: min–max across seeds"
)


def family_title(family: str) -> str:
    """A panel title for a penalty family: ``R = L0, beta=0.0001``; ``R = 0`` as is."""
    return family if family.startswith("R ") else f"R = {family}"


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
    ncols = min(2, len(groups))
    nrows = -(-len(groups) // ncols)
    figure, axes = _new_axes(
        ncols=ncols, nrows=nrows, width=min(max(3.4 * ncols, 6.5), MAX_WIDTH_IN)
    )
    for ax in axes[len(groups) :]:
        ax.set_axis_off()
    for ax, family in zip(axes, groups, strict=False):
        part = frame[frame["family"] == family]
        colours = {m: palette[m] for m in sorted(part["method"].unique())}
        _band_panel(ax, part, y, "device_time_s", SHORT_X["device_time_s"], colours)
        ax.set_title(family_title(family), fontsize=9)
        ax.set_ylabel(label, fontsize=9)
    figure.suptitle(f"{title}: {label}", fontsize=10)
    _legend_below(
        figure,
        axes,
        note="one panel per penalty R: J of different penalties is not comparable "
        "(the cross-entropy figure compares all methods)",
    )
    return _save(figure, path)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (sparsity, accuracy) points no other point beats in both, by sparsity."""
    front: list[tuple[float, float]] = []
    for sx, ay in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or ay > front[-1][1]:
            front.append((sx, ay))
    return sorted(front)


def _scatter(
    runs: pd.DataFrame, title: str, palette: dict[str, tuple[float, float, float]], path: Path
) -> Path | None:
    """Final test accuracy against sparsity: one marker per seed, an outlined marker per
    median, and the trade-off line through the medians no other median beats.

    Points sit at their true sparsity (dense methods at 0, not offset); methods are told
    apart by colour and marker shape in the legend, not by labels that could collide.
    """
    points = _numeric(runs, ["sparsity", "test_accuracy"]).dropna(
        subset=["sparsity", "test_accuracy"]
    )
    if points.empty:
        return None
    figure, (ax,) = _new_axes(width=MAX_WIDTH_IN, height=4.6)
    methods = sorted(points["method"].unique())
    medians = []
    for i, method in enumerate(methods):
        cells = points[points["method"] == method]
        marker = MARKERS[i % len(MARKERS)]
        ax.scatter(
            cells["sparsity"], cells["test_accuracy"], marker=marker, s=28, alpha=0.6,
            color=palette[method], edgecolors="none", clip_on=False,
        )  # fmt: skip
        mx, my = median(cells["sparsity"]), median(cells["test_accuracy"])
        medians.append((mx, my))
        ax.scatter(
            [mx], [my], marker=marker, s=110, color=palette[method], edgecolors="black",
            linewidths=1.0, zorder=3, label=method, clip_on=False,
        )  # fmt: skip
    front = pareto_front(medians)
    if len(front) > 1:
        ax.plot(*zip(*front, strict=True), color="0.35", ls="--", lw=1, zorder=2,
                label="trade-off (medians no other beats)")  # fmt: skip
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel("final sparsity (fraction of zero weights)")
    ax.set_ylabel("final test accuracy")
    ax.set_title(f"{title}: accuracy vs sparsity", fontsize=10)
    figure.legend(loc="outside right upper", fontsize=8, frameon=False)
    figure.supxlabel("small: one seed; large, outlined: median over seeds", **NOTE)
    return _save(figure, path)


MODE_TITLES = {"fullbatch": "full-batch (one iteration = one pass)", "minibatch": "mini-batch"}


def _eps_accept(
    curves: pd.DataFrame, title: str, palette: dict[str, tuple[float, float, float]], path: Path
) -> Path | None:
    """bSQH's eps and running accept rate over iterations, one row of panels per mode.

    Full-batch runs take a handful of iterations where mini-batch ones take thousands;
    sharing an axis would flatten one of them. Each seed has its own shade of its
    method's colour; the accept rate's axis is the whole [0, 1], so a wiggle of a
    fraction of a percent looks like one.
    """
    with_eps = curves.groupby("method")["eps"].transform(lambda s: s.notna().any())
    data = _numeric(curves[with_eps.astype(bool)], ["iteration", "eps", "accept_rate"])
    if data.empty:
        return None
    modes = [m for m in ("minibatch", "fullbatch") if m in set(data["mode"])]
    modes += sorted(set(data["mode"].dropna()) - set(modes))
    figure, axes = _new_axes(ncols=2, nrows=len(modes), width=MAX_WIDTH_IN)
    for row, mode in enumerate(modes):
        part_mode = data[data["mode"] == mode]
        pair = axes[2 * row : 2 * row + 2]
        for ax, column, label in zip(
            pair, ("eps", "accept_rate"), ("eps", "accept rate"), strict=True
        ):
            part = part_mode.dropna(subset=["iteration", column])
            if part.empty:
                ax.set_axis_off()
                continue
            for method, cells in part.groupby("method", sort=True):
                seeds = sorted(cells["key"].unique(), key=lambda k: _seed_of(cells, k))
                shades = sns.light_palette(palette[str(method)], len(seeds) + 2)[2:]
                for shade, key in zip(shades, seeds, strict=True):
                    cell = cells[cells["key"] == key].sort_values("iteration")
                    ax.plot(
                        cell["iteration"], cell[column], color=shade, lw=1.2,
                        marker="o" if mode == "fullbatch" else None, ms=3,
                        label=f"{method} s{_seed_of(cells, key)}",
                    )  # fmt: skip
            values = part[column].to_numpy(float)
            if column == "eps" and np.all(values > 0) and spans_decades(values, 1.0):
                ax.set_yscale("log")
            if column == "accept_rate":
                ax.set_ylim(0, 1.02)
            ax.set_xlabel("iteration")
            ax.set_ylabel(label)
            ax.set_title(MODE_TITLES.get(mode, str(mode)), fontsize=9)
    figure.suptitle(f"{title}: bSQH eps and accept rate", fontsize=10)
    _legend_below(figure, axes, note="one line per seed (darker: higher seed)")
    return _save(figure, path)


def _seed_of(cells: pd.DataFrame, key: str) -> object:
    seeds = cells.loc[cells["key"] == key, "seed"] if "seed" in cells else pd.Series([], object)
    return seeds.iloc[0] if len(seeds) else key[:6]


def layer_label(index: int, name: str, size: Any = None) -> str:
    """``layer 1`` over the parameter's name (``0.0.weight`` -> ``0.0``) and its weight
    count: the order in the network first, then PyTorch's path and the layer's size, since
    a layer's sparsity weighs by its size (150 weights of a first conv, 48,000 of a dense)."""
    path = name.removesuffix(".weight")
    if size is None or pd.isna(size):
        return f"layer {index}\n({path})"
    return f"layer {index}\n({path}, {int(size):,} w)"


def _layers(
    layers: pd.DataFrame, title: str, palette: dict[str, tuple[float, float, float]], path: Path
) -> Path | None:
    """Final sparsity of every prunable layer: the median over seeds per method, with
    the min-max across seeds as an error bar."""
    if layers.empty:
        return None
    order = list(dict.fromkeys(layers["layer"]))  # the model's order, as recorded
    sizes = layers.groupby("layer")["size"].max() if "size" in layers else pd.Series(dtype=float)
    labels = {name: layer_label(i + 1, name, sizes.get(name)) for i, name in enumerate(order)}
    frame = layers.assign(label=layers["layer"].map(labels))
    methods = sorted(frame["method"].unique())
    figure, (ax,) = _new_axes(width=min(MAX_WIDTH_IN, max(FIGSIZE[0], 1.1 * len(order) + 3)))
    sns.barplot(
        data=frame, x="label", y="sparsity", hue="method", order=[labels[n] for n in order],
        hue_order=methods, palette={m: palette[m] for m in methods}, estimator="median",
        errorbar=("pi", 100), err_kws={"linewidth": 1}, capsize=0.15, ax=ax, legend=True,
    )  # fmt: skip
    ax.set_ylim(0, 1)
    ax.set_xlabel("prunable layer, in the network's order (PyTorch parameter path, weights)")
    ax.set_ylabel("final sparsity")
    ax.tick_params(axis="x", labelsize=8)
    legend = ax.get_legend()
    if legend is not None:
        legend.remove()
    ax.set_title(f"{title}: sparsity per layer", fontsize=10)
    figure.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=8,
                  frameon=False)  # fmt: skip
    figure.supxlabel("bar: median over seeds; whisker: min–max across seeds", **NOTE)
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
