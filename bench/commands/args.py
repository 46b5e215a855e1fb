"""argparse ``type=`` functions for numeric flags: finite and in range, or a usage error.

Why at parse time: argparse then names the flag in its message
(``argument --budget-seconds: must be a finite number > 0, got 'inf'``) and exits with
status 2 before anything is loaded. The bounds are described by the same
:class:`optimizers.hparams.HParamSpec` that checks method hyperparameters, so flags and
hyperparameters word their limits alike.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from optimizers.hparams import HParamSpec

__all__ = ["bounded"]


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
POSITIVE_INT = bounded(int, low=1)
NONNEGATIVE_INT = bounded(int, low=0)
OPEN_FRACTION = bounded(float, low=0.0, high=1.0, low_open=True, high_open=True)
CLOSED_FRACTION = bounded(float, low=0.0, high=1.0)
