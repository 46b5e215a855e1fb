"""One MLflow run's lifecycle (start, metrics, artifacts, end) for the runner and the tuner.

MLflow is a sink, never a reason to lose training: every call goes through
:meth:`RunLog._call`, which retries a failure a bounded number of times
(:data:`ATTEMPTS`; the HTTP client has its own short retries, see
:mod:`bench.tracking.client`) and then marks the run *not synced* with the reason. After that
the run makes no further calls (a dead server must not cost a timeout at every
evaluation point), and the caller records ``synced``/``error`` next to its result so
``bench sync`` can push it later.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.ledger.locking import process_alive
from bench.tracking.client import Tracker
from bench.training.metrics import MLFLOW_CURVE_FIELDS, mlflow_summary_tags

#: Attempts of each MLflow call before the run is marked not synced.
ATTEMPTS = 2
RETRY_PAUSE_S = 0.5
#: Summary keys that are points in time: tags (ISO 8601), never metrics.
TIMESTAMP_SUFFIX = "_at"
#: Tags naming the process that drives a run, so a later process can tell an orphan.
DRIVER_TAGS = ("pmp.driver_host", "pmp.driver_pid")
CLOSE_REASON_TAG = "pmp.close_reason"
#: Set when a run holds everything its record has (so `bench sync` can leave it alone).
COMPLETE_TAG = "pmp.complete"
TERMINAL = {
    "finished": "FINISHED",
    "diverged": "FINISHED",
    "capped": "FINISHED",  # the `status` tag says capped: out of every verdict
    "failed": "FAILED",
    "killed": "KILLED",
}


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


def driver_tags() -> dict[str, str]:
    return {"pmp.driver_host": socket.gethostname(), "pmp.driver_pid": str(os.getpid())}


def run_owner(tags: Mapping[str, str]) -> str:
    """``process P on HOST``: the process that opened a run (its :func:`driver_tags`)."""
    return f"process {tags.get('pmp.driver_pid', '?')} on {tags.get('pmp.driver_host', '?')}"


def owner_gone(tags: Mapping[str, str]) -> bool | None:
    """Whether the process that opened a run has ended; None when that cannot be checked
    (another host, or no process id)."""
    pid = tags.get("pmp.driver_pid", "")
    if tags.get("pmp.driver_host") != socket.gethostname() or not pid.isdigit():
        return None
    return not process_alive(int(pid))


def end_killed(tracker: Tracker, run_id: str, reason: str) -> None:
    """End a run KILLED, saying why (``status`` and :data:`CLOSE_REASON_TAG` tags)."""
    tracker.set_tags(run_id, {"status": "killed", CLOSE_REASON_TAG: reason})
    tracker.end(run_id, "KILLED")


def timed_out(error: BaseException) -> bool:
    """Whether an MLflow call failed because the server did not answer in time."""
    text = f"{type(error).__name__} {error}".lower()
    return isinstance(error, TimeoutError) or "timed out" in text or "timeout" in text


class Sink:
    """Where runs go: a tracker opened on first use; failing to open it is not fatal."""

    def __init__(self, opener: Callable[[], Tracker]) -> None:
        self._opener = opener
        self._tracker: Tracker | None = None
        # Set by the first call that timed out: a server that accepts connections and never
        # answers would cost every later call its timeouts again, so for the rest of this
        # process nothing is sent; the records say not synced and `bench sync` pushes them.
        self.unreachable: str | None = None

    @classmethod
    def for_output(
        cls, out_dir: Path, experiment: str, experiment_tags: dict[str, str] | None = None
    ) -> Sink:
        return cls(lambda: Tracker.for_output(out_dir, experiment, experiment_tags))

    def note_failure(self, what: str, error: BaseException) -> None:
        """Mark the store unreachable for the rest of the process if ``error`` timed out."""
        if timed_out(error) and self.unreachable is None:
            self.unreachable = (
                f"MLflow {what} timed out ({short_reason(error)}); the store is treated as "
                "unreachable for the rest of this run"
            )

    def tracker(self) -> Tracker:
        """The open tracker (raises what MLflow raises when the store cannot be reached)."""
        if self._tracker is None:
            self._tracker = self._opener()
        return self._tracker

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
        """A new run (or a not-synced stand-in when MLflow cannot be reached)."""
        log = self.new_log()
        log.name = name
        log.run_id = log._call(
            "start",
            lambda: self.tracker().start(
                name, params, {**tags, **driver_tags()}, parent_run_id=parent_run_id
            ),
        )
        return log


class RunLog:
    """One run; every method is a no-op once the run is not synced."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
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
        if self.sink.unreachable is not None:
            self.error = self.error or self.sink.unreachable
            return None
        if self.error is not None and not force:
            return None
        for attempt in range(1 if self.error is not None else ATTEMPTS):
            try:
                return action()
            except Exception as error:  # MLflow, SQLAlchemy, requests, OSError...
                self.sink.note_failure(what, error)
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
            lambda: self.sink.tracker().log_metrics(
                self.run_id, values, step=step, timestamp_ms=now_ms
            ),
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
        """Dataset inputs (MLflow's *Dataset* column): ``mlflow_meta.dataset_inputs``."""
        self._call(
            "log inputs",
            lambda: self.sink.tracker().client.log_inputs(self.run_id, datasets=list(datasets)),
        )

    def log_model(self, model: Any, example: Any) -> str | None:
        """The trained network as the run's MLflow model; its URI, or None on failure.

        Named after the run (``bsqh-mb-s0``), with the last logged evaluation point's
        metrics at its iteration: the figures of the network that was saved.
        """
        from bench.tracking.meta import log_model, model_name

        uri = self.sink.tracker().uri if self.synced else None
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
        from bench.tracking.meta import system_metrics

        active = enabled and self.synced and self.run_id is not None
        uri = self.sink.tracker().uri if active else ""
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
            lambda: self.sink.tracker().log_file(self.run_id, path, artifact_path),
        )

    def log_curve(self, curve: Sequence[dict[str, Any]]) -> None:
        """A whole curve at once (``bench sync`` rebuilding a run from the ledger)."""
        for point in curve:
            self.log_point(point)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._call("set tags", lambda: self.sink.tracker().set_tags(self.run_id, tags))

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
        tracker = self.sink.tracker
        if metrics:
            self.log_metrics(metrics, step=step)
        for name, content in (json_artifacts or {}).items():
            if content:
                self._call(
                    f"log {name}", lambda n=name, c=content: tracker().log_json(self.run_id, n, c)
                )
        if figure is not None:
            self._call("log figure", lambda: self._log_figure(figure))
        if self.synced:
            self.set_tags({**(tags or {}), "status": status, COMPLETE_TAG: "true"})
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
        (:func:`bench.training.metrics.mlflow_summary_tags`), its points in time tags, and the
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
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = figure(Path(tmp))
            except Exception as error:  # an optional picture; the ledger has the curve
                note = f"no figure for MLflow run {self.run_id}: {short_reason(error)}"
                warnings.warn(note, stacklevel=2)
                return
            if path is not None:
                self.sink.tracker().log_file(self.run_id, path)

    def end(self, mlflow_status: str, reason: str | None = None) -> None:
        """Terminate the run (FINISHED, FAILED or KILLED), with a reason tag if given.

        Tried once even after an earlier failure, so a run whose store recovered (or
        that only lost an artifact) is not left RUNNING.
        """
        if self.run_id is None:
            return
        run_id = self.run_id
        tracker = self.sink.tracker
        if reason is not None:
            tags = {CLOSE_REASON_TAG: reason[:5000]}
            self._call("set tags", lambda: tracker().set_tags(run_id, tags), force=True)
        self._call("end run", lambda: tracker().end(run_id, mlflow_status), force=True)
