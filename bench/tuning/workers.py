"""Running trials: one trial anywhere, a worker loop, and spawned worker processes.

- **Finished trials** are COMPLETE or PRUNED ones: a pruned trial spent budget and told
  the sampler something. FAIL (a crash) does not count. ``--trials N`` means: run until
  the study holds N finished trials in total; a rerun resumes, a rerun with a larger N
  adds the difference.
- **Exactly N with concurrent workers.** A new trial beyond N is a surplus and trains
  nothing (:mod:`bench.tuning.objective`). A worker that finds the remaining trials
  running elsewhere waits for them (polling the storage) and replaces any that crash
  or whose worker dies, so every invocation returns with N finished trials in the
  study (or after giving up).
- **Crashes.** A worker gives up after ``max_failures`` crashes of its own (default
  ``max(3, N)``), so a broken setup cannot loop forever. Trials left RUNNING by a
  process that died are failed first (:mod:`bench.tuning.cleanup`).

:func:`run_trial` is the unit any process can run: a top-level function of the plan
(setting, storage URL and study name, all by value), so a process pool or a task
scheduler can call it on another process or machine.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from bench.data import DataSplits
from bench.silence import silenced
from bench.tuning.cleanup import fail_dead_trials, orphan_window
from bench.tuning.objective import Objective, make_objective
from bench.tuning.plan import FINISHED, StudyPlan, count_trials
from bench.tuning.sampling import make_sampler, worker_seed
from bench.tuning.validation import open_study

#: Seconds between looks at the study while other workers run its last trials.
POLL_S = 2.0


@dataclass
class WorkerOutcome:
    ran: int = 0
    failed: int = 0
    gave_up: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TrialOutcome:
    """What :func:`run_trial` did: the trial's number and final state (by value)."""

    number: int
    state: str  # an Optuna TrialState name: COMPLETE, PRUNED or FAIL
    surplus: bool = False
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in (s.name for s in FINISHED)


def worker_study(plan: StudyPlan, worker_index: int) -> optuna.Study:
    """The plan's study with a sampler seeded for this worker and this many trials."""
    study = open_study(plan, create=False)
    existing = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(plan, worker_seed(plan, worker_index, existing))
    return study


def _prepare(plan: StudyPlan) -> None:
    """This process's torch threads and Optuna's verbosity, as the plan asks."""
    if plan.threads:
        torch.set_num_threads(plan.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR if plan.quiet else optuna.logging.WARNING)


def run_one(study: optuna.Study, objective: Objective) -> FrozenTrial:
    """Ask, train and tell one trial of an open study; a crash is recorded, not raised."""
    ran: list[FrozenTrial] = []
    with silenced(optuna.exceptions.ExperimentalWarning):
        study.optimize(
            objective,
            n_trials=1,
            catch=(Exception,),
            callbacks=[lambda _study, trial: ran.append(trial)],
            gc_after_trial=False,
        )
    return ran[0]


def run_trial(
    plan: StudyPlan, worker_index: int = 0, data: DataSplits | None = None
) -> TrialOutcome:
    """Run one trial of ``plan``'s study in this process, wherever that is.

    The study must exist (the driver created and checked it with ``open_study(plan,
    create=True)``). A trial beyond N comes back as a FAIL with ``surplus``; the caller
    decides whether to run another by counting the study's trials.
    """
    _prepare(plan)
    trial = run_one(worker_study(plan, worker_index), make_objective(plan, data))
    return TrialOutcome(
        number=trial.number,
        state=trial.state.name,
        surplus=bool(trial.user_attrs.get("surplus")),
        error=trial.user_attrs.get("error"),
    )


def work(plan: StudyPlan, worker_index: int = 0, data: DataSplits | None = None) -> WorkerOutcome:
    """Run trials of ``plan`` in this process until the study holds N finished trials.

    When the remaining trials are running in other workers (other processes or
    machines), wait for them instead of returning: if one of them crashes, or its
    worker dies, this worker runs the replacement, and when it returns the study is
    complete (or this worker gave up after ``max_failures`` crashes of its own).
    """
    _prepare(plan)
    study = worker_study(plan, worker_index)
    outcome = WorkerOutcome()
    objective: Objective | None = None  # data and MLflow are loaded once there is work
    waiting = False
    while not outcome.gave_up:
        fail_dead_trials(study, orphan_after_s=orphan_window(plan.storage))
        counts = count_trials(study)
        if counts["finished"] >= plan.trials:
            break
        if counts["finished"] + counts["RUNNING"] >= plan.trials:
            if not waiting:
                waiting = True
                plan.say(
                    f"worker {worker_index}: waiting for {plan.trials - counts['finished']} "
                    "trial(s) running elsewhere"
                )
            time.sleep(POLL_S)
            continue
        waiting = False
        objective = objective or make_objective(plan, data)
        trial = run_one(study, objective)
        if trial.state in FINISHED:
            outcome.ran += 1
        elif trial.state == TrialState.FAIL and not trial.user_attrs.get("surplus"):
            outcome.failed += 1
            if outcome.failed >= plan.failure_limit:
                outcome.gave_up = True
                note = f"worker {worker_index} gave up after {outcome.failed} crashes"
                outcome.notes.append(note)
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
