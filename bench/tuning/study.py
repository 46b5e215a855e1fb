"""One ``bench tune`` invocation: create or resume a study, run its workers, write outputs.

The pieces, one job each: :mod:`bench.tuning.plan` (what is asked, by value),
:mod:`bench.tuning.validation` (opening a study and refusing a mismatched one),
:mod:`bench.tuning.sampling` (sampler, pruner, constraint), :mod:`bench.tuning.cleanup`
(trials and runs of dead processes), :mod:`bench.tuning.objective` (one trial),
:mod:`bench.tuning.workers` (trials in processes) and :mod:`bench.tuning.outputs` (the
files a study leaves behind). This module strings them together under one MLflow parent
run per invocation (tagged with the study name), which holds a nested run per trial; it
ends FINISHED when the study holds N finished trials, else FAILED.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.data import DataSplits
from bench.tracking.client import RunLog, Tracker
from bench.tracking.names import (
    OBJECTIVE_TAG,
    RUN_KIND_TAG,
    SETTING_TAG,
    STUDY_KIND,
    STUDY_TAG,
    TARGET_LABEL_TAG,
    TARGET_METHOD_TAG,
)
from bench.tuning.cleanup import close_orphaned_runs, fail_dead_trials, orphan_window
from bench.tuning.plan import EXPERIMENT, StudyPlan, count_trials, study_dir
from bench.tuning.spaces import SPACE_VERSION
from bench.tuning.validation import open_study
from bench.tuning.workers import WorkerOutcome, run_workers


@dataclass
class TuneResult:
    """What one ``tune`` invocation achieved; ``exit_code`` 0 when N trials are finished."""

    summary: dict[str, Any]
    counts: dict[str, int]
    exit_code: int
    message: str


def tune(
    plan: StudyPlan,
    workers: int = 1,
    data: DataSplits | None = None,
    run: Callable[[StudyPlan], WorkerOutcome] | None = None,
) -> TuneResult:
    """Create or resume the study, run its trials with ``workers`` processes, write outputs.

    ``run(plan)`` runs the trials elsewhere instead (a Dask cluster,
    :mod:`bench.distributed.trials`); ``workers`` is then how many workers it has.
    """
    Path(plan.out).mkdir(parents=True, exist_ok=True)
    with plan.storage.exclusive():  # SQLite: one tuning process per file
        return _tune(plan, workers, data, run)


def _tune(
    plan: StudyPlan,
    workers: int,
    data: DataSplits | None,
    run: Callable[[StudyPlan], WorkerOutcome] | None = None,
) -> TuneResult:
    study = open_study(plan, create=True)  # raises StudyError before any training
    dead = fail_dead_trials(study, orphan_after_s=orphan_window(plan.storage))
    before = count_trials(study)
    tracker = Tracker.for_output(plan.out, EXPERIMENT)
    closed = close_orphaned_runs(tracker, study, plan.study)
    parent = _start_parent_run(tracker, plan, workers)
    plan = replace(plan, parent_run_id=parent.run_id)
    status = "FAILED"
    try:
        plan.say(
            f"{before['finished']} of {plan.trials} trials finished "
            f"({before['FAIL']} failed) in {plan.storage.describe()}; "
            f"running with {workers} worker(s)"
            + (f"; failed dead workers' trials {dead}" if dead else "")
            + (f"; closed {closed} orphaned MLflow run(s)" if closed else "")
            + ("" if parent.synced else f"; MLflow not synced: {parent.error}")
        )
        outcome = run(plan) if run is not None else run_workers(plan, workers, data)
        result = _conclude(plan, outcome, parent)
        if result.exit_code == 0:
            status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        parent.finish(status.lower(), mlflow_status=status)


def _start_parent_run(tracker: Tracker, plan: StudyPlan, workers: int) -> RunLog:
    """The invocation's MLflow run: the plan as params, the trials' runs nested below."""
    return tracker.start(
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
            STUDY_TAG: plan.study,
            RUN_KIND_TAG: STUDY_KIND,
            TARGET_LABEL_TAG: plan.target.label,
            TARGET_METHOD_TAG: plan.target.method,
            OBJECTIVE_TAG: plan.objective,
            SETTING_TAG: plan.setting.name,
        },
    )


def _conclude(plan: StudyPlan, outcome: WorkerOutcome, parent: RunLog) -> TuneResult:
    """Write the study's files, log them and its figures to the parent run, and judge."""
    from bench.tuning.outputs import STUDY_FILES, write_study_outputs  # matplotlib: only here

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
        "tuning_seed": plan.tuning_seed,
        "training_seed": plan.setting.seed,
        "sampler_seed": plan.sampler_seed,
    }
    directory = study_dir(plan.out, plan.study)
    summary = write_study_outputs(
        study, directory, objective=plan.objective, min_sparsity=plan.min_sparsity, info=info
    )
    summary["notes"] = [*outcome.notes, *summary["notes"]]
    mark_picked(study, summary["picked"])
    parent.log_metrics(
        {
            "finished_trials": counts["finished"],
            "failed_trials": counts["FAIL"],
            "hypervolume": summary["hypervolume"],
            "best_val_accuracy": summary["best_val_accuracy"],
            "max_sparsity": summary["max_sparsity"],
            **{
                f"picked_{k}": v
                for k, v in (summary["picked"] or {}).items()
                if isinstance(v, int | float)  # the figures; params and rule are in best.json
            },
        },
        step=counts["finished"],
    )
    for name in STUDY_FILES:
        if (directory / name).is_file():
            parent.log_file(directory / name)
    picked = summary["picked"]
    if counts["finished"] >= plan.trials and picked is not None:
        message = (
            f"[{plan.study}] {counts['finished']} finished trials "
            f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
            f"{counts['FAIL']} failed); hypervolume {summary['hypervolume']:.4f}; "
            f"picked trial {picked['trial']} (val_acc {picked['val_accuracy']:.4f}, "
            f"sparsity {picked['sparsity']:.3f}); outputs in {directory}"
        )
        return TuneResult(summary=summary, counts=counts, exit_code=0, message=message)
    reasons = "; ".join(summary["notes"]) or "see the FAIL trials' error attribute"
    message = (
        f"[{plan.study}] only {counts['finished']} of {plan.trials} trials finished "
        f"({counts['FAIL']} failed): {reasons}"
    )
    return TuneResult(summary=summary, counts=counts, exit_code=1, message=message)


def mark_picked(study: Any, picked: dict[str, Any] | None) -> None:
    """Say in the study which trial ``bench tune`` picked, where its dashboard shows it.

    A finished trial cannot take new attributes in Optuna, so the study carries the mark:
    user attributes ``picked_trial`` (its number) and ``picked_by`` (the rule), each one
    key, updated whenever the pick changes.
    """
    if picked is None:
        return
    wanted = {"picked_trial": int(picked["trial"]), "picked_by": str(picked.get("picked_by", ""))}
    for key, value in wanted.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
