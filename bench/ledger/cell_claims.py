"""Per-cell claims: several drivers may run one suite into one ``--out`` at once.

Why per cell and not per suite: a second driver on the same suite (a second terminal, a
second machine on a shared file system, a second Dask cluster) should help finish the
suite, not be turned away. So before a driver trains a cell (or submits it to a Dask
worker) it takes the cell's claim, ``<out>/<suite>/claims/<key>.claim``: an
:class:`bench.ledger.locking.OwnerLock` created with ``O_EXCL`` that names the driver's pid,
host and start time. Whoever holds the claim is the only process that trains the cell,
writes its record and closes its MLflow run; the claim is removed once the record is on
disk and the run closed.

- A claim held by a live process: the cell is left to it; a driver that has nothing
  else to do waits for such cells (:data:`WAIT_POLL_S`) and takes over the claim of one
  whose owner died, so every driver returns only when the whole suite is recorded.
- A claim left by a dead process on this host is taken over with a message. A claim of
  another host cannot be checked: the driver waits for it and says which file to remove
  if that host is gone.
- The start-of-run sync and the closing of orphaned MLflow runs take the same claim
  before touching a cell's record or run, so they never close the run of a cell another
  driver is training (:mod:`bench.tracking.sync`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.ledger.locking import LockHeld, OwnerLock, read_owner

#: Seconds between two looks at the claims of cells another driver is training.
WAIT_POLL_S = 1.0
#: The folder of claims, next to ``cells/``.
CLAIMS_FOLDER = "claims"
#: The claim held while a suite's report run is logged (``bench report``, ``bench sync``),
#: so two processes never log the same report twice.
REPORT_CLAIM = "report"


class CellClaims:
    """The claims of one suite's ledger (``<out>/<suite>/claims/``)."""

    def __init__(self, suite_folder: Path, suite: str) -> None:
        self.folder = Path(suite_folder) / CLAIMS_FOLDER
        self.suite = suite
        self.guard = self.folder / ".guard"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.claim"

    def take(self, key: str, what: str | None = None) -> OwnerLock | None:
        """The claim on ``key``, now held by this process; None when a live process
        (or one on another host) holds it. A stale claim is taken over with a note on
        standard error."""
        claim = OwnerLock(self.path(key), what or f"cell {key} of suite {self.suite!r}", self.guard)
        try:
            note = claim.acquire()
        except LockHeld:
            return None
        if note:
            print(note, file=sys.stderr)
        return claim

    def holder(self, key: str) -> dict[str, Any] | None:
        """Who holds the claim on ``key`` (its owner record), or None."""
        return read_owner(self.path(key)) if self.path(key).exists() else None

    def describe_holders(self, keys: list[str]) -> str:
        """``pid P on HOST`` for every distinct owner of these claims, for a waiting message."""
        owners = sorted(
            {
                f"pid {owner.get('pid')} on {owner.get('host')}"
                for owner in (self.holder(k) for k in keys)
                if owner
            }
        )
        return ", ".join(owners) or "another driver"

    def waiting_note(self, keys: list[str]) -> str:
        """The line a driver prints while it waits for cells other drivers hold."""
        return (
            f"waiting for {len(keys)} cell(s) another driver is training "
            f"({self.describe_holders(keys)}; claims in {self.folder})"
        )
