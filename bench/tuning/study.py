"""Optuna studies: creation and resume, the trial objective, and worker processes.

Decisions (the README's tuning section folds these in):

- **What a trial is.** One :func:`bench.training.train_cell` run of the method with the
  sampled hyperparameters, on the training split, with the setting's budget, scored on
  the validation split at the end of the budget. ``use_test=False``: the tuner never
  reads the test split (``tests/test_tuning.py`` proves it with a guard around the
  tensors). Every trial of every method trains with the same seed, data and budget.
- **Objectives.** ``pareto`` (default): two objectives, maximise (validation accuracy,
  sparsity); Optuna cannot prune multi-objective studies, so no trial is pruned.
  ``accuracy``: maximise validation accuracy subject to ``sparsity >= S`` (the sampler's
  ``constraints_func``; the sparsity of the latest evaluation point is kept on the trial
  so pruned trials have a constraint value too), and hopeless trials are pruned by a
  median pruner on the validation accuracy of each evaluation point (steps are
  evaluation indices, identical for every trial of a study).
- **Diverged trials** (NaN/inf objective) are legitimate, bad outcomes of a setting at
  this budget: they finish COMPLETE with the worst values (accuracy 0, sparsity 0), so
  they count towards the budget of trials but never reach the Pareto front; their last
  good figures are kept as user attributes.
- **Finished trials** are COMPLETE or PRUNED ones: a pruned trial spent budget and told
  the sampler something. FAIL (a crash) does not count. ``--trials N`` means: run until
  the study holds N finished trials in total; a rerun resumes, a rerun with a larger N
  adds the difference.
- **Exactly N with concurrent workers.** Before training, each new trial counts the
  trials numbered below it that are finished or still running. Optuna numbers trials
  under a lock (the study row on a database, the file lock of a journal), so every
  lower-numbered trial is visible then; if N of them exist the trial is a *surplus*:
  it is marked FAIL with ``surplus = true`` and trains nothing. A worker that finds the
  remaining trials running elsewhere waits for them (polling the storage) and replaces
  any that crash or whose worker dies, so every invocation returns with N finished
  trials in the study (or after giving up).
- **Crashes.** The trial is marked FAIL with its error (user attributes ``error`` and
  ``traceback``) and does not count. A worker gives up after ``max_failures`` crashes of
  its own (default ``max(3, N)``), so a broken setup cannot loop forever. Trials left
  RUNNING by a process that died are failed on the next start: on a database through
  Optuna's heartbeat, and on one machine by checking that the recorded worker process
  is still alive.
- **Samplers.** TPE (multivariate, constant liar for concurrent workers) with
  ``max(3, min(10, N // 3))`` random start-up trials, seeded from ``--sampler-seed``,
  the worker index and the number of trials the study already holds, so concurrent
  workers and resumed runs do not redraw the same start-up points.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import queue
import socket
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from bench.data import DataSplits, load_dataset
from bench.environment import resolve_device
from bench.locking import process_alive
from bench.mlflow_run import (
    CLOSE_REASON_TAG,
    RunLog,
    Sink,
    final_metrics,
    is_number,
    timestamp_tags,
)
from bench.tracking import EXPERIMENT_PREFIX
from bench.training import train_cell
from bench.tuning.metadata import annotate
from bench.tuning.settings import Setting, Target
from bench.tuning.spaces import SPACE_VERSION, Space
from bench.tuning.storage import StorageSpec

OBJECTIVES = ("pareto", "accuracy")
METRIC_NAMES = {"pareto": ["val_accuracy", "sparsity"], "accuracy": ["val_accuracy"]}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
EXPERIMENT = EXPERIMENT_PREFIX + "tuning"
STUDY_ATTR = "pmp_bench"
PRUNER_STARTUP_TRIALS = 4
PRUNER_WARMUP_EVALS = 2
#: Seconds between looks at the study while other workers run its last trials.
POLL_S = 2.0
#: A RUNNING trial that no worker claimed for this long is failed (journal and SQLite).
ORPHAN_AFTER_S = 120.0
#: A trial's final figures kept as user attributes and logged as ``final_*`` metrics.
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


class StudyError(ValueError):
    """The study cannot be created or resumed as asked (mismatched objective, setting...)."""


class _SurplusTrial(Exception):
    """This trial would exceed the study's N finished trials (a concurrent-worker race)."""


@dataclass(frozen=True)
class StudyPlan:
    """Everything a worker process needs, by value (sent to spawned processes)."""

    study: str
    storage: StorageSpec
    setting: Setting
    target: Target
    space: Space
    objective: str
    min_sparsity: float
    trials: int
    device: str
    out: Path
    sampler_seed: int = 0
    max_failures: int | None = None
    parent_run_id: str | None = None
    threads: int | None = None
    quiet: bool = False
    num_classes: int | None = None  # for the hypervolume above chance accuracy

    @property
    def failure_limit(self) -> int:
        return self.max_failures if self.max_failures is not None else max(3, self.trials)

    def study_attrs(self) -> dict[str, Any]:
        """What a resumed study must agree with (stored as the study user attr)."""
        attrs = {
            "space_version": SPACE_VERSION,
            "space": self.space.as_dict(),
            "objective": self.objective,
            "setting": self.setting.fingerprint(self.target),
            "label": self.target.label,
        }
        if self.objective == "accuracy":  # the constraint shapes the search itself
            attrs["min_sparsity"] = self.min_sparsity
        return json.loads(json.dumps(attrs, sort_keys=True))


@dataclass
class WorkerOutcome:
    ran: int = 0
    failed: int = 0
    gave_up: bool = False
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- samplers


def n_startup_trials(trials: int) -> int:
    return max(3, min(10, trials // 3))


def make_sampler(plan: StudyPlan, seed: int) -> optuna.samplers.BaseSampler:
    """TPE; ``accuracy`` studies record their sparsity constraint on each trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=n_startup_trials(plan.trials),
            multivariate=True,
            constant_liar=True,
        )


def _constrain(trial: optuna.Trial, plan: StudyPlan, sparsity: float) -> None:
    """Record the trial's one constraint (Optuna keeps the first value set).

    <= 0 means feasible: the trial's final (or, when pruned, latest) sparsity >= S.
    """
    trial.set_constraint("min_sparsity", plan.min_sparsity - sparsity)


def make_pruner(plan: StudyPlan) -> optuna.pruners.BasePruner:
    if plan.objective != "accuracy":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EVALS
    )


# --------------------------------------------------------------------------- study


def open_study(plan: StudyPlan, *, create: bool, seed: int | None = None) -> optuna.Study:
    """Create (or load) the study and check that it matches ``plan``.

    A resumed study must have the same objective, search space (version and ranges),
    setting and budget; otherwise this fails before any training, since a study whose
    trials come from different budgets or spaces compares nothing.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = plan.storage.open()
    sampler = make_sampler(plan, plan.sampler_seed if seed is None else seed)
    pruner = make_pruner(plan)
    directions = ["maximize"] * len(METRIC_NAMES[plan.objective])
    if create:
        study = optuna.create_study(
            storage=storage,
            study_name=plan.study,
            directions=directions,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    else:
        study = optuna.load_study(
            study_name=plan.study, storage=storage, sampler=sampler, pruner=pruner
        )
    if len(study.directions) != len(directions):
        other = "pareto" if len(study.directions) == 2 else "accuracy"
        raise StudyError(
            f"study {plan.study!r} in {plan.storage.describe()} was created with --objective "
            f"{other}; rerun it with --objective {other} or choose another --study name"
        )
    wanted = plan.study_attrs()
    stored = study.user_attrs.get(STUDY_ATTR)
    if stored is None:
        if create:
            study.set_user_attr(STUDY_ATTR, wanted)
            annotate(study, plan)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(METRIC_NAMES[plan.objective])
    elif stored != wanted:
        differing = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        details = "; ".join(
            f"{k}: stored {json.dumps(stored.get(k))[:300]}, now {json.dumps(wanted.get(k))[:300]}"
            for k in differing
        )
        raise StudyError(
            f"study {plan.study!r} in {plan.storage.describe()} was created with a different "
            f"{', '.join(differing)}; resuming it would mix incomparable trials. Use a new "
            f"--study name. Differences: {details}"
        )
    return study


def count_trials(study: optuna.Study) -> dict[str, int]:
    """Trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING) plus ``finished``."""
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    counts["finished"] = counts["COMPLETE"] + counts["PRUNED"]
    return counts


def _live_below(study: optuna.Study, number: int) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False, states=LIVE) if t.number < number)


def fail_dead_trials(study: optuna.Study, *, orphan_after_s: float | None = None) -> list[int]:
    """FAIL the RUNNING trials of worker processes on this host that no longer exist.

    Why: the journal and SQLite storages have no heartbeat, so a worker killed hard (OOM,
    ``kill -9``) would leave its trial RUNNING forever, and the resume logic would count
    it as under way (and waiting workers would wait for it). A worker records its host
    and process id on a trial right after creating it; with ``orphan_after_s``, a RUNNING
    trial still without them after that many seconds (its worker died in between) is
    failed too. Databases rely on Optuna's heartbeat instead.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # databases: Optuna's heartbeat
    host = socket.gethostname()
    failed = []
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("worker_pid")
        if "worker_host" not in trial.user_attrs:
            started = trial.datetime_start
            if orphan_after_s is None or started is None:
                continue
            if (now - started).total_seconds() < orphan_after_s:
                continue
            reason = f"no worker claimed it within {orphan_after_s:g} s of its creation"
        elif trial.user_attrs["worker_host"] != host or not _dead(pid):
            continue
        else:
            reason = f"worker process {pid} on {host} died while running it"
        # Optuna has no public call to annotate another process's trial; this is what
        # its own fail_stale_trials does.
        storage = study._storage
        trial_id = trial._trial_id
        try:
            storage.set_trial_user_attr(trial_id, "error", reason)
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
            failed.append(trial.number)
        except Exception:  # another process failed it first
            pass
    return failed


def close_orphaned_runs(sink: Sink, study: optuna.Study, name: str) -> int:
    """End KILLED the MLflow runs of ``name`` that a dead process left RUNNING.

    A trial's run is an orphan when its Optuna trial is no longer RUNNING (its worker
    died and :func:`fail_dead_trials` or Optuna's heartbeat failed it); an invocation's
    parent run when the process that started it, on this host, is gone. MLflow being
    unreachable is not an error here: the runs stay as they are until the next start.
    """
    host = socket.gethostname()
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    closed = 0
    try:
        tracker = sink.tracker()
        for run in tracker.running_runs({"study": name}):
            tags = run.data.tags
            if tags.get("kind") == "trial":
                number = int(tags.get("optuna.trial_number", -1))
                state = states.get(number)
                if state == TrialState.RUNNING:
                    continue
                reason = (
                    f"Optuna trial {number} is {state.name if state else 'missing'}; its worker "
                    "stopped without closing this run"
                )
            else:
                pid = tags.get("pmp.driver_pid", "")
                if tags.get("pmp.driver_host") != host or not _dead(int(pid or 0) or None):
                    continue
                reason = f"the bench tune process {pid} on {host} stopped without closing it"
            tracker.set_tags(run.info.run_id, {"status": "killed", CLOSE_REASON_TAG: reason})
            tracker.end(run.info.run_id, "KILLED")
            closed += 1
    except Exception:  # MLflow unreachable: try again at the next start
        pass
    return closed


def _dead(pid: object) -> bool:
    return isinstance(pid, int) and not process_alive(pid)


# --------------------------------------------------------------------------- objective


def load_tuning_data(setting: Setting, device: torch.device) -> DataSplits:
    """The setting's splits on ``device``; trials use train and val only."""
    return load_dataset(setting.dataset, device=device, **setting.data)


class _Objective:
    """One trial: sample, train within the budget, score on validation, log to MLflow.

    The trial's MLflow run goes through :class:`bench.mlflow_run.RunLog`, as the suite
    runner's cells do: an unreachable MLflow never fails a trial, it leaves the user
    attributes ``mlflow_synced = false`` and ``mlflow_error`` instead.
    """

    def __init__(self, plan: StudyPlan, data: DataSplits, device: torch.device, sink: Sink) -> None:
        self.plan = plan
        self.data = data
        self.device = device
        self.sink = sink
        self.host = socket.gethostname()

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        plan = self.plan
        trial.set_user_attr("worker_host", self.host)
        trial.set_user_attr("worker_pid", os.getpid())
        if _live_below(trial.study, trial.number) >= plan.trials:
            trial.set_user_attr("surplus", True)
            trial.set_user_attr(
                "error",
                f"surplus: {plan.trials} trials were already finished or running when this "
                "one started (a concurrent worker got there first); nothing was trained",
            )
            trial.study.stop()
            raise _SurplusTrial(f"trial {trial.number} is surplus")
        hparams = plan.space.suggest(trial)
        trial.set_user_attr("hparams", hparams)
        run = self._start_run(trial, hparams)
        if run.run_id is not None:
            trial.set_user_attr("mlflow_run_id", run.run_id)
        began = time.perf_counter()
        evals = 0
        seen: list[dict[str, Any]] = []

        def on_eval(point: dict[str, Any]) -> None:
            nonlocal evals
            seen.append(point)
            run.log_point(point)
            if plan.objective == "accuracy":
                trial.set_user_attr("sparsity", float(point["sparsity"]))
                trial.report(float(point["val_accuracy"]), evals)
                if trial.should_prune():
                    _constrain(trial, plan, float(point["sparsity"]))
                    raise optuna.TrialPruned(
                        f"val accuracy {point['val_accuracy']:.4f} at evaluation {evals} "
                        f"(epoch {point['epoch']:.2f}) is below the median of earlier trials"
                    )
            evals += 1

        cell = plan.setting.cell(plan.target, hparams)
        try:
            result = train_cell(
                cell, self.data, self.device, on_eval=on_eval, use_test=False, progress=False
            )
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("status", "pruned")
            trial.set_user_attr("wall_time_s", time.perf_counter() - began)
            self._close(trial, run, "pruned", "PRUNED", "KILLED", curve=seen)
            self._say(f"trial {trial.number}: pruned ({pruned})")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted (Ctrl-C)")
            self._close(trial, run, "killed", "FAIL", "KILLED", curve=seen)
            raise
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            trial.set_user_attr("error", message[:2000])
            trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            error_file = {"error": message, "traceback": traceback.format_exc()}
            self._close(trial, run, "failed", "FAIL", "FAILED", curve=seen, error=error_file)
            self._say(f"trial {trial.number}: FAILED {message}")
            raise
        summary = result.summary
        diverged = result.status == "diverged"
        accuracy = 0.0 if diverged else float(summary["val_accuracy"])
        sparsity = 0.0 if diverged else float(summary["sparsity"])
        if plan.objective == "accuracy":
            _constrain(trial, plan, sparsity)
        attrs = {
            "status": result.status,
            "val_accuracy": accuracy,
            "sparsity": sparsity,
            "wall_time_s": time.perf_counter() - began,
        }
        for key in TRIAL_FIGURES:
            value = summary.get(key)
            if is_number(value):
                attrs[key] = value
        if diverged:
            attrs["diverged_reason"] = str(summary.get("diverged_reason"))
            attrs["last_val_accuracy"] = summary.get("val_accuracy")
            attrs["last_sparsity"] = summary.get("sparsity")
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        self._close(
            trial,
            run,
            result.status,
            "COMPLETE",
            "FINISHED",
            curve=result.curve,
            layer_sparsity=result.layer_sparsity,
            metrics={
                "value_val_accuracy": accuracy,
                "value_sparsity": sparsity,
                **final_metrics(attrs, ("val_accuracy", "sparsity", "wall_time_s", *TRIAL_FIGURES)),
            },
            step=int(summary.get("iterations") or 0),
            tags=timestamp_tags(summary),
        )
        self._say(
            f"trial {trial.number}: {result.status} val_acc={accuracy:.4f} "
            f"sparsity={sparsity:.3f} iters={summary.get('iterations')} "
            f"wall={attrs['wall_time_s']:.1f}s"
            + ("" if run.synced else f" [not synced to MLflow: {run.error}]")
        )
        if plan.objective == "pareto":
            return accuracy, sparsity
        return accuracy

    def _close(
        self,
        trial: optuna.Trial,
        run: RunLog,
        status: str,
        state: str,
        mlflow_status: str,
        *,
        curve: list[dict[str, Any]],
        layer_sparsity: dict[str, float] | None = None,
        error: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        step: int = 0,
        tags: dict[str, str] | None = None,
    ) -> None:
        """End the trial's run with its curve and sparsity; note on the trial if unsynced."""
        run.finish(
            status,
            metrics=metrics,
            step=step,
            tags={**(tags or {}), "optuna.state": state},
            json_artifacts={
                "curve.json": curve,
                "layer_sparsity.json": layer_sparsity,
                "error.json": error,
            },
            mlflow_status=mlflow_status,
        )
        if not run.synced:
            trial.set_user_attr("mlflow_synced", False)
            trial.set_user_attr("mlflow_error", str(run.error)[:2000])

    def _start_run(self, trial: optuna.Trial, hparams: dict[str, Any]) -> RunLog:
        """The trial's MLflow run, nested under the invocation's parent run."""
        plan = self.plan
        return self.sink.start(
            f"{plan.study}#{trial.number}",
            params={"hparams": hparams, "trial": trial.number, "study": plan.study},
            tags={
                "study": plan.study,
                "optuna.trial_number": str(trial.number),
                "method": plan.target.label,
                "optimizer": plan.target.method,
                "objective": plan.objective,
                "kind": "trial",
            },
            parent_run_id=plan.parent_run_id,
        )

    def _say(self, line: str) -> None:
        if not self.plan.quiet:
            print(f"[{self.plan.study}] {line}", flush=True)


# --------------------------------------------------------------------------- workers


def work(plan: StudyPlan, worker_index: int = 0, data: DataSplits | None = None) -> WorkerOutcome:
    """Run trials of ``plan`` in this process until the study holds N finished trials.

    When the remaining trials are running in other workers (other processes or
    machines), wait for them instead of returning: if one of them crashes, or its
    worker dies, this worker runs the replacement, and when it returns the study is
    complete (or this worker gave up after ``max_failures`` crashes of its own).
    """
    if plan.threads:
        torch.set_num_threads(plan.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR if plan.quiet else optuna.logging.WARNING)
    existing = len(open_study(plan, create=False).get_trials(deepcopy=False))
    study = open_study(plan, create=False, seed=plan.sampler_seed + 1000 * worker_index + existing)
    outcome = WorkerOutcome()
    orphans = ORPHAN_AFTER_S if plan.storage.kind == "journal" or plan.storage.is_sqlite else None
    objective: _Objective | None = None
    waiting_since: float | None = None

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL and not trial.user_attrs.get("surplus"):
            outcome.failed += 1
            if outcome.failed >= plan.failure_limit:
                outcome.gave_up = True
                outcome.notes.append(
                    f"worker {worker_index} gave up after {outcome.failed} crashes"
                )
                study.stop()
        elif trial.state in FINISHED:
            outcome.ran += 1
        if _live_below(study, sys.maxsize) >= plan.trials:
            study.stop()

    while not outcome.gave_up:
        fail_dead_trials(study, orphan_after_s=orphans)
        counts = count_trials(study)
        if counts["finished"] >= plan.trials:
            break
        if counts["finished"] + counts["RUNNING"] >= plan.trials:
            if waiting_since is None:
                waiting_since = time.monotonic()
                if not plan.quiet:
                    print(
                        f"[{plan.study}] worker {worker_index}: waiting for "
                        f"{plan.trials - counts['finished']} trial(s) running elsewhere",
                        flush=True,
                    )
            time.sleep(POLL_S)
            continue
        waiting_since = None
        if objective is None:  # load data and MLflow only once there is work
            device = resolve_device(plan.device)
            if data is None:
                data = load_tuning_data(plan.setting, device)
            objective = _Objective(plan, data, device, Sink.for_output(plan.out, EXPERIMENT))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(
                objective,
                n_trials=None,
                catch=(Exception,),
                callbacks=[after_trial],
                gc_after_trial=False,
            )
    return outcome


def _worker_main(plan: StudyPlan, worker_index: int, results: Any) -> None:
    """Entry point of a spawned worker process (must be importable at module level)."""
    try:
        outcome = work(plan, worker_index)
    except BaseException as error:
        results.put((worker_index, None, f"{type(error).__name__}: {error}"))
        raise SystemExit(2) from None
    results.put((worker_index, outcome, None))
    raise SystemExit(1 if outcome.gave_up else 0)


def run_workers(plan: StudyPlan, workers: int, data: DataSplits | None = None) -> WorkerOutcome:
    """Run ``workers`` processes (spawned, each loading the study) or this one alone.

    Why spawn: a forked child would share the parent's torch threads and open database
    connections; spawned workers start clean and load the study from storage, exactly as
    a worker on another machine would. With K workers each torch process gets
    ``cpu_count // K`` threads so they do not oversubscribe the cores.
    """
    if workers == 1:
        return work(plan, 0, data)
    threads = plan.threads or max(1, (os.cpu_count() or 1) // workers)
    child_plan = replace(plan, threads=threads)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(target=_worker_main, args=(child_plan, i, results), daemon=False)
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    return collect_results(processes, results)


def collect_results(processes: list[Any], results: Any) -> WorkerOutcome:
    """Sum the workers' outcomes from ``results`` while they run, then join them.

    A worker whose result never arrives counts as died (``gave_up``, with its exit code).
    """
    workers = len(processes)
    total = WorkerOutcome()
    reported: set[int] = set()

    def absorb(item: tuple[int, WorkerOutcome | None, str | None]) -> None:
        index, outcome, error = item
        reported.add(index)
        if error is not None or outcome is None:
            total.gave_up = True
            total.notes.append(f"worker {index} stopped with {error}")
        else:
            total.ran += outcome.ran
            total.failed += outcome.failed
            total.gave_up |= outcome.gave_up
            total.notes.extend(outcome.notes)

    try:
        # Drain while the workers run: a child's exit waits until its queue feeder has
        # flushed the result into the pipe, so joining before reading can deadlock once
        # results outgrow the pipe's buffer.
        while len(reported) < workers and any(p.is_alive() for p in processes):
            try:
                absorb(results.get(timeout=0.5))
            except queue.Empty:
                continue
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    while len(reported) < workers:  # results flushed just before the last exits
        try:
            absorb(results.get(timeout=1))
        except queue.Empty:
            break
    for index, process in enumerate(processes):
        if index not in reported:
            total.gave_up = True
            total.notes.append(f"worker {index} died with exit code {process.exitcode}")
    return total


# --------------------------------------------------------------------------- one study


@dataclass
class TuneResult:
    """What one ``tune`` invocation achieved; ``exit_code`` 0 when N trials are finished."""

    summary: dict[str, Any]
    counts: dict[str, int]
    exit_code: int
    message: str


def study_dir(out: Path, study: str) -> Path:
    return Path(out) / "studies" / study


def tune(plan: StudyPlan, workers: int = 1, data: DataSplits | None = None) -> TuneResult:
    """Create or resume the study, run its trials with ``workers`` processes, write outputs.

    One MLflow parent run per invocation (tagged with the study name) holds a nested run
    per trial; it ends FINISHED when the study holds N finished trials, else FAILED.
    """
    Path(plan.out).mkdir(parents=True, exist_ok=True)
    with plan.storage.exclusive():  # SQLite: one tuning process per file
        return _tune(plan, workers, data)


def _tune(plan: StudyPlan, workers: int, data: DataSplits | None) -> TuneResult:
    from bench.tuning.outputs import write_study_outputs

    study = open_study(plan, create=True)  # raises StudyError before any training
    local = plan.storage.kind == "journal" or plan.storage.is_sqlite
    dead = fail_dead_trials(study, orphan_after_s=ORPHAN_AFTER_S if local else None)
    before = count_trials(study)
    sink = Sink.for_output(plan.out, EXPERIMENT)
    closed = close_orphaned_runs(sink, study, plan.study)
    parent = sink.start(
        plan.study,
        params={
            "study": plan.study,
            "trials": plan.trials,
            "workers": workers,
            "objective": plan.objective,
            "min_sparsity": plan.min_sparsity,
            "space_version": SPACE_VERSION,
            "space": plan.space.as_dict(),
            "setting": plan.setting.fingerprint(plan.target),
            "storage": plan.storage.describe(),
            "sampler_seed": plan.sampler_seed,
        },
        tags={
            "study": plan.study,
            "kind": "study",
            "method": plan.target.label,
            "optimizer": plan.target.method,
            "objective": plan.objective,
            "setting": plan.setting.name,
        },
    )
    plan = replace(plan, parent_run_id=parent.run_id)
    status = "FAILED"
    try:
        if not plan.quiet:
            print(
                f"[{plan.study}] {before['finished']} of {plan.trials} trials finished "
                f"({before['FAIL']} failed) in {plan.storage.describe()}; "
                f"running with {workers} worker(s)"
                + (f"; failed dead workers' trials {dead}" if dead else "")
                + (f"; closed {closed} orphaned MLflow run(s)" if closed else "")
                + ("" if parent.synced else f"; MLflow not synced: {parent.error}"),
                flush=True,
            )
        outcome = run_workers(plan, workers, data)
        study = open_study(plan, create=False)
        counts = count_trials(study)
        info = {
            "label": plan.target.label,
            "method": plan.target.method,
            "mode": plan.target.mode,
            "setting": plan.setting.name,
            "dataset": plan.setting.dataset,
            "model": plan.setting.model,
            "budget": plan.setting.budget,
            "space_version": SPACE_VERSION,
            "storage": plan.storage.describe(),
            "chance_accuracy": 1.0 / plan.num_classes if plan.num_classes else None,
        }
        directory = study_dir(plan.out, plan.study)
        summary = write_study_outputs(
            study, directory, objective=plan.objective, min_sparsity=plan.min_sparsity, info=info
        )
        summary["notes"] = [*outcome.notes, *summary["notes"]]
        parent.log_metrics(
            {
                "finished_trials": counts["finished"],
                "failed_trials": counts["FAIL"],
                "hypervolume": summary["hypervolume"],
                "best_val_accuracy": summary["best_val_accuracy"],
                "max_sparsity": summary["max_sparsity"],
                **{f"picked_{k}": v for k, v in (summary["picked"] or {}).items()},
            },
            step=counts["finished"],
        )
        for name in (
            "best.json",
            "pareto.json",
            "summary.json",
            "trials.csv",
            "pareto-front.png",
            "history.png",
            "importances.png",
        ):
            if (directory / name).is_file():
                parent.log_file(directory / name)
        done = counts["finished"] >= plan.trials
        if done and summary["picked"] is not None:
            status = "FINISHED"
            code, message = (
                0,
                (
                    f"[{plan.study}] {counts['finished']} finished trials "
                    f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
                    f"{counts['FAIL']} failed); hypervolume {summary['hypervolume']:.4f}; "
                    f"picked trial {summary['picked']['trial']} "
                    f"(val_acc {summary['picked']['val_accuracy']:.4f}, "
                    f"sparsity {summary['picked']['sparsity']:.3f}); outputs in {directory}"
                ),
            )
        else:
            reasons = "; ".join(summary["notes"]) or "see the FAIL trials' error attribute"
            code, message = (
                1,
                (
                    f"[{plan.study}] only {counts['finished']} of {plan.trials} trials finished "
                    f"({counts['FAIL']} failed): {reasons}"
                ),
            )
        return TuneResult(summary=summary, counts=counts, exit_code=code, message=message)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        parent.finish(status.lower(), mlflow_status=status)
