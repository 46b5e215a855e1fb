"""Did other processes slow a cell's steps? Two signs, read from the per-step times.

- **Starved steps** (CPU only): a step whose wall time exceeds its process CPU time by
  more than ``STARVED_FACTOR``. While a step runs, the process's main thread computes or
  spins, so on a quiet machine CPU time keeps up with the wall clock (with several torch
  threads it exceeds it); a step that took longer than the CPU it got was waiting for a
  core someone else held.
- **Slowed steps**: a step slower than ``SLOW_FACTOR`` times the cell's own median step
  (load spikes that come and go; the only sign on CUDA, from the event times).

A cell is flagged when more than ``STARVED_SHARE`` of its steps were starved or more than
``SLOWED_SHARE`` were slowed. The flag and its figures go into the cell's summary
(ledger, runs.csv, MLflow) and the report names the flagged cells. The stopping rule
never reads a clock (:mod:`bench.training.budget`), so a flagged cell's accuracy and sparsity are
the quiet machine's; only its time figures are suspect.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

#: A step whose wall time exceeds its process CPU time by this factor was starved.
STARVED_FACTOR = 1.25
#: A step slower than this factor times the cell's median step was slowed.
SLOW_FACTOR = 3.0
#: Flag the cell above these shares of starved or slowed steps.
STARVED_SHARE = 0.10
SLOWED_SHARE = 0.05


def detect(step_ms: Sequence[float], wall_ms: Sequence[float] | None = None) -> dict[str, Any]:
    """The summary figures of interference for one cell.

    ``step_ms`` are the steps on the time axis (CPU time, or CUDA event times);
    ``wall_ms`` the same steps' wall times (CPU only, else None). Returns
    ``interference`` (bool, None without steps), ``slowed_step_share``,
    ``starved_step_share`` (None on CUDA) and ``wall_cpu_ratio`` (summed wall time over
    summed CPU time of the steps; None on CUDA).
    """
    if wall_ms is not None and len(wall_ms) != len(step_ms):
        raise ValueError(f"{len(wall_ms)} wall times for {len(step_ms)} steps")
    if not step_ms:
        return {
            "interference": None,
            "slowed_step_share": None,
            "starved_step_share": None,
            "wall_cpu_ratio": None,
        }
    observed = list(wall_ms) if wall_ms is not None else list(step_ms)
    median = statistics.median(observed)
    slowed = sum(t > SLOW_FACTOR * median for t in observed) / len(observed)
    starved = ratio = None
    if wall_ms is not None:
        starved = sum(w > STARVED_FACTOR * c for w, c in zip(wall_ms, step_ms, strict=True))
        starved /= len(step_ms)
        cpu = sum(step_ms)
        ratio = sum(wall_ms) / cpu if cpu > 0 else None
    flagged = slowed > SLOWED_SHARE or (starved is not None and starved > STARVED_SHARE)
    return {
        "interference": flagged,
        "slowed_step_share": slowed,
        "starved_step_share": starved,
        "wall_cpu_ratio": ratio,
    }
