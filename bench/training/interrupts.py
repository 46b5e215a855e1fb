"""Ctrl-C and SIGTERM only between safe points: a record being written is always finished.

SIGTERM is what SLURM, Kubernetes and ``systemd`` send before they kill a process, so it
takes the path of Ctrl-C: :func:`terminate_like_ctrl_c` (installed by the CLI) makes it
raise :class:`Terminated`, a :class:`KeyboardInterrupt`, so every ``except
KeyboardInterrupt`` that records a cell killed, closes its MLflow run and releases its
claim handles both; only the message and the exit status differ (130 after SIGINT, 143
after SIGTERM, the shell's convention of 128 + the signal number).

Python raises :class:`KeyboardInterrupt` wherever the interpreter happens to be, which
can be inside a garbage-collection callback or a finaliser (where it is printed and
lost) or halfway through writing a record. :class:`InterruptGuard` replaces both
handlers for the duration of a suite: outside a :meth:`~InterruptGuard.deferred` block
a signal raises at once as usual, inside one it is remembered and raised by
:meth:`~InterruptGuard.check` at the next safe point; a second signal raises at once
wherever it lands. Because every signal is counted, one swallowed by a callback is still
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

#: The signals handled like Ctrl-C.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's :class:`KeyboardInterrupt` would be."""


def interrupt_for(signum: int) -> KeyboardInterrupt:
    """The exception a signal raises: :class:`Terminated` for SIGTERM."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def describe(interrupt: BaseException) -> str:
    """How a record or a log names the interruption."""
    return "terminated (SIGTERM)" if isinstance(interrupt, Terminated) else "interrupted (Ctrl-C)"


def exit_status(interrupt: BaseException) -> int:
    """128 + the signal's number: 143 after SIGTERM, 130 after Ctrl-C."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


#: How many :class:`InterruptGuard` blocks are active (they count every signal).
_active_guards = 0


def _unraisable(previous: Any) -> Any:
    """A ``sys.unraisablehook`` for signals that land in a GC callback or a finaliser.

    Python prints such an exception with a traceback and drops it. Under an active
    :class:`InterruptGuard` the signal was counted and the guard raises it at its next
    check, so the print is only noise and is left out. Without a guard it goes to the
    previous hook as before: sending the signal again could land after the first one was
    handled, when the interpreter is already shutting down with default handlers.
    """

    def hook(unraisable: Any) -> None:
        if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and _active_guards):
            previous(unraisable)

    return hook


@contextlib.contextmanager
def terminate_like_ctrl_c() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` (main thread only; else a no-op),
    and a signal that a GC callback swallows under a guard is not printed (:func:`_unraisable`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable(previous_hook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous)


class InterruptGuard:
    """SIGINT and SIGTERM handling for one driver (a no-op outside the main thread)."""

    def __init__(self) -> None:
        self.pending = 0
        self.signum: int = signal.SIGINT  # the last signal received
        self._deferring = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptGuard:
        global _active_guards
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
            _active_guards += 1
        return self

    def __exit__(self, *exc: object) -> None:
        global _active_guards
        if self._previous:
            _active_guards -= 1
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.pending += 1
        self.signum = signum
        if self._deferring and self.pending < 2:
            what = "terminated" if signum == signal.SIGTERM else "interrupted"
            print(
                f"\n{what}: finishing the current record first "
                "(press Ctrl-C again to abort at once)",
                file=sys.stderr,
                flush=True,
            )
            return
        raise interrupt_for(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A block that a single Ctrl-C or SIGTERM does not cut short."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1

    def check(self) -> None:
        """A safe point: raise the signal that arrived since the guard was entered."""
        if self.pending:
            raise interrupt_for(self.signum)
