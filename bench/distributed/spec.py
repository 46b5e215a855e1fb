"""``--scheduler SPEC``: which Dask cluster runs the cells or trials.

Parsed at argument time, so a bad value is argparse's one-line usage error (exit status
2) that names the value and the allowed forms, before anything loads or trains.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

#: The forms ``--scheduler`` takes, for help texts and error messages.
FORMS = (
    "local:N (N >= 1 single-threaded worker processes on this machine), "
    "local-cuda (one worker per visible GPU, needs the cuda extra) or "
    "tcp://HOST:PORT (a running `dask scheduler`)"
)
_LOCAL = re.compile(r"^local:(\d+)$")
_ADDRESS = re.compile(r"^(tcp|tls)://(\[[0-9a-fA-F:]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")


class SchedulerSpecError(ValueError):
    """A ``--scheduler`` value that is none of the allowed forms."""


@dataclass(frozen=True)
class SchedulerSpec:
    """A parsed ``--scheduler`` value."""

    kind: str  # "local", "local-cuda" or "address"
    workers: int | None = None  # local: the number of worker processes
    address: str | None = None  # address: the scheduler's URL

    @property
    def owns_cluster(self) -> bool:
        """Whether the command starts (and stops) the cluster itself."""
        return self.kind != "address"

    def describe(self) -> str:
        if self.kind == "local":
            return f"local:{self.workers}"
        return self.address if self.kind == "address" else self.kind


def parse_scheduler(text: str) -> SchedulerSpec:
    """``local:N``, ``local-cuda`` or ``tcp://HOST:PORT``; anything else is refused."""
    value = text.strip()
    if value == "local-cuda":
        return SchedulerSpec("local-cuda")
    local = _LOCAL.fullmatch(value)
    if local and int(local.group(1)) >= 1:
        return SchedulerSpec("local", workers=int(local.group(1)))
    address = _ADDRESS.fullmatch(value)
    if address and 0 < int(address.group(3)) < 65536:
        return SchedulerSpec("address", address=value)
    raise SchedulerSpecError(f"{text!r} is not a scheduler; use {FORMS}")


def scheduler_arg(text: str) -> SchedulerSpec:
    """argparse ``type=`` for ``--scheduler`` (its message names the flag)."""
    try:
        return parse_scheduler(text)
    except SchedulerSpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_scheduler_option(parser: argparse.ArgumentParser, what: str) -> None:
    """The ``--scheduler`` flag of ``run``, ``tune`` and ``tune-all``."""
    parser.add_argument(
        "--scheduler",
        type=scheduler_arg,
        default=None,
        metavar="SPEC",
        help=f"run {what} on a Dask cluster: {FORMS} (default: this process)",
    )
