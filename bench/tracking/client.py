"""MLflow records: one experiment per suite, one run per cell.

Everything goes through ``MlflowClient`` with explicit run ids (no global active run), so
a crash or Ctrl-C in one cell cannot leak into the next, and logging happens in batches
at the evaluation cadence, off the timed path. This is the thin client; the lifecycle of
one run (and what happens when MLflow fails) lives in :mod:`bench.tracking.run_log`.

MLflow's HTTP client retries a dead server for about four minutes by default; the bench
sets short retry and timeout defaults (:data:`HTTP_DEFAULTS`, each overridable by its
environment variable) because the ledger, not MLflow, keeps the results, and
``bench sync`` pushes what MLflow missed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from bench.ledger.locking import file_lock
from bench.tracking.meta import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, without_none

EXPERIMENT_PREFIX = "pmp-bench/"
#: MLflow's SQL store logs a full traceback for every failed session (a full disk gives
#: a dozen) and then raises; the bench reports that error once, in the record's
#: ``mlflow_error`` and its one-line summary, so the logged copy is dropped.
SQL_STORE_LOGGER = "mlflow.store.db.utils"


class _DropCaughtDatabaseErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SQLAlchemy database error")


logging.getLogger(SQL_STORE_LOGGER).addFilter(_DropCaughtDatabaseErrors())
MAX_PARAM_LENGTH = 6000
#: MLflow's limits on a run tag's and an experiment tag's value: longer ones (a suite's
#: long description) are cut, with a note, instead of failing the whole call.
MAX_TAG_LENGTH = 8000
MAX_EXPERIMENT_TAG_LENGTH = 20000
CLIPPED_NOTE = "\n\n[cut to fit MLflow; the full text is in the suite file]"
#: Guards the creation of the SQLite schema and experiments (two first runs at once).
SCHEMA_LOCK = ".mlflow.lock"
#: MLflow client settings used unless the environment sets them: an unreachable server
#: fails in seconds (3 attempts, 5 s timeout, 0-2 s back-off), not minutes.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


def configure_http_client() -> None:
    """Short HTTP retries and timeouts for this process (see :data:`HTTP_DEFAULTS`)."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def tracking_uri(out_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store in the output folder."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{Path(out_dir).resolve() / 'mlflow.db'}"
    )


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested dicts as dotted keys, values as strings (MLflow params are strings)."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, inner in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return out
    text = json.dumps(value) if not isinstance(value, str) else value
    return {prefix: text[:MAX_PARAM_LENGTH]}


class Tracker:
    """Thin wrapper over MlflowClient for the suite runner and the tuner."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        artifact_root: Path | None = None,
        lock_path: Path | None = None,
        experiment_tags: dict[str, str] | None = None,
    ) -> None:
        """Open the store and the experiment (created if missing).

        ``lock_path``: a file locked around the first contact, which creates the SQLite
        schema and the experiment; two processes starting on a fresh store at once would
        otherwise both run the schema migration and one would die in it.
        """
        configure_http_client()
        self.uri = uri
        guard = file_lock(lock_path) if lock_path is not None else contextlib.nullcontext()
        with guard:  # the client opens the store (and migrates a SQLite schema) eagerly
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                location = artifact_root.resolve().as_uri() if artifact_root is not None else None
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=location
                )
            else:
                self.experiment_id = found.experiment_id
            # The kind tag makes MLflow 3 open the experiment in its model-training view.
            wanted = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **(experiment_tags or {})}
            have = found.tags if found is not None else {}
            for key, value in clip(wanted, MAX_EXPERIMENT_TAG_LENGTH).items():
                if have.get(key) != value:
                    self.client.set_experiment_tag(self.experiment_id, key, value)

    @classmethod
    def for_output(
        cls, out_dir: Path, experiment: str, experiment_tags: dict[str, str] | None = None
    ) -> Tracker:
        """The tracker of an output folder: its store, artifact folder and schema lock."""
        out_dir = Path(out_dir)
        return cls(
            tracking_uri(out_dir),
            experiment,
            out_dir / "mlflow-artifacts",
            lock_path=out_dir / SCHEMA_LOCK,
            experiment_tags=experiment_tags,
        )

    def start(
        self,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        all_tags = clip(tags, MAX_TAG_LENGTH)
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        run_id = run.info.run_id
        flat = flatten("", without_none(params))
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])
        return run_id

    def log_metrics(
        self, run_id: str, values: dict[str, Any], step: int, timestamp_ms: int
    ) -> None:
        """One batch of finite numeric metrics at ``step`` (None and NaN are skipped)."""
        metrics = [
            Metric(key, float(value), timestamp_ms, step)
            for key, value in values.items()
            if isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
        ]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        clipped = clip(tags, MAX_TAG_LENGTH)
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in clipped.items()])

    def log_json(self, run_id: str, name: str, content: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(content, indent=1, default=str))
            self.client.log_artifact(run_id, str(path))

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def end(self, run_id: str, status: str) -> None:
        """``status``: FINISHED, FAILED or KILLED."""
        self.client.set_terminated(run_id, status=status)

    def status(self, run_id: str) -> str | None:
        """The run's status (RUNNING, FINISHED, ...), or None when it does not exist."""
        try:
            return self.client.get_run(run_id).info.status
        except Exception:  # deleted, never created, or from another store
            return None

    def running_runs(self, tags: dict[str, str]) -> list[Any]:
        """Runs of this experiment still RUNNING whose tags equal ``tags``."""
        return self.runs_with_tags(tags, ["attributes.status = 'RUNNING'"])

    def runs_with_tags(self, tags: dict[str, str], clauses: list[str] | None = None) -> list[Any]:
        """Runs of this experiment whose tags equal ``tags`` (and that meet ``clauses``)."""
        clauses = [
            *(clauses or []),
            *(f"tags.`{k}` = {filter_literal(v)}" for k, v in tags.items()),
        ]
        return self.client.search_runs(
            [self.experiment_id], filter_string=" and ".join(clauses), max_results=5000
        )


def clip(tags: Mapping[str, Any], limit: int) -> dict[str, str]:
    """Tag values as strings of at most ``limit`` characters (a note marks a cut)."""
    out = {}
    for key, value in tags.items():
        text = str(value)
        if len(text) > limit:
            text = text[: limit - len(CLIPPED_NOTE)] + CLIPPED_NOTE
        out[key] = text
    return out


def filter_literal(value: str) -> str:
    """``value`` as a string literal of an MLflow filter: quoted with the quote it lacks.

    MLflow's filter grammar has no escape inside a literal, so a value holding both
    quotes cannot be matched exactly and raises :class:`ValueError` (suite and study
    names are checked on load and hold neither).
    """
    value = str(value)
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"{value!r} holds both quote characters; no MLflow filter can match it")
