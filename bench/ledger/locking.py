"""Owner files and short locks: which process trains a cell, and no two schema creations
at once.

Two kinds, for two jobs:

- :class:`OwnerLock` is a file created with ``O_EXCL`` that names its owner (pid, host,
  start time). It marks a piece of work (a cell being trained, see
  :mod:`bench.ledger.cell_claims`) as taken for as long as its process runs, survives as evidence
  when the process is killed, and is taken over when its owner on this host is gone. A
  file that names its owner lets a refusal say who holds it, which an advisory lock
  cannot.
- :func:`file_lock` is an ``fcntl.flock`` on a small file, held around a short critical
  section (creating an MLflow or Optuna SQLite schema, taking an owner file over). The
  kernel releases it when the process dies, so it can never go stale.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.ledger.safe_files import describe_write_error


class LockHeld(RuntimeError):
    """Another live process holds the lock (the message names it; ``owner`` is its record)."""

    def __init__(self, message: str, owner: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.owner = owner or {}


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block.

    With ``blocking=False`` a lock held elsewhere raises :class:`BlockingIOError` at once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is as dead as it gets
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


class OwnerLock:
    """``path``: the one process that owns a piece of work, named in the file.

    ``acquire`` creates the file with ``O_EXCL``. If it exists and its owner is a dead
    process on this host (or the file is unreadable), it is taken over and ``acquire``
    returns a message saying so; a live owner, or one on another host (whose liveness
    cannot be checked), raises :class:`LockHeld` naming it. ``guard``: the ``flock`` file
    that serialises take-overs (one per folder of owner files).
    """

    def __init__(self, path: Path, what: str, guard: Path | None = None) -> None:
        self.path = Path(path)
        self.guard = Path(guard) if guard else self.path.with_name(self.path.name + ".guard")
        self.what = what
        self.owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:300],
        }
        self.held = False

    def acquire(self) -> str | None:
        """Take the lock; returns a note when a stale lock was taken over."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Two processes that both find a stale lock must not both take it over.
            with file_lock(self.guard):
                note = None
                if self.path.exists():
                    note = self._take_over_or_refuse()
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(fd, "w") as handle:
                    json.dump(self.owner, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError as error:
            raise describe_write_error(error, self.path) from error
        self.held = True
        return note

    def _take_over_or_refuse(self) -> str:
        owner = read_owner(self.path)
        if owner is None:
            reason = "an unreadable lock file"
        elif owner.get("host") != self.owner["host"]:
            raise LockHeld(self._refusal(owner, "on another host"), owner)
        elif isinstance(owner.get("pid"), int) and process_alive(owner["pid"]):
            raise LockHeld(self._refusal(owner, "still running"), owner)
        else:
            reason = f"a stale lock of process {owner.get('pid')} (no longer running)"
        self.path.unlink()
        return f"took over {reason}: {self.path}"

    def _refusal(self, owner: dict[str, Any], state: str) -> str:
        return (
            f"{self.what} is held by pid {owner.get('pid')} on {owner.get('host')} since "
            f"{owner.get('started')} ({state}); wait for it to finish, or remove {self.path} "
            "if that process is gone"
        )

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if not self.held:
            return
        self.held = False
        owner = read_owner(self.path)
        if owner is not None and owner.get("pid") == self.owner["pid"]:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> OwnerLock:
        """Acquire (unless already held, as a claim handed out by ``take`` is)."""
        if not self.held:
            note = self.acquire()
            if note:
                print(note, file=sys.stderr)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_owner(path: Path) -> dict[str, Any] | None:
    """The owner recorded in a lock file, or None when it is missing or unreadable."""
    try:
        owner = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None
