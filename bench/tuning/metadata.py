"""What a study says about itself to a person: readable user attributes and a note.

The study also stores one JSON attribute (``pmp_bench``) that a resume compares as a
whole; dashboards show it as one long string. The attributes here repeat it one key
each (``method``, ``budget``, ``space.lr``...), in words, and optuna-dashboard's note
(when the ``dashboard`` extra is installed) explains the study on its front page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna

from bench.training.budget import Budget

if TYPE_CHECKING:
    from bench.tuning.plan import StudyPlan

#: Prefix of the per-parameter range attributes.
SPACE_PREFIX = "space."


def _range(spec: dict[str, Any]) -> str:
    if "choices" in spec:
        return "one of " + ", ".join(str(c) for c in spec["choices"])
    return f"[{spec['low']:g}, {spec['high']:g}]" + (" log" if spec.get("log") else "")


def readable_attrs(plan: StudyPlan) -> dict[str, str]:
    """One short text per key: what a study trains, on what budget, searching what."""
    setting, target = plan.setting, plan.target
    budget = Budget.from_config(setting.budget).describe()
    attrs = {
        "label": target.label,
        "method": target.method,
        "mode": target.mode,
        "batch_size": str(target.batch_size) if target.batch_size else "full batch",
        "dataset": setting.dataset,
        "model": setting.model,
        "setting": setting.name,
        "budget": f"{budget} per trial",
        "objective": plan.objective,
        "split": "train on train, score on validation; the test split is never read",
        "seed": str(setting.seed),
    }
    if plan.objective == "accuracy":
        attrs["min_sparsity"] = f"{plan.min_sparsity:g}"
    space = plan.space.as_dict()
    for name, spec in space["params"].items():
        attrs[f"{SPACE_PREFIX}{name}"] = _range(spec)
    for name, value in space["fixed"].items():
        attrs[f"fixed.{name}"] = str(value)
    return attrs


def study_note(plan: StudyPlan) -> str:
    """Markdown for optuna-dashboard's study note."""
    attrs = readable_attrs(plan)
    goal = (
        "maximise validation accuracy and sparsity (two objectives; the Pareto front is the result)"
        if plan.objective == "pareto"
        else f"maximise validation accuracy subject to sparsity >= {plan.min_sparsity:g}"
    )
    space = "\n".join(
        f"- `{k[len(SPACE_PREFIX) :]}`: {v}" for k, v in attrs.items() if k.startswith(SPACE_PREFIX)
    )
    return (
        f"# {plan.study}\n\n"
        f"Tunes **{attrs['label']}** (`{attrs['method']}`, {attrs['mode']}, batch "
        f"{attrs['batch_size']}) on {attrs['dataset']} × {attrs['model']}, "
        f"{attrs['budget']}.\n\n"
        f"Goal: {goal}. Trials {attrs['split']}.\n\n"
        f"Search space:\n\n{space}\n\n"
        "Each trial's user attributes hold its final validation accuracy, sparsity, status "
        "and MLflow run id (experiment `pmp-bench/tuning`).\n"
    )


def annotate(study: optuna.Study, plan: StudyPlan) -> None:
    """Set the readable attributes and, if optuna-dashboard is installed, the note."""
    for key, value in readable_attrs(plan).items():
        study.set_user_attr(key, value)
    try:
        from optuna_dashboard import save_note
    except ImportError:  # the dashboard extra is optional
        return
    save_note(study, study_note(plan))
