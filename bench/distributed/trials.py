"""``bench tune --scheduler``: one study's trials as Dask tasks against one storage.

A task is one trial (:func:`trial_task`): it opens the study from its storage (a journal
file every worker can reach, or PostgreSQL), asks for a trial, trains it and tells the
result, exactly as a ``--workers`` process does for each of its trials; the objective's
surplus rule (a trial created when N finished or running trials precede it trains
nothing) keeps the study at N even when several drivers share it. The driver keeps one
task per worker in flight and submits the next while fewer than N trials are finished
or in flight; a crashed trial is replaced, and after ``max_failures`` crashes it gives
up. A worker killed mid-trial: Dask runs the task again elsewhere (a new trial) and the
dead trial is failed by the usual clean-up (its process is gone, or Optuna's heartbeat).
Ctrl-C: queued tasks are cancelled, a cluster started here is closed, and the trials
it cut short are failed at the next start, as after a killed ``--workers`` process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from bench.distributed.cluster import Cluster, open_cluster
from bench.distributed.spec import SchedulerSpec
from bench.tuning.cleanup import fail_dead_trials, orphan_window
from bench.tuning.objective import load_tuning_data
from bench.tuning.plan import StudyPlan, count_trials
from bench.tuning.validation import open_study
from bench.tuning.workers import TrialOutcome, WorkerOutcome, run_trial

_DATA: dict[str, Any] = {}  # per worker process: the setting's splits, loaded once


def trial_task(plan: StudyPlan, index: int) -> TrialOutcome:
    """Run one trial of ``plan``'s study on this worker (the study already exists)."""
    from bench.distributed.allocator import keep_freed_buffers
    from bench.environment import resolve_device

    keep_freed_buffers()  # Dask's allocator setting would halve CPU training speed
    device = resolve_device(plan.device)
    key = json.dumps([plan.setting.dataset, plan.setting.data, str(device)], sort_keys=True)
    if key not in _DATA:
        _DATA[key] = load_tuning_data(plan.setting, device)
    return run_trial(plan, index, _DATA[key])


def run_trials_on_cluster(cluster: Cluster, plan: StudyPlan) -> WorkerOutcome:
    """Run trials on the cluster until the study holds N finished ones (module docstring)."""
    from distributed import wait

    client = cluster.client
    plan = replace(plan, threads=cluster.threads or plan.threads)
    study = open_study(plan, create=False)
    outcome = WorkerOutcome()
    in_flight: set[Any] = set()
    submitted = 0
    token = uuid.uuid4().hex[:8]
    try:
        while True:
            fail_dead_trials(study, orphan_after_s=orphan_window(plan.storage))
            finished = count_trials(study)["finished"]
            if finished >= plan.trials and not in_flight:
                break
            slots = max(1, cluster.workers())
            while (
                not outcome.gave_up
                and len(in_flight) < slots
                and finished + len(in_flight) < plan.trials
            ):
                in_flight.add(
                    client.submit(
                        trial_task,
                        plan,
                        submitted,
                        key=f"pmp-trial-{plan.study}-{token}-{submitted}",
                        pure=False,
                        resources=cluster.resources(),
                    )
                )
                submitted += 1
            if not in_flight:
                break
            done, in_flight = wait(in_flight, return_when="FIRST_COMPLETED")
            for future in done:
                _absorb(future, outcome, plan)
    except BaseException:
        client.cancel(list(in_flight))
        raise
    return outcome


def _absorb(future: Any, outcome: WorkerOutcome, plan: StudyPlan) -> None:
    try:
        result: TrialOutcome = future.result()
    except Exception as error:  # KilledWorker: the trial's workers kept dying
        result = TrialOutcome(-1, "FAIL", error=f"{type(error).__name__}: {error}")
    if result.finished:
        outcome.ran += 1
    elif not result.surplus:
        outcome.failed += 1
        if outcome.failed >= plan.failure_limit and not outcome.gave_up:
            outcome.gave_up = True
            outcome.notes.append(
                f"gave up after {outcome.failed} crashed trials (last: {result.error})"
            )


@contextlib.contextmanager
def cluster_trials(
    spec: SchedulerSpec | None,
) -> Iterator[tuple[int, Callable[[StudyPlan], WorkerOutcome]] | None]:
    """For ``tune``/``tune-all``: the cluster's size and a trial runner, or None without one.

    The cluster is opened once for every study of the command and closed at its end.
    """
    if spec is None:
        yield None
        return
    with open_cluster(spec) as cluster:
        yield cluster.workers(), functools.partial(run_trials_on_cluster, cluster)
