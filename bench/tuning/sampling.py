"""How a study searches and prunes: the sampler, the pruner and the sparsity constraint.

- **Samplers.** TPE (multivariate, constant liar for concurrent workers) with
  ``max(3, min(10, N // 3))`` random start-up trials, seeded from ``--sampler-seed``,
  the worker index and the number of trials the study already holds, so concurrent
  workers and resumed runs do not redraw the same start-up points.
- **Pruning.** ``pareto`` studies are never pruned (Optuna cannot prune multi-objective
  studies). ``accuracy`` studies prune hopeless trials with a median pruner on the
  validation accuracy of each evaluation point (steps are evaluation indices, identical
  for every trial of a study), and record ``sparsity >= S`` as the sampler's constraint.
- **Constraints.** Every study records ``above_chance`` (validation accuracy above the
  useful floor), ``accuracy`` studies also ``min_sparsity``; see :func:`constrain`.
"""

from __future__ import annotations

import optuna

from bench.silence import silenced
from bench.tuning.pareto import useful_accuracy_floor
from bench.tuning.plan import StudyPlan

PRUNER_STARTUP_TRIALS = 4
PRUNER_WARMUP_EVALS = 2


def n_startup_trials(trials: int) -> int:
    return max(3, min(10, trials // 3))


def worker_seed(plan: StudyPlan, worker_index: int, existing: int) -> int:
    """A sampler seed that differs per worker and per resume (``existing`` trials)."""
    return plan.sampler_seed + 1000 * worker_index + existing


def make_sampler(plan: StudyPlan, seed: int) -> optuna.samplers.BaseSampler:
    """TPE; ``accuracy`` studies record their sparsity constraint on each trial."""
    with silenced(optuna.exceptions.ExperimentalWarning):
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=n_startup_trials(plan.trials),
            multivariate=True,
            constant_liar=True,
        )


def make_pruner(plan: StudyPlan) -> optuna.pruners.BasePruner:
    if plan.objective != "accuracy":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EVALS
    )


def constrain(trial: optuna.Trial, plan: StudyPlan, sparsity: float, accuracy: float) -> None:
    """Record the trial's constraints (Optuna keeps the first value of each).

    <= 0 means feasible. ``above_chance`` (every study whose class count is known): the
    validation accuracy is above the useful floor of
    :func:`bench.tuning.pareto.useful_accuracy_floor`, so a network pruned until it
    guesses is infeasible and never among the study's best trials (Optuna's
    ``best_trials``, the dashboard's *Best Trials*). ``min_sparsity`` (``accuracy``
    studies): the trial's final (or, when pruned, latest) sparsity >= S.
    """
    if plan.num_classes:
        floor = useful_accuracy_floor(1.0 / plan.num_classes)
        trial.set_constraint("above_chance", floor - accuracy)
    if plan.objective == "accuracy":
        trial.set_constraint("min_sparsity", plan.min_sparsity - sparsity)
