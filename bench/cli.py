"""Command line: ``pmp-bench <command> [options]`` or ``python -m bench <command> ...``.

Each command lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``;
this table maps command names to those modules, which are imported only when used so that
``--help`` stays fast.

Errors a user can make (a misspelt suite, a key a suite file does not take, a pattern
that matches no cell, a device the machine lacks, a data file that is missing) end in one
line on stderr, ``error: ...``, and exit status 2: the command's own message names the
file, key or flag and what is allowed, and a traceback would only bury it. Anything else
is a bug and also prints one line (exit status 1) unless ``--debug`` asks for the
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from bench.training.interrupts import describe, exit_status, terminate_like_ctrl_c

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("bench.commands.run", "train every cell of a suite and record it in MLflow"),
    "sync": ("bench.commands.sync", "push ledger records MLflow lacks; close orphaned runs"),
    "report": ("bench.commands.report", "write runs.csv, curves.csv, figures and REPORT.md"),
    "list": ("bench.commands.listing", "list suites, methods, models and datasets"),
    "data": ("bench.commands.data", "find or install a dataset's files"),
    "tune": ("bench.commands.tune", "run an Optuna study for one method"),
    "tune-all": ("bench.commands.tune_all", "equal-budget studies for every method"),
    "matched": ("bench.commands.matched", "test accuracy at sparsity matched by construction"),
    "matched-fronts": (
        "bench.commands.matched_fronts",
        "extra: test accuracy at sparsity >= s picked from tuned fronts",
    ),
    "perf": ("bench.commands.perf", "step-time harness: every method against SGD"),
    "move": ("bench.commands.move", "move or copy an output folder with its MLflow store"),
}
DEBUG_FLAG = "--debug"


def program_name(argv0: str | None = None) -> str:
    """How the user started us: ``python -m bench`` or the console script's own name."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    base = os.path.basename(argv0 or "")
    if not base or base in ("__main__.py", "-m", "-c") or base.endswith(".py"):
        return "python -m bench"
    return base


def version() -> str:
    """The installed distribution's version (the source tree's when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("pmp-bench")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM (a batch system's stop) takes Ctrl-C's path: cells recorded, runs closed.
    with terminate_like_ctrl_c():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv  # accepted before or after the command
    argv = [a for a in argv if a != DEBUG_FLAG]
    command = next((a for a in argv if not a.startswith("-")), None)
    command = command if command in COMMANDS else None  # configure only this one
    try:  # Ctrl-C (SIGTERM) while the command's imports load counts too: status 130 (143)
        parser, subparsers = build_parsers(command)
        args, extra = parser.parse_known_args(argv)
        if extra:  # a typo in a command's flags: that command's usage, not the top one
            command_parser = subparsers.get(args.command, parser)
            command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
        module = importlib.import_module(args._module)
        return int(module.run(args) or 0)
    except KeyboardInterrupt as interrupt:
        print(describe(interrupt), file=sys.stderr)
        return exit_status(interrupt)
    except Exception as error:
        if debug:
            raise
        # Imported only now: it pulls in torch, which --help should not wait for.
        from bench.errors import USER_ERRORS, one_line

        if isinstance(error, USER_ERRORS):
            print(f"error: {one_line(error)}", file=sys.stderr)
            return 2
        print(
            f"error: internal error {type(error).__name__}: {one_line(error)} "
            f"(rerun with {DEBUG_FLAG} for the traceback)",
            file=sys.stderr,
        )
        return 1


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top parser; only ``command``'s parser gets its options."""
    return build_parsers(command)[0]


def build_parsers(
    command: str | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top parser and each command's parser (only ``command`` gets its options)."""
    prog = program_name()
    parser = argparse.ArgumentParser(
        prog=prog,
        description="pmp-bench: sparse CNN training with bSQH (arXiv 2504.11647) and baselines.",
    )
    parser.add_argument("--version", action="version", version=f"{prog} {version()}")
    parser.add_argument(
        DEBUG_FLAG, action="store_true", help="show Python tracebacks (anywhere on the line)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers: dict[str, argparse.ArgumentParser] = {}
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name)
        parsers[name] = command_parser
        if name == command:
            importlib.import_module(module_name).configure(command_parser)
    return parser, parsers
