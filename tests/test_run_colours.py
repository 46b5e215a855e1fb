"""Every registered method has its own fixed MLflow run colour, in both modes."""

from __future__ import annotations

import re

from bench.tracking.colours import UNKNOWN, run_colour
from optimizers.registry import algorithm, available, traits


def test_every_method_has_a_distinct_colour_in_each_mode() -> None:
    # Execution variants share their method's colour, except where one declares its own.
    own = sorted({n for n in available() if algorithm(n) == n or traits(n).colour is not None})
    declared = {traits(n).colour for n in own}
    assert None not in declared, [n for n in own if traits(n).colour is None]
    colours = sorted({run_colour(n, mode) for n in own for mode in ("minibatch", "fullbatch")})
    assert all(re.fullmatch(r"#[0-9a-f]{6}", colour) for colour in colours)
    assert UNKNOWN not in colours
    methods = sorted({algorithm(n) for n in available()} | {"bsqh-fast"})
    per_mode = [run_colour(m, mode) for m in methods for mode in ("minibatch", "fullbatch")]
    assert len(set(per_mode)) == len(per_mode)


def test_graph_variants_share_and_full_batch_darkens() -> None:
    assert run_colour("sgd-graph") == run_colour("sgd") == "#1f77b4"
    assert run_colour("gmp-graph") == run_colour("gmp")
    assert run_colour("bsqh") == "#d62728"
    assert run_colour("bsqh", "fullbatch") == "#801718"  # 0.6 x (0xd6, 0x27, 0x28)
    assert run_colour("not-a-method") == UNKNOWN
