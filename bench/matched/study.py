"""The matched-sparsity study: calibrate on validation, retrain with paired seeds.

A *matched suite* is an ordinary suite file (``bench/suites/matched-digits.toml``): its
data, model, seeds and methods (labels, batch sizes, base hyperparameters) are data, so
adding a method (say a labelled variant) is one ``[[methods]]`` entry. Per method, the
knob that sets the sparsity is read from the method's own hyperparameters
(:data:`SPARSITY_KNOBS`, the first one the method has):

- ``final_sparsity`` (GMP): set to the target; matched by construction, no calibration.
- ``beta`` (bSQH, proximal methods, E-MSA) or ``lam`` (L0 hard-concrete): a penalty
  weight, calibrated on the validation split (:mod:`bench.matched.calibration`) starting
  from the suite's value, with the calibration seed :data:`CALIBRATION_SEED` (never one
  of the report seeds, which the suite file must not contain).

The budget is in epochs only (no clock), and each budget is its own study: calibrated
values at 3 epochs are not those at 9. Everything lands under
``<out>/matched-<suite>/epochs-<E>/``: ``calibration/<label>@<s>.json`` (the traces),
``matched-<suite>-e<E>/cells/`` (the ledger of the retrained cells), MLflow experiment
``pmp-bench/matched-<suite>-e<E>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import optimizers
from bench.data import DataSplits, load_dataset
from bench.ledger.records import CellRecord, load_records
from bench.matched import calibration, labels
from bench.report import significance
from bench.runner import SuiteOutcome, cell_key, cells_dir, run_suite
from bench.suites import Cell, MethodSpec, Suite
from bench.training.loop import train_cell

#: The hyperparameters that set a method's sparsity, in order of preference.
SPARSITY_KNOBS = ("final_sparsity", "beta", "lam")
#: Knobs that are the sparsity itself (no calibration needed).
DIRECT_KNOBS = frozenset({"final_sparsity"})
CALIBRATION_SEED = 0


class MatchedError(ValueError):
    """A matched suite or a request against it is invalid."""


def sparsity_knob(method: MethodSpec) -> str:
    """The knob of ``method`` that sets its sparsity (:data:`SPARSITY_KNOBS`)."""
    known = optimizers.effective_hparams(method.name, **method.hparams)
    for knob in SPARSITY_KNOBS:
        if knob in known:
            return knob
    raise MatchedError(
        f"method {method.label!r} ({method.name}) has none of the sparsity knobs "
        f"{', '.join(SPARSITY_KNOBS)}; a matched suite lists sparsifying methods only"
    )


def check_suite(suite: Suite) -> None:
    """The rules a matched suite obeys beyond a suite's own (module docstring)."""
    if len(suite.datasets) != 1 or len(suite.models) != 1:
        raise MatchedError(
            f"a matched suite has one dataset and one model, got {suite.datasets} and "
            f"{suite.models}"
        )
    if CALIBRATION_SEED in suite.seeds:
        raise MatchedError(
            f"seed {CALIBRATION_SEED} calibrates the penalties; the report seeds "
            f"{suite.seeds} must be fresh, so remove it from them"
        )
    for method in suite.methods:
        knob = sparsity_knob(method)
        if knob not in DIRECT_KNOBS and not method.hparams.get(knob, 0) > 0:
            raise MatchedError(
                f"method {method.label!r}: hparams.{knob} is the initial penalty of the "
                f"calibration and must be > 0, got {method.hparams.get(knob)!r}"
            )


def at_budget(suite: Suite, epochs: float) -> Suite:
    """The suite at a budget of ``epochs`` epochs (no clock: DESIGN §4, fair budgets)."""
    return replace(
        suite,
        name=f"matched-{suite.name}-e{epochs:g}",
        budget={"epochs": float(epochs)},
    )


def study_dir(out: Path, suite: Suite, epochs: float) -> Path:
    return Path(out) / f"matched-{suite.name}" / f"epochs-{epochs:g}"


@dataclass(frozen=True)
class Calibrated:
    """One method at one target: the configuration to retrain, or why there is none."""

    label: str
    target: float
    knob: str
    value: float | None
    reached: bool
    calibration_runs: int
    val_sparsity: float | None
    reason: str

    @property
    def cell_label(self) -> str:
        return labels.label(self.label, [self.target])


def calibration_cell(suite: Suite, method: MethodSpec, knob: str, value: float) -> Cell:
    """The validation run of ``method`` with ``knob = value`` and the calibration seed."""
    spec = replace(method, hparams={**method.hparams, knob: value})
    setup = suite.setup_of(suite.datasets[0], suite.models[0], suite.budget, CALIBRATION_SEED)
    return Cell.of(setup, suite=f"calibrate:{suite.name}", method=spec)


def validation_run(
    suite: Suite, method: MethodSpec, knob: str, data: DataSplits, device: torch.device
) -> Callable[[float], calibration.CalibrationRun]:
    """``train(value)`` for the calibration driver: one run, validation only."""

    def train(value: float) -> calibration.CalibrationRun:
        began = time.perf_counter()
        result = train_cell(
            calibration_cell(suite, method, knob, value),
            data,
            device,
            use_test=False,
            progress=False,
        )
        return calibration.CalibrationRun(
            value=value,
            sparsity=float(result.summary.get("sparsity") or 0.0),
            val_accuracy=result.summary.get("val_accuracy"),
            status=result.status,
            wall_s=time.perf_counter() - began,
        )

    return train


class NotTrained(Exception):
    """A calibration needs another run, and this invocation trains nothing."""


def _no_training(value: float) -> calibration.CalibrationRun:
    raise NotTrained(f"calibration not finished (next value {value:.4g})")


def calibrate_method(
    suite: Suite,
    method: MethodSpec,
    targets: Sequence[float],
    folder: Path,
    train: Callable[[float], calibration.CalibrationRun],
    *,
    tolerance: float = calibration.DEFAULT_TOLERANCE,
    max_runs: int = calibration.DEFAULT_MAX_RUNS,
    say: Callable[[str], None] = print,
) -> list[Calibrated]:
    """Calibrate ``method`` at every target (ascending); each target starts from the
    value found for the previous one, so the later brackets are short."""
    knob = sparsity_knob(method)
    found = []
    start = float(method.hparams.get(knob, 0.0))
    for target in sorted(targets):
        if knob in DIRECT_KNOBS:
            found.append(Calibrated(method.label, target, knob, target, True, 0, None, "direct"))
            continue
        meta = {
            "method": method.name,
            "label": method.label,
            "hparams": method.hparams,
            "knob": knob,
            "target": target,
            "tolerance": tolerance,
            "max_runs": max_runs,
            "initial": start,
            "seed": CALIBRATION_SEED,
            "budget": suite.budget,
            "data": suite.data[suite.datasets[0]],
            "model": suite.models[0],
        }
        trace = calibration.Trace.open(folder / f"{method.label}@{target:g}.json", meta)
        try:
            decision = calibration.calibrate(
                trace, train, target, start, tolerance=tolerance, max_runs=max_runs
            )
        except NotTrained as stopped:
            decision = calibration.Decision(
                done=True, best=calibration.closest(trace.runs, target), reason=f"{stopped}"
            )
        best = decision.best
        say(
            f"{method.label} at s = {target:g}: "
            + (
                f"{knob} = {best.value:.4g} (val sparsity {best.sparsity:.3f}, "
                f"{len(trace.runs)} runs)"
                if decision.reached and best
                else f"{decision.reason}"
                + (f"; closest {best.sparsity:.3f} at {knob} = {best.value:.4g}" if best else "")
            )
        )
        found.append(
            Calibrated(
                method.label,
                target,
                knob,
                best.value if best else None,
                decision.reached,
                len(trace.runs),
                best.sparsity if best else None,
                decision.reason,
            )
        )
        if best is not None:
            start = best.value
    return found


def retrain_suite(suite: Suite, calibrated: Sequence[Calibrated]) -> Suite:
    """The suite with one method per reached (method, target): the calibrated value, the
    suite's seeds. Methods that missed the tolerance are not retrained."""
    by_label = {m.label: m for m in suite.methods}
    methods = []
    for entry in calibrated:
        if not entry.reached or entry.value is None:
            continue
        spec = by_label[entry.label]
        methods.append(
            replace(
                spec,
                label=entry.cell_label,
                hparams={**spec.hparams, entry.knob: entry.value},
                tuned_from=f"calibrated on validation to sparsity {entry.target:g}",
            )
        )
    return replace(suite, methods=methods)


@dataclass(frozen=True)
class SeedFigures:
    """Per-seed test figures of one retrained configuration, by seed (paired)."""

    test_accuracy: dict[int, float]
    sparsity: dict[int, float]
    nonzeros: dict[int, float]
    failed: tuple[int, ...] = ()  # seeds scored as failures (not finished)


def seed_figures(records: Sequence[CellRecord], num_classes: int) -> dict[str, SeedFigures]:
    """Per label, the seeds' test figures. A cell that did not finish (diverged, capped,
    failed) counts as a failure at chance accuracy, never dropped (DESIGN §4); its
    sparsity and nonzeros are its last recorded ones."""
    out: dict[str, SeedFigures] = {}
    for record in records:
        label = record.config["label"]
        seed = int(record.config["seed"])
        figures = out.setdefault(label, SeedFigures({}, {}, {}))
        summary = record.summary
        figures.test_accuracy[seed] = significance.scored_accuracy(
            summary.get("test_accuracy"), record.status, num_classes
        )
        figures.sparsity[seed] = float(summary.get("sparsity") or 0.0)
        figures.nonzeros[seed] = float(summary.get("nonzeros") or 0.0)
        if record.status != "finished":
            out[label] = replace(figures, failed=(*figures.failed, seed))
    return out


def run_budget(
    suite: Suite,
    epochs: float,
    targets: Sequence[float],
    out: Path,
    device: torch.device,
    *,
    tolerance: float = calibration.DEFAULT_TOLERANCE,
    max_runs: int = calibration.DEFAULT_MAX_RUNS,
    progress: bool = False,
    train: bool = True,
    say: Callable[[str], None] = print,
) -> tuple[Suite, list[Calibrated], dict[str, SeedFigures], SuiteOutcome | None]:
    """Calibrate every method at every target, then retrain the reached ones.

    ``train=False`` trains nothing: the calibrations are read from their traces (one
    that had not ended reads "not reached: calibration not finished") and the tables
    from the cells already in the ledger, so a study still running elsewhere can be
    read, and a partial one says how many seeds each entry has."""
    budgeted = at_budget(suite, epochs)
    folder = study_dir(out, suite, epochs)
    data = load_dataset(budgeted.datasets[0], device=device, **budgeted.data[budgeted.datasets[0]])
    calibrated: list[Calibrated] = []
    for method in budgeted.methods:
        runner = (
            validation_run(budgeted, method, sparsity_knob(method), data, device)
            if train
            else _no_training
        )
        calibrated += calibrate_method(
            budgeted,
            method,
            targets,
            folder / "calibration",
            runner,
            tolerance=tolerance,
            max_runs=max_runs,
            say=say,
        )
    retrain = retrain_suite(budgeted, calibrated)
    outcome = run_suite(retrain, folder, device, progress=progress, models=False) if train else None
    wanted = {cell_key(cell) for cell in retrain.cells()}
    records = [r for r in load_records(cells_dir(folder, retrain.name)) if r.key in wanted]
    return retrain, calibrated, seed_figures(records, data.num_classes), outcome
