"""One fixed colour per method for MLflow's run table and charts.

MLflow's UI colours runs by itself (by position in the table), so runs of different
methods can share a colour and the colours change from one page to the next. Its run
colour picker stores the choice in the run tag ``mlflow.runColor`` (``#rrggbb``), which
the UI reads back; the bench sets that tag on every cell run, from the colour each
method declares where it registers (``optimizers.Traits.colour``), so a method looks the
same in every suite and every session.

A method and its ``-graph`` variant (the same mathematics, fused into a CUDA graph)
share a colour (an execution variant inherits its method's traits); a full-batch cell is
a darker shade of its method's colour, so the two panels of one method (``bsqh-mb`` and
``bsqh-full``) stay apart. A method that declares no colour, or a record of one no
longer registered, gets grey (``tests/test_run_colours.py`` checks that every registered
method has a colour of its own).
"""

from __future__ import annotations

import optimizers

FULL_BATCH_SHADE = 0.6  # a full-batch cell's colour: each channel times this
UNKNOWN = "#7f7f7f"


def method_colour(method: str) -> str:
    """The colour ``method`` (a registry name) declares, grey when it declares none."""
    return optimizers.traits(method).colour or UNKNOWN


def run_colour(method: str, mode: str = "minibatch") -> str:
    """``#rrggbb`` for a cell of ``method`` (a registry name) trained in ``mode``."""
    colour = method_colour(method)
    if mode != "fullbatch":
        return colour
    channels = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c * FULL_BATCH_SHADE):02x}" for c in channels)
