"""``list``: what the suite files and flags may name, each with one line saying what it is.

Read from the registries themselves (suite files, the optimizer, model and dataset
registries), so the listing cannot fall behind the code.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

import optimizers
from bench.data import available_datasets, dataset_description
from bench.suites import SUITES_DIR, available_suites, load_suite
from bench.training.models import available_models, model_description

KINDS = ("suites", "methods", "models", "datasets")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind", nargs="?", choices=KINDS, default=None, help="list only this (default: all)"
    )


def _section(title: str, rows: Iterable[tuple[str, str]]) -> list[str]:
    rows = list(rows)
    width = max((len(name) for name, _ in rows), default=0)
    return [f"{title}:", *(f"  {name:<{width}}  {text}".rstrip() for name, text in rows), ""]


def _suite_line(name: str) -> str:
    try:
        suite = load_suite(SUITES_DIR / f"{name}.toml", studies_dir=None)
    except ValueError:  # e.g. a tuned suite before `make tune`: still listed
        return "(needs `make tune` first: its methods are tuned:<study>)"
    cells = len(suite.cells())
    return f"{suite.description.strip()} [{cells} cells]"


def run(args: argparse.Namespace) -> int:
    sections = {
        "suites": lambda: _section("suites", ((n, _suite_line(n)) for n in available_suites())),
        "methods": lambda: _section(
            "methods", ((n, optimizers.registry.description(n)) for n in optimizers.available())
        ),
        "models": lambda: _section(
            "models", ((n, model_description(n)) for n in available_models())
        ),
        "datasets": lambda: _section(
            "datasets", ((n, dataset_description(n)) for n in available_datasets())
        ),
    }
    lines: list[str] = []
    for kind in [args.kind] if args.kind else KINDS:
        lines += sections[kind]()
    print("\n".join(lines).rstrip())
    return 0
