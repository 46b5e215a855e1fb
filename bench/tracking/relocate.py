"""Move or copy an output folder together with the MLflow store inside it.

MLflow records where artifacts live as absolute ``file://`` URIs (an experiment's
``artifact_location``, a run's ``artifact_uri``, a logged model's ``artifact_location``),
so a folder moved with ``mv`` keeps reading, and writing, artifacts at the old place.
:func:`relocate` moves the folder and rewrites every location under the old folder to
the same place under the new one, in every SQLite store the folder holds
(``<out>/mlflow.db``, and ``epochs-<E>/mlflow.db`` of ``bench matched``). Locations
outside the folder (an artifact root elsewhere, MLflow's ``Default`` experiment) are
left as they are. The folder a store was made in is also read from its experiments'
``.../mlflow-artifacts`` roots, and locations under it are rewritten too: a folder that
was already moved or copied by hand is repaired by one more ``bench move``.

Each store is rewritten on a copy (SQLite's backup API, so a consistent snapshot), and
the copy replaces the store by a rename: a store is always either wholly old or wholly
new. A copy (``copy=True``) is built in a hidden folder beside the destination and
renamed into place once complete; a move on one file system renames the folder, and
across file systems copies it the same way and then deletes the source.

Provenance is not rewritten: ``mlflow.source.name`` (the command that ran), the
``pmp.ledger`` tag and ledger records keep naming the folder where the work happened.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from bench.errors import UsageError

STORE_NAME = "mlflow.db"
ARTIFACT_FOLDER = "mlflow-artifacts"
#: (table, column) pairs holding artifact locations in MLflow 3.17's SQL schema.
LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
)
#: The MLmodel file of a logged model records its own location on this line.
MLMODEL_LOCATION_KEY = "artifact_path: "


@dataclass(frozen=True)
class Relocation:
    """What :func:`relocate` did: the stores rewritten and how many locations changed."""

    destination: Path
    stores: tuple[Path, ...]
    rewritten: int

    def describe(self, verb: str) -> str:
        return (
            f"{verb} to {self.destination}: {self.rewritten} artifact locations rewritten "
            f"in {len(self.stores)} MLflow store(s)"
        )


def find_stores(folder: Path) -> list[Path]:
    """The SQLite MLflow stores inside ``folder`` (relative paths), shallowest first."""
    found = [p.relative_to(folder) for p in folder.rglob(STORE_NAME) if p.is_file()]
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


def check_request(source: Path, destination: Path) -> list[Path]:
    """The stores to rewrite, or a :class:`UsageError` saying why nothing can move."""
    if not source.is_dir():
        raise UsageError(f"source folder {str(source)!r} does not exist or is not a folder")
    if destination.exists() or destination.is_symlink():
        raise UsageError(f"destination {str(destination)!r} exists; name a new folder")
    if not destination.parent.is_dir():
        raise UsageError(f"the parent of the destination, {str(destination.parent)!r}, is missing")
    resolved = source.resolve()
    if destination.resolve().is_relative_to(resolved):
        raise UsageError(f"destination {str(destination)!r} lies inside the source folder")
    stores = find_stores(source)
    if not stores:
        raise UsageError(
            f"{str(source)!r} holds no MLflow store ({STORE_NAME}); use mv or cp for "
            "folders without one"
        )
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    inside = {f"sqlite:///{resolved / store}" for store in stores}
    if uri and uri not in inside:
        raise UsageError(
            f"MLFLOW_TRACKING_URI={uri} names a store outside {str(source)!r}, whose "
            "artifact locations this command cannot rewrite; unset it to move the folder"
        )
    return stores


def relocated(value: str, moves: list[tuple[str, str]]) -> str | None:
    """``value`` under the first old prefix of ``moves`` that holds it, else None."""
    for old, new in moves:
        if value == old or value.startswith(old + "/"):
            return new + value[len(old) :]
    return None


def recorded_folders(database: Path) -> list[str]:
    """Where the store's folder was when its experiments were made: the parent of every
    ``.../mlflow-artifacts`` artifact root (the bench's layout), as recorded."""
    with closing(sqlite3.connect(database)) as connection:
        rows = connection.execute("SELECT artifact_location FROM experiments").fetchall()
    suffix = "/" + ARTIFACT_FOLDER
    return sorted({row[0][: -len(suffix)] for row in rows if (row[0] or "").endswith(suffix)})


def spellings(uri: str) -> list[str]:
    """A ``file://`` URI of a folder and its plain path: MLflow may record either."""
    if uri.startswith("file://"):
        return [uri, unquote(urlparse(uri).path)]
    return [Path(uri).as_uri(), uri] if uri.startswith("/") else [uri]


def rewrite_locations(database: Path, moves: list[tuple[str, str]]) -> int:
    """Rewrite in place every location under an old prefix of ``moves``; the count."""
    changed = 0
    with closing(sqlite3.connect(database)) as connection, connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        for table, column in LOCATION_COLUMNS:
            if table not in tables:
                continue
            rows = connection.execute(f"SELECT rowid, {column} FROM {table}").fetchall()
            for rowid, value in rows:
                fixed = relocated(value, moves) if isinstance(value, str) else None
                if fixed is not None and fixed != value:
                    connection.execute(
                        f"UPDATE {table} SET {column} = ? WHERE rowid = ?",
                        (fixed, rowid),
                    )
                    changed += 1
    return changed


def store_moves(database: Path, old: Path, new: Path) -> list[tuple[str, str]]:
    """(old prefix, new prefix) pairs for a store whose folder goes from ``old`` to ``new``:
    the folder where it is now and the one its locations record (it may have been moved
    or copied by hand before), each as URI and plain path."""
    moves: list[tuple[str, str]] = []
    for folder in [old.as_uri(), *recorded_folders(database)]:
        for spelling, target in zip(spellings(folder), (new.as_uri(), str(new)), strict=False):
            if spelling not in {m[0] for m in moves}:
                moves.append((spelling, target))
    return moves


@dataclass(frozen=True)
class StagedStore:
    """A rewritten snapshot of one store, waiting to replace it."""

    store: Path  # relative to the output folder
    snapshot_name: str
    moves: list[tuple[str, str]]
    rewritten: int


def stage_store(root: Path, store: Path, old_root: Path, new_root: Path) -> StagedStore:
    """Snapshot ``root/store`` beside it (hidden name) with its locations rewritten."""
    path = root / store
    snapshot = path.with_name(f".{path.name}.relocating")
    snapshot.unlink(missing_ok=True)
    with closing(sqlite3.connect(path)) as source, closing(sqlite3.connect(snapshot)) as target:
        source.backup(target)
    moves = store_moves(snapshot, old_root / store.parent, new_root / store.parent)
    return StagedStore(store, snapshot.name, moves, rewrite_locations(snapshot, moves))


def commit_stores(root: Path, staged: list[StagedStore]) -> None:
    """Each snapshot replaces its store (a rename), then its models' MLmodel files follow."""
    for item in staged:
        folder = root / item.store.parent
        os.replace(folder / item.snapshot_name, root / item.store)
        rewrite_mlmodel_files(folder / ARTIFACT_FOLDER, item.moves)


def rewrite_mlmodel_files(folder: Path, moves: list[tuple[str, str]]) -> None:
    """The ``artifact_path`` line of each logged model's MLmodel file, old place to new
    (informational for MLflow, which loads by the store's location, but kept honest)."""
    for mlmodel in folder.rglob("MLmodel") if folder.is_dir() else ():
        lines = mlmodel.read_text().splitlines(keepends=True)
        fixed = []
        for line in lines:
            value = line[len(MLMODEL_LOCATION_KEY) :].rstrip("\n")
            moved = relocated(value, moves) if line.startswith(MLMODEL_LOCATION_KEY) else None
            fixed.append(line if moved is None else f"{MLMODEL_LOCATION_KEY}{moved}\n")
        if fixed != lines:
            staged = mlmodel.with_name(".MLmodel.relocating")
            staged.write_text("".join(fixed))
            os.replace(staged, mlmodel)


def relocate(source: Path, destination: Path, *, copy: bool = False) -> Relocation:
    """Move (or copy) ``source`` to ``destination`` with its stores pointing at the new place."""
    source, destination = Path(source), Path(destination)
    stores = check_request(source, destination)
    old, new = source.resolve(), destination.parent.resolve() / destination.name
    if not copy:
        staged = [stage_store(source, store, old, new) for store in stores]
        try:
            os.rename(source, new)
        except OSError:  # another file system: copy, then delete the source below
            for item in staged:
                (source / item.store.parent / item.snapshot_name).unlink(missing_ok=True)
        else:
            commit_stores(new, staged)
            return Relocation(new, tuple(stores), sum(item.rewritten for item in staged))
    building = new.with_name(f".{new.name}.relocating-{os.getpid()}")
    try:
        shutil.copytree(source, building, symlinks=True)
        staged = [stage_store(building, store, old, new) for store in stores]
        commit_stores(building, staged)
        os.rename(building, new)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    if not copy:
        shutil.rmtree(source)
    return Relocation(new, tuple(stores), sum(item.rewritten for item in staged))
