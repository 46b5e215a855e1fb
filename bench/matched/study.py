"""The matched-sparsity study: calibrate on seed 0, refine on the report seeds' median.

A *matched suite* is an ordinary suite file (``bench/suites/matched-digits.toml``): its
data, model, seeds and methods (labels, batch sizes, base hyperparameters) are data, so
adding a method (say a labelled variant) is one ``[[methods]]`` entry. Per method, the
knob that sets the sparsity is read from the method's own hyperparameters
(:data:`SPARSITY_KNOBS`, the first one the method has):

- ``final_sparsity`` (GMP): set to the target; matched by construction, no calibration.
- ``beta`` (bSQH, proximal methods, E-MSA) or ``lam`` (L0 hard-concrete): a penalty
  weight, found in two stages. First on the validation split with the calibration seed
  :data:`CALIBRATION_SEED` (never a report seed), starting from the suite's value
  (:mod:`bench.matched.calibration`): cheap single runs that give a bracket and a near
  value. Then on the report seeds themselves (:mod:`bench.matched.refinement`): rounds
  of the ten seeds at one value until their *median* sparsity lies within the tolerance
  (or a cap of rounds); the final round's runs are the reported ones. Only sparsities
  steer either stage; the test accuracy is read once every entry's round is fixed
  (:func:`run_budget`).

The budget is in epochs only (no clock), and each budget is its own study: calibrated
values at 3 epochs are not those at 9. Everything lands under
``<out>/matched-<suite>/epochs-<E>/``: ``calibration/<label>@<s>.json`` and
``refinement/<label>@<s>.json`` (the two stages' traces), ``matched-<suite>-e<E>/cells/``
(the ledger of every round's cells), MLflow experiment ``pmp-bench/matched-<suite>-e<E>``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import optimizers
from bench.data import DataSplits, load_dataset
from bench.ledger.records import CellRecord, load_records
from bench.matched import calibration, labels, refinement
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
    rounds: int = 0  # refinement rounds on the report seeds (bench.matched.refinement)
    runs: tuple[calibration.CalibrationRun, ...] = ()  # the first stage's runs (seed 0)

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
                runs=tuple(trace.runs),
            )
        )
        if best is not None:
            start = best.value
    return found


def suite_at_values(suite: Suite, values: Sequence[tuple[Calibrated, float]]) -> Suite:
    """The suite with one method per (entry, knob value): labelled ``<method>@matched-<s>``
    and trained with the suite's seeds. The label and provenance do not name the round, so
    a round's cells and the reported ones are the same cells (same ledger keys)."""
    by_label = {m.label: m for m in suite.methods}
    methods = []
    for entry, value in values:
        spec = by_label[entry.label]
        methods.append(
            replace(
                spec,
                label=entry.cell_label,
                hparams={**spec.hparams, entry.knob: value},
                tuned_from=f"matched to sparsity {entry.target:g} on the seeds' median",
            )
        )
    return replace(suite, methods=methods)


def round_sparsity(records: Sequence[CellRecord]) -> dict[str, dict[int, tuple[float, bool]]]:
    """Per label, each seed's (final sparsity, diverged): all a refinement round reads of
    its runs. Test accuracy is deliberately not touched here (bench.matched.refinement)."""
    out: dict[str, dict[int, tuple[float, bool]]] = {}
    for record in records:
        seeds = out.setdefault(record.config["label"], {})
        sparsity = float(record.summary.get("sparsity") or 0.0)
        seeds[int(record.config["seed"])] = (sparsity, record.status == "diverged")
    return out


def _refinement_trace(
    suite: Suite, entry: Calibrated, folder: Path, max_rounds: int
) -> calibration.Trace:
    method = next(m for m in suite.methods if m.label == entry.label)
    meta = {
        "method": method.name,
        "label": method.label,
        "hparams": method.hparams,
        "knob": entry.knob,
        "target": entry.target,
        "seeds": list(suite.seeds),
        "budget": suite.budget,
        "data": suite.data[suite.datasets[0]],
        "model": suite.models[0],
        "initial": entry.value,
        "max_runs": max_rounds,
    }
    return calibration.Trace.open(folder / f"{entry.label}@{entry.target:g}.json", meta)


def refine_budget(
    suite: Suite,
    calibrated: Sequence[Calibrated],
    folder: Path,
    device: torch.device,
    *,
    tolerance: float = calibration.DEFAULT_TOLERANCE,
    max_rounds: int = refinement.MAX_ROUNDS,
    train: bool = True,
    progress: bool = False,
    say: Callable[[str], None] = print,
) -> tuple[list[Calibrated], SuiteOutcome | None]:
    """The second stage (:mod:`bench.matched.refinement`) for every entry at once: each
    round trains the report seeds of every entry still outside the tolerance (one suite,
    so drivers sharing ``--out`` share its cells), and reads back their sparsities only.
    Returns the entries at their final rounds' values. ``train=False`` reads the rounds
    recorded so far (an unfinished entry reports its closest round, flagged)."""
    traces: dict[tuple[str, float], calibration.Trace] = {}
    for entry in calibrated:
        if entry.value is not None:
            cap = 1 if entry.knob in DIRECT_KNOBS else max_rounds
            traces[entry.label, entry.target] = _refinement_trace(
                suite, entry, folder / "refinement", cap
            )
    pairs = [(e, traces[e.label, e.target]) for e in calibrated if (e.label, e.target) in traces]

    def decide(entry: Calibrated, trace: calibration.Trace) -> calibration.Decision:
        assert entry.value is not None
        stage = [] if entry.knob in DIRECT_KNOBS else entry.runs
        cap = int(trace.meta["max_runs"])
        return refinement.refine(
            trace.runs, stage, entry.target, entry.value, tolerance=tolerance, max_rounds=cap
        )

    outcome: SuiteOutcome | None = None
    while train:
        decisions = [(e, t, decide(e, t)) for e, t in pairs]
        values = [(e, d.value) for e, _, d in decisions if not d.done and d.value is not None]
        if not values:
            break
        round_suite = suite_at_values(suite, values)
        say(f"refinement round: {len(values)} entries x {len(suite.seeds)} seeds")
        # The runner's per-cell lines name the test accuracy: they go to a log, so that
        # nobody watching a round sees a figure the choice of round must not depend on.
        log = folder / "refinement" / "cells.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as handle, contextlib.redirect_stdout(handle):
            outcome = run_suite(round_suite, folder, device, progress=progress, models=False)
        seeds = round_sparsity(_records(folder, round_suite))
        incomplete = []
        for entry, value in values:
            found = seeds.get(entry.cell_label, {})
            if set(found) != set(suite.seeds):
                incomplete.append(entry.cell_label)
                continue
            done = refinement.median_round(value, found)
            traces[entry.label, entry.target].add(done)
            say(f"  {entry.cell_label}: {entry.knob} = {value:.4g}, median {done.sparsity:.3f}")
        if incomplete:
            say(f"refinement stopped: seeds missing for {', '.join(incomplete)}")
            break
    final = []
    for entry in calibrated:
        trace = traces.get((entry.label, entry.target))
        if trace is None or not trace.runs:
            final.append(entry)
            continue
        decision = decide(entry, trace)
        if not decision.done:
            decision = calibration.Decision(
                done=True,
                best=calibration.closest(trace.runs, entry.target) or trace.runs[-1],
                reason="refinement not finished",
            )
        else:
            trace.save(decision)
        best = decision.best
        assert best is not None
        say(
            f"{entry.label} at s = {entry.target:g}: {entry.knob} = {best.value:.4g}, median "
            f"sparsity {best.sparsity:.3f} after {len(trace.runs)} round(s) ({decision.reason})"
        )
        final.append(
            replace(
                entry,
                value=best.value,
                reached=decision.reached,
                reason=decision.reason,
                rounds=len(trace.runs),
            )
        )
    return final, outcome


def _records(folder: Path, suite: Suite) -> list[CellRecord]:
    """The ledger's records of exactly the cells of ``suite``."""
    wanted = {cell_key(cell) for cell in suite.cells()}
    return [r for r in load_records(cells_dir(folder, suite.name)) if r.key in wanted]


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
    max_rounds: int = refinement.MAX_ROUNDS,
    progress: bool = False,
    train: bool = True,
    say: Callable[[str], None] = print,
) -> tuple[Suite, list[Calibrated], dict[str, SeedFigures], SuiteOutcome | None]:
    """Calibrate every method at every target on seed 0, refine each on the report
    seeds' median sparsity, and return the reported runs' figures.

    ``train=False`` trains nothing: the calibrations and rounds are read from their
    traces (one that had not ended reads "not reached: calibration not finished" or
    "refinement not finished") and the tables from the cells already in the ledger, so a
    study still running elsewhere can be read."""
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
    final, outcome = refine_budget(
        budgeted,
        calibrated,
        folder,
        device,
        tolerance=tolerance,
        max_rounds=max_rounds,
        train=train,
        progress=progress,
        say=say,
    )
    # Every entry's reported round is fixed: only now are the runs' test figures read.
    reported = suite_at_values(budgeted, [(e, e.value) for e in final if e.rounds and e.value])
    figures = seed_figures(_records(folder, reported), data.num_classes)
    return reported, final, figures, outcome
