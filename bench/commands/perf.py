"""``python -m bench perf``: the step-time harness (``bench.perf.harness``) from the command line.

Prints the table last (after the progress bar) so that logs and ``make gpu-check`` end
with it; ``--json PATH`` also writes the report for docs/results.md and later comparisons.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

from bench.perf import harness
from bench.training.numerics import DEFAULT_PRECISION, PRECISIONS

T = TypeVar("T")


def _option(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap a parser so argparse shows its ValueError message, not a generic one."""

    def parse_option(text: str) -> T:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse_option.__name__ = parse.__name__
    return parse_option


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the harness's options; device-dependent defaults are filled in by ``run``."""
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: auto"
    )
    parser.add_argument("--model", default="lenet5", help="registered model (default lenet5)")
    parser.add_argument(
        "--batch-sizes",
        type=_option(harness.parse_batch_sizes),
        default=None,
        help="comma-separated sizes and/or 'full' (all samples in one step); "
        "default 128,1024 on the CPU and 128,1024,full on CUDA",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per cell, the median is reported (default 10 CPU, 50 CUDA)",
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (default 2 CPU, 5 CUDA)"
    )
    parser.add_argument(
        "--methods",
        type=_option(harness.parse_methods),
        default=None,
        help="comma-separated specs name[:key=value...], e.g. "
        "'sgd,bsqh,bsqh-fast:cuda_graph=false'; default: every registered method "
        "(plus feature-ablation rows of bsqh-fast)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="chunk size of full-batch steps, 0 for none (default 10000 CPU, none CUDA)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=harness.FASHION_SAMPLES,
        help="synthetic training-set size, the full batch (default 60000, Fashion-MNIST)",
    )
    parser.add_argument("--seed", type=int, default=0, help="data and model seed (default 0)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write JSON here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--precision",
        default=DEFAULT_PRECISION,
        choices=sorted(PRECISIONS),
        help="float32 (TF32 off, the default) or tf32, as a suite's precision key",
    )
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="also count device kernels per step with the torch profiler (CUDA only)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the harness, print the table, write the JSON if asked; 2 on bad options."""
    chunk_size = args.chunk_size
    if chunk_size is not None and chunk_size < 0:
        print("error: --chunk-size must be >= 0", file=sys.stderr)
        return 2
    config = harness.PerfConfig(
        device=args.device,
        model=args.model,
        batch_sizes=args.batch_sizes,
        steps=args.steps,
        warmup=args.warmup,
        methods=args.methods,
        chunk_size=chunk_size,
        samples=args.samples,
        seed=args.seed,
        progress=not args.no_progress,
        kernels=args.kernels,
        precision=args.precision,
    )
    try:
        report = harness.run_perf(config)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        path = harness.write_json(report, args.json)
        print(f"wrote {path}", file=sys.stderr)
    print(harness.format_table(report), flush=True)
    return 0
