"""``python -m bench sync --suite NAME|PATH [--out DIR]``: make MLflow match the ledger.

Pushes every record marked not synced (rebuilding its run from the ledger) and closes
the suite's runs that a dead process left RUNNING, as ``bench run`` does at its start;
then logs the suite's report run again when MLflow lacks the current REPORT.md
(:mod:`bench.tracking.report_run`). Records of cells that a running driver holds the claim of
are left to it (:mod:`bench.ledger.cell_claims`), and so is the report run while another sync logs
it. Exit status: 0 when MLflow holds every record (and the report), 1 when some are
still not synced (the message says why, and names records a running driver still
holds), 2 when the ledger cannot be written.
"""

from __future__ import annotations

import argparse
import sys

from bench.commands.args import add_out, add_suite
from bench.ledger.safe_files import OutputWriteError
from bench.runner import cells_dir, suite_dir
from bench.suites import load_suite
from bench.tracking.client import EXPERIMENT_PREFIX, Tracker
from bench.tracking.report_run import REPORT_FILE, log_report_run
from bench.tracking.sync import sync_ledger


def configure(parser: argparse.ArgumentParser) -> None:
    add_suite(parser)
    add_out(parser)


def run(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite, studies_dir=args.out / "studies")
    ledger = cells_dir(args.out, suite.name)
    tracker = Tracker.for_output(args.out, EXPERIMENT_PREFIX + suite.name)
    report = suite_dir(args.out, suite.name)
    logged = None
    try:
        outcome = sync_ledger(tracker, ledger, suite.name)
        if (report / REPORT_FILE).exists():
            logged = log_report_run(tracker, report, suite.name)
    except OutputWriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    behind = outcome.unsynced + outcome.claimed  # MLflow still lacks these records
    stream = sys.stderr if behind else sys.stdout
    print(f"sync {suite.name}: {outcome.describe()}", file=stream)
    if logged is not None:
        print(
            f"sync {suite.name}: {logged.describe()}",
            file=sys.stderr if logged.error else sys.stdout,
        )
    return 1 if behind or (logged is not None and logged.error) else 0
