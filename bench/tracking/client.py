"""The bench's MLflow client: one experiment per suite, one run per cell, none of it fatal.

:class:`Tracker` is an experiment of a store, opened on first use; every call goes
through ``MlflowClient`` with explicit run ids (no global active run), so a crash or
Ctrl-C in one cell cannot leak into the next, and logging happens in batches at the
evaluation cadence, off the timed path. :class:`RunLog` is one run's lifecycle (start,
metrics, artifacts, end) for the runner and the tuner.

MLflow is a sink, never a reason to lose training: every call of a run goes through
:meth:`RunLog._call`, which retries a failure a bounded number of times
(:data:`ATTEMPTS`) and then marks the run *not synced* with the reason. After that the
run makes no further calls (a dead server must not cost a timeout at every evaluation
point), and the caller records ``synced``/``error`` next to its result so ``bench
sync`` can push it later. MLflow's HTTP client retries a dead server for about four
minutes by default; the bench sets short retry and timeout defaults
(:data:`HTTP_DEFAULTS`, each overridable by its environment variable) because the
ledger, not MLflow, keeps the results.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from bench.ledger.locking import file_lock
from bench.tracking.meta import log_model, model_name, system_metrics, without_none
from bench.tracking.names import (
    CLOSE_REASON_TAG,
    COMPLETE_TAG,
    DRIVER_HOST_TAG,
    DRIVER_PID_TAG,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    FINAL_PREFIX,
    PARENT_RUN_TAG,
    STATUS_TAG,
)
from bench.training.metrics import METRICS, MLFLOW_CURVE_FIELDS

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
#: Attempts of each MLflow call of a run before the run is marked not synced.
ATTEMPTS = 2
RETRY_PAUSE_S = 0.5
#: Summary keys that are points in time: tags (ISO 8601), never metrics.
TIMESTAMP_SUFFIX = "_at"
TERMINAL = {
    "finished": "FINISHED",
    "diverged": "FINISHED",
    "capped": "FINISHED",  # the `status` tag says capped: out of every verdict
    "failed": "FAILED",
    "killed": "KILLED",
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
    """An experiment of an MLflow store, opened on first use; failing to open it is not fatal.

    Nothing touches the store until a call needs it (:meth:`open`), so a driver whose
    store is down still trains and records, and its runs say *not synced*. Runs are
    made with :meth:`start` (a :class:`RunLog`); the other methods are single MLflow
    calls by run id, which raise what MLflow raises.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        artifact_root: Path | None = None,
        lock_path: Path | None = None,
        experiment_tags: dict[str, str] | None = None,
    ) -> None:
        """``lock_path``: a file locked around the first contact, which creates the SQLite
        schema and the experiment; two processes starting on a fresh store at once would
        otherwise both run the schema migration and one would die in it."""
        configure_http_client()
        self.uri = uri
        self.experiment = experiment
        self.artifact_root = artifact_root
        self.lock_path = lock_path
        self.experiment_tags = experiment_tags
        self._client: MlflowClient | None = None
        self._experiment_id = ""
        # Set by the first call that timed out: a server that accepts connections and never
        # answers would cost every later call its timeouts again, so for the rest of this
        # process nothing is sent; the records say not synced and `bench sync` pushes them.
        self.unreachable: str | None = None

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

    def open(self) -> Tracker:
        """Open the store and the experiment (created if missing) unless open already.

        Raises what MLflow raises when the store cannot be reached; the next call tries
        again.
        """
        if self._client is not None:
            return self
        lock = self.lock_path
        guard = file_lock(lock) if lock is not None else contextlib.nullcontext()
        with guard:  # the client opens the store (and migrates a SQLite schema) eagerly
            client = MlflowClient(tracking_uri=self.uri)
            found = client.get_experiment_by_name(self.experiment)
            if found is None:
                root = self.artifact_root
                location = root.resolve().as_uri() if root is not None else None
                experiment_id = client.create_experiment(
                    self.experiment, artifact_location=location
                )
            else:
                experiment_id = found.experiment_id
            # The kind tag makes MLflow 3 open the experiment in its model-training view.
            wanted = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, **(self.experiment_tags or {})}
            have = found.tags if found is not None else {}
            for key, value in clip(wanted, MAX_EXPERIMENT_TAG_LENGTH).items():
                if have.get(key) != value:
                    client.set_experiment_tag(experiment_id, key, value)
        self._client, self._experiment_id = client, experiment_id
        return self

    @property
    def client(self) -> MlflowClient:
        """The open ``MlflowClient`` (opens the store first if needed)."""
        self.open()
        assert self._client is not None
        return self._client

    @property
    def experiment_id(self) -> str:
        return self.open()._experiment_id

    def note_failure(self, what: str, error: BaseException) -> None:
        """Mark the store unreachable for the rest of the process if ``error`` timed out."""
        if timed_out(error) and self.unreachable is None:
            self.unreachable = (
                f"MLflow {what} timed out ({short_reason(error)}); the store is treated as "
                "unreachable for the rest of this run"
            )

    def new_log(self) -> RunLog:
        """The run object :meth:`start` fills in (a subclass may log differently)."""
        return RunLog(self)

    def start(
        self,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        parent_run_id: str | None = None,
    ) -> RunLog:
        """A new run (or a not-synced stand-in when MLflow cannot be reached), with the
        driver's tags and nested below ``parent_run_id`` if given."""
        log = self.new_log()
        log.name = name
        all_tags = clip({**tags, **driver_tags()}, MAX_TAG_LENGTH)
        if parent_run_id is not None:
            all_tags[PARENT_RUN_TAG] = parent_run_id
        log.run_id = log._call("start", lambda: self.create_run(name, params, all_tags))
        return log

    def create_run(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        """One MLflow run with these params and tags (cut to MLflow's limits); its id."""
        all_tags = clip(tags, MAX_TAG_LENGTH)
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
            if is_number(value)
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


def short_reason(error: BaseException) -> str:
    """One line for a record: the exception type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:500] if text else ''}".rstrip(": ")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def timestamp_tags(summary: Mapping[str, Any]) -> dict[str, str]:
    """Points in time of ``summary`` (Unix seconds) as ISO 8601 tags."""
    return {
        k: datetime.datetime.fromtimestamp(v, datetime.UTC).isoformat(timespec="seconds")
        for k, v in summary.items()
        if k.endswith(TIMESTAMP_SUFFIX) and is_number(v)
    }


def timed_out(error: BaseException) -> bool:
    """Whether an MLflow call failed because the server did not answer in time."""
    text = f"{type(error).__name__} {error}".lower()
    return isinstance(error, TimeoutError) or "timed out" in text or "timeout" in text


def driver_tags() -> dict[str, str]:
    """The host and process that open a run, so a later process can tell an orphan."""
    return {DRIVER_HOST_TAG: socket.gethostname(), DRIVER_PID_TAG: str(os.getpid())}


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


class RunLog:
    """One run; every method is a no-op once the run is not synced."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.run_id: str | None = None
        self.name = ""
        #: The last evaluation point logged: the trained network's figures, for its model.
        self.last_point: dict[str, Any] = {}
        self.last_point_ms = 0
        self._sample: Callable[[], None] | None = None  # set while system metrics run
        self.error: str | None = None
        self.closed = False

    @property
    def synced(self) -> bool:
        return self.error is None

    def _call(self, what: str, action: Callable[[], Any], *, force: bool = False) -> Any:
        """Run ``action`` with bounded retries; ``force``: once even after a failure."""
        if self.tracker.unreachable is not None:
            self.error = self.error or self.tracker.unreachable
            return None
        if self.error is not None and not force:
            return None
        for attempt in range(1 if self.error is not None else ATTEMPTS):
            try:
                return action()
            except Exception as error:  # MLflow, SQLAlchemy, requests, OSError...
                self.tracker.note_failure(what, error)
                if attempt + 1 >= ATTEMPTS or self.error is not None or timed_out(error):
                    self.error = self.error or f"MLflow {what} failed: {short_reason(error)}"
                    return None
                time.sleep(RETRY_PAUSE_S)
        return None

    def log_metrics(self, values: dict[str, Any], step: int) -> int:
        """Numeric ``values`` (others are skipped) as metrics at ``step``; returns the
        timestamp (ms) they carry."""
        now_ms = int(time.time() * 1000)
        self._call(
            "log metrics",
            lambda: self.tracker.log_metrics(self.run_id, values, step=step, timestamp_ms=now_ms),
        )
        return now_ms

    def log_point(self, point: dict[str, Any]) -> None:
        """One evaluation point as metrics at step = its iteration (not itself a metric)."""
        values = {k: point[k] for k in MLFLOW_CURVE_FIELDS if k in point}
        self.last_point = dict(point)
        self.last_point_ms = self.log_metrics(values, step=int(point["iteration"]))
        if self._sample is not None:
            self._sample()

    def log_inputs(self, datasets: Sequence[Any]) -> None:
        """Dataset inputs (MLflow's *Dataset* column): ``meta.dataset_inputs``."""
        self._call(
            "log inputs",
            lambda: self.tracker.client.log_inputs(self.run_id, datasets=list(datasets)),
        )

    def log_model(self, model: Any, example: Any) -> str | None:
        """The trained network as the run's MLflow model; its URI, or None on failure.

        Named after the run (``bsqh-mb-s0``), with the last logged evaluation point's
        metrics at its iteration: the figures of the network that was saved.
        """
        uri = self.tracker.uri if self.synced else None
        point = self.last_point
        values = {k: point[k] for k in MLFLOW_CURVE_FIELDS if k in point}
        return self._call(
            "log model",
            lambda: log_model(
                uri,
                self.run_id,
                model,
                example,
                name=model_name(self.name),
                step=int(point.get("iteration") or 0),
                metrics=values,
                timestamp_ms=self.last_point_ms or None,
            ),
        )

    @contextlib.contextmanager
    def system_metrics(self, enabled: bool = True) -> Iterator[None]:
        """Sample system metrics into this run while the block runs (nothing if not
        synced), and once more at every :meth:`log_point` (an evaluation)."""
        active = enabled and self.synced and self.run_id is not None
        uri = self.tracker.uri if active else ""
        with system_metrics(self.run_id if active else None, uri, enabled=active) as sample:
            self._sample = sample
            try:
                yield
            finally:
                self._sample = None

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        """``path`` into the run's artifacts (``artifact_path``: a folder there)."""
        self._call(
            f"log {Path(path).name}",
            lambda: self.tracker.log_file(self.run_id, path, artifact_path),
        )

    def log_curve(self, curve: Sequence[dict[str, Any]]) -> None:
        """A whole curve at once (``bench sync`` rebuilding a run from the ledger)."""
        for point in curve:
            self.log_point(point)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._call("set tags", lambda: self.tracker.set_tags(self.run_id, tags))

    def finish(
        self,
        status: str,
        *,
        metrics: dict[str, Any] | None = None,
        step: int = 0,
        tags: dict[str, str] | None = None,
        json_artifacts: dict[str, Any] | None = None,
        figure: Callable[[Path], Path | None] | None = None,
        mlflow_status: str | None = None,
    ) -> None:
        """Final metrics, JSON artifacts, an optional figure, the status tag, and the end.

        ``status`` is the bench's (finished, diverged, failed, killed, pruned...);
        ``mlflow_status`` defaults to its MLflow counterpart (:data:`TERMINAL`).
        ``figure(folder)`` draws a PNG into ``folder`` and returns its path.
        """
        if self.error is not None:  # broke earlier: close it, `bench sync` rebuilds it
            self.end("FAILED", reason=f"incomplete ({self.error}); rebuilt by bench sync")
            return
        tracker = self.tracker
        if metrics:
            self.log_metrics(metrics, step=step)
        for name, content in (json_artifacts or {}).items():
            if content:
                self._call(
                    f"log {name}", lambda n=name, c=content: tracker.log_json(self.run_id, n, c)
                )
        if figure is not None:
            self._call("log figure", lambda: self._log_figure(figure))
        if self.synced:
            self.set_tags({**(tags or {}), STATUS_TAG: status, COMPLETE_TAG: "true"})
            self.end(mlflow_status or TERMINAL.get(status, "FAILED"))
        else:  # leave no RUNNING run behind; `bench sync` rebuilds a complete one
            self.end("FAILED", reason=f"incomplete ({self.error}); rebuilt by bench sync")

    def finish_training(
        self,
        status: str,
        summary: Mapping[str, Any],
        *,
        curve: Sequence[dict[str, Any]],
        layer_sparsity: dict[str, float] | None = None,
        error: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        figure: Callable[[Path], Path | None] | None = None,
        mlflow_status: str | None = None,
    ) -> None:
        """Close a training run, a suite cell's or a tuning trial's, the one same way.

        The summary's figures that are not on the curve become ``final.*`` tags
        (:func:`mlflow_summary_tags`), its points in time tags, and the
        curve, layer sparsity and error JSON artifacts. ``metrics`` and ``tags`` add
        what only the caller knows.
        """
        self.finish(
            status,
            metrics=metrics,
            step=int(summary.get("iterations") or 0),
            tags={**mlflow_summary_tags(summary), **timestamp_tags(summary), **(tags or {})},
            json_artifacts={
                "layer_sparsity.json": layer_sparsity,
                "curve.json": list(curve),
                "error.json": error,
            },
            figure=figure,
            mlflow_status=mlflow_status,
        )

    def _log_figure(self, figure: Callable[[Path], Path | None]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = figure(Path(tmp))
            except Exception as error:  # an optional picture; the ledger has the curve
                note = f"no figure for MLflow run {self.run_id}: {short_reason(error)}"
                warnings.warn(note, stacklevel=2)
                return
            if path is not None:
                self.tracker.log_file(self.run_id, path)

    def end(self, mlflow_status: str, reason: str | None = None) -> None:
        """Terminate the run (FINISHED, FAILED or KILLED), with a reason tag if given.

        Tried once even after an earlier failure, so a run whose store recovered (or
        that only lost an artifact) is not left RUNNING.
        """
        if self.run_id is None:
            return
        run_id = self.run_id
        tracker = self.tracker
        if reason is not None:
            tags = {CLOSE_REASON_TAG: reason[:5000]}
            self._call("set tags", lambda: tracker.set_tags(run_id, tags), force=True)
        self._call("end run", lambda: tracker.end(run_id, mlflow_status), force=True)


def mlflow_summary_tags(summary_values: Mapping[str, Any]) -> dict[str, str]:
    """Summary figures not on the curve, as MLflow tags ``final.<name>``.

    Tags, not metrics: a number logged once is a single-point chart in MLflow's chart
    view, and a cell has eight of them (``iterations``, ``eval_time_s``, ...). Curve
    metrics are logged at every evaluation, so their last point is their final value
    already (no ``final_*`` copies). Tags, not params, because a run that ``bench sync``
    completes again may overwrite them.
    """
    out: dict[str, str] = {}
    for m in METRICS:
        if not m.mlflow or m.curve or not m.summary:
            continue
        value = summary_values.get(m.name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            text = f"{value:d}" if isinstance(value, int) else f"{value:.6g}"
            out[FINAL_PREFIX + m.name] = text
    return out
