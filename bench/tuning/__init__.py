"""Optuna tuning: equal-budget studies of every method, Pareto fronts of accuracy vs sparsity.

- :mod:`bench.tuning.spaces`: the search space of every method (versioned).
- :mod:`bench.tuning.settings`: what a trial trains (a suite file with ``tuned:`` methods).
- :mod:`bench.tuning.storage`: SQLite, journal file or database server; checked up front.
- :mod:`bench.tuning.plan`: a study's plan by value, and trial counts.
- :mod:`bench.tuning.validation`: opening a study; refusing one that does not match its plan.
- :mod:`bench.tuning.sampling`: sampler, pruner and the sparsity constraint.
- :mod:`bench.tuning.cleanup`: trials and MLflow runs left RUNNING by dead processes.
- :mod:`bench.tuning.objective`: one trial (train, score, log to MLflow).
- :mod:`bench.tuning.workers`: trials in this process, in spawned ones, or one at a time.
- :mod:`bench.tuning.study`: one ``bench tune`` invocation from start to outputs.
- :mod:`bench.tuning.pareto`: fronts, hypervolume and the pick rule (pure math).
- :mod:`bench.tuning.importances`, :mod:`bench.tuning.figures`: what the pictures show.
- :mod:`bench.tuning.outputs`: a study's files (trials.csv, best/pareto/summary JSON).
- :mod:`bench.tuning.overview`: every study of a setting in one table and one plot.
"""

from bench.tuning.pareto import hypervolume_2d, pareto_indices, pick
from bench.tuning.plan import StudyPlan, count_trials
from bench.tuning.settings import Setting, Target, load_setting
from bench.tuning.spaces import SPACE_VERSION, Param, Space, space_for, tunable_methods
from bench.tuning.storage import StorageSpec, check_storage, default_storage, parse_storage
from bench.tuning.study import tune
from bench.tuning.validation import open_study

__all__ = [
    "SPACE_VERSION",
    "Param",
    "Setting",
    "Space",
    "StorageSpec",
    "StudyPlan",
    "Target",
    "check_storage",
    "count_trials",
    "default_storage",
    "hypervolume_2d",
    "load_setting",
    "open_study",
    "pareto_indices",
    "parse_storage",
    "pick",
    "space_for",
    "tunable_methods",
    "tune",
]
