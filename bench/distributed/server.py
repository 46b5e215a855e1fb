"""``make mlflow-server``: an MLflow tracking server on PostgreSQL that workers log to live.

Why a server: several Dask workers writing one SQLite file at once is not safe (SQLite
locks the whole file and MLflow's store does not retry), while a tracking server takes
their requests over HTTP and keeps runs in PostgreSQL, which is made for concurrent
writers. Artifacts (curves, figures, models) go through the server into a local folder
(``--artifacts-destination``), so workers need no shared file system.

``python -m bench.distributed.server --backend postgresql://... --artifacts DIR`` creates
the database when it is missing, prints the ``MLFLOW_TRACKING_URI`` to export and then
runs ``mlflow server`` on 127.0.0.1 in the foreground (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

#: Seconds a started server has to answer ``/health``.
START_TIMEOUT_S = 90.0


def ensure_database(url: str) -> None:
    """Create the database of a PostgreSQL ``url`` if the server lacks it.

    Raises ``RuntimeError`` with one line naming the server (password hidden) when it
    cannot be reached.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from bench.tuning.storage import _with_installed_driver

    target = make_url(_with_installed_driver(url))
    admin = create_engine(
        target.set(database="postgres"),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )
    shown = target.render_as_string(hide_password=True)
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": target.database},
            ).scalar()
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise RuntimeError(f"cannot reach PostgreSQL at {shown}: {first}") from None
    finally:
        admin.dispose()


def server_command(backend: str, artifacts: Path, port: int, workers: int = 2) -> list[str]:
    """The ``mlflow server`` command line: 127.0.0.1 only, artifacts served by it."""
    mlflow = Path(sys.executable).with_name("mlflow")
    return [
        str(mlflow) if mlflow.exists() else "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(Path(artifacts).resolve()),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def wait_until_up(
    uri: str, process: subprocess.Popen | None = None, timeout: float = START_TIMEOUT_S
) -> None:
    """Poll ``<uri>/health`` until the server answers (raises ``RuntimeError`` if not)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server at {uri} did not answer within {timeout:g} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True, help="PostgreSQL URL of the run store")
    parser.add_argument("--artifacts", type=Path, required=True, help="artifact folder")
    parser.add_argument("--port", type=int, default=5001, help="port on 127.0.0.1")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    args = parser.parse_args(argv)
    if args.backend.startswith("postgresql"):
        try:
            ensure_database(args.backend)
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    args.artifacts.mkdir(parents=True, exist_ok=True)
    print(
        f"MLflow server for live tracking; in the shell that runs the suite:\n"
        f"  export MLFLOW_TRACKING_URI=http://127.0.0.1:{args.port}",
        flush=True,
    )
    command = server_command(args.backend, args.artifacts, args.port, args.workers)
    os.execvp(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
