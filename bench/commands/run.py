"""``run --suite NAME|PATH [--out DIR] [--device ...] [--only PATTERN] [--dry-run]``.

Exit status: 0 when every cell is recorded and synced to MLflow, 1 when a cell failed or
MLflow lacks a record (``bench sync`` pushes it later), 2 for a user's mistake or when
the ledger cannot be written, 130 after Ctrl-C, 143 after SIGTERM. Another driver on
the same suite and ``--out`` is no error: the two share the cells (:mod:`bench.ledger.cell_claims`).

``--dry-run`` trains nothing: it lists the cells the command would run, their keys, which
the ledger already holds (and so would be skipped) and an estimate of the time the rest
needs, from earlier records of the same method, model and dataset, else bounded by the
budget's safety cap.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence

from bench.commands.args import NONNEGATIVE_NUMBER, add_device, add_out, add_suite
from bench.distributed.spec import add_scheduler_option
from bench.environment import resolve_device
from bench.errors import UsageError
from bench.ledger.checkpoints import DEFAULT_MINUTES
from bench.ledger.records import CellRecord, load_records
from bench.ledger.writable import ensure_writable_dir
from bench.runner import RERUN_KEEPS, SuiteOutcome, cell_key, cells_dir, run_suite, select
from bench.suites import Cell, Suite, load_suite
from bench.training.budget import SAFETY_CAP


def configure(parser: argparse.ArgumentParser) -> None:
    add_suite(parser)
    add_out(parser)
    add_device(parser)
    parser.add_argument(
        "--only",
        default=None,
        help="run only cells whose name label/model/dataset/seedN matches this glob or substring",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the cells, their keys, which are done, and the estimated time; train nothing",
    )
    parser.add_argument(
        "--no-models",
        action="store_true",
        help="do not save each finished cell's network as an MLflow model (large sweeps)",
    )
    parser.add_argument(
        "--checkpoint-minutes",
        type=NONNEGATIVE_NUMBER,
        default=DEFAULT_MINUTES,
        metavar="M",
        help="write a cell's training state every M minutes of wall clock and on Ctrl-C "
        "or SIGTERM; "
        f"the next run resumes it (default: {DEFAULT_MINUTES:g}; 0: only when interrupted)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_scheduler_option(parser, "the cells")


def chosen_cells(suite: Suite, only: str | None) -> list[Cell]:
    try:
        return select(suite.cells(), only)
    except ValueError as error:
        raise UsageError(str(error)) from None


def run(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite, studies_dir=args.out / "studies")
    cells = chosen_cells(suite, args.only)
    if args.dry_run:
        print(dry_run_text(suite, cells, load_records(cells_dir(args.out, suite.name))))
        return 0
    if args.scheduler is not None:
        return report(args, suite, run_on_cluster(args, suite))
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        raise UsageError(f"--device {args.device}: {error}") from None
    # The ledger, MLflow store and report go here: fail now, not after a cell trained.
    ensure_writable_dir(args.out, "output folder", flag="--out")
    outcome = run_suite(
        suite,
        args.out,
        device,
        only=args.only,
        progress=not args.no_progress,
        models=not args.no_models,
        checkpoint_minutes=args.checkpoint_minutes or None,
    )
    return report(args, suite, outcome)


def run_on_cluster(args: argparse.Namespace, suite: Suite) -> SuiteOutcome:
    """The cells on the Dask cluster of ``--scheduler`` (the device is chosen per worker)."""
    from bench.distributed.suite import run_suite_distributed

    ensure_writable_dir(args.out, "output folder", flag="--out")
    return run_suite_distributed(
        suite,
        args.out,
        args.device,
        args.scheduler,
        only=args.only,
        progress=not args.no_progress,
        models=not args.no_models,
    )


def report(args: argparse.Namespace, suite: Suite, outcome: SuiteOutcome) -> int:
    """The closing lines and the exit status of a suite run."""
    print(
        f"suite {suite.name}: {outcome.ran} cells run, {outcome.skipped} already done, "
        + (f"{outcome.elsewhere} run by another driver, " if outcome.elsewhere else "")
        + f"{outcome.diverged} diverged, {outcome.failed} failed"
    )
    if outcome.unsynced:
        print(
            f"{outcome.unsynced} cell(s) are in the ledger but not synced to MLflow; "
            f"`python -m bench sync --suite {args.suite} --out {args.out}` pushes them",
            file=sys.stderr,
        )
    return outcome.exit_code


# --------------------------------------------------------------------------- dry run


def _similar(cell: Cell, record: CellRecord) -> bool:
    config = record.config
    return (config.get("label"), config.get("model"), config.get("dataset")) == (
        cell.method.label,
        cell.model,
        cell.dataset,
    )


def estimate_seconds(
    cell: Cell, records: Sequence[CellRecord]
) -> tuple[float | None, float | None]:
    """Seconds one cell should take, and the most it may take.

    Earlier records of the same method, model and dataset (any code version) give the
    median wall time as the estimate. Without them there is no estimate: the budget's
    safety cap is only an upper bound on the training steps (evaluation comes on top), and
    printing it as an estimate would promise hours for a suite that takes minutes.
    """
    past = [r.wall_time_s for r in records if _similar(cell, r) and r.wall_time_s > 0]
    cap = cell.budget.get(SAFETY_CAP)
    bound = float(cap) if cap is not None else None
    return (statistics.median(past) if past else None), bound


def _seconds(seconds: float) -> str:
    return f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def dry_run_text(suite: Suite, cells: Sequence[Cell], records: Sequence[CellRecord]) -> str:
    """The dry run's listing: one line per cell, then the totals."""
    status = {r.key: r.status for r in records}
    width = max(len(c.name) for c in cells)
    budgets = "; ".join(_budget(b) for b in suite.grid_budgets())
    lines = [f"suite {suite.name}: {len(cells)} cells (budget {budgets})"]
    estimated, estimated_cells, unknown, bounded, bound_seconds, pending = 0.0, 0, 0, 0, 0.0, 0
    for cell in cells:
        key = cell_key(cell)
        state = status.get(key)
        if state in RERUN_KEEPS:
            note = f"done ({state}), skipped"
        else:
            pending += 1
            again = f" (again: {state})" if state else ""
            seconds, bound = estimate_seconds(cell, records)
            if seconds is not None:
                estimated += seconds
                estimated_cells += 1
                note = f"to run{again}; ~{seconds:.0f} s (earlier records)"
            else:
                unknown += 1
                if bound is not None:
                    bounded += 1
                    bound_seconds += bound
                    note = f"to run{again}; no earlier record (at most {bound:.0f} s: safety cap)"
                else:
                    note = f"to run{again}; no earlier record, no safety cap"
        lines.append(f"  {cell.name:<{width}}  {key}  {note}")
    parts = []
    if estimated_cells:
        parts.append(f"~{_seconds(estimated)} for {estimated_cells} cells from earlier records")
    if unknown:
        capped = f"; their safety caps bound the training to {_seconds(bound_seconds)}"
        parts.append(
            f"no estimate for {unknown} cells without earlier records"
            + (capped if bounded == unknown else "")
        )
    total = "; ".join(parts) if parts else "nothing to run"
    lines.append(f"{len(cells) - pending} done, {pending} to run; estimated time: {total}")
    return "\n".join(lines)


def _budget(budget: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in budget.items())
