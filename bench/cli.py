"""Command line: ``python -m bench <command> [options]``.

Each command lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``;
this table maps command names to those modules, which are imported only when used so that
``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("bench.commands.run", "train every cell of a suite and record it in MLflow"),
    "sync": ("bench.commands.sync", "push ledger records MLflow lacks; close orphaned runs"),
    "report": ("bench.commands.report", "write runs.csv, curves.csv, figures and REPORT.md"),
    "data": ("bench.commands.data", "find or install a dataset's files"),
    "tune": ("bench.commands.tune", "run an Optuna study for one method"),
    "tune-all": ("bench.commands.tune_all", "equal-budget studies for every method"),
    "matched": ("bench.commands.matched", "test accuracy at matched sparsity from tuned fronts"),
    "perf": ("bench.commands.perf", "step-time harness: every method against SGD"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else None  # configure only this one
    try:  # Ctrl-C while the command's imports load counts too: always status 130
        args = build_parser(command).parse_args(argv)
        module = importlib.import_module(args._module)
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="pmp-bench: sparse CNN training with bSQH (arXiv 2504.11647) and baselines.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name)
        if name == command:
            importlib.import_module(module_name).configure(command_parser)
    return parser
