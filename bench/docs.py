"""The README's reference tables, generated from the code that defines them.

Why: the metric table, each method's hyperparameters and the search spaces used to be
written three times (code, docstrings, README) and drifted. The README now holds them
between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` markers; this module
renders them, ``python -m bench.docs`` rewrites README.md, and a test fails when the
README is out of date (``python -m bench.docs --check``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

import optimizers
from bench.training.metrics import readme_table as metrics_table

README = Path(__file__).resolve().parent.parent / "README.md"


def _value(value: object) -> str:
    return "unset" if value is None else f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def hparams_table() -> str:
    """Every registered method's hyperparameters: default, allowed values, meaning."""
    lines = [
        "| method | hyperparameter | default | allowed | meaning |",
        "|---|---|---|---|---|",
    ]
    for name in optimizers.available():
        cls = optimizers.hparams_class(name)
        runtime = ", ".join(f"`{r}`" for r in optimizers.runtime_options(name)) or "–"
        rows = [(k, d, spec.allowed(), spec.help) for k, (d, spec) in cls.specs().items()]
        for i, (key, default, allowed, meaning) in enumerate(rows):
            label = f"`{name}`" if i == 0 else ""
            lines.append(f"| {label} | `{key}` | {_value(default)} | {allowed} | {meaning} |")
        lines.append(f"|  | *runtime options* |  |  | {runtime} |")
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


def _replace_block(text: str, name: str, table: str) -> str:
    pattern = re.compile(
        rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- /generated:{name} -->)", re.DOTALL
    )
    if not pattern.search(text):
        raise ValueError(f"README has no <!-- generated:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


def render(text: str) -> str:
    """``text`` with every generated block replaced by its current table."""
    for name, make in TABLES.items():
        text = _replace_block(text, name, make())
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if README is stale")
    args = parser.parse_args(argv)
    current = README.read_text()
    fresh = render(current)
    if args.check:
        if fresh != current:
            print("README.md is out of date: run `python -m bench.docs`", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
