"""One trial: sample, train within the budget, score on validation, log to MLflow.

- **What a trial is.** One :func:`bench.training.loop.train_cell` run of the method with the
  sampled hyperparameters, on the training split, with the setting's budget, scored on
  the validation split at the end of the budget. ``use_test=False``: the tuner never
  reads the test split (``tests/test_tuning.py`` proves it with a guard around the
  tensors). Every trial of every method trains with the same seed, data and budget.
- **Objectives.** ``pareto``: maximise (validation accuracy, sparsity). ``accuracy``:
  maximise validation accuracy; the latest evaluation's sparsity is kept on the trial
  so pruned trials have a constraint value too (:mod:`bench.tuning.sampling`).
- **Diverged trials** (NaN/inf objective) are legitimate, bad outcomes of a setting at
  this budget: they finish COMPLETE with the worst values (accuracy 0, sparsity 0), so
  they count towards the budget of trials but never reach the Pareto front; their last
  good figures are kept as user attributes.
- **Surplus trials.** Before training, a trial counts the trials numbered below it that
  are finished or still running. Optuna numbers trials under a lock (the study row on a
  database, the file lock of a journal), so every lower-numbered trial is visible then;
  if N of them exist the trial is a *surplus*: it is marked FAIL with ``surplus = true``
  and trains nothing. That keeps a study at exactly N with concurrent workers.
- **Crashes** are marked FAIL with their error (user attributes ``error`` and
  ``traceback``) and do not count.

The trial's MLflow run is closed by :meth:`bench.tracking.client.RunLog.finish_training`, as
the suite runner's cells are: an unreachable MLflow never fails a trial, it leaves the
user attributes ``mlflow_synced = false`` and ``mlflow_error`` instead.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

import optuna
import torch

from bench.data import DataSplits, load_dataset
from bench.environment import resolve_device
from bench.tracking.client import RunLog, Tracker, is_number
from bench.tracking.names import (
    OBJECTIVE_TAG,
    RUN_KIND_TAG,
    STUDY_TAG,
    TARGET_LABEL_TAG,
    TARGET_METHOD_TAG,
    TRIAL_KIND,
    TRIAL_NUMBER_TAG,
    TRIAL_STATE_TAG,
)
from bench.training.interrupts import describe
from bench.training.loop import train_cell
from bench.tuning.plan import EXPERIMENT, StudyPlan, live_below
from bench.tuning.sampling import constrain
from bench.tuning.settings import Setting

#: A trial's final figures kept as user attributes (trials.csv, the dashboard).
TRIAL_FIGURES = (
    "device_time_s",
    "iterations",
    "epochs",
    "nonzeros",
    "nonzero_macs",
    "accept_rate",
    "eps",
    "eval_time_s",
    "warmup_time_s",
)


class SurplusTrial(Exception):
    """This trial would exceed the study's N finished trials (a concurrent-worker race)."""


def load_tuning_data(setting: Setting, device: torch.device) -> DataSplits:
    """The setting's splits on ``device``; trials use train and val only."""
    return load_dataset(setting.dataset, device=device, **setting.data)


def make_objective(plan: StudyPlan, data: DataSplits | None = None) -> Objective:
    """The objective of ``plan`` on its device, loading the data unless given."""
    device = resolve_device(plan.device)
    if data is None:
        data = load_tuning_data(plan.setting, device)
    return Objective(plan, data, device, Tracker.for_output(plan.out, EXPERIMENT))


class Objective:
    """Optuna's objective callable: one trial of ``plan`` (module docstring)."""

    def __init__(
        self, plan: StudyPlan, data: DataSplits, device: torch.device, tracker: Tracker
    ) -> None:
        self.plan = plan
        self.data = data
        self.device = device
        self.tracker = tracker
        self.host = socket.gethostname()

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        self._claim(trial)
        hparams = self.plan.space.suggest(trial)
        trial.set_user_attr("hparams", hparams)
        run = self._start_run(trial, hparams)
        if run.run_id is not None:
            trial.set_user_attr("mlflow_run_id", run.run_id)
        began = time.perf_counter()
        seen: list[dict[str, Any]] = []
        try:
            result = train_cell(
                self.plan.setting.cell(self.plan.target, hparams),
                self.data,
                self.device,
                on_eval=self._on_eval(trial, run, seen),
                use_test=False,
                progress=False,
            )
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("status", "pruned")
            trial.set_user_attr("wall_time_s", time.perf_counter() - began)
            self._close(trial, run, "pruned", "PRUNED", "KILLED", {}, curve=seen)
            self.plan.say(f"trial {trial.number}: pruned ({pruned})")
            raise
        except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM
            trial.set_user_attr("error", describe(interrupt))
            self._close(trial, run, "killed", "FAIL", "KILLED", {}, curve=seen)
            raise
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            trial.set_user_attr("error", message[:2000])
            trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            error_file = {"error": message, "traceback": traceback.format_exc()}
            self._close(trial, run, "failed", "FAIL", "FAILED", {}, curve=seen, error=error_file)
            self.plan.say(f"trial {trial.number}: FAILED {message}")
            raise
        attrs = self._score(trial, result.status, result.summary, time.perf_counter() - began)
        values = {"value_val_accuracy": attrs["val_accuracy"], "value_sparsity": attrs["sparsity"]}
        self._close(
            trial,
            run,
            result.status,
            "COMPLETE",
            "FINISHED",
            result.summary,
            curve=result.curve,
            layer_sparsity=result.layer_sparsity,
            metrics=values,
        )
        self.plan.say(
            f"trial {trial.number}: {result.status} val_acc={attrs['val_accuracy']:.4f} "
            f"sparsity={attrs['sparsity']:.3f} iters={result.summary.get('iterations')} "
            f"wall={attrs['wall_time_s']:.1f}s"
            + ("" if run.synced else f" [not synced to MLflow: {run.error}]")
        )
        if self.plan.objective == "pareto":
            return attrs["val_accuracy"], attrs["sparsity"]
        return attrs["val_accuracy"]

    def _claim(self, trial: optuna.Trial) -> None:
        """Mark the trial as this process's, or stop it as surplus before any training."""
        trial.set_user_attr("worker_host", self.host)
        trial.set_user_attr("worker_pid", os.getpid())
        trials = self.plan.trials
        if live_below(trial.study, trial.number) >= trials:
            trial.set_user_attr("surplus", True)
            trial.set_user_attr(
                "error",
                f"surplus: {trials} trials were already finished or running when this "
                "one started (a concurrent worker got there first); nothing was trained",
            )
            trial.study.stop()
            raise SurplusTrial(f"trial {trial.number} is surplus")

    def _on_eval(
        self, trial: optuna.Trial, run: RunLog, seen: list[dict[str, Any]]
    ) -> Callable[[dict[str, Any]], None]:
        """The evaluation callback: log the point; ``accuracy`` studies report and prune."""
        plan = self.plan

        def on_eval(point: dict[str, Any]) -> None:
            evals = len(seen)
            seen.append(point)
            run.log_point(point)
            if plan.objective != "accuracy":
                return
            trial.set_user_attr("sparsity", float(point["sparsity"]))
            trial.report(float(point["val_accuracy"]), evals)
            if trial.should_prune():
                constrain(trial, plan, float(point["sparsity"]), float(point["val_accuracy"]))
                raise optuna.TrialPruned(
                    f"val accuracy {point['val_accuracy']:.4f} at evaluation {evals} "
                    f"(epoch {point['epoch']:.2f}) is below the median of earlier trials"
                )

        return on_eval

    def _score(
        self, trial: optuna.Trial, status: str, summary: dict[str, Any], wall_s: float
    ) -> dict[str, Any]:
        """The trial's values and figures, set as user attributes; diverged scores 0."""
        diverged = status == "diverged"
        accuracy = 0.0 if diverged else float(summary["val_accuracy"])
        sparsity = 0.0 if diverged else float(summary["sparsity"])
        constrain(trial, self.plan, sparsity, accuracy)
        attrs: dict[str, Any] = {
            "status": status,
            "val_accuracy": accuracy,
            "sparsity": sparsity,
            "wall_time_s": wall_s,
        }
        attrs.update({k: summary[k] for k in TRIAL_FIGURES if is_number(summary.get(k))})
        if diverged:
            attrs["diverged_reason"] = str(summary.get("diverged_reason"))
            attrs["last_val_accuracy"] = summary.get("val_accuracy")
            attrs["last_sparsity"] = summary.get("sparsity")
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return attrs

    def _close(
        self,
        trial: optuna.Trial,
        run: RunLog,
        status: str,
        state: str,
        mlflow_status: str,
        summary: dict[str, Any],
        **artifacts: Any,
    ) -> None:
        """End the trial's run as a cell's run ends; note on the trial if unsynced."""
        run.finish_training(
            status, summary, tags={TRIAL_STATE_TAG: state}, mlflow_status=mlflow_status, **artifacts
        )
        if not run.synced:
            trial.set_user_attr("mlflow_synced", False)
            trial.set_user_attr("mlflow_error", str(run.error)[:2000])

    def _start_run(self, trial: optuna.Trial, hparams: dict[str, Any]) -> RunLog:
        """The trial's MLflow run, nested under the invocation's parent run."""
        plan = self.plan
        return self.tracker.start(
            f"{plan.study}#{trial.number}",
            params={"hparams": hparams, "trial": trial.number, "study": plan.study},
            tags={
                STUDY_TAG: plan.study,
                TRIAL_NUMBER_TAG: str(trial.number),
                TARGET_LABEL_TAG: plan.target.label,
                TARGET_METHOD_TAG: plan.target.method,
                OBJECTIVE_TAG: plan.objective,
                RUN_KIND_TAG: TRIAL_KIND,
            },
            parent_run_id=plan.parent_run_id,
        )
