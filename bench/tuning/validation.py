"""Opening a study, and refusing one that does not match its plan.

A resumed study must have the same objective, search space (version and ranges),
setting and budget as the plan; otherwise opening fails before any training, since a
study whose trials come from different budgets or spaces compares nothing. The plan's
side of that comparison is stored on the study as one JSON user attribute.
"""

from __future__ import annotations

import json

import optuna

from bench.silence import silenced
from bench.tuning.metadata import annotate
from bench.tuning.plan import METRIC_NAMES, StudyPlan
from bench.tuning.sampling import make_pruner, make_sampler

#: The study user attribute holding :meth:`StudyPlan.study_attrs`.
STUDY_ATTR = "pmp_bench"


class StudyError(ValueError):
    """The study cannot be created or resumed as asked (mismatched objective, setting...)."""


def open_study(plan: StudyPlan, *, create: bool, seed: int | None = None) -> optuna.Study:
    """Create (or load) the study and check that it matches ``plan``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = make_sampler(plan, plan.sampler_seed if seed is None else seed)
    pruner = make_pruner(plan)
    directions = ["maximize"] * len(METRIC_NAMES[plan.objective])
    if create:
        study = optuna.create_study(
            storage=plan.storage.open(),
            study_name=plan.study,
            directions=directions,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    else:
        study = optuna.load_study(
            study_name=plan.study, storage=plan.storage.open(), sampler=sampler, pruner=pruner
        )
    _check_objective(study, plan, len(directions))
    stored = study.user_attrs.get(STUDY_ATTR)
    if stored is None:
        if create:
            study.set_user_attr(STUDY_ATTR, plan.study_attrs())
            annotate(study, plan)
            with silenced(optuna.exceptions.ExperimentalWarning):
                study.set_metric_names(METRIC_NAMES[plan.objective])
    else:
        _check_attrs(stored, plan)
    return study


def _check_objective(study: optuna.Study, plan: StudyPlan, objectives: int) -> None:
    if len(study.directions) != objectives:
        other = "pareto" if len(study.directions) == 2 else "accuracy"
        raise StudyError(
            f"study {plan.study!r} in {plan.storage.describe()} was created with --objective "
            f"{other}; rerun it with --objective {other} or choose another --study name"
        )


def _check_attrs(stored: dict, plan: StudyPlan) -> None:
    wanted = plan.study_attrs()
    if stored == wanted:
        return
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
