"""One fixed colour per method for MLflow's run table and charts.

MLflow's UI colours runs by itself (by position in the table), so runs of different
methods can share a colour and the colours change from one page to the next. Its run
colour picker stores the choice in the run tag ``mlflow.runColor`` (``#rrggbb``), which
the UI reads back; the bench sets that tag on every cell run, from the table below,
so a method looks the same in every suite and every session.

A method and its ``-graph`` variant (the same mathematics, fused into a CUDA graph)
share a colour; a full-batch cell is a darker shade of its method's colour, so the two
panels of one method (``bsqh-mb`` and ``bsqh-full``) stay apart. A method missing from
the table gets grey (``tests/test_run_colours.py`` checks that every registered method has a
colour of its own).
"""

from __future__ import annotations

GRAPH_SUFFIX = "-graph"
FULL_BATCH_SHADE = 0.6  # a full-batch cell's colour: each channel times this
UNKNOWN = "#7f7f7f"
METHOD_COLOURS = {
    "sgd": "#1f77b4",
    "adam": "#ff7f0e",
    "prox-sgd-l0": "#2ca02c",
    "prox-sgd-l1": "#98df8a",
    "prox-adam-l0": "#ffbb78",
    "bsqh": "#d62728",
    "bsqh-fast": "#ff9896",
    "bsqh-parallel": "#8c564b",
    "gmp": "#9467bd",
    "l0-hc": "#e377c2",
    "emsa": "#17becf",
    "emsa-l0": "#bcbd22",
}


def method_family(method: str) -> str:
    """The registry name without its ``-graph`` suffix."""
    return method.removesuffix(GRAPH_SUFFIX)


def run_colour(method: str, mode: str = "minibatch") -> str:
    """``#rrggbb`` for a cell of ``method`` (a registry name) trained in ``mode``."""
    colour = METHOD_COLOURS.get(method_family(method), UNKNOWN)
    if mode != "fullbatch":
        return colour
    channels = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c * FULL_BATCH_SHADE):02x}" for c in channels)
