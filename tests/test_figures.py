"""Every report figure of a small synthetic suite, checked for what a reviewer sees.

The figures are intercepted just before they are saved (the report's own ``_save``),
drawn, and checked with the renderer's window extents: no text outside the canvas, no
legend over a panel, no titles or axis labels over one another, no literal escape
sequences, and a PNG at most 700 px wide (what MLflow's run page shows uncut at a
1280 px window, and GitHub unscaled). The PNGs themselves are checked for their width too.
"""

from __future__ import annotations

import struct
from itertools import combinations
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

import bench.report.comparison as comparison
import bench.report.figures as figures
from bench.report import write_report
from tests.test_report import ACCURACIES, SUITE, TARGET, make_record

MAX_WIDTH_PX = 700
#: Pixels two boxes may share before they count as overlapping (antialiasing, padding).
SLACK = 1.0
ESCAPES = ("\\n", "\\t", "\\u", "\\x")


def _texts(figure: Figure) -> list[Text]:
    """The texts a drawn figure shows: tick labels only of the ticks in view (matplotlib
    keeps label objects for ticks beyond the limits, which it does not draw)."""
    ticks, shown = set(), []
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                ticks.update({id(tick.label1), id(tick.label2)})
            if ax.axison:
                for tick in axis._update_ticks():  # the ticks drawn, as matplotlib picks them
                    shown += [t for t in (tick.label1, tick.label2) if t.get_visible()]
    others = [t for t in figure.findobj(Text) if id(t) not in ticks and t.get_visible()]
    return [t for t in [*others, *shown] if t.get_text().strip()]


def _shrunk(box: Bbox) -> Bbox:
    return Bbox.from_extents(box.x0 + SLACK, box.y0 + SLACK, box.x1 - SLACK, box.y1 - SLACK)


def check_figure(figure: Figure, name: str) -> None:
    """The checks of the module docstring on one drawn figure (raises AssertionError)."""
    renderer = figure.canvas.get_renderer()
    figure.canvas.draw()
    canvas = figure.bbox
    width_px = figure.get_figwidth() * figures.DPI
    assert width_px <= MAX_WIDTH_PX, f"{name}: {width_px:.0f} px wide"
    for text in _texts(figure):
        content = text.get_text()
        if not (content.startswith("$") and content.endswith("$")):  # mathtext is TeX
            assert not any(e in content for e in ESCAPES), f"{name}: literal escape {content!r}"
        box = text.get_window_extent(renderer)
        inside = (
            box.x0 >= canvas.x0 - SLACK
            and box.y0 >= canvas.y0 - SLACK
            and box.x1 <= canvas.x1 + SLACK
            and box.y1 <= canvas.y1 + SLACK
        )
        assert inside, f"{name}: {content!r} outside the canvas ({box} vs {canvas})"
    panels = [ax for ax in figure.axes if ax.axison]
    legends = [*figure.legends, *(ax.get_legend() for ax in figure.axes if ax.get_legend())]
    for legend in legends:
        box = _shrunk(legend.get_window_extent(renderer))
        for ax in panels:
            assert not box.overlaps(ax.get_window_extent(renderer)), (
                f"{name}: a legend covers a panel"
            )
    # Titles, axis labels, figure titles and legends never print over one another.
    labels = [figure._suptitle, figure._supxlabel, figure._supylabel]
    for ax in panels:
        labels += [ax.title, ax.xaxis.label, ax.yaxis.label]
    boxes = [
        (t.get_text(), _shrunk(t.get_window_extent(renderer)))
        for t in labels
        if t is not None and t.get_visible() and t.get_text().strip()
    ]
    boxes += [("legend", _shrunk(legend.get_window_extent(renderer))) for legend in legends]
    for (a, box_a), (b, box_b) in combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"{name}: {a!r} overlaps {b!r}"


def png_width(path: Path) -> int:
    with open(path, "rb") as handle:
        header = handle.read(24)
    return struct.unpack(">I", header[16:20])[0]


@pytest.fixture
def checked(monkeypatch):
    """Run every figure through :func:`check_figure` as the report saves it."""
    seen: list[str] = []
    original = figures._save

    def save(figure: Figure, path: Path) -> Path:
        check_figure(figure, Path(path).name)
        seen.append(Path(path).name)
        return original(figure, path)

    monkeypatch.setattr(figures, "_save", save)
    monkeypatch.setattr(comparison, "_save", save)
    return seen


def test_every_report_figure_passes_the_layout_checks(tmp_path, checked):
    records = [make_record(method, seed) for (method, seed) in ACCURACIES]
    records += [make_record("sgd-mini", 0, dataset="fashion-mnist")]
    paths = write_report(records, tmp_path, suite=SUITE, target_accuracy=TARGET)
    kinds = {name.split("__")[-1].removesuffix(".png") for name in checked}
    expected = {
        "test_accuracy_curves",
        "train_loss_curves",
        "sparsity_curves",
        "objective_by_penalty",
        "accuracy_vs_sparsity",
        "bsqh_eps_accept_rate",
        "layer_sparsity",
        "performance_profile",
    }
    assert expected <= kinds, expected - kinds
    assert len(paths.figures) == len(checked)
    for path in paths.figures:
        assert png_width(path) <= MAX_WIDTH_PX, path.name


def test_the_check_catches_a_legend_over_a_panel_and_a_literal_newline():
    """The checks can fail: a figure with both defects is rejected for each."""
    figure, (ax,) = figures._new_axes()
    ax.plot([0, 1], [0, 1], label="line")
    ax.legend(loc="center")
    with pytest.raises(AssertionError, match="legend covers a panel"):
        check_figure(figure, "bad")
    figure, (ax,) = figures._new_axes()
    ax.set_title("first\\nsecond")
    with pytest.raises(AssertionError, match="literal escape"):
        check_figure(figure, "bad")
    figure, (ax,) = figures._new_axes(width=12)  # clamped to the report's width
    ax.text(1.5, 0.5, "far right", transform=ax.transAxes)
    with pytest.raises(AssertionError, match="outside the canvas"):
        check_figure(figure, "bad")


def test_curves_show_every_seed_to_its_end_and_keep_x_zero_on_log_axes():
    """The median stops where seeds stop sharing data, but each seed's line and end dot
    reach its final value; a log-like x axis still shows the first point (x = 0)."""
    import pandas as pd

    rows = []
    for seed, (end, final) in enumerate([(10.0, 0.84), (1000.0, 0.72)]):
        for x, y in [(0.0, 0.1), (end / 10, 0.5), (end, final)]:
            rows.append({"method": "adam", "key": f"k{seed}", "seed": seed, "x": x, "y": y})
    frame = pd.DataFrame(rows)
    _, (ax,) = figures._new_axes()
    assert figures._band_panel(ax, frame, "y", "x", "x", {"adam": (0.1, 0.2, 0.5)})
    ends = {(round(x, 6), round(y, 6)) for line in ax.lines for x, y in line.get_xydata()[-1:]}
    assert (10.0, 0.84) in ends and (1000.0, 0.72) in ends
    assert ax.get_xscale() == "symlog" and ax.get_xlim()[0] == 0
    starts = {tuple(line.get_xydata()[0]) for line in ax.lines}
    assert (0.0, 0.1) in starts


def test_pareto_front_keeps_points_no_other_beats():
    front = figures.pareto_front([(0.0, 0.9), (0.5, 0.85), (0.4, 0.8), (0.9, 0.5), (0.0, 0.7)])
    assert front == [(0.0, 0.9), (0.5, 0.85), (0.9, 0.5)]


def test_panel_titles_name_the_penalty_once():
    assert figures.family_title("R = 0") == "R = 0"
    assert figures.family_title("L0, beta=0.0001") == "R = L0, beta=0.0001"


def test_layer_labels_carry_the_layer_size() -> None:
    """A layer's sparsity weighs by its size: the label names the weight count when the
    record kept it, and stays readable for older records without it."""
    from bench.report.figures import layer_label

    assert layer_label(2, "0.0.weight", 150) == "layer 2\n(0.0, 150 w)"
    assert layer_label(3, "3.1.weight", 48000.0) == "layer 3\n(3.1, 48,000 w)"
    assert layer_label(1, "0.0.weight", float("nan")) == "layer 1\n(0.0)"
    assert layer_label(1, "0.0.weight") == "layer 1\n(0.0)"
