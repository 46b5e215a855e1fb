"""The metric table: every figure a cell records, defined once.

Why one table: a metric is computed during training, stored in the ledger, logged to
MLflow, aggregated over seeds, formatted in REPORT.md, drawn, and documented in the
docs (docs/outputs.md). Each of those iterates over :data:`METRICS`, so adding a metric is one entry
here (its name, how it is computed, how it aggregates, how it prints), not an edit in
eight modules.

A metric is either a *curve* metric, computed at every evaluation point by ``compute``
(its final value in the summary is the last point's unless ``final`` says otherwise), or
a *summary* metric, computed once when the cell ends by ``final``. ``derive`` computes a
report-only figure from a finished cell's summary (ms per step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from torch import Tensor, nn

import optimizers
from bench.training.evaluation import accuracy, mean_loss
from bench.training.interference import SLOW_FACTOR, STARVED_FACTOR
from bench.training.models import nonzero_macs_per_sample

Aggregate = Literal["median", "sum", "none"]


class Probe(Protocol):
    """What a metric may read: the training loop's state at an evaluation or at the end."""

    model: nn.Module
    method: optimizers.Method
    eval_x: Tensor
    eval_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    use_test: bool
    input_shape: tuple[int, int, int]
    per_epoch: int
    fullbatch: bool
    iterations: int
    attempts: int
    rejected: int
    accepted_steps: int
    accepted_increases: int
    checked_steps: int
    forward: float
    backward: float
    eps: float | None
    device_seconds: float
    eval_seconds: float
    warmup_seconds: float
    step_wall_seconds: float | None
    interference: Mapping[str, Any]


@dataclass(frozen=True)
class Metric:
    """One recorded figure; see the module docstring for the kinds."""

    name: str
    definition: str  # one line, in the docs' metric table
    compute: Callable[[Probe], Any] | None = None  # curve metrics, at each evaluation
    final: Callable[[Probe], Any] | None = None  # summary-only metrics, at the end
    derive: Callable[[Mapping[str, Any]], Any] | None = None  # report-only, from a summary
    aggregate: Aggregate = "median"  # how the report combines seeds
    fmt: str = ".3f"  # format spec in REPORT.md (a "s" spec means seconds)
    integer: bool = False  # CSV column of integers
    title: str | None = None  # REPORT.md column title; None: not a table column
    column: int = 0  # position among the REPORT.md columns
    spread: bool = False  # the table shows "median ± spread" over seeds
    figure: str | None = None  # y-axis label of a curve figure against device time
    # False when values of methods with different penalties are not comparable (J = CE +
    # R, R the method's own): the figure then gets one panel per penalty family.
    comparable: bool = True
    mlflow: bool = True  # logged as an MLflow metric

    @property
    def curve(self) -> bool:
        return self.compute is not None

    @property
    def summary(self) -> bool:
        return self.derive is None


def _accept_rate(p: Probe) -> float | None:
    return p.accepted_steps / p.attempts if p.attempts else None


METRICS: tuple[Metric, ...] = (
    Metric(
        "iteration",
        "training steps taken so far (full-batch: iterations)",
        compute=lambda p: p.iterations,
        integer=True,
        aggregate="none",
        mlflow=False,  # MLflow's step
    ),
    Metric(
        "epoch",
        "passes over the training split so far",
        compute=lambda p: p.iterations / p.per_epoch,
        aggregate="none",
    ),
    Metric(
        "device_time_s",
        "device time of training steps only, cumulative: CUDA events on a GPU, the "
        "process's CPU time on a CPU (robust to other processes; see Performance)",
        compute=lambda p: p.device_seconds,
        final=lambda p: p.device_seconds,  # a diverged cell's steps after its last point
        fmt="s",
        title="Device time [s]",
        column=4,
    ),
    Metric(
        "objective",
        "J = mean cross-entropy + R(w) on the training-evaluation set, R of the method's penalty",
        compute=lambda p: float(p.method.objective(p.eval_x, p.eval_y)),
        fmt=".4g",
        figure="objective J = CE + R (train-eval set)",
        comparable=False,
    ),
    Metric(
        "train_loss",
        "mean cross-entropy on the training-evaluation set",
        compute=lambda p: mean_loss(p.model, p.eval_x, p.eval_y),
        fmt=".4g",
        figure="training cross-entropy (train-eval set)",
    ),
    Metric(
        "val_accuracy",
        "top-1 accuracy on the validation split (carved from the training set)",
        compute=lambda p: accuracy(p.model, p.val_x, p.val_y),
    ),
    Metric(
        "test_accuracy",
        "top-1 accuracy on the test split (never seen by tuning)",
        compute=lambda p: accuracy(p.model, p.test_x, p.test_y) if p.use_test else None,
        title="Test accuracy",
        column=1,
        spread=True,
        figure="test accuracy",
    ),
    Metric(
        "sparsity",
        "fraction of exact zeros among prunable weights (Conv/Linear kernels)",
        compute=lambda p: optimizers.sparsity(p.model),
        title="Sparsity",
        column=2,
        figure="sparsity (fraction of zero weights)",
    ),
    Metric(
        "nonzeros",
        "nonzero prunable weights",
        compute=lambda p: optimizers.nonzeros(p.model),
        integer=True,
        fmt=",.0f",
        title="Nonzeros",
        column=3,
    ),
    Metric(
        "nonzero_macs",
        "multiply-accumulates per sample counting nonzero weights only (FLOPs_nz / 2)",
        compute=lambda p: nonzero_macs_per_sample(p.model, p.input_shape),
        integer=True,
        fmt=",.0f",
    ),
    Metric(
        "eps",
        "bSQH's augmentation parameter after the last step (empty for other methods)",
        compute=lambda p: p.eps,
        fmt=".4g",
    ),
    Metric(
        "accept_rate",
        "accepted attempts / attempts since the start (bSQH; empty for others)",
        compute=_accept_rate,
        title="Accept rate",
        column=8,
    ),
    Metric(
        "forward_passes",
        "cumulative network-equivalent forward passes spent by the steps",
        compute=lambda p: p.forward,
        integer=True,
        fmt=",.0f",
    ),
    Metric(
        "backward_passes",
        "cumulative network-equivalent backward passes spent by the steps",
        compute=lambda p: p.backward,
        integer=True,
        fmt=",.0f",
    ),
    Metric(
        "eval_time_s",
        "wall time of evaluation, timed apart from training",
        final=lambda p: p.eval_seconds,
        fmt="s",
        aggregate="sum",
    ),
    Metric(
        "warmup_time_s",
        "wall time of warm-up and compilation/CUDA-graph capture, timed apart",
        final=lambda p: p.warmup_seconds,
        fmt="s",
        aggregate="sum",
    ),
    Metric(
        "step_wall_time_s",
        "CPU only: wall time of the training steps (what other processes slow down)",
        final=lambda p: p.step_wall_seconds,
        fmt="s",
    ),
    Metric(
        "interference",
        "whether other processes slowed this cell's steps (bench.training.interference; the "
        "report names such cells)",
        final=lambda p: p.interference.get("interference"),
        aggregate="none",
        mlflow=False,  # a tag
    ),
    Metric(
        "slowed_step_share",
        f"share of steps slower than {SLOW_FACTOR:g}x the cell's median step",
        final=lambda p: p.interference.get("slowed_step_share"),
    ),
    Metric(
        "starved_step_share",
        f"CPU only: share of steps whose wall time exceeded {STARVED_FACTOR:g}x their "
        "process CPU time",
        final=lambda p: p.interference.get("starved_step_share"),
    ),
    Metric(
        "wall_cpu_ratio",
        "CPU only: wall time / process CPU time of the steps (grows under load)",
        final=lambda p: p.interference.get("wall_cpu_ratio"),
    ),
    Metric(
        "iterations",
        "training steps taken (full-batch: iterations)",
        final=lambda p: p.iterations,
        integer=True,
        fmt=",.0f",
        title="Steps",
        column=5,
    ),
    Metric(
        "epochs",
        "passes over the training split",
        final=lambda p: p.iterations / p.per_epoch,
        mlflow=False,  # MLflow has one name per idea: the `epoch` curve's last point
    ),
    Metric(
        "attempts",
        "bSQH attempts: accepted steps plus rejected attempts",
        final=lambda p: p.attempts,
        integer=True,
        fmt=",.0f",
    ),
    Metric(
        "rejected_attempts",
        "bSQH attempts that failed the sufficient-decrease test",
        final=lambda p: p.rejected,
        integer=True,
        fmt=",.0f",
    ),
    Metric(
        "accepted_increases",
        "full-batch only: checked accepted steps whose objective rose (must be 0 for bSQH)",
        final=lambda p: p.accepted_increases if p.fullbatch else None,
        integer=True,
        fmt=",.0f",
    ),
    Metric(
        "checked_steps",
        "full-batch only: accepted steps whose objective was measured after the step and "
        "compared with the previous one (a method run with post_step_loss=False reports the "
        "iterate before its step, so its steps are not checked: 0)",
        final=lambda p: p.checked_steps if p.fullbatch else None,
        integer=True,
        fmt=",.0f",
    ),
    Metric(
        "num_classes",
        "classes of the dataset: a cell that did not finish counts at chance accuracy, "
        "1 / num_classes, in every comparison",
        final=lambda p: p.num_classes,
        integer=True,
        aggregate="none",
        fmt=".0f",
        mlflow=False,
    ),
    Metric(
        "step_ms",
        "device time per training step in milliseconds (device_time_s / iterations)",
        derive=lambda s: _ratio(s.get("device_time_s"), s.get("iterations"), 1000.0),
        fmt=".2f",
        title="ms/step",
        column=6,
        mlflow=False,
    ),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
#: Columns of one evaluation point (curves.csv), in order.
CURVE_FIELDS: tuple[str, ...] = tuple(m.name for m in METRICS if m.curve)
#: Final figures of a cell (runs.csv columns beyond the configuration), in order.
SUMMARY_FIELDS: tuple[str, ...] = tuple(
    m.name for m in METRICS if m.summary and m.name != "iteration" and m.name != "epoch"
)
#: Every column of runs.csv computed from the summary, derived figures included.
RUN_FIELDS: tuple[str, ...] = (*SUMMARY_FIELDS, *(m.name for m in METRICS if m.derive))
INTEGER_FIELDS: tuple[str, ...] = tuple(m.name for m in METRICS if m.integer)
#: Curve columns logged as MLflow metrics at each evaluation (``iteration`` is the step).
MLFLOW_CURVE_FIELDS: tuple[str, ...] = tuple(m.name for m in METRICS if m.curve and m.mlflow)
TABLE_METRICS: tuple[Metric, ...] = tuple(
    sorted((m for m in METRICS if m.title), key=lambda m: m.column)
)
#: Position of the report's time-to-target column (it is computed from curves).
TARGET_COLUMN = 7
FIGURE_METRICS: tuple[Metric, ...] = tuple(m for m in METRICS if m.figure)


def _ratio(numerator: Any, denominator: Any, scale: float) -> float | None:
    try:
        num, den = float(numerator), float(denominator)
    except (TypeError, ValueError):
        return None
    return scale * num / den if den > 0 else None


def evaluation_point(probe: Probe) -> dict[str, Any]:
    """Every curve metric at the probe's current state."""
    return {m.name: m.compute(probe) for m in METRICS if m.compute is not None}


def summary(probe: Probe, last_point: Mapping[str, Any]) -> dict[str, Any]:
    """The summary figures: curve metrics from the last point, the rest computed now."""
    out: dict[str, Any] = {}
    for m in METRICS:
        if m.name in ("iteration", "epoch") or not m.summary:
            continue
        out[m.name] = m.final(probe) if m.final is not None else last_point.get(m.name)
    return out


def derived(summary_values: Mapping[str, Any]) -> dict[str, Any]:
    """The report-only figures of one cell."""
    return {m.name: m.derive(summary_values) for m in METRICS if m.derive is not None}


def readme_table() -> str:
    """The docs' metric table (docs/outputs.md), generated so that it cannot drift from the code."""
    lines = ["| metric | kind | aggregated over seeds | definition |", "|---|---|---|---|"]
    for m in METRICS:
        kind = "curve + final" if m.curve else ("report" if m.derive else "final")
        lines.append(f"| `{m.name}` | {kind} | {m.aggregate} | {m.definition} |")
    return "\n".join(lines)
