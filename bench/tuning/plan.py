"""What a study is asked to do, by value, and how far it has got.

A :class:`StudyPlan` is everything a worker needs to run trials of one study: the
study's name and storage, the setting and target it trains, the search space, the
objective and N. It is a frozen dataclass of plain values, so it can be pickled to a
spawned process (or any other process that runs trials) and opened there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.tracking.client import EXPERIMENT_PREFIX
from bench.tuning.settings import Setting, Target
from bench.tuning.spaces import SPACE_VERSION, Space
from bench.tuning.storage import StorageSpec

OBJECTIVES = ("pareto", "accuracy")
METRIC_NAMES = {"pareto": ["val_accuracy", "sparsity"], "accuracy": ["val_accuracy"]}
#: Trials that spent budget and told the sampler something; they count towards N.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: Finished trials and those still under way: what a new trial must not push past N.
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
#: The MLflow experiment of every study's runs.
EXPERIMENT = EXPERIMENT_PREFIX + "tuning"


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
    tuning_seed: int = 0  # k: training seed and TPE seed shifted by k (bench.tuning.seeds)

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

    def say(self, line: str) -> None:
        """One progress line, prefixed with the study name (nothing when quiet)."""
        if not self.quiet:
            print(f"[{self.study}] {line}", flush=True)


def study_dir(out: Path, study: str) -> Path:
    """Where a study's files go: ``<out>/studies/<study>``."""
    return Path(out) / "studies" / study


def count_trials(study: optuna.Study) -> dict[str, int]:
    """Trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING) plus ``finished``."""
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    counts["finished"] = counts["COMPLETE"] + counts["PRUNED"]
    return counts


def live_below(study: optuna.Study, number: int) -> int:
    """Finished or running trials numbered below ``number``."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=LIVE) if t.number < number)
