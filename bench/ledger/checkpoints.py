"""Checkpoints of a cell in training, so that a pre-empted or interrupted cell resumes.

A long cell on a shared GPU may be stopped at any time (Ctrl-C, or a batch system's
SIGTERM before its time limit). The runner therefore writes the cell's whole training
state every ``--checkpoint-minutes`` (wall clock, default :data:`DEFAULT_MINUTES`) and
when it is interrupted, and the next ``bench run`` continues from it: model and method
state (``optimizers``' ``state_dict``), the loop's counters, the curve so far, the
position in the batch stream and the random generators. A resumed cell ends with the
same final figures as one that was never stopped; only its times differ.

A checkpoint is written only at a step boundary: an interrupt (Ctrl-C or SIGTERM, which
:class:`bench.training.interrupts.InterruptGuard` handles alike) during a step or an evaluation
waits for it to end (a second Ctrl-C aborts at once, and then the last
periodic checkpoint is what the next run resumes from). Files live in
``<out>/<suite>/checkpoints/<cell key>.pt``, are written atomically and are deleted once
the cell's record is final (finished or diverged). The key hashes the cell's
configuration and the code version, so a checkpoint never resumes a changed cell.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bench.ledger.safe_files import atomic_write_bytes
from bench.training.interrupts import InterruptGuard

#: Minutes of wall clock between two checkpoints of a cell (``--checkpoint-minutes``).
DEFAULT_MINUTES = 10.0
#: Layout of the checkpoint file; others are ignored (the cell starts afresh).
FORMAT = 1


def checkpoint_path(ledger: Path, key: str) -> Path:
    """Where cell ``key`` of the ledger folder ``ledger`` (``<out>/<suite>/cells``) keeps
    its checkpoint."""
    return Path(ledger).parent / "checkpoints" / f"{key}.pt"


class CellCheckpoints:
    """When to write a cell's checkpoint, where, and what the last resume was.

    ``every_s`` None writes only on an interrupt. ``guard`` is the driver's Ctrl-C and
    SIGTERM guard: while training holds interrupts (:meth:`holding_interrupts`), a signal
    is noted and answered at the next step boundary with a checkpoint, then the guard's
    exception (``KeyboardInterrupt``, or its subclass ``Terminated`` for SIGTERM).
    """

    def __init__(
        self, path: Path, every_s: float | None, guard: InterruptGuard | None = None
    ) -> None:
        if every_s is not None and every_s <= 0:
            raise ValueError(f"checkpoint interval must be > 0 seconds, got {every_s!r}")
        self.path = Path(path)
        self.every_s = every_s
        self.guard = guard
        self._last = time.monotonic()
        #: Set when training resumed: the iteration it resumed at and how many resumes.
        self.resumed_from_step: int | None = None
        self.resumes = 0

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None (none saved, or unreadable: then warned, not fatal)."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or state.get("format") != FORMAT:
                raise ValueError(f"not a checkpoint of format {FORMAT}")
        except Exception as error:  # a damaged file costs the progress, never the run
            warnings.warn(
                f"checkpoint {self.path} cannot be read ({error}); the cell starts afresh",
                stacklevel=2,
            )
            return None
        return state

    def resumed(self, state: dict[str, Any]) -> None:
        """Note that training continues from ``state``."""
        self.resumed_from_step = int(state["counters"]["iterations"])
        self.resumes = int(state.get("resumes", 0)) + 1

    def interrupted(self) -> bool:
        """Whether a Ctrl-C is waiting for the next step boundary."""
        return self.guard is not None and self.guard.pending > 0

    def due(self) -> bool:
        """Whether a checkpoint is due now: an interrupt waits, or the interval passed."""
        if self.interrupted():
            return True
        return self.every_s is not None and time.monotonic() - self._last >= self.every_s

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically (with the resume count) and restart the interval."""
        buffer = io.BytesIO()
        torch.save({**state, "format": FORMAT, "resumes": self.resumes}, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())
        self._last = time.monotonic()

    def delete(self) -> None:
        """Forget the checkpoint (the cell's record is final)."""
        self.path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def holding_interrupts(self) -> Iterator[None]:
        """A block in which a single Ctrl-C waits for the next step boundary."""
        if self.guard is None:
            yield
            return
        with self.guard.deferred():
            yield

    def raise_if_interrupted(self) -> None:
        """Raise the waiting interrupt as the guard would: ``Terminated`` for SIGTERM."""
        if self.guard is not None:
            self.guard.check()
