"""What a study leaves behind in ``<out>/studies/<study>/``.

- ``trials.csv``: every trial (Optuna's table, dict-valued attributes as JSON).
- ``pareto.json``: the Pareto front of (validation accuracy, sparsity) over COMPLETE
  trials, with each point's hyperparameters, and its dominated hypervolume.
- ``best.json``: ``{"params": {...}, "study", "objective", "values", "trial",
  "picked_by", ...}``: what a suite's ``hparams = "tuned:<study>"`` resolves to
  (the pick rule: :mod:`bench.tuning.pareto`).
- ``summary.json``: counts, hypervolume, the pick and notes (read by ``tune-all``).
- ``pareto-front.png``, ``history.png``, ``importances.png`` (the last one is skipped,
  with a note in ``summary.json``, when fewer than two trials completed or no parameter
  or target varies: importances are undefined then).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.tuning.figures import plot_front, plot_history, plot_importances
from bench.tuning.importances import importances
from bench.tuning.pareto import coordinates, front_of, hypervolume_2d, pick, reference_point
from bench.tuning.plan import count_trials

#: The files of a study worth attaching to its MLflow parent run.
STUDY_FILES = (
    "best.json",
    "pareto.json",
    "summary.json",
    "trials.csv",
    "pareto-front.png",
    "history.png",
    "importances.png",
)


def trial_points(study: optuna.Study) -> list[dict[str, Any]]:
    """COMPLETE trials as points: number, val_accuracy, sparsity, status, hparams."""
    points = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        values = trial.values or []
        accuracy = attrs.get("val_accuracy", values[0] if values else 0.0)
        sparsity = attrs.get("sparsity", values[1] if len(values) > 1 else 0.0)
        points.append(
            {
                "trial": trial.number,
                "val_accuracy": float(accuracy),
                "sparsity": float(sparsity),
                "status": attrs.get("status", "finished"),
                "params": dict(attrs.get("hparams") or trial.params),
            }
        )
    return points


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def write_trials_csv(study: optuna.Study, path: Path) -> None:
    frame = study.trials_dataframe(multi_index=False)
    frame = frame.drop(columns=[c for c in frame.columns if c.endswith("traceback")])
    frame = frame.map(_jsonable)
    frame.to_csv(path, index=False)


def _write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=1, default=str))


def _brief(p: dict[str, Any]) -> dict[str, Any]:
    return {"trial": p["trial"], "val_accuracy": p["val_accuracy"], "sparsity": p["sparsity"]}


def write_study_outputs(
    study: optuna.Study,
    directory: Path,
    *,
    objective: str,
    min_sparsity: float,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Write every per-study file into ``directory`` and return the summary."""
    directory.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    counts = count_trials(study)
    surplus = sum(bool(t.user_attrs.get("surplus")) for t in study.get_trials(deepcopy=False))
    points = trial_points(study)
    front = front_of(points)
    chance = info.get("chance_accuracy")
    reference = reference_point(chance)
    hypervolume = hypervolume_2d(coordinates(points), reference=reference)
    chosen, picked_by = pick(points, min_sparsity, chance)

    write_trials_csv(study, directory / "trials.csv")
    _write_json(
        directory / "pareto.json",
        {
            "study": study.study_name,
            "objective": objective,
            "axes": ["val_accuracy", "sparsity"],
            "reference_point": list(reference),
            "hypervolume": hypervolume,
            "chance_accuracy": chance,
            "complete_trials": len(points),
            "front": front,
        },
    )
    best_path = directory / "best.json"
    if chosen is not None:
        _write_json(
            best_path,
            {
                "params": chosen["params"],
                "study": study.study_name,
                "objective": objective,
                "values": {"val_accuracy": chosen["val_accuracy"], "sparsity": chosen["sparsity"]},
                "trial": chosen["trial"],
                "picked_by": picked_by,
                "min_sparsity": min_sparsity,
                "on_pareto_front": any(p["trial"] == chosen["trial"] for p in front),
                **info,
            },
        )
    else:
        notes.append(f"no best.json: {picked_by}")
        best_path.unlink(missing_ok=True)

    plot_front(points, front, chosen, directory / "pareto-front.png", title=study.study_name)
    plot_history(study, directory / "history.png")
    notes += _importances(study, objective, directory / "importances.png")

    summary = {
        "study": study.study_name,
        "objective": objective,
        "min_sparsity": min_sparsity,
        "trials": {k: v for k, v in counts.items() if k != "finished"},
        "finished": counts["finished"],
        "surplus": surplus,
        "front_size": len(front),
        "hypervolume": hypervolume,
        "hypervolume_reference": list(reference),
        "best_val_accuracy": max((p["val_accuracy"] for p in points), default=None),
        "max_sparsity": max((p["sparsity"] for p in points), default=None),
        "picked": None
        if chosen is None
        else {**_brief(chosen), "params": chosen["params"], "picked_by": picked_by},
        "front": [_brief(p) for p in front],
        "points": [_brief(p) for p in points],
        "notes": notes,
        **info,
    }
    _write_json(directory / "summary.json", summary)
    return summary


def _importances(study: optuna.Study, objective: str, path: Path) -> list[str]:
    """Draw the importances if defined; the notes saying what was skipped or uncertain."""
    found, note = importances(study, objective)
    if not found:
        path.unlink(missing_ok=True)
        return [note] if note else []
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    few = plot_importances(found, complete, path, title=study.study_name)
    return [n for n in (note, f"importances {few}" if few else "") if n]
