"""Which CPU clock gives a training step time that other processes do not change, measured.

Runs the same training steps of one method of a suite (the same batches, the same
initialisation, so the same arithmetic) in alternating phases, quiet and with a CPU hog
beside them (``python -c "while True: pass"``, started and stopped by this script), and
times each step with four candidate clocks:

- ``wall``: the sum of the steps' wall times (``time.perf_counter``), the old axis;
- ``median wall x n``: the median step wall time times the number of steps;
- ``process cpu``: the process's CPU time over the steps (all threads,
  ``time.process_time``);
- ``thread cpu``: the calling thread's CPU time (``time.thread_time``).

For each clock it prints the total of every phase and the loaded/quiet ratio of the
medians of the phases: the clock whose ratio is nearest 1 is the one to plot against.
Figures for docs/results.md; noisy on a shared machine (say so when quoting them).

    python scripts/time_axis.py [--suite quick] [--method adam] [--steps 150] [--reps 2]
        [--hogs 1] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optimizers
from bench.data import DataCache
from bench.suites import load_suite
from bench.training.loop import batches, cell_model, method_hparams

CLOCKS = ("wall", "median wall x n", "process cpu", "thread cpu")


def phase(cell, data, steps: int) -> dict[str, float]:
    """Seconds of ``steps`` training steps, from a fresh model, under each clock."""
    model = cell_model(cell, data)
    method = optimizers.make(cell.method.name, model, **method_hparams(cell, steps))
    stream = batches(cell, data)
    walls, process, thread = [], 0.0, 0.0
    for _ in range(steps):
        x, y = next(stream)
        w0, p0, t0 = time.perf_counter(), time.process_time(), time.thread_time()
        method.step(x, y)
        walls.append(time.perf_counter() - w0)
        process += time.process_time() - p0
        thread += time.thread_time() - t0
    return {
        "wall": sum(walls),
        "median wall x n": statistics.median(walls) * len(walls),
        "process cpu": process,
        "thread cpu": thread,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="quick")
    parser.add_argument("--method", default="adam", help="a method label of the suite")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--reps", type=int, default=2, help="quiet/loaded pairs")
    parser.add_argument("--hogs", type=int, default=1, help="busy-loop processes when loaded")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    suite = load_suite(args.suite)
    cells = [c for c in suite.cells() if c.method.label == args.method]
    if not cells:
        labels = ", ".join(m.label for m in suite.methods)
        sys.exit(f"error: no method {args.method!r} in suite {suite.name}; labels: {labels}")
    cell = cells[0]
    data = DataCache("cpu").get(cell.dataset, cell.data)
    phase(cell, data, 5)  # warm-up: first-call costs belong to no phase
    results: dict[str, list[dict[str, float]]] = {"quiet": [], "loaded": []}
    for _ in range(args.reps):
        results["quiet"].append(phase(cell, data, args.steps))
        hogs = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)
        ]
        try:
            time.sleep(0.5)
            results["loaded"].append(phase(cell, data, args.steps))
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()

    print(
        f"{cell.method.label} on {cell.dataset}, {args.steps} steps per phase, "
        f"{args.reps} quiet/loaded pairs, {args.hogs} hog(s), torch threads "
        f"{torch.get_num_threads()}"
    )
    print(f"{'clock':<17} {'quiet [s]':>22} {'loaded [s]':>22} {'loaded/quiet':>13}")
    for clock in CLOCKS:
        quiet = [r[clock] for r in results["quiet"]]
        loaded = [r[clock] for r in results["loaded"]]
        ratio = statistics.median(loaded) / statistics.median(quiet)
        print(
            f"{clock:<17} {' '.join(f'{v:6.2f}' for v in quiet):>22} "
            f"{' '.join(f'{v:6.2f}' for v in loaded):>22} {ratio:13.2f}"
        )


if __name__ == "__main__":
    main()
