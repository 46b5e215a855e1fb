"""Shared test settings and fixtures.

One intra-op thread for torch (and for the subprocesses the tests start): the tests'
networks are tiny (cnn-tiny on 8x8 images, batches of 32 to 128), where a second thread
buys nothing measurable, and on a shared two-core machine threads that spin while they
wait for a core cost several times the work itself. The results do not depend on it.

One migrated, empty MLflow store per session: creating a SQLite store runs MLflow's
whole chain of schema migrations, a few seconds each time, and most end-to-end tests
start from a fresh output folder. Before a :class:`bench.tracking.client.Tracker` opens a
SQLite store that does not exist yet, a copy of the session's template is put there, so
the test exercises the same open, experiment creation and logging without paying for
the migrations again. Stores made by subprocesses (the concurrency tests) are created
the real way.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import pytest

SQLITE_PREFIX = "sqlite:///"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Filled lazily with the template's path the first time a test needs it."""
    return {"folder": tmp_path_factory.mktemp("mlflow-template")}


@pytest.fixture(autouse=True)
def _premigrated_mlflow_stores(
    monkeypatch: pytest.MonkeyPatch, _mlflow_template: dict[str, Path]
) -> None:
    tracking = sys.modules.get("bench.tracking.client")
    if tracking is None:  # this test module never touches MLflow
        return
    original = tracking.Tracker.__init__

    def init(self, uri: str, *args, **kwargs) -> None:
        if uri.startswith(SQLITE_PREFIX):
            target = Path(uri[len(SQLITE_PREFIX) :])
            if not target.exists() and target.parent.is_dir():
                shutil.copyfile(_template(_mlflow_template), target)
        original(self, uri, *args, **kwargs)

    monkeypatch.setattr(tracking.Tracker, "__init__", init)


def _template(cache: dict[str, Path]) -> Path:
    if "db" not in cache:
        from mlflow.tracking import MlflowClient

        db = cache["folder"] / "mlflow.db"
        # The template is made inside whichever test first opens a store; its migration
        # log lines are the harness's, not the test's, so they stay out of its stderr.
        loggers = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            MlflowClient(tracking_uri=SQLITE_PREFIX + str(db)).search_experiments()  # migrates
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
        cache["db"] = db
    return cache["db"]


class _FakeGraph:
    """Stands in for a CUDA graph on the CPU: replay re-runs the step on the static inputs.

    Real replays re-execute the recorded kernels on the same buffers, reading the current
    parameters, eps and carried adjoints; re-running the function does the same work, so
    the cache's plumbing (roll-back, static inputs, kinds, packed outputs) is tested.
    """

    def __init__(self, fn, static, output):
        self.fn, self.static, self.output = fn, static, output

    def replay(self):
        self.output.copy_(self.fn(*self.static)[0])


def _fake_capture(fn, static):
    for _ in range(2):  # warm-up, as the real capture does; the cache rolls it back
        fn(*static)
    output, meta = fn(*static)  # a real capture records instead of running
    return _FakeGraph(fn, static, output), output, meta


@pytest.fixture
def fake_graphs(monkeypatch):
    """Route the graph cache's capture through ``_fake_capture``, on any device."""
    from optimizers import graphs

    monkeypatch.setattr(graphs.GraphCache, "_capture", staticmethod(_fake_capture))
    monkeypatch.setattr(
        graphs.GraphCache, "active", lambda self, x: self.enabled and self.failure is None
    )
