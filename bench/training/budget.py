"""A cell's stopping rule: a count of training work, never a clock.

A comparison whose cells stop on a clock compares the machine's load as much as the
methods: a CPU hog beside a run once cut Adam from 420 steps to 41. So the budget of a
cell is exactly one count, checked after every step:

- ``epochs``: passes over the training split (full-batch: iterations). Every method sees
  the same samples; extra work a method does per step (bSQH's rejected attempts, E-MSA's
  inner steps) is not charged, and shows in the cell's pass count and device time.
- ``steps``: training steps (optimizer calls), the same caveat.
- ``passes``: network-equivalent forward plus backward passes, as each method counts
  them in its step statistics. This one *charges* bSQH's retries and E-MSA's inner
  steps: equal compute rather than equal data.

``safety_cap_seconds`` is a safety net, not a budget: a cell whose training steps use
that much device time (the time axis of :mod:`bench.training.timing`) stops and is recorded
``capped``, which keeps it out of every verdict; a rerun trains it again. A budget that
is only a clock is refused, and so is the old ``device_seconds`` key, by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The clock-free units a budget may count, in the order the docs list them.
UNITS = ("epochs", "steps", "passes")
SAFETY_CAP = "safety_cap_seconds"
#: Budget keys of earlier versions, refused with the reason.
RETIRED = {
    "device_seconds": (
        "a clock is no longer a budget (results would depend on the machine's load); "
        f"give one of {', '.join(UNITS)} and, as a safety net only, {SAFETY_CAP}"
    )
}
KEYS = (*UNITS, SAFETY_CAP, *RETIRED)


class BudgetError(ValueError):
    """A budget table that gives no clock-free stopping rule, or gives two."""


@dataclass(frozen=True)
class Budget:
    """One stopping rule (``unit``, ``amount``) and an optional safety cap in seconds."""

    unit: str
    amount: float
    safety_cap_seconds: float | None = None

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> Budget:
        """The budget of a validated table (a cell's ``budget``); raises BudgetError."""
        for key, reason in RETIRED.items():
            if table.get(key) is not None:
                raise BudgetError(f"{key}: {reason}")
        units = [unit for unit in UNITS if table.get(unit) is not None]
        if len(units) != 1:
            given = ", ".join(units) if units else "none"
            raise BudgetError(
                f"needs exactly one clock-free stopping rule out of {', '.join(UNITS)} "
                f"(given: {given}); {SAFETY_CAP} is only a safety net"
            )
        amount = float(table[units[0]])
        if units[0] != "epochs" and not amount.is_integer():
            raise BudgetError(f"{units[0]} must be a whole number, got {table[units[0]]!r}")
        cap = table.get(SAFETY_CAP)
        return cls(units[0], amount, None if cap is None else float(cap))

    def max_steps(self, per_epoch: int) -> int | None:
        """The step count this budget allows, when it is known before training."""
        if self.unit == "epochs":
            return math.ceil(self.amount * per_epoch)
        if self.unit == "steps":
            return int(self.amount)
        return None  # passes: depends on what each step spends

    def spent(self, steps: int, passes: float, per_epoch: int) -> bool:
        """Whether a cell that took ``steps`` steps spending ``passes`` passes is done."""
        limit = self.max_steps(per_epoch)
        return steps >= limit if limit is not None else passes >= self.amount

    def capped(self, seconds: float) -> bool:
        """Whether ``seconds`` of device time reach the safety cap."""
        return self.safety_cap_seconds is not None and seconds >= self.safety_cap_seconds

    def describe(self) -> str:
        """``6 epochs``, ``300 steps`` or ``20000 passes``, with the cap if any."""
        text = f"{self.amount:g} {self.unit}"
        if self.safety_cap_seconds is not None:
            text += f" (safety cap {self.safety_cap_seconds:g} s)"
        return text
