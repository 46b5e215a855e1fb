"""How much ``--scheduler local:N`` can gain on this machine's CPU, before running a suite.

A serial ``bench run`` trains with torch's intra-op threads (one per core by default); a
``local:N`` cluster runs N single-threaded workers side by side. Which is faster depends
on how well one cell's steps use several cores, so this measures it instead of guessing:

1. the step time of one process with T threads (T = the cores torch uses by default);
2. the step time of one single-threaded process alone;
3. the step time of each of N single-threaded processes running at once.

From these it prints the training throughput of both (steps per second) and the best
wall-time ratio ``local:N`` / serial that training can reach here (the driver, start-up
and logging only add to it). Steps are the bench's own (``optimizers.make``) on
Fashion-MNIST-shaped synthetic batches, the same as ``bench perf``.

    python scripts/parallel_headroom.py [--method sgd] [--model lenet5] [--batch 128]
        [--workers N] [--steps 300] [--reps 3]

Each measurement is repeated ``--reps`` times and the median is printed. A figure for
docs/results.md, never an assertion in tests.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WARMUP_STEPS = 20


def time_steps(method: str, model_name: str, batch: int, steps: int, threads: int) -> float:
    """Milliseconds per step of ``steps`` steps in this process with ``threads`` threads."""
    import optimizers
    from bench.perf.harness import IMAGE_SHAPE, NUM_CLASSES, synthetic_data
    from bench.training.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    channels, size, _ = IMAGE_SHAPE
    model = build_model(model_name, in_channels=channels, image_size=size, num_classes=NUM_CLASSES)
    optimizer = optimizers.make(method, model)
    x, y = synthetic_data(batch, torch.device("cpu"), seed=0)
    for _ in range(WARMUP_STEPS):
        optimizer.step(x, y)
    began = time.perf_counter()
    for _ in range(steps):
        optimizer.step(x, y)
    return (time.perf_counter() - began) / steps * 1e3


def in_processes(args: argparse.Namespace, count: int, threads: int) -> list[float]:
    """Step times of ``count`` processes started together, each with ``threads`` threads."""
    command = [
        sys.executable,
        __file__,
        "--child",
        str(threads),
        "--method",
        args.method,
        "--model",
        args.model,
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
    ]
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(count)
    ]
    outputs = [child.communicate()[0] for child in children]
    if any(child.returncode for child in children):
        raise SystemExit(f"a measuring process failed: {outputs}")
    return [float(out.strip()) for out in outputs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="sgd")
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(time_steps(args.method, args.model, args.batch, args.steps, args.child))
        return 0
    if args.workers < 1 or args.steps < 1 or args.reps < 1:
        parser.error("--workers, --steps and --reps must be positive integers")
    threads = torch.get_num_threads()
    serial, alone, side_by_side = [], [], []
    for _ in range(args.reps):  # interleaved, so a drift of the machine hits all three
        serial += in_processes(args, 1, threads)
        alone += in_processes(args, 1, 1)
        side_by_side.append(statistics.median(in_processes(args, args.workers, 1)))
    t_serial, t_alone, t_parallel = (statistics.median(v) for v in (serial, alone, side_by_side))
    rate_serial = 1e3 / t_serial
    rate_parallel = args.workers * 1e3 / t_parallel
    print(f"{args.method} on {args.model}, batch {args.batch}, {args.steps} steps, CPU:")
    print(f"  serial, 1 process x {threads} threads:  {t_serial:7.2f} ms/step")
    print(f"  1 process x 1 thread, alone:      {t_alone:7.2f} ms/step")
    print(f"  {args.workers} processes x 1 thread, at once:{t_parallel:7.2f} ms/step each")
    print(
        f"  threading efficiency of the serial run: {t_alone / t_serial / threads:.0%} "
        f"({t_alone / t_serial:.2f}x from {threads} threads)"
    )
    print(
        f"  training throughput: serial {rate_serial:.1f} steps/s, "
        f"local:{args.workers} {rate_parallel:.1f} steps/s"
    )
    print(
        f"  best wall-time ratio local:{args.workers} / serial for training: "
        f"{rate_serial / rate_parallel:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
