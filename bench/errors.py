"""Which exceptions are the user's mistakes, and how they are shown: one line.

Every module raises its own precise error (``SuiteError`` naming the file and key,
``PathNotWritable`` naming the folder, ...); the CLI catches the ones listed here and
prints their message as ``error: ...`` with exit status 2. Collected in one place so
that a new command cannot forget one, and so that tracebacks stay for real bugs.
"""

from __future__ import annotations

from bench.data import DataFileError, DataOptionError, DatasetUnavailable
from bench.ledger.safe_files import OutputWriteError
from bench.ledger.writable import PathNotWritable
from bench.suites import SuiteError
from optimizers.registry import PluginError

__all__ = ["USER_ERRORS", "UsageError", "one_line"]


class UsageError(ValueError):
    """A flag's value cannot be used (``--only`` matching nothing, a missing device)."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError,
    SuiteError,
    DataFileError,
    DataOptionError,
    DatasetUnavailable,
    PathNotWritable,
    OutputWriteError,
    PluginError,  # an installed method package that fails to import
)


def one_line(error: BaseException | str) -> str:
    """The message on one line: TOML and loader errors may span several."""
    text = str(error)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or repr(error)
