"""``python -m bench data --dataset NAME [--root DIR]``: find or install a dataset's files."""

from __future__ import annotations

import argparse
import sys

from bench.data import DataFileError, DatasetUnavailable, available_datasets, ensure_dataset


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=available_datasets())
    parser.add_argument("--root", default="datasets", help="datasets folder (default: datasets)")
    parser.add_argument("--no-apt", action="store_true", help="never run apt-get, even as root")


def run(args: argparse.Namespace) -> int:
    try:
        source = ensure_dataset(args.dataset, root=args.root, install_with_apt=not args.no_apt)
    except (DatasetUnavailable, DataFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: {source}")
    return 0
