"""What MLflow's system-metrics sampling costs a training step, measured, not assumed.

Times SGD steps of LeNet-5 on Fashion-MNIST-shaped synthetic batches (128 by default)
with the bench's system-metrics monitor off and on, in alternating repetitions (off, on,
off, on, ...) so that drifts of a shared machine hit both alike, and prints the median
step time of each, the median ratio of adjacent (off, on) pairs, and what one sample
costs (the bound that holds on a busy machine too: sample cost / interval). The monitor is the
runner's own (``bench.tracking.meta.system_metrics``, sampling every
``SYSTEM_METRICS_INTERVAL_S`` seconds unless ``--interval`` says otherwise) writing to a
throw-away SQLite store.

    python scripts/system_metrics_overhead.py [--device cpu|cuda] [--batch 128]
        [--reps 6] [--seconds 12] [--interval S]

Each repetition runs for ``--seconds`` (at least one sampling interval, so the "on"
repetitions contain samples). A figure for docs/results.md, never an assertion in tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optimizers
from bench.environment import device_name, resolve_device
from bench.perf.harness import IMAGE_SHAPE, NUM_CLASSES, synthetic_data
from bench.tracking.meta import SYSTEM_METRICS_INTERVAL_S, system_metrics
from bench.training.models import build_model
from bench.training.timing import StepTimer


def steps_for(method: object, batches: list, device: torch.device, seconds: float) -> list[float]:
    """Step times (ms) of as many steps as fit in ``seconds`` of wall time."""
    timer = StepTimer(device, keep_steps=True)
    deadline = time.perf_counter() + seconds
    index = 0
    while time.perf_counter() < deadline:
        xb, yb = batches[index % len(batches)]
        with timer.step():
            method.step(xb, yb)  # type: ignore[attr-defined]
        index += 1
    return timer.step_milliseconds()


def sample_cost_ms(run_id: str, uri: str, count: int = 10) -> float:
    """Median wall time of one cycle of the monitor's thread: read the system, check the
    run, write the metrics to the store (what happens once per sampling interval)."""
    from mlflow import MlflowClient
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=3600, tracking_uri=uri)
    times = []
    for _ in range(count):
        began = time.perf_counter()
        monitor.collect_metrics()
        MlflowClient(uri).get_run(run_id)
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
        times.append((time.perf_counter() - began) * 1000.0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=6, help="repetitions of each (alternating)")
    parser.add_argument("--seconds", type=float, default=12.0, help="wall time per repetition")
    parser.add_argument("--interval", type=float, default=SYSTEM_METRICS_INTERVAL_S)
    args = parser.parse_args()
    device = resolve_device(args.device)

    from mlflow import MlflowClient

    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=IMAGE_SHAPE[0], image_size=IMAGE_SHAPE[1],
                        num_classes=NUM_CLASSES).to(device)  # fmt: skip
    method = optimizers.make("sgd", model, lr=0.01, momentum=0.9)
    x, y = synthetic_data(args.batch * 16, device, seed=0)
    batches = [(x[i : i + args.batch], y[i : i + args.batch]) for i in range(0, len(x), args.batch)]
    steps_for(method, batches, device, 1.0)  # warm-up

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        client = MlflowClient(uri)
        run_id = client.create_run(client.create_experiment("overhead")).info.run_id
        medians: dict[str, list[float]] = {"off": [], "on": []}
        for rep in range(args.reps):
            for mode in ("off", "on"):
                with system_metrics(run_id, uri, enabled=mode == "on", interval_s=args.interval):
                    times = steps_for(method, batches, device, args.seconds)
                medians[mode].append(statistics.median(times))
                print(f"rep {rep + 1} {mode:>3}: {medians[mode][-1]:.3f} ms/step "
                      f"({len(times)} steps)", flush=True)  # fmt: skip
        samples = len(client.get_metric_history(run_id, "system/cpu_utilization_percentage"))
        cost = sample_cost_ms(run_id, uri)
    off, on = statistics.median(medians["off"]), statistics.median(medians["on"])
    print(
        f"\nSGD step, LeNet-5, batch {args.batch}, {device_name(device)}, "
        f"{args.reps} alternating repetitions of {args.seconds:g} s, "
        f"monitor every {args.interval:g} s ({samples} samples logged):"
    )
    print(f"  monitor off: {off:.3f} ms/step (median of repetition medians)")
    print(f"  monitor on:  {on:.3f} ms/step ({(on - off) / off:+.1%})")
    # Adjacent off/on pairs see the same load; their ratio resists a drifting machine.
    ratios = [b / a for a, b in zip(medians["off"], medians["on"], strict=True)]
    print(f"  paired on/off ratio: median {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f})")  # fmt: skip
    # The bound that needs no quiet machine: one sample's cost per sampling interval.
    print(f"  one sample costs {cost:.2f} ms: at most {cost / (args.interval * 1000):.4%} "
          f"of the time at one sample per {args.interval:g} s")  # fmt: skip
    spread = {m: (min(v), max(v)) for m, v in medians.items()}
    print("  repetition medians range: " + ", ".join(
        f"{m} {lo:.3f}-{hi:.3f}" for m, (lo, hi) in spread.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
