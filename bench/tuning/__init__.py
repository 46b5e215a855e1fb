"""Optuna tuning: equal-budget studies of every method, Pareto fronts of accuracy vs sparsity.

- :mod:`bench.tuning.spaces`: the search space of every method (versioned).
- :mod:`bench.tuning.settings`: what a trial trains (a suite file with ``tuned:`` methods).
- :mod:`bench.tuning.storage`: SQLite, journal file or database server; checked up front.
- :mod:`bench.tuning.study`: study creation/resume, the trial objective, worker processes.
- :mod:`bench.tuning.outputs`: trials.csv, best/pareto JSON, figures, hypervolume tables.
"""

from bench.tuning.outputs import hypervolume_2d, pareto_indices, pick
from bench.tuning.settings import Setting, Target, load_setting
from bench.tuning.spaces import SPACE_VERSION, Param, Space, space_for, tunable_methods
from bench.tuning.storage import StorageSpec, check_storage, default_storage, parse_storage
from bench.tuning.study import StudyPlan, count_trials, open_study, tune

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
