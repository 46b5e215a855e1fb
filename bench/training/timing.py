"""Device time of training steps, kept apart from everything else.

On CUDA each step is bracketed by a pair of events recorded on the current stream; the
host never waits for them during training. ``seconds()`` (called at the evaluation
cadence, off the timed path) synchronises once and sums the pairs seen since the last
call.

On the CPU the time axis is the **process CPU time** of the steps (all threads,
``time.process_time``), and each step's wall time (``time.perf_counter``) is kept beside
it for :mod:`bench.training.interference`. Why: other processes slow the wall clock but barely
the process's own CPU time. Measured with ``scripts/time_axis.py`` (Adam on the quick
subset, 150 steps per phase, one busy-loop hog beside the loaded phases, on a 2-core
machine that other jobs shared, so noisy): with one torch thread the loaded/quiet ratio
was 2.09 for the summed wall time, 2.18 for median step x steps and 1.02 for process
CPU time; with two torch threads on the two cores 4.01, 5.20 and 1.96 (torch's worker
threads spin at their barriers while a peer is descheduled, which CPU time counts). A
median of wall times does not help against a load that lasts the whole cell. The CPU
clock is the most stable of the four, not load-proof with more threads than free cores
(at a load average of 11 on 2 cores a quick Adam cell took 108.8 s of CPU time and 518 s
of wall time for what takes 3.8 s of wall time quiet), and a stopping rule never reads
it (:mod:`bench.training.budget`).
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
        # Per-step durations on the time axis (CUDA events, CPU: process CPU time), for the
        # perf harness's medians and the runner's interference check.
        self._steps_ms: list[float] | None = [] if keep_steps else None
        # CPU only: each step's wall time, beside its CPU time (bench.training.interference).
        self._wall_ms: list[float] | None = [] if keep_steps and not self.cuda else None
        self._wall_total = 0.0

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
            began, cpu_began = time.perf_counter(), time.process_time()
            yield
            cpu = time.process_time() - cpu_began
            wall = time.perf_counter() - began
            self._total += cpu
            self._wall_total += wall
            if self._steps_ms is not None and self._wall_ms is not None:
                self._steps_ms.append(cpu * 1000.0)
                self._wall_ms.append(wall * 1000.0)

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

    def wall_seconds(self) -> float | None:
        """CPU only: the summed wall time of the steps (None on CUDA, where the events
        are the time axis)."""
        return None if self.cuda else self._wall_total

    def wall_milliseconds(self) -> list[float] | None:
        """CPU only: each step's wall time in ms (needs ``keep_steps=True``)."""
        return None if self._wall_ms is None else list(self._wall_ms)

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
