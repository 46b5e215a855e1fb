"""``python -m bench report --suite NAME|PATH [--out DIR]``: tables, figures and REPORT.md.

Reads the ledger of the suite's cells (``<out>/<suite>/cells``) and writes the report next
to it, then copies REPORT.md and its figures into the suite's MLflow experiment as its
``report`` run (:mod:`bench.tracking.report_run`; ``--no-mlflow`` skips that). Only records of
the suite's current cells count: a record left by other code or an older version of
the suite file is ignored (and the count of ignored ones is printed).
"""

from __future__ import annotations

import argparse
import sys

from bench.commands.args import add_out, add_suite
from bench.errors import UsageError
from bench.ledger.records import load_records
from bench.ledger.safe_files import OutputWriteError
from bench.report import write_report
from bench.runner import cell_key, cells_dir, suite_dir
from bench.suites import load_suite
from bench.tracking.client import EXPERIMENT_PREFIX, Tracker
from bench.tracking.meta import suite_experiment_tags
from bench.tracking.report_run import log_report_run


def configure(parser: argparse.ArgumentParser) -> None:
    add_suite(parser)
    add_out(parser)
    parser.add_argument(
        "--no-mlflow",
        action="store_true",
        help="do not copy the report into the suite's MLflow experiment as its report run",
    )


def run(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite, studies_dir=args.out / "studies")
    wanted = {cell_key(cell) for cell in suite.cells()}
    try:
        records = load_records(cells_dir(args.out, suite.name))  # quarantines damaged files
    except OutputWriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    current = [r for r in records if r.key in wanted]
    if not current:
        raise UsageError(
            f"no records of suite {suite.name!r} in {cells_dir(args.out, suite.name)}; "
            f"run `python -m bench run --suite {args.suite} --out {args.out}` first"
        )
    missing = len(wanted) - len({r.key for r in current})
    try:
        paths = write_report(
            current,
            suite_dir(args.out, suite.name),
            suite=suite.name,
            target_accuracy=suite.target_accuracy,
            description=suite.description,
        )
    except OutputWriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ignored = len(records) - len(current)
    print(f"report: {paths.report_md}")
    print(f"tables: {paths.runs_csv}, {paths.curves_csv}; figures: {len(paths.figures)}")
    if missing:
        print(f"note: {missing} of {len(wanted)} cells have no record yet")
    if ignored:
        print(f"note: ignored {ignored} records from other code or suite versions")
    if not args.no_mlflow:
        tracker = Tracker.for_output(
            args.out,
            EXPERIMENT_PREFIX + suite.name,
            suite_experiment_tags(suite),
        )
        logged = log_report_run(tracker, suite_dir(args.out, suite.name), suite.name)
        print(f"mlflow: {logged.describe()}" if not logged.error else f"note: {logged.describe()}")
    return 0
