"""Ctrl-C only between safe points: a record being written is always finished first.

Python raises :class:`KeyboardInterrupt` wherever the interpreter happens to be, which
can be inside a garbage-collection callback or a finaliser (where it is printed and
lost) or halfway through writing a record. :class:`InterruptGuard` replaces the SIGINT
handler for the duration of a suite: outside a :meth:`~InterruptGuard.deferred` block a
Ctrl-C raises at once as usual, inside one it is remembered and raised by
:meth:`~InterruptGuard.check` at the next safe point; a second Ctrl-C raises at once
wherever it lands. Because every Ctrl-C is counted, one swallowed by a callback is still
raised at the next check, so an interrupt is never lost.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any


class InterruptGuard:
    """SIGINT handling for one driver (a no-op outside the main thread)."""

    def __init__(self) -> None:
        self.pending = 0
        self._deferring = 0
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.pending += 1
        if self._deferring and self.pending < 2:
            print(
                "\ninterrupted: finishing the current record first "
                "(press Ctrl-C again to abort at once)",
                file=sys.stderr,
                flush=True,
            )
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A block that a single Ctrl-C does not cut short."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1

    def check(self) -> None:
        """A safe point: raise the Ctrl-C that arrived since the guard was entered."""
        if self.pending:
            raise KeyboardInterrupt
