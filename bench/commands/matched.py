"""``python -m bench matched``: test accuracy at sparsity matched by construction.

For every method of a matched suite (default ``matched-digits``), every target sparsity
(default 0.5, 0.8, 0.9, 0.95) and every epoch budget (default a short and a long one):
GMP is set to the target; each penalty method's weight is calibrated on validation with
seed 0 until its sparsity is within ``--tolerance`` of the target, then refined on the
suite's paired seeds until their median sparsity is (at most ``--max-rounds`` rounds of
all seeds; the final round's runs are the reported ones, evaluated on test)
(:mod:`bench.matched`). A rerun resumes: finished calibration runs and retrained cells
are read back, not trained again. Outputs under ``<out>/matched-<suite>/``:

- ``matched.csv`` / ``paired.csv``: the tables of every budget, the calibrated knob values
  included (:mod:`bench.matched.table`);
- ``MATCHED.md``: both, per budget, in Markdown; ``matched.png``: accuracy vs nonzeros;
- ``epochs-<E>/calibration/<method>@<s>.json``: every seed-0 calibration run;
- ``epochs-<E>/refinement/<method>@<s>.json``: every round (value, per-seed sparsity);
- ``epochs-<E>/matched-<suite>-e<E>/cells/`` and ``epochs-<E>/mlflow.db``: the retrained
  cells' ledger and runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

import optimizers
from bench.commands.args import (
    CLOSED_FRACTION,
    OPEN_FRACTION,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    add_device,
    add_out,
    number_list,
)
from bench.environment import resolve_device
from bench.ledger.safe_files import OutputWriteError, atomic_write_text
from bench.matched import calibration, refinement, study, table
from bench.suites import SuiteError, load_suite

TARGETS = (0.5, 0.8, 0.9, 0.95)
BUDGETS = (2.0, 4.0)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite", default="matched-digits", help="matched suite (default: matched-digits)"
    )
    parser.add_argument(
        "--targets",
        type=number_list(OPEN_FRACTION),
        default=TARGETS,
        help="target sparsities in (0, 1) (default: 0.5,0.8,0.9,0.95)",
    )
    parser.add_argument(
        "--epochs",
        type=number_list(POSITIVE_NUMBER),
        default=BUDGETS,
        help="epoch budgets, one study each (default: 2,4)",
    )
    parser.add_argument(
        "--tolerance",
        type=CLOSED_FRACTION,
        default=calibration.DEFAULT_TOLERANCE,
        help="accepted |sparsity - target| (default: 0.01)",
    )
    parser.add_argument(
        "--max-runs",
        type=POSITIVE_INT,
        default=calibration.DEFAULT_MAX_RUNS,
        help="calibration runs per method and target before 'not reached' (default: 12)",
    )
    parser.add_argument(
        "--max-rounds",
        type=POSITIVE_INT,
        default=refinement.MAX_ROUNDS,
        help="refinement rounds on the report seeds' median sparsity before the closest "
        f"round is reported, flagged (default: {refinement.MAX_ROUNDS})",
    )
    parser.add_argument(
        "--no-train",
        action="store_true",
        help="train nothing: tables from the traces and cells recorded so far",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated labels: calibrate and retrain only these (default: all); a "
        "second driver on the same --out shares the cells through the ledger's claims",
    )
    parser.add_argument(
        "--reference",
        default=None,
        help="label of the method the others are paired with (default: the suite's first "
        "method under study, i.e. whose registered method declares the focus trait: bSQH)",
    )
    parser.add_argument(
        "--threads",
        type=POSITIVE_INT,
        default=1,
        help="CPU threads for torch (default: 1; see the docs, Matched sparsity)",
    )
    add_out(parser)
    add_device(parser)


def run(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    try:
        suite = load_suite(args.suite)
        study.check_suite(suite)
    except (SuiteError, study.MatchedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    labels = [m.label for m in suite.methods]
    if args.reference is None:
        focus = [m.label for m in suite.methods if optimizers.traits(m.name).focus]
        if not focus:
            print(
                f"error: suite {suite.name!r} has no method under study to pair the others "
                f"with; pass --reference, one of: {', '.join(labels)}",
                file=sys.stderr,
            )
            return 2
        args.reference = focus[0]
    if args.reference not in labels:
        print(
            f"error: --reference {args.reference!r} is not a method of suite "
            f"{suite.name!r}; its methods: {', '.join(labels)}",
            file=sys.stderr,
        )
        return 2
    if args.methods is not None:
        chosen = [label.strip() for label in args.methods.split(",") if label.strip()]
        unknown = [label for label in chosen if label not in labels]
        if not chosen or unknown:
            print(
                f"error: --methods {args.methods!r}: unknown label(s) "
                f"{', '.join(unknown) or '(none given)'}; suite {suite.name!r} has: "
                f"{', '.join(labels)}",
                file=sys.stderr,
            )
            return 2
        suite = replace(suite, methods=[m for m in suite.methods if m.label in chosen])
    device = resolve_device(args.device)
    # These networks are tiny: intra-op threads buy nothing, and with another process on
    # the other core two threads ran a cell ten times slower than one (docs/results.md).
    torch.set_num_threads(args.threads)
    folder = Path(args.out) / f"matched-{suite.name}"
    matched_rows: list[dict[str, object]] = []
    paired_rows: list[dict[str, object]] = []
    sections = []
    exit_code = 0
    try:
        for epochs in args.epochs:
            print(f"== budget {epochs:g} epochs: calibrating on validation")
            _, calibrated, figures, outcome = study.run_budget(
                suite,
                epochs,
                args.targets,
                args.out,
                device,
                tolerance=args.tolerance,
                max_runs=args.max_runs,
                max_rounds=args.max_rounds,
                train=not args.no_train,
            )
            exit_code = max(exit_code, outcome.exit_code if outcome else 0)
            rows = table.matched_rows(calibrated, figures, epochs, args.tolerance)
            pairs = table.paired_rows(figures, calibrated, args.reference, epochs, args.tolerance)
            matched_rows += rows
            paired_rows += pairs
            sections.append(
                table.matched_markdown(rows, epochs, args.tolerance)
                + "\n"
                + table.paired_markdown(pairs, epochs)
            )
        table.write_csv(matched_rows, folder / "matched.csv", table.MATCHED_COLUMNS)
        table.write_csv(paired_rows, folder / "paired.csv", table.PAIRED_COLUMNS)
        text = header(suite.description, suite.seeds, args) + "\n" + "\n".join(sections)
        atomic_write_text(folder / "MATCHED.md", text)
        table.plot(
            matched_rows, folder / "matched.png", f"Accuracy at matched sparsity: {suite.name}"
        )
    except OutputWriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    print(f"tables, figure and traces: {folder} ({time.perf_counter() - began:.0f} s)")
    return exit_code


def header(description: str, seeds: list[int], args: argparse.Namespace) -> str:
    return "\n".join(
        [
            f"# Accuracy at matched sparsity: suite {args.suite}",
            "",
            description,
            "",
            "Each method is brought to every target sparsity itself: GMP by its "
            "`final_sparsity`, each penalty method by calibrating its penalty weight on the "
            f"**validation** split (seed {study.CALIBRATION_SEED}) until its sparsity is within "
            f"±{args.tolerance:g} of the target, then refining it on the paired seeds "
            f"{', '.join(map(str, seeds))} (same initialisation per seed for every method) "
            f"until their **median** sparsity is within ±{args.tolerance:g} (at most "
            f"{args.max_rounds} rounds; only sparsities steer it). The final round's runs are "
            "the reported ones, evaluated on **test**. Prunable weights, the same "
            "for every method: the kernels of every convolution and linear layer (tensors "
            "with 2+ dimensions); biases are not pruned. Paired rows: method − "
            f"{args.reference} per seed; Holm–Bonferroni within each target.",
            "",
        ]
    )
