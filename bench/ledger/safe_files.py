"""Writing output files so that a crash, a full disk or Ctrl-C never leaves half a file.

A file is written to a temporary name in the same folder (``.tmp-*.partial``, which no
reader's pattern matches), flushed and fsynced, renamed over the target, and the folder
is fsynced so that the rename itself survives a power cut. Errors of the file system
become :class:`OutputWriteError` with a message that names the path and what to do.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from bench.ledger.writable import advice

TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".partial"


class OutputWriteError(OSError):
    """An output file could not be written; ``str()`` says which and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


def describe_write_error(error: OSError, path: Path) -> OutputWriteError:
    """``error`` as an :class:`OutputWriteError` naming ``path`` and a remedy."""
    if isinstance(error, OutputWriteError):
        return error
    code = error.errno if error.errno is not None else 0
    reason = os.strerror(code) if code else str(error)
    return OutputWriteError(code, f"cannot write {path}: {reason}; {advice(error, '--out')}")


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file, fsync, rename, fsync folder)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync folder)."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as error:
        raise describe_write_error(error, path) from error
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def is_temporary(path: Path) -> bool:
    """A leftover of an interrupted write, never a real file."""
    name = Path(path).name
    return name.startswith(TEMP_PREFIX) or name.endswith(TEMP_SUFFIX)
