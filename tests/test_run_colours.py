"""Every registered method has its own fixed MLflow run colour, in both modes."""

from __future__ import annotations

import re

from bench.tracking.colours import METHOD_COLOURS, UNKNOWN, method_family, run_colour
from optimizers.registry import available


def test_every_method_has_a_distinct_colour_in_each_mode() -> None:
    families = sorted({method_family(name) for name in available()})
    assert set(families) <= set(METHOD_COLOURS), set(families) - set(METHOD_COLOURS)
    colours = [run_colour(f, mode) for f in families for mode in ("minibatch", "fullbatch")]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", colour) for colour in colours)
    assert len(set(colours)) == len(colours) and UNKNOWN not in colours


def test_graph_variants_share_and_full_batch_darkens() -> None:
    assert run_colour("bsqh-graph") == run_colour("bsqh") == "#d62728"
    assert run_colour("bsqh", "fullbatch") == "#801718"  # 0.6 x (0xd6, 0x27, 0x28)
    assert run_colour("not-a-method") == UNKNOWN
