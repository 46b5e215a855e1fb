"""MLflow records: one experiment per suite, one run per cell.

Everything goes through ``MlflowClient`` with explicit run ids (no global active run), so
a crash or Ctrl-C in one cell cannot leak into the next, and logging happens in batches
at the evaluation cadence, off the timed path.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

EXPERIMENT_PREFIX = "pmp-bench/"
MAX_PARAM_LENGTH = 6000


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

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = artifact_root.resolve().as_uri() if artifact_root is not None else None
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=location
            )
        else:
            self.experiment_id = found.experiment_id

    def start(
        self,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        all_tags = dict(tags)
        if parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        run_id = run.info.run_id
        flat = flatten("", params)
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
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_json(self, run_id: str, name: str, content: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(content, indent=1, default=str))
            self.client.log_artifact(run_id, str(path))

    def log_file(self, run_id: str, path: Path) -> None:
        self.client.log_artifact(run_id, str(path))

    def end(self, run_id: str, status: str) -> None:
        """``status``: FINISHED, FAILED or KILLED."""
        self.client.set_terminated(run_id, status=status)
