"""The docs' generated tables match the code that defines them; the README's example runs."""

from __future__ import annotations

import pytest

import optimizers
from bench import docs
from bench.training import metrics
from tests.test_custom_models import readme_example


def test_generated_pages_are_current() -> None:
    stale = [str(p.relative_to(docs.ROOT)) for p in docs.stale_pages()]
    assert not stale, f"stale generated tables in {stale}: run `make docs`"


def test_every_generated_table_has_a_page_with_its_block() -> None:
    assert set(docs.PAGES) == set(docs.TABLES)
    for name, page in docs.PAGES.items():
        assert f"<!-- generated:{name} -->" in (docs.DOCS / page).read_text(), (name, page)


def test_check_reports_a_stale_page(tmp_path, monkeypatch, capsys) -> None:
    for page in set(docs.PAGES.values()):
        (tmp_path / page).write_text((docs.DOCS / page).read_text())
    hp = tmp_path / docs.PAGES["hparams"]
    hp.write_text(docs._replace_block(hp.read_text(), "hparams", "STALE-CONTENT"))
    assert list(docs.stale_pages(tmp_path)) == [hp]
    monkeypatch.setattr(docs, "DOCS", tmp_path)
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    assert docs.main(["--check"]) == 1
    assert "hyperparameters.md is out of date" in capsys.readouterr().err
    assert docs.main([]) == 0
    assert "STALE-CONTENT" not in hp.read_text() and not docs.stale_pages(tmp_path)


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


def test_hparams_table_collapses_execution_variants_into_their_method() -> None:
    table = docs.hparams_table()
    groups = [row.split("|")[1].strip() for row in table.splitlines()[2:]]
    methods = [g.strip("`") for g in groups if g]
    names = optimizers.available()
    assert methods == [n for n in names if optimizers.algorithm(n) == n]
    for variant in (n for n in names if optimizers.algorithm(n) != n):
        lines = [row for row in table.splitlines() if f"`{variant}`" in row]
        assert len(lines) == 1 and "*execution variants*" in lines[0], variant
    fast = next(row for row in table.splitlines() if "`bsqh-fast`" in row)
    assert "`max_retries` `0`" in fast and "`cuda_graph`" in fast


def test_hparams_table_escapes_pipes_in_cells() -> None:
    for row in docs.hparams_table().splitlines()[2:]:
        assert row.replace("\\|", "").count("|") == 6, row


def test_readme_api_example_runs(capsys) -> None:
    exec(compile(readme_example("api"), "README.md:api", "exec"), {})
    assert "bsqh" in capsys.readouterr().out


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


def test_readme_lists_every_make_target() -> None:
    makefile = (docs.ROOT / "Makefile").read_text()
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY:"))
    readme = docs.README.read_text()
    missing = [t for t in phony.split()[1:] if f"| `make {t}` |" not in readme]
    assert not missing, f"README's make targets table lacks {missing}"
