"""The README's generated tables match the code that defines them."""

from __future__ import annotations

import pytest

from bench import docs
from bench.training import metrics


def test_readme_tables_are_current() -> None:
    text = docs.README.read_text()
    assert docs.render(text) == text, "README.md is stale: run `python -m bench.docs`"


def test_render_replaces_only_the_marked_blocks() -> None:
    blocks = "".join(
        f"<!-- generated:{n} -->\nSTALE-CONTENT\n<!-- /generated:{n} -->\n" for n in docs.TABLES
    )
    out = docs.render("intro\n" + blocks + "outro\n")
    assert out.startswith("intro\n") and out.endswith("outro\n")
    assert "STALE-CONTENT" not in out
    assert "| `sparsity` |" in out and "| `bsqh` |" in out


def test_render_names_a_missing_block() -> None:
    with pytest.raises(ValueError, match="generated:metrics"):
        docs.render("no markers here")


def test_metric_table_is_consistent() -> None:
    names = [m.name for m in metrics.METRICS]
    assert len(names) == len(set(names))
    for m in metrics.METRICS:
        assert (m.compute is not None) + (m.derive is not None) + (
            m.final is not None and m.compute is None
        ) == 1, m.name
    assert set(metrics.CURVE_FIELDS) | set(metrics.SUMMARY_FIELDS) | set(metrics.RUN_FIELDS) == (
        set(names)
    )
    assert [m.column for m in metrics.TABLE_METRICS] == sorted(
        m.column for m in metrics.TABLE_METRICS
    )
