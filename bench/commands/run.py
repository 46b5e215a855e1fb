"""``python -m bench run --suite NAME|PATH [--out DIR] [--device ...] [--only PATTERN]``.

Exit status: 0 when every cell is recorded and synced to MLflow, 1 when a cell failed or
MLflow lacks a record (``bench sync`` pushes it later), 2 when another process drives the
suite or the ledger cannot be written, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.environment import DEVICES, resolve_device
from bench.locking import LockHeld
from bench.runner import run_suite
from bench.safe_files import OutputWriteError
from bench.suites import load_suite
from bench.writable import PathNotWritable, ensure_writable_dir


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", required=True, help="shipped suite name or path of a .toml file")
    parser.add_argument(
        "--out", type=Path, default=Path("results"), help="output folder (default: results)"
    )
    parser.add_argument(
        "--device", choices=DEVICES, default="auto", help="training device (default: auto)"
    )
    parser.add_argument(
        "--only",
        default=None,
        help="run only cells whose name label/model/dataset/seedN matches this glob or substring",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite, studies_dir=args.out / "studies")
    try:  # the ledger, MLflow store and report go here: fail now, not after a cell trained
        ensure_writable_dir(args.out, "output folder", flag="--out")
    except PathNotWritable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    try:
        outcome = run_suite(suite, args.out, device, only=args.only, progress=not args.no_progress)
    except (LockHeld, OutputWriteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"suite {suite.name}: {outcome.ran} cells run, {outcome.skipped} already done, "
        f"{outcome.diverged} diverged, {outcome.failed} failed"
    )
    if outcome.unsynced:
        print(
            f"{outcome.unsynced} cell(s) are in the ledger but not synced to MLflow; "
            f"`python -m bench sync --suite {args.suite} --out {args.out}` pushes them",
            file=sys.stderr,
        )
    return outcome.exit_code
