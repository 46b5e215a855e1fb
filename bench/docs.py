"""The documentation's reference tables, generated from the code that defines them.

Why: the metric table, each method's hyperparameters and the search spaces used to be
written three times (code, docstrings, prose) and drifted. The pages under ``docs/`` hold
them between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` markers; this
module renders them, ``python -m bench.docs`` rewrites the pages, and a test fails when
a committed page is out of date (``python -m bench.docs --check``).

Execution variants (``sgd-graph``, ``bsqh-fast``) run their method's algorithm, so the
hyperparameter table gives one row group per method and names its variants in one line,
with only what a variant changes (a hyperparameter it fixes, the runtime options it adds).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

import optimizers
from bench.training.metrics import readme_table as metrics_table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _value(value: object) -> str:
    return "unset" if value is None else f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def _rows(name: str) -> dict[str, tuple[str, str, str]]:
    """A method's hyperparameters as ``name -> (default, allowed, meaning)`` cells."""
    specs = optimizers.hparams_class(name).specs().items()
    return {
        key: (_value(default), spec.allowed(), spec.help.replace("|", "\\|"))
        for key, (default, spec) in specs
    }


def _variant_line(base: str, variant: str) -> str:
    """What ``variant`` changes against ``base``, in one phrase."""
    ours, theirs = _rows(base), _rows(variant)
    changes = [
        f"`{key}` {cells[0]} ({cells[2]})"
        for key, cells in theirs.items()
        if ours.get(key) != cells
    ]
    missing = [f"no `{key}`" for key in ours if key not in theirs]
    added = [r for r in optimizers.runtime_options(variant) if r not in _runtime(base)]
    parts = changes + missing + ([f"adds {_ticks(added)}"] if added else [])
    return f"`{variant}`" + (f": {'; '.join(parts)}" if parts else "")


def _runtime(name: str) -> tuple[str, ...]:
    return optimizers.runtime_options(name)


def _ticks(names: list[str] | tuple[str, ...]) -> str:
    return ", ".join(f"`{n}`" for n in names) or "–"


def hparams_table() -> str:
    """Every registered method's hyperparameters, its execution variants in one row."""
    names = optimizers.available()
    lines = [
        "| method | hyperparameter | default | allowed | meaning |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        if optimizers.algorithm(name) != name:
            continue
        for i, (key, (default, allowed, meaning)) in enumerate(_rows(name).items()):
            label = f"`{name}`" if i == 0 else ""
            lines.append(f"| {label} | `{key}` | {default} | {allowed} | {meaning} |")
        lines.append(f"|  | *runtime options* |  |  | {_ticks(_runtime(name))} |")
        variants = [v for v in names if v != name and optimizers.algorithm(v) == name]
        if variants:
            text = " · ".join(_variant_line(name, v) for v in variants)
            lines.append(f"|  | *execution variants* |  |  | {text} |")
    return "\n".join(lines)


def spaces_table() -> str:
    """The Optuna search spaces (``bench.tuning.spaces``), one row per parameter."""
    from bench.tuning import spaces

    lines = ["| method | parameter | range | note |", "|---|---|---|---|"]
    for method, params in spaces.own_spaces().items():
        for i, p in enumerate(params):
            if p.choices is not None:
                text = " \\| ".join(str(c) for c in p.choices)
            else:
                text = f"[{p.low:g}, {p.high:g}]" + (" log" if p.log else "")
            label = f"`{method}`" if i == 0 else ""
            lines.append(f"| {label} | `{p.name}` | {text} | {p.note} |")
    variants = ", ".join(
        f"`{name}` ({base}, fixed {fixed})" for name, base, fixed in _variants_fixing_more()
    )
    lines.append(
        f"| execution variants | {variants}; every `<method>-graph` uses `<method>`'s | | |"
    )
    lines.append(
        f"| trials | {spaces.TRIALS_PER_DIMENSION} per searched parameter, at least "
        f"{spaces.MIN_TRIALS} | | |"
    )
    return "\n".join(lines)


def _variants_fixing_more() -> list[tuple[str, str, dict[str, object]]]:
    """Execution variants whose space fixes values their method's does not fix alike."""
    from bench.tuning import spaces

    found = []
    for name in spaces.tunable_methods():
        base = optimizers.algorithm(name)
        if base != name:
            mine, theirs = spaces.space_for(name).fixed, spaces.space_for(base).fixed
            extra = {k: v for k, v in mine.items() if theirs.get(k) != v}
            if extra:
                found.append((name, base, extra))
    return found


TABLES: dict[str, Callable[[], str]] = {
    "metrics": metrics_table,
    "hparams": hparams_table,
    "spaces": spaces_table,
}

#: The page under ``docs/`` that holds each generated table.
PAGES: dict[str, str] = {
    "metrics": "outputs.md",
    "hparams": "hyperparameters.md",
    "spaces": "tuning.md",
}


def _replace_block(text: str, name: str, table: str) -> str:
    pattern = re.compile(
        rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- /generated:{name} -->)", re.DOTALL
    )
    if not pattern.search(text):
        raise ValueError(f"the page has no <!-- generated:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


def render(text: str, names: list[str] | None = None) -> str:
    """``text`` with the generated blocks ``names`` (default: all) replaced by their tables."""
    for name in names if names is not None else list(TABLES):
        text = _replace_block(text, name, TABLES[name]())
    return text


def stale_pages(docs: Path | None = None) -> dict[Path, str]:
    """Each page (of ``docs``, default ``docs/``) whose tables differ from the code, fresh."""
    docs = DOCS if docs is None else docs
    by_page: dict[str, list[str]] = {}
    for name, page in PAGES.items():
        by_page.setdefault(page, []).append(name)
    stale = {}
    for page, names in by_page.items():
        path = docs / page
        current = path.read_text()
        fresh = render(current, names)
        if fresh != current:
            stale[path] = fresh
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is stale")
    args = parser.parse_args(argv)
    stale = stale_pages()
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run `make docs`", file=sys.stderr)
        return 1 if stale else 0
    for path, fresh in stale.items():
        path.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
