"""``python -m bench move SRC DST [--copy]``: move an output folder with its MLflow store.

MLflow keeps artifact locations as absolute paths, so an output folder moved by ``mv``
still reads its artifacts (figures, logged models) from the old place. This command
moves it (or copies it, ``--copy``) and rewrites those locations in every MLflow store
inside it (:mod:`bench.tracking.relocate`). Exit status 0 when done; 2, with one ``error:`` line,
when DST exists, SRC holds no MLflow store, or ``MLFLOW_TRACKING_URI`` names a store
elsewhere (whose locations this command cannot rewrite).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.tracking.relocate import relocate


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, metavar="SRC", help="output folder to move")
    parser.add_argument("destination", type=Path, metavar="DST", help="new folder (must not exist)")
    parser.add_argument(
        "--copy", action="store_true", help="copy instead of moving (SRC stays as it is)"
    )


def run(args: argparse.Namespace) -> int:
    done = relocate(args.source, args.destination, copy=args.copy)
    print(done.describe("copied" if args.copy else "moved"))
    if os.environ.get("MLFLOW_TRACKING_URI"):  # it named a store in SRC (checked above)
        print(
            f"note: MLFLOW_TRACKING_URI still names the store in {args.source}; point it at "
            f"sqlite:///{done.destination / done.stores[0]} (or unset it) to use the new place",
            file=sys.stderr,
        )
    return 0
