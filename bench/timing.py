"""Device time of training steps, kept apart from everything else.

On CUDA each step is bracketed by a pair of events recorded on the current stream; the
host never waits for them during training. ``seconds()`` (called at the evaluation
cadence, off the timed path) synchronises once and sums the pairs seen since the last
call. On the CPU a monotonic clock brackets each step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StepTimer:
    """Accumulates the device time of the steps run inside ``timer.step()``."""

    def __init__(self, device: torch.device, *, keep_steps: bool = False) -> None:
        self.cuda = device.type == "cuda"
        self._total = 0.0
        self._pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        # Per-step durations, for the perf harness's medians (the runner needs only sums).
        self._steps_ms: list[float] | None = [] if keep_steps else None

    @contextmanager
    def step(self) -> Iterator[None]:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._pending.append((start, end))
        else:
            began = time.perf_counter()
            yield
            elapsed = time.perf_counter() - began
            self._total += elapsed
            if self._steps_ms is not None:
                self._steps_ms.append(elapsed * 1000.0)

    def continue_from(self, seconds: float) -> None:
        """Count on from ``seconds`` already spent (a cell resumed from its checkpoint)."""
        self._total += float(seconds)

    def seconds_if_free(self) -> float | None:
        """Total device seconds when reading them costs no synchronisation (CPU), else None.

        Lets the CPU loop stop exactly at a device-time budget while CUDA runs check it
        only at evaluation points.
        """
        return None if self.cuda else self._total

    def seconds(self) -> float:
        """Total device seconds so far (synchronises with the device on CUDA)."""
        if self._pending:
            self._pending[-1][1].synchronize()
            elapsed = [s.elapsed_time(e) for s, e in self._pending]
            self._total += sum(elapsed) / 1000.0
            if self._steps_ms is not None:
                self._steps_ms.extend(elapsed)
            self._pending.clear()
        return self._total

    def step_milliseconds(self) -> list[float]:
        """Each timed step's duration in ms (needs ``keep_steps=True``; syncs on CUDA)."""
        if self._steps_ms is None:
            raise RuntimeError("StepTimer was built without keep_steps=True")
        self.seconds()
        return list(self._steps_ms)


class Stopwatch:
    """Wall-clock time of work that is not a training step (evaluation, logging, warm-up).

    On CUDA it synchronises before reading the clock so queued training work is not
    billed to evaluation.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.total = 0.0

    @contextmanager
    def measure(self) -> Iterator[None]:
        if self.cuda:
            torch.cuda.synchronize()
        began = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.total += time.perf_counter() - began
