"""Where studies live: choosing, checking and opening Optuna storages.

Why three kinds:

- **SQLite** (``sqlite:///<out>/optuna.db``, the default for one worker): one file, read
  by ``make dashboard``. SQLite locks the whole file and Optuna's schema is not written
  for concurrent writers, so it is refused with ``--workers > 1``.
- **Journal file** (``<out>/optuna-journal.log``, the default for ``--workers K > 1``):
  an append-only log guarded by a file lock, Optuna's recommended storage for several
  processes on one machine (it also works, and is used, for one worker once a study
  lives there). Any ``--storage`` value without ``://`` is taken as a journal path.
- **A database server** (``postgresql://...``, ``mysql://...``): shared by several
  machines. The trial-number race is handled by Optuna (it locks the study row while it
  numbers a new trial), and heartbeats (every 60 s, stale after 180 s) fail the trials of
  a worker that died, so a rerun replaces them.

Every storage is checked before any training: the URL must parse, its driver must be
installed, and the server must answer within :data:`CONNECT_TIMEOUT_S` seconds.

SQLite guards: creating the schema of a new file happens under a file lock (two first
runs at once would both run Optuna's migration, and one would die in it), and while a
``bench tune`` process uses a SQLite file it holds a lock that makes a second one refuse
to start (:meth:`StorageSpec.exclusive`) instead of failing later inside SQLite.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from bench.ledger.locking import file_lock
from bench.ledger.safe_files import describe_write_error
from bench.ledger.writable import PathNotWritable, check_writable_file
from bench.silence import silenced

SQLITE_NAME = "optuna.db"
JOURNAL_NAME = "optuna-journal.log"
CONNECT_TIMEOUT_S = 5
HEARTBEAT_INTERVAL_S = 60
HEARTBEAT_GRACE_S = 180


class StorageError(ValueError):
    """A storage URL or path is invalid or its server is unreachable."""


@dataclass(frozen=True)
class StorageSpec:
    """A storage by value, so it can be sent to worker processes and opened there."""

    kind: str  # "rdb" or "journal"
    location: str  # a SQLAlchemy URL or a journal file path

    @property
    def is_sqlite(self) -> bool:
        return self.kind == "rdb" and self.location.startswith("sqlite")

    def describe(self) -> str:
        """The location with any password hidden, for messages and MLflow tags."""
        if self.kind == "journal":
            return self.location
        try:
            from sqlalchemy.engine import make_url

            return make_url(self.location).render_as_string(hide_password=True)
        except Exception:  # an unparsable URL: say nothing that might hold a secret
            return self.location.split("@")[-1]

    @property
    def sqlite_path(self) -> Path | None:
        """The database file of a SQLite storage, else None."""
        if not self.is_sqlite:
            return None
        from sqlalchemy.engine import make_url

        database = make_url(self.location).database
        return Path(database) if database and database != ":memory:" else None

    def _lock_file(self, purpose: str) -> Path | None:
        path = self.sqlite_path
        return None if path is None else path.with_name(f".{path.name}.{purpose}.lock")

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold this SQLite file for one tuning process; a second one fails at once.

        Other storages are made for concurrent processes and pass straight through.
        """
        lock = self._lock_file("tune")
        if lock is None:
            yield
            return
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(file_lock(lock, blocking=False))
        except BlockingIOError:
            raise StorageError(
                f"another bench tune process is using the SQLite storage {self.location}; "
                "SQLite is not safe for concurrent processes: wait for it, or run both with a "
                "journal file (--storage PATH, e.g. the default optuna-journal.log in --out) "
                "or a PostgreSQL URL (--storage postgresql://...)"
            ) from None
        except OSError as error:
            raise StorageError(str(describe_write_error(error, lock))) from None
        with stack:
            yield

    def open(self) -> BaseStorage:
        """The Optuna storage (creates tables or the file if needed)."""
        if self.kind == "journal":
            return JournalStorage(JournalFileBackend(self.location))
        guard = contextlib.ExitStack()
        lock = self._lock_file("schema")
        if lock is not None:
            with contextlib.suppress(OSError):  # a read-only folder: opening will say so
                guard.enter_context(file_lock(lock))
        with guard:
            return self._open_rdb()

    def _open_rdb(self) -> BaseStorage:
        engine_kwargs: dict = {}
        if self.is_sqlite:
            engine_kwargs = {"connect_args": {"timeout": 60}}
        else:
            engine_kwargs = {
                "pool_pre_ping": True,
                "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S * 2},
            }
        # Two machines starting on an empty database race to create the schema; the loser
        # sees an error from CREATE TABLE and simply tries again, now finding the tables.
        for attempt in range(4):
            try:
                with silenced(optuna.exceptions.ExperimentalWarning):  # heartbeats
                    return RDBStorage(
                        self.location,
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=HEARTBEAT_INTERVAL_S,
                        grace_period=HEARTBEAT_GRACE_S,
                    )
            except Exception:
                if attempt == 3:
                    raise
                time.sleep(0.5 + random.random())
        raise AssertionError("unreachable")


def parse_storage(text: str) -> StorageSpec:
    """``--storage``: a database URL (has ``://``) or the path of a journal file."""
    text = text.strip()
    if not text:
        raise StorageError("--storage is empty")
    if "://" in text:
        return StorageSpec("rdb", _with_installed_driver(text))
    return StorageSpec("journal", str(Path(text).expanduser()))


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, while this project installs
    psycopg2-binary (the ``postgres`` extra); name psycopg2 explicitly when only it exists.
    """
    import importlib.util

    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return url  # check_storage reports it
    if parsed.drivername != "postgresql" or importlib.util.find_spec("psycopg") is not None:
        return url
    if importlib.util.find_spec("psycopg2") is None:
        return url
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def default_storage(out: Path, study: str, workers: int) -> StorageSpec:
    """The storage used without ``--storage`` (see the module docstring).

    One worker uses SQLite unless the study already lives in the journal file (a study
    first run with several workers stays where it is); several workers use the journal
    file, and refuse a study that already lives in the SQLite file rather than silently
    starting a second, empty study of the same name.
    """
    out = Path(out).resolve()
    sqlite = StorageSpec("rdb", f"sqlite:///{out / SQLITE_NAME}")
    journal = StorageSpec("journal", str(out / JOURNAL_NAME))
    if workers > 1:
        if _study_exists(sqlite, study, out / SQLITE_NAME):
            raise StorageError(
                f"study {study!r} lives in {sqlite.location}, which several worker processes "
                f"must not share; rerun it with --workers 1, or copy it to a journal file "
                f"(optuna.copy_study) and pass --storage {journal.location}"
            )
        return journal
    if _study_exists(journal, study, out / JOURNAL_NAME):
        return journal
    return sqlite


def _study_exists(spec: StorageSpec, study: str, path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        names = optuna.get_all_study_names(spec.open())
    except Exception:
        return False
    return study in names


def _check_writable(path: Path, what: str) -> None:
    """A storage file must be writable, and so must its folder (locks, SQLite journals)."""
    try:
        check_writable_file(path, what, flag="--storage")
    except PathNotWritable as error:
        raise StorageError(str(error)) from None


def check_journal(path: Path) -> None:
    """Refuse a journal file with a line that is not a JSON object (garbage, a cut line).

    Optuna reads such a file lazily and fails later, at the first write after the bad
    line, with a bare ``JSONDecodeError``; checked here, the error names the file and line.
    """
    if not path.is_file():
        return
    try:
        with path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                problem = None
                if not line.endswith(b"\n"):
                    problem = "is cut short (no line end)"
                else:
                    try:
                        if not isinstance(json.loads(line.decode("utf-8")), dict):
                            problem = "is not a JSON object"
                    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
                        problem = f"is not JSON ({type(error).__name__}: {error})"
                if problem:
                    raise StorageError(
                        f"journal storage {path}: line {number} {problem}; it is not an Optuna "
                        "journal or is damaged: pass another --storage file, or remove that line"
                    )
    except OSError as error:
        raise StorageError(f"journal storage {path} cannot be read: {error}") from None


def check_storage(spec: StorageSpec, workers: int) -> None:
    """Fail fast, before any training, on a storage that cannot work."""
    if spec.kind == "journal":
        parent = Path(spec.location).parent
        if not parent.is_dir():
            raise StorageError(f"journal storage {spec.location}: folder {parent} does not exist")
        _check_writable(Path(spec.location), "journal storage")
        check_journal(Path(spec.location))
        return
    try:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        url = make_url(spec.location)
    except Exception as error:
        raise StorageError(f"--storage {spec.describe()!r} is not a valid URL: {error}") from None
    if url.get_backend_name() == "sqlite":
        if workers > 1:
            raise StorageError(
                "SQLite is not safe for concurrent worker processes; drop --storage to use the "
                "journal file (optuna-journal.log) in --out, or pass a PostgreSQL URL"
            )
        if not url.database or url.database == ":memory:":
            raise StorageError("an in-memory SQLite storage cannot keep or resume a study")
        parent = Path(url.database).parent
        if not parent.is_dir():
            raise StorageError(f"SQLite storage {spec.location}: folder {parent} does not exist")
        _check_writable(Path(url.database), "SQLite storage")
        return
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    except Exception as error:  # no such dialect or driver
        raise StorageError(
            f"cannot use storage {spec.describe()}: {type(error).__name__}: {error} "
            f"(is its database driver installed? PostgreSQL needs psycopg2-binary)"
        ) from None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StorageError(
            f"cannot reach storage {spec.describe()} (connect timeout {CONNECT_TIMEOUT_S} s): "
            f"{reason}"
        ) from None
    finally:
        engine.dispose()
