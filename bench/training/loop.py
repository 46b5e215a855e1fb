"""Train one cell: the loop shared by the suite runner and the tuner.

Only ``method.step`` runs inside the device timer. Warm-up (a throwaway copy of the model
and method stepping twice, plus the method's optional ``prepare`` for compilation or
CUDA-graph capture), evaluation and logging are timed separately.

The stopping rule is the cell's clock-free budget (:mod:`bench.training.budget`): a step or epoch
budget is checked after every step, a pass budget too on a CPU; on CUDA the pass count
(and the safety cap) is read at the evaluation cadence only, so the host never waits for
the device between steps. A cell that reaches its safety cap before its budget ends
``capped``. Each step's time is kept, and :mod:`bench.training.interference` reads it at the end.

A cell *diverges* (status ``diverged``, with the reason in its summary) when, at an
evaluation point or a step, the objective is NaN or infinite, or when at an evaluation
point the objective on the training-evaluation samples exceeds ``DIVERGENCE_FACTOR``
times its initial value plus ``DIVERGENCE_MARGIN``: training that explodes but stays
finite (lr = 1e6 lifting 2.3 to millions) is not a result to compare. The curve keeps
the last good point; the report leaves diverged and capped cells out of medians and claims.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

import optimizers
from bench.data import DataSplits
from bench.ledger.checkpoints import CellCheckpoints
from bench.suites import Cell
from bench.training import interference, metrics
from bench.training.budget import Budget
from bench.training.models import build_model
from bench.training.numerics import numerics
from bench.training.timing import StepTimer, Stopwatch

#: Relative tolerance when counting full-batch objective increases on accepted steps.
INCREASE_TOLERANCE = 1e-6
#: Divergence: at an evaluation point the objective on the training-evaluation samples
#: exceeds ``DIVERGENCE_FACTOR`` times its value before the first step plus
#: ``DIVERGENCE_MARGIN`` (the margin keeps a near-zero start from flagging noise). No
#: method that is making progress gets there (cross-entropy starts near ln(classes) and
#: falls); an exploding learning rate gets there fast and can stay finite for many steps.
DIVERGENCE_FACTOR = 10.0
DIVERGENCE_MARGIN = 1.0
WARMUP_STEPS = 2  # throwaway steps (one in full-batch mode, where a step is an epoch)

EvalCallback = Callable[[dict[str, Any]], None]


class Diverged(Exception):
    """The objective became NaN or infinite, or exploded (see :data:`DIVERGENCE_FACTOR`)."""


def divergence_limit(initial_objective: float) -> float:
    """The objective above which a cell counts as diverged, given its starting value."""
    return DIVERGENCE_FACTOR * initial_objective + DIVERGENCE_MARGIN


@dataclass
class TrainingResult:
    status: str  # finished | diverged | capped
    curve: list[dict[str, Any]]
    summary: dict[str, Any]
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    # Weights per prunable layer (same keys): a figure of per-layer sparsity means little
    # without the size of each layer (150 weights of conv1 against 48,000 of fc1).
    layer_sizes: dict[str, int] = field(default_factory=dict)
    # The trained network in its final state (the one the summary was measured on), for
    # callers that keep it, such as the MLflow model of a cell.
    model: torch.nn.Module | None = field(default=None, repr=False)


@dataclass
class _Counters:
    """The loop's running state; with the model and data it is the metrics' ``Probe``."""

    model: Any
    method: Any
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    data: DataSplits
    use_test: bool
    input_shape: tuple[int, int, int]
    per_epoch: int
    fullbatch: bool
    iterations: int = 0
    attempts: int = 0
    rejected: int = 0
    forward: float = 0.0
    backward: float = 0.0
    accepted_increases: int = 0
    accepted_steps: int = 0
    checked_steps: int = 0
    eps: float | None = None
    last_objective: float | None = None
    device_seconds: float = 0.0
    eval_seconds: float = 0.0
    warmup_seconds: float = 0.0
    step_wall_seconds: float | None = None  # CPU only: the steps' summed wall time
    interference: dict[str, Any] = field(default_factory=dict)  # bench.training.interference.detect

    @property
    def passes(self) -> float:
        """Network-equivalent forward plus backward passes so far (a pass budget's count)."""
        return self.forward + self.backward

    # Read through, never copied: tuning must not touch the test split at all.
    @property
    def val_x(self) -> torch.Tensor:
        return self.data.val_x

    @property
    def val_y(self) -> torch.Tensor:
        return self.data.val_y

    @property
    def test_x(self) -> torch.Tensor:
        return self.data.test_x

    @property
    def test_y(self) -> torch.Tensor:
        return self.data.test_y

    @property
    def num_classes(self) -> int:
        return self.data.num_classes


def batches(
    cell: Cell, data: DataSplits, start: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless stream of training batches, drawn by index from the on-device tensors.

    Mini-batch order is a seeded permutation per epoch; the last partial batch is dropped
    so every step has the same shape (CUDA graphs and fair step times need that).
    ``start`` skips that many batches (a resumed cell continues where it stopped): whole
    epochs cost one permutation each, no indexing.
    """
    x, y = data.train_x, data.train_y
    if cell.method.mode == "fullbatch":
        while True:
            yield x, y
    generator = torch.Generator().manual_seed(cell.seed)
    size = cell.method.batch_size
    assert size is not None
    per_epoch = len(y) // size
    skip_epochs, skip = divmod(start, per_epoch)
    for _ in range(skip_epochs):
        torch.randperm(len(y), generator=generator)
    while True:
        order = torch.randperm(len(y), generator=generator).to(y.device)
        for i in range(skip * size, len(y) - size + 1, size):
            index = order[i : i + size]
            yield x[index], y[index]
        skip = 0


def iterations_per_epoch(cell: Cell, n_train: int) -> int:
    if cell.method.mode == "fullbatch":
        return 1
    size = cell.method.batch_size
    assert size is not None
    if size > n_train:
        raise ValueError(
            f"batch_size {size} of method {cell.method.label!r} exceeds the {n_train} "
            f"training samples of {cell.dataset}"
        )
    return n_train // size


def cell_model(cell: Cell, data: DataSplits) -> torch.nn.Module:
    """The cell's network, initialised from its seed: every method of one seed starts from
    the same weights (the pairing the statistics rely on)."""
    torch.manual_seed(cell.seed)
    return build_model(
        cell.model,
        in_channels=data.in_channels,
        image_size=data.image_size,
        num_classes=data.num_classes,
        **cell.model_options,
    )


def method_hparams(cell: Cell, total_steps: int | None = None) -> dict[str, Any]:
    """The cell's hyperparameters plus the runtime options the runner sets.

    ``total_steps`` (the budget in steps) is handed to methods with a schedule over the
    run (GMP's pruning window as fractions of it); a budget of passes gives no step
    count in advance, and such methods fall back to their absolute step settings.
    """
    hparams = dict(cell.method.hparams)
    runtime = optimizers.runtime_options(cell.method.name)
    if total_steps is not None and "total_steps" in runtime:
        hparams["total_steps"] = total_steps
    if "post_step_loss" in runtime:
        # the runner evaluates J itself: skip the extra forward
        hparams["post_step_loss"] = False
    if cell.method.chunk_size is not None:
        hparams["chunk_size"] = cell.method.chunk_size
    return hparams


def train_cell(
    cell: Cell,
    data: DataSplits,
    device: torch.device,
    *,
    on_eval: EvalCallback | None = None,
    use_test: bool = True,
    progress: bool = True,
    checkpoints: CellCheckpoints | None = None,
) -> TrainingResult:
    """Train ``cell`` on ``data`` (already on ``device``) and return its curve and summary.

    ``use_test=False`` (tuning) never touches the test split: test accuracy stays None.
    ``on_eval`` sees each evaluation point as it is made (MLflow logging, Optuna pruning);
    it may raise to stop training. The cell's precision (``bench.training.numerics``) holds
    throughout, evaluation included. With ``checkpoints`` the cell resumes from its
    checkpoint if one exists and writes new ones as :mod:`bench.ledger.checkpoints` describes
    (restored curve points are passed to ``on_eval`` too, so its log is whole).
    """
    with numerics(cell.precision):
        return _train(
            cell, data, device,
            on_eval=on_eval, use_test=use_test, progress=progress, checkpoints=checkpoints,
        )  # fmt: skip


def _train(
    cell: Cell,
    data: DataSplits,
    device: torch.device,
    *,
    on_eval: EvalCallback | None,
    use_test: bool,
    progress: bool,
    checkpoints: CellCheckpoints | None = None,
) -> TrainingResult:
    model = cell_model(cell, data).to(device)
    input_shape = (data.in_channels, data.image_size, data.image_size)
    n_train = len(data.train_y)
    per_epoch = iterations_per_epoch(cell, n_train)
    every = max(1, round(cell.eval_every_epochs * per_epoch))
    budget = Budget.from_config(cell.budget)
    max_iterations = budget.max_steps(per_epoch)
    hparams = method_hparams(cell, max_iterations)
    eval_x = data.train_x[: cell.train_eval_size]
    eval_y = data.train_y[: cell.train_eval_size]

    stream = batches(cell, data)
    first_x, first_y = next(stream)
    warmup = Stopwatch(device)
    with warmup.measure():
        scratch = optimizers.make(cell.method.name, copy.deepcopy(model), **hparams)
        for _ in range(1 if cell.method.mode == "fullbatch" else WARMUP_STEPS):
            scratch.step(first_x, first_y)
        del scratch
        method = optimizers.make(cell.method.name, model, **hparams)
        saved = checkpoints.load() if checkpoints is not None else None
        if saved is not None:
            model.load_state_dict(saved["model"])
            method.load_state_dict(saved["method"])
        prepare = getattr(method, "prepare", None)
        if callable(prepare):
            prepare(first_x, first_y)

    timer = StepTimer(device, keep_steps=True)
    # Pass budgets need each step's pass count at once: free on a CPU, a sync on CUDA.
    count_each_step = budget.unit == "passes" and not timer.cuda
    evaluation = Stopwatch(device)
    fullbatch = cell.method.mode == "fullbatch"
    counters = _Counters(
        model=model,
        method=method,
        eval_x=eval_x,
        eval_y=eval_y,
        data=data,
        use_test=use_test,
        input_shape=input_shape,
        per_epoch=per_epoch,
        fullbatch=fullbatch,
        warmup_seconds=warmup.total,
    )
    pending: list[optimizers.StepStats] = []
    curve: list[dict[str, Any]] = []
    if saved is not None:
        assert checkpoints is not None
        _resume(saved, counters, curve, timer, evaluation, on_eval)
        checkpoints.resumed(saved)
    # restart (or skip to the resume point): the warm-up must not shift the batch order
    stream = batches(cell, data, start=counters.iterations)
    if fullbatch and saved is None:
        with evaluation.measure():
            counters.last_objective = float(method.objective(data.train_x, data.train_y))

    def evaluate() -> dict[str, Any]:
        _absorb(pending, counters, fullbatch)
        pending.clear()
        counters.device_seconds = timer.seconds()
        point = metrics.evaluation_point(counters)
        objective = point["objective"]
        if not math.isfinite(objective):
            raise Diverged(f"objective is {objective} at iteration {counters.iterations}")
        if curve and objective > divergence_limit(curve[0]["objective"]):
            raise Diverged(
                f"objective {objective:.4g} at iteration {counters.iterations} exceeds "
                f"{DIVERGENCE_FACTOR:g} x its initial {curve[0]['objective']:.4g} "
                f"+ {DIVERGENCE_MARGIN:g}"
            )
        curve.append(point)
        if on_eval is not None:
            on_eval(point)
        return point

    status = "finished"
    capped = False
    bar = tqdm(total=max_iterations, desc=cell.name, unit="it", leave=False, disable=not progress)
    bar.update(counters.iterations)  # a resumed cell's bar starts where it stopped
    held = contextlib.ExitStack()
    try:
        if saved is None:
            with evaluation.measure():
                evaluate()
        held.enter_context(
            checkpoints.holding_interrupts() if checkpoints else contextlib.nullcontext()
        )  # a Ctrl-C waits for the step boundary, where the checkpoint is written
        while True:
            x, y = next(stream)
            with timer.step():
                stats = method.step(x, y)
            pending.append(stats)
            if count_each_step:
                _absorb(pending, counters, fullbatch)
                pending.clear()
            counters.iterations += 1
            bar.update(1)
            done = budget.spent(counters.iterations, counters.passes, per_epoch)
            capped = budget.capped(timer.seconds_if_free() or 0.0)
            if counters.iterations % every == 0 or done or capped:
                with evaluation.measure():
                    point = evaluate()
                done = budget.spent(counters.iterations, counters.passes, per_epoch)
                capped = not done and (capped or budget.capped(point["device_time_s"]))
                if done or capped:
                    break
            if checkpoints is not None and checkpoints.due():
                _absorb(pending, counters, fullbatch)
                pending.clear()
                checkpoints.save(_snapshot(model, method, counters, curve, timer, evaluation))
                checkpoints.raise_if_interrupted()
    except Diverged as error:
        status = "diverged"
        diverged_reason = str(error)
    finally:
        held.close()
        bar.close()

    if capped and status == "finished":
        status = "capped"
    counters.device_seconds = timer.seconds()
    counters.eval_seconds = evaluation.total
    counters.step_wall_seconds = timer.wall_seconds()
    counters.interference = interference.detect(
        timer.step_milliseconds(), timer.wall_milliseconds()
    )
    summary = metrics.summary(counters, curve[-1] if curve else {})
    if status == "diverged":
        summary["diverged_reason"] = diverged_reason
    if status == "capped":
        summary["capped_reason"] = (
            f"safety cap of {budget.safety_cap_seconds:g} device-seconds reached after "
            f"{counters.iterations} steps, before the budget of {budget.describe()}"
        )
    return TrainingResult(
        status=status,
        curve=curve,
        summary=summary,
        layer_sparsity=(layers := optimizers.layer_sparsity(model)),
        layer_sizes={n: p.numel() for n, p in model.named_parameters() if n in layers},
        model=model,
    )


#: The loop counters a checkpoint keeps (the rest is rebuilt or measured afresh).
_RESUMED_COUNTERS = (
    "iterations", "attempts", "rejected", "forward", "backward", "accepted_increases",
    "accepted_steps", "checked_steps", "eps", "last_objective",
)  # fmt: skip


def _snapshot(
    model: torch.nn.Module,
    method: optimizers.Method,
    counters: _Counters,
    curve: list[dict[str, Any]],
    timer: StepTimer,
    evaluation: Stopwatch,
) -> dict[str, Any]:
    """Everything a resumed cell needs to end as if it had never stopped."""
    return {
        "model": model.state_dict(),
        "method": method.state_dict(),
        "counters": {name: getattr(counters, name) for name in _RESUMED_COUNTERS},
        "curve": list(curve),
        "device_seconds": timer.seconds(),
        "eval_seconds": evaluation.total,
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    }


def _resume(
    saved: dict[str, Any],
    counters: _Counters,
    curve: list[dict[str, Any]],
    timer: StepTimer,
    evaluation: Stopwatch,
    on_eval: EvalCallback | None,
) -> None:
    """Put a checkpoint's loop state back (model and method are loaded already)."""
    for name, value in saved["counters"].items():
        setattr(counters, name, value)
    curve.extend(saved["curve"])
    timer.continue_from(saved["device_seconds"])
    evaluation.total += saved["eval_seconds"]
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    if on_eval is not None:
        for point in curve:
            on_eval(point)


def _absorb(pending: list[optimizers.StepStats], counters: _Counters, fullbatch: bool) -> None:
    """Fold the steps since the last evaluation into the counters (host sync happens here)."""
    for raw in pending:
        stats = raw.resolved()
        counters.forward += stats.forward_passes
        counters.backward += stats.backward_passes
        if stats.eps is not None:
            counters.eps = stats.eps
            counters.attempts += stats.retries + int(stats.accepted)
            counters.rejected += stats.retries
            counters.accepted_steps += int(stats.accepted)
        if not stats.finite:
            raise Diverged(f"objective is {stats.objective} at a training step")
        if fullbatch and stats.accepted and stats.after_step:
            previous = counters.last_objective
            if previous is not None:
                counters.checked_steps += 1
                if stats.objective > previous + INCREASE_TOLERANCE * abs(previous):
                    counters.accepted_increases += 1
            counters.last_objective = stats.objective
