"""Calibrating a penalty weight to a target sparsity: safeguarded bisection on its log.

Why this shape:

* **Log scale.** Penalty weights that matter span decades (β from 1e-5 to 1e-1), and the
  final sparsity moves with log β, not β; so every step works on ``log(value)``.
* **Bracket first.** From the initial value the driver multiplies (or divides) by
  :data:`EXPAND` until one run lies below the target and one above it; then it bisects.
  The new point is the log-linear interpolation of the bracket's sparsities, clamped to
  the middle of the bracket (``[SAFEGUARD, 1 - SAFEGUARD]`` of its width), so a smooth
  response converges in a few runs and a flat or noisy one still shrinks the bracket.
  When the last two runs fell on the same side of the target, the stale end's distance
  to the target is halved in the interpolation (the Illinois variant of regula falsi): a
  steep, curved response (proximal L1 went from 0.50 to 0.88 sparsity within 20 % of β)
  would otherwise keep interpolating towards the same end and creep up on the target.
* **Noise.** Sparsity is monotone in the penalty in expectation, not run by run (another
  penalty changes the whole trajectory). The bracket is therefore always rebuilt from
  every run so far: its low end is the largest value whose run fell below the target,
  its high end the smallest value above any low end whose run rose above it. A run that
  contradicts an earlier one (more penalty, less sparsity) only narrows the bracket, it
  never stops the search.
* **Stop.** Accepted as soon as a run lands within ``tolerance`` of the target; after
  ``max_runs`` runs (or when the bracket's width falls below :data:`MIN_LOG_WIDTH`, or the
  value leaves ``[LOWEST, HIGHEST]``) the result is *not reached*, with the closest run
  named. A diverged run counts as "too much penalty" (above the target): large penalty
  weights are what make these methods diverge.

The driver is a pure function of the runs so far (:func:`propose`), so a calibration is
resumed by reading its trace back (:class:`Trace`): a killed calibration never redoes a
finished run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.ledger.safe_files import atomic_write_text

EXPAND = 10.0
SAFEGUARD = 0.2
MIN_LOG_WIDTH = 1e-3
LOWEST = 1e-10
HIGHEST = 1e3
DEFAULT_TOLERANCE = 0.01
DEFAULT_MAX_RUNS = 12


@dataclass(frozen=True)
class CalibrationRun:
    """One short training run at one penalty value, scored on validation; or one
    refinement round, the report seeds at one value (their median sparsity)."""

    value: float
    sparsity: float
    val_accuracy: float | None = None
    status: str = "finished"  # or "diverged"
    wall_s: float | None = None
    # A refinement round (bench.matched.refinement): ``sparsity`` is the median of these.
    seed_sparsity: dict[str, float] | None = None
    diverged_seeds: list[int] | None = None

    @property
    def effective_sparsity(self) -> float:
        """The sparsity the driver reads: a diverged run counts as above every target."""
        return math.inf if self.status == "diverged" else self.sparsity


@dataclass(frozen=True)
class Decision:
    """What the driver says next: run ``value``, or stop (``reached`` or not)."""

    value: float | None = None
    done: bool = False
    reached: bool = False
    best: CalibrationRun | None = None
    reason: str = ""


def closest(runs: Sequence[CalibrationRun], target: float) -> CalibrationRun | None:
    """The run whose sparsity is nearest the target (diverged runs never are)."""
    usable = [r for r in runs if r.status != "diverged"]
    return min(usable, key=lambda r: abs(r.sparsity - target), default=None)


def within(sparsity: float, target: float, tolerance: float) -> bool:
    """The acceptance rule: |sparsity − target| ≤ tolerance (a hair of float slack)."""
    return abs(sparsity - target) <= tolerance + 1e-12


def bracket(
    runs: Sequence[CalibrationRun], target: float
) -> tuple[CalibrationRun | None, CalibrationRun | None]:
    """(low, high): the largest value whose run fell below the target, and the smallest
    value above it whose run rose above the target (either None while missing)."""
    below = [r for r in runs if r.effective_sparsity < target]
    low = max(below, key=lambda r: r.value, default=None)
    above = [
        r for r in runs if r.effective_sparsity > target and (low is None or r.value > low.value)
    ]
    high = min(above, key=lambda r: r.value, default=None)
    return low, high


def propose(
    runs: Sequence[CalibrationRun],
    target: float,
    initial: float,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_runs: int = DEFAULT_MAX_RUNS,
) -> Decision:
    """The next penalty value to try after ``runs``, or the end of the calibration."""
    if not initial > 0:
        raise ValueError(f"the initial penalty must be > 0 to search on its log, got {initial}")
    best = closest(runs, target)
    hit = [r for r in runs if r.status != "diverged" and within(r.sparsity, target, tolerance)]
    if hit:
        return Decision(done=True, reached=True, best=hit[0], reason="within tolerance")
    if not runs:
        return Decision(value=initial)
    if len(runs) >= max_runs:
        return Decision(done=True, best=best, reason=f"not reached in {max_runs} runs")
    low, high = bracket(runs, target)
    if low is None or high is None:
        if high is None:  # everything so far is below the target: more penalty
            start = max(r.value for r in runs)
            value = start * EXPAND
        else:  # everything so far is above the target: less penalty
            value = min(r.value for r in runs) / EXPAND
        if not LOWEST <= value <= HIGHEST:
            return Decision(
                done=True,
                best=best,
                reason=f"not reached: the penalty left [{LOWEST:g}, {HIGHEST:g}]",
            )
        return Decision(value=value)
    if math.log(high.value) - math.log(low.value) < MIN_LOG_WIDTH:
        return Decision(done=True, best=best, reason="not reached: the bracket collapsed")
    return Decision(value=interpolate(low, high, runs, target))


def interpolate(
    low: CalibrationRun, high: CalibrationRun, runs: Sequence[CalibrationRun], target: float
) -> float:
    """The safeguarded Illinois step inside the bracket ``(low, high)`` (module docstring);
    ``runs`` are the runs so far in order, whose last two say which end is stale."""
    log_low, log_high = math.log(low.value), math.log(high.value)
    below, above = target - low.sparsity, min(high.effective_sparsity, 1.0) - target
    sides = {r.effective_sparsity > target for r in runs[-2:]}
    if len(runs) >= 2 and sides == {True}:  # the high end moved twice: the low end is stale
        below /= 2.0
    elif len(runs) >= 2 and sides == {False}:
        above /= 2.0
    fraction = below / (below + above) if below + above > 0 else 0.5
    fraction = min(max(fraction, SAFEGUARD), 1.0 - SAFEGUARD)
    return math.exp(log_low + fraction * (log_high - log_low))


#: Meta keys that steer a calibration without changing what its runs measure.
STEERING = frozenset({"initial", "max_runs"})


def _identity(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in STEERING}


@dataclass
class Trace:
    """The recorded runs of one calibration (one method, one target, one budget), kept in
    a JSON file rewritten atomically after every run: the resume point."""

    path: Path
    meta: dict[str, Any]
    runs: list[CalibrationRun] = field(default_factory=list)

    @classmethod
    def open(cls, path: Path, meta: dict[str, Any]) -> Trace:
        """The trace at ``path`` if it was made with the same ``meta``, else a new one
        (a changed setting makes earlier runs meaningless). Keys in :data:`STEERING` are
        not compared: they only steer the search (the starting value, the run cap), and
        runs made under other ones are still runs of this calibration."""
        path = Path(path)
        if path.is_file():
            data = json.loads(path.read_text())
            if _identity(data.get("meta") or {}) == _identity(json.loads(json.dumps(meta))):
                runs = [CalibrationRun(**r) for r in data.get("runs", [])]
                return cls(path, meta, runs)
        return cls(path, meta)

    def add(self, run: CalibrationRun, decision: Decision | None = None) -> None:
        self.runs.append(run)
        self.save(decision)

    def save(self, decision: Decision | None = None) -> None:
        payload: dict[str, Any] = {"meta": self.meta, "runs": [asdict(r) for r in self.runs]}
        if decision is not None and decision.done:
            payload["result"] = {
                "reached": decision.reached,
                "reason": decision.reason,
                "value": decision.best.value if decision.best else None,
                "sparsity": decision.best.sparsity if decision.best else None,
            }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def calibrate(
    trace: Trace,
    train: Callable[[float], CalibrationRun],
    target: float,
    initial: float,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_runs: int = DEFAULT_MAX_RUNS,
) -> Decision:
    """Run the driver to its end, training through ``train(value)`` only the runs the
    trace does not hold yet; every run is saved before the next starts."""
    while True:
        decision = propose(trace.runs, target, initial, tolerance=tolerance, max_runs=max_runs)
        if decision.done:
            trace.save(decision)
            return decision
        assert decision.value is not None
        trace.add(train(decision.value))
