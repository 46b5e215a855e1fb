"""What MLflow's UI reads beyond params and metrics, filled the way its users expect.

MLflow's run table and run page show columns and sections only when runs carry the
conventional tags and entities: the experiment kind (without it MLflow 3 opens an
experiment in its GenAI view), the source and user columns, a description, the
*Dataset* column (dataset inputs with a context), the system metrics section and the
logged model. Each of those is built here, once, for the suite runner and the tuner.

System metrics are sampled in a background thread every
:data:`SYSTEM_METRICS_INTERVAL_S` seconds, often enough that a cell of a few seconds
draws a curve; one cycle (a CPU/memory reading, an NVML query on CUDA, a store write)
runs off the training thread (its cost: docs/results.md).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from mlflow.entities import Dataset, DatasetInput, InputTag

from bench.silence import silenced
from bench.tracking.names import (
    CONTEXT_TAG,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    GIT_COMMIT_TAG,
    NOTE_TAG,
    SOURCE_NAME_TAG,
    SOURCE_TYPE_TAG,
    SUITE_TAG,
    USER_TAG,
)

if TYPE_CHECKING:
    from bench.suites import Suite

SYSTEM_METRICS_INTERVAL_S = 1.0


def experiment_tags(description: str, tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """The experiment's kind, its description (shown above the run table) and ``tags``."""
    return {
        EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
        NOTE_TAG: description.strip(),
        **{k: str(v) for k, v in (tags or {}).items()},
    }


def suite_experiment_tags(suite: Suite) -> dict[str, str]:
    """The tags of a suite's experiment: its description (or name) and ``suite``."""
    return experiment_tags(suite.description or suite.name, {SUITE_TAG: suite.name})


def run_name(label: str, seed: Any) -> str:
    """A short run name that shows the seed in the run table: ``bsqh-mb/s0``."""
    return f"{label}/s{seed}"


def model_name(run: str) -> str:
    """A logged model's name from its run's: ``bsqh-mb-s0`` (MLflow forbids ``/`` there)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", run).strip("-") or "model"


def source_name() -> str:
    """The command that made the run, as MLflow's *Source* column shows it."""
    argv = [os.path.basename(sys.argv[0]) if sys.argv else "pmp-bench", *sys.argv[1:]]
    if argv[0] == "__main__.py":
        argv[0] = "python -m bench"
    return " ".join(argv)[:500]


def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def standard_tags(*, git_commit: str | None, description: str) -> dict[str, str]:
    """``mlflow.source.*``, ``mlflow.user`` and the run description (``mlflow.note``)."""
    tags = {
        SOURCE_TYPE_TAG: "LOCAL",
        SOURCE_NAME_TAG: source_name(),
        USER_TAG: user(),
        NOTE_TAG: description,
    }
    if git_commit and git_commit != "unknown":
        tags[GIT_COMMIT_TAG] = git_commit
    return tags


def cell_description(config: Mapping[str, Any]) -> str:
    """One paragraph saying what a cell trains, for the run page's description."""
    batch = (
        f"mini-batch {config.get('batch_size')}"
        if config.get("mode") == "minibatch"
        else "full batch"
    )
    budget = ", ".join(f"{k} {v:g}" for k, v in (config.get("budget") or {}).items())
    hparams = ", ".join(f"{k}={v}" for k, v in sorted((config.get("hparams") or {}).items()))
    tuned = f" Tuned by study `{config['tuned_from']}`." if config.get("tuned_from") else ""
    return (
        f"**{config.get('label')}** (method `{config.get('method')}`, {batch}) on "
        f"{config.get('dataset')} × {config.get('model')}, seed {config.get('seed')}; "
        f"budget {budget or 'none'}. Hyperparameters: {hparams or 'defaults'}.{tuned}"
    )


def without_none(params: Mapping[str, Any]) -> dict[str, Any]:
    """Params worth logging: a None (an option not set) would show as the string "null"."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            inner = without_none(value)
            if inner:
                out[key] = inner
        elif value is not None:
            out[key] = value
    return out


# --------------------------------------------------------------------------- datasets


def split_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """A short hash of a split's contents: equal digests mean the same samples and order."""
    digest = hashlib.sha256()
    for tensor in (x, y):
        array = tensor.detach().to("cpu").contiguous().numpy()
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def dataset_inputs(dataset: str, options: Mapping[str, Any], splits: Any) -> list[DatasetInput]:
    """The train, validation and test splits of a cell as MLflow dataset inputs.

    ``splits`` is a :class:`bench.data.DataSplits`; the digest identifies the exact
    samples, the profile gives their count and shape, the context tag says which split.
    """
    source = json.dumps({"uri": f"bench.data:{dataset}", "options": dict(options)}, default=str)
    inputs = []
    for context, x, y in (
        ("train", splits.train_x, splits.train_y),
        ("validation", splits.val_x, splits.val_y),
        ("test", splits.test_x, splits.test_y),
    ):
        profile = {
            "num_rows": len(y),
            "features_shape": list(x.shape),
            "num_classes": splits.num_classes,
        }
        schema = {"features": {"dtype": str(x.dtype), "shape": [-1, *x.shape[1:]]}}
        entity = Dataset(
            name=dataset,
            digest=split_digest(x, y),
            source_type="code",
            source=source,
            schema=json.dumps(schema),
            profile=json.dumps(profile),
        )
        inputs.append(DatasetInput(entity, tags=[InputTag(CONTEXT_TAG, context)]))
    return inputs


# --------------------------------------------------------------------------- system metrics


def sampling_interval() -> float:
    """Seconds between system-metric samples: MLflow's variable, else the bench's default."""
    from mlflow.environment_variables import MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL

    return MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.get() or SYSTEM_METRICS_INTERVAL_S


@contextlib.contextmanager
def system_metrics(
    run_id: str | None,
    tracking_uri: str,
    *,
    enabled: bool = True,
    interval_s: float | None = None,
) -> Iterator[Callable[[], None]]:
    """Sample CPU, memory (and GPU) metrics into ``run_id`` while the block runs.

    Yields ``sample()``, which takes one more sample at once: the runner calls it at
    every evaluation (off the timed training path), so a cell that trains for less time
    than ten sampling intervals still draws a curve, one point per evaluation at least.
    ``interval_s``: seconds between background samples; by default MLflow's own
    ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` if set, else
    :data:`SYSTEM_METRICS_INTERVAL_S`.

    Explicit runs made with ``MlflowClient`` get no monitor from MLflow's global switch
    (that hooks ``mlflow.start_run``), so one is started here per run. Missing
    ``psutil`` or any monitor failure only costs the metrics, never the run.
    """
    monitor = None
    state = _MonitorState()
    if enabled and run_id:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
            monitor = SystemMetricsMonitor(
                run_id,
                sampling_interval=interval_s or sampling_interval(),
                tracking_uri=tracking_uri,
            )
            _serialized(monitor, state)
            monitor.start()
        except Exception:  # psutil missing, an exotic platform: no system metrics
            monitor = None

    def sample() -> None:
        if monitor is None:
            return
        with contextlib.suppress(Exception), state.lock:
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())

    try:
        yield sample
    finally:
        if monitor is not None:
            with contextlib.suppress(Exception):
                monitor.finish()
                if state.published == 0:  # shorter than one interval: log one sample
                    sample()
                monitor.mlflow_logger.flush()


@dataclass
class _MonitorState:
    """What the bench keeps beside a monitor: one lock for its calls, and how many
    samples it has published (counted here, so no private attribute of MLflow's is read)."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    published: int = 0


def _serialized(monitor: Any, state: _MonitorState) -> None:
    """Make the monitor's collect/aggregate/publish calls take one lock, so a sample taken
    from the training thread never interleaves with the background thread's; count the
    samples published."""
    for name in ("collect_metrics", "aggregate_metrics", "publish_metrics"):
        method = getattr(monitor, name)

        def locked(*args: Any, _method: Any = method, _name: str = name) -> Any:
            with state.lock:
                result = _method(*args)
                if _name == "publish_metrics":
                    state.published += 1
                return result

        setattr(monitor, name, locked)


# --------------------------------------------------------------------------- models


def log_model(
    tracking_uri: str,
    run_id: str,
    model: torch.nn.Module,
    example: torch.Tensor,
    *,
    name: str,
    step: int,
    metrics: Mapping[str, Any],
    timestamp_ms: int | None = None,
) -> str:
    """Save ``model`` as the run's MLflow PyTorch model; returns its URI.

    MLflow 3 stores a model as a *logged model* of an experiment, linked to the run by
    ``source_run_id`` (the run table's *Models* column) and to a step of the run. Its
    page lists the metrics logged *with its id*: ``metrics`` (the cell's last evaluation
    point, the trained network's figures) at ``step`` (that point's iteration).
    ``mlflow.pytorch.log_model(run_id=...)`` would instead copy every run metric at the
    step it is given (default 0, the untrained network), system metrics whose sample
    index happens to equal it included; so the model is created here, filled by
    ``log_model(model_id=...)``, and linked explicitly. ``timestamp_ms``: when the
    point was logged to the run, so the model's copy is the same row of the run's
    history, not a second point.

    The input example (a few samples, on the CPU) gives the model a signature, so the
    UI and ``mlflow.pytorch.load_model`` know what it takes. Without an experiment MLflow
    would put it in the default one ("0", its files under ``./mlruns`` of the working
    directory), so the run's experiment is named here.
    """
    import mlflow
    import mlflow.pytorch
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
    from mlflow.models import infer_signature

    cpu_model = _on_cpu(model)
    example_np = example.detach().to("cpu").numpy()
    with torch.no_grad():
        output = cpu_model(example.detach().to("cpu")).numpy()
    signature = infer_signature(example_np, output)
    # It warns on every pickle-format save; the format is chosen on purpose (see below).
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    experiment_id = run.info.experiment_id
    logged = client.create_logged_model(
        experiment_id, name=name, source_run_id=run_id, params=dict(run.data.params)
    )
    with _tracking_uri(tracking_uri, experiment_id), silenced():
        info = mlflow.pytorch.log_model(
            cpu_model,
            name=name,
            model_id=logged.model_id,
            input_example=example_np,
            signature=signature,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            serialization_format="pickle",  # torch.export costs seconds per model
        )
    now_ms = timestamp_ms or int(time.time() * 1000)
    values = [
        Metric(k, float(v), now_ms, step, run_id=run_id, model_id=logged.model_id)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=step)])
    if values:
        client.log_batch(run_id, metrics=values)
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return info.model_uri


@contextlib.contextmanager
def _tracking_uri(uri: str, experiment_id: str | None = None) -> Iterator[None]:
    """MLflow's fluent API pointed at ``uri`` (and ``experiment_id``) for a block.

    The one place the bench uses a private name of MLflow's: ``mlflow.pytorch.log_model``
    has no client or experiment argument, and MLflow has no public way to point its
    fluent API at a store for a block and back. ``mlflow.set_tracking_uri`` and
    ``mlflow.set_experiment`` would change this process's state for good (the former
    also rewrites ``MLFLOW_TRACKING_URI``, which the bench reads to find its store), and
    no public call tells the URI a user set from the default one to restore it. So the
    block uses MLflow's own ``_use_tracking_uri`` (which saves and restores exactly
    that), sets the variables MLflow reads for the experiment, and restores them.
    """
    from mlflow.tracking._tracking_service import utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
    saved = {name: os.environ.get(name) for name in names}
    try:
        if experiment_id is not None:
            os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)  # it would win over the id
            os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
        with utils._use_tracking_uri(uri):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _on_cpu(model: torch.nn.Module) -> torch.nn.Module:
    """A CPU copy in eval mode (the trained model stays where it is)."""
    import copy

    return copy.deepcopy(model).to("cpu").eval()


def load_model(tracking_uri: str, model_uri: str) -> torch.nn.Module:
    """A logged cell model back as a PyTorch module (for evaluation or inference timing).

    Trust boundary: models are logged in the pickle format (see :func:`log_model`), and
    unpickling runs whatever code the file names. Load only models from a store that
    you or the bench wrote; never point this at a store someone else can write to.
    """
    import mlflow
    import mlflow.pytorch

    with _tracking_uri(tracking_uri):
        return mlflow.pytorch.load_model(model_uri, map_location="cpu")
