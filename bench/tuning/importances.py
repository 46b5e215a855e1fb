"""Which hyperparameters mattered: fANOVA importances of a study's COMPLETE trials.

Importances need at least two COMPLETE trials, a parameter that takes two values, and a
target that varies; otherwise they are undefined, and what was skipped is said in a note
instead of failing the study's outputs.
"""

from __future__ import annotations

import json

import optuna
from optuna.trial import TrialState

from bench.silence import silenced

#: Below this many COMPLETE trials fANOVA importances are noisy: the figure says so.
FEW_TRIALS_FOR_IMPORTANCE = 20


def importances(study: optuna.Study, objective: str) -> tuple[dict[str, dict[str, float]], str]:
    """fANOVA importances per target (accuracy, and sparsity for Pareto studies).

    Returns the importances and a note naming what was skipped and why (empty if
    nothing was).
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}, f"importances skipped: {len(complete)} COMPLETE trial(s), need >= 2"
    varying = [
        name
        for name in {n for t in complete for n in t.params}
        if len({json.dumps(t.params.get(name)) for t in complete}) > 1
    ]
    if not varying:
        return {}, "importances skipped: no parameter varies across COMPLETE trials"
    targets = ["val_accuracy", "sparsity"] if objective == "pareto" else ["val_accuracy"]
    result: dict[str, dict[str, float]] = {}
    skipped = []
    for attr in targets:
        values = {round(float(t.user_attrs.get(attr, 0.0)), 12) for t in complete}
        if len(values) < 2:
            skipped.append(f"{attr} (constant across trials)")
            continue
        try:
            with silenced():  # fANOVA's and scikit-learn's chatter on tiny data
                result[attr] = optuna.importance.get_param_importances(
                    study,
                    evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                    target=lambda t, attr=attr: float(t.user_attrs.get(attr, 0.0)),
                )
        except Exception as error:  # degenerate data: skip with the reason
            skipped.append(f"{attr} ({type(error).__name__}: {error})")
    note = f"importances skipped for: {', '.join(skipped)}" if skipped else ""
    return result, note


def few_trials_note(complete: int) -> str:
    """The caveat for importances from fewer than :data:`FEW_TRIALS_FOR_IMPORTANCE` trials."""
    if complete >= FEW_TRIALS_FOR_IMPORTANCE:
        return ""
    return (
        f"from {complete} trials only (< {FEW_TRIALS_FOR_IMPORTANCE}): fANOVA importances "
        "this few trials are indicative, not reliable"
    )
