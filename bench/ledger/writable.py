"""Checking up front that a folder can be written, so a bad path is one line, not a traceback.

Why probe instead of trusting permissions: ``os.access`` says yes to root on a read-only
mount and knows nothing about a full disk, and the first real write may come minutes
later, deep inside MLflow or SQLAlchemy, where the error no longer names the path. So the
folder is created and a one-byte probe file written, synced and removed.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["PathNotWritable", "advice", "check_writable_file", "ensure_writable_dir"]


class PathNotWritable(ValueError):
    """A folder or file the command must write to cannot be written; the message says why."""


def advice(error: OSError, flag: str) -> str:
    """What to do about a failed write: free space, or make writable / choose another."""
    where = f"pass another folder with {flag}" if flag else "use another folder"
    if error.errno == errno.ENOSPC or error.errno == errno.EDQUOT:
        return f"free some space there or {where}"
    return f"make it writable or {where}"


def _write_probe(folder: Path) -> None:
    probe = folder / f".write-probe-{os.getpid()}"
    try:
        with probe.open("wb") as fh:
            fh.write(b"\0")
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        probe.unlink(missing_ok=True)


def ensure_writable_dir(path: str | Path, what: str, *, flag: str = "") -> Path:
    """Create ``path`` (with parents) and prove a file can be written there.

    ``what`` names the folder in the message (``"output folder"``), ``flag`` the option
    that chooses it (``"--out"``). Raises :class:`PathNotWritable`.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_probe(folder)
    except OSError as error:
        raise _not_writable(what, folder, error, flag) from None
    return folder


def check_writable_file(path: str | Path, what: str, *, flag: str = "") -> Path:
    """The folder of ``path`` is writable and ``path``, if it exists, opens for appending."""
    file = Path(path)
    ensure_writable_dir(file.parent, f"folder of the {what}", flag=flag)
    if file.exists():
        try:
            with file.open("ab"):
                pass
        except OSError as error:
            raise _not_writable(what, file, error, flag) from None
    return file


def _not_writable(what: str, path: Path, error: OSError, flag: str) -> PathNotWritable:
    """The one-line error: what, where, the system's reason and what to do about it."""
    reason = error.strerror or type(error).__name__
    return PathNotWritable(f"{what} {path} is not writable ({reason}); {advice(error, flag)}")
