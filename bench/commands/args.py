"""Flags several commands share, and argparse ``type=`` functions for numeric flags.

The shared flags (``--suite``, ``--out``, ``--device``) are defined once, so every
command spells, defaults and documents them alike.

Numeric flags are finite and in range, or a usage error. Why at parse time: argparse
then names the flag in its message (``argument --safety-cap-seconds: must be a finite number
> 0, got 'inf'``) and exits with status 2 before anything is loaded. The bounds are
described by the same :class:`optimizers.hparams.HParamSpec` that checks method
hyperparameters, so flags and hyperparameters word their limits alike.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bench.environment import DEVICES
from optimizers.hparams import HParamSpec

__all__ = ["add_device", "add_out", "add_suite", "bounded", "number_list"]


def add_suite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", required=True, help="shipped suite name or path of a .toml file")


def add_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("results"), help="output folder (default: results)"
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", choices=DEVICES, default="auto", help="training device (default: auto)"
    )


def bounded(
    kind: type[int] | type[float],
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], int | float]:
    """A parser of ``kind`` values within the bounds (``inf`` and ``nan`` never pass)."""
    spec = HParamSpec(
        help="", kind=kind, low=low, high=high, low_open=low_open, high_open=high_open
    )

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
            return spec.check("value", value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {spec.allowed()}, got {text!r}") from None

    parse.__name__ = f"{kind.__name__} in range"
    return parse


#: The shapes of number the commands take.
POSITIVE_NUMBER = bounded(float, low=0.0, low_open=True)
NONNEGATIVE_NUMBER = bounded(float, low=0.0)
POSITIVE_INT = bounded(int, low=1)
NONNEGATIVE_INT = bounded(int, low=0)
OPEN_FRACTION = bounded(float, low=0.0, high=1.0, low_open=True, high_open=True)
CLOSED_FRACTION = bounded(float, low=0.0, high=1.0)


def number_list(item: Callable[[str], int | float]) -> Callable[[str], tuple[float, ...]]:
    """A parser of comma-separated ``item`` values: sorted, duplicates dropped."""

    def parse(text: str) -> tuple[float, ...]:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"needs comma-separated numbers, got {text!r}")
        try:
            return tuple(sorted({float(item(part)) for part in parts}))
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentTypeError(f"in {text!r}: {error}") from None

    parse.__name__ = "comma-separated list"
    return parse
