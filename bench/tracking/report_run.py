"""The suite's report as one MLflow run: a comparison of the methods that needs no clicks.

``bench report`` writes REPORT.md and its figures; this module copies them into the
suite's experiment as a run named ``report`` (``REPORT.md``, ``REPORT.html`` and
``figures/*.png`` as artifacts, the figures also shown inline in the run's
description), so the UI offers the like-with-like comparison without configuring a
chart. ``bench sync`` logs it again when the store lacks the current report (a new
store, a report written while MLflow was down).

It is not a cell: its tag ``run_kind = report`` (cells carry ``run_kind = cell``) keeps
it out of anything that counts or filters cells, and it has no ``suite`` or
``cell_key`` tag, so the ledger's sync never mistakes it for a cell's run. One report
run per output folder and suite: a new one replaces (deletes) the previous one.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ledger.cell_claims import REPORT_CLAIM, CellClaims
from bench.tracking.client import RunLog, Tracker, filter_literal, short_reason
from bench.tracking.meta import standard_tags
from bench.tracking.names import DIGEST_TAG, NOTE_TAG, REPORT_DIR_TAG, REPORT_KIND, RUN_KIND_TAG
from bench.tracking.orphans import end_killed
from bench.training.interrupts import describe

RUN_NAME = "report"
REPORT_FILE = "REPORT.md"
#: The report as one self-contained page, for MLflow's artifact view.
HTML_FILE = "REPORT.html"
FIGURES = "figures"


@dataclass
class ReportRunOutcome:
    run_id: str | None = None
    logged: bool = False  # False: the store had this report already, or MLflow failed
    error: str | None = None
    busy: bool = False  # another process holds the report's claim and logs it now

    def describe(self) -> str:
        if self.busy:
            return "another process is logging the report run"
        if self.error:
            return f"report not in MLflow ({self.error})"
        verb = "logged" if self.logged else "already in MLflow"
        return f"report run {self.run_id} {verb}"


#: Figures whose name has this go first: test accuracy against time, the headline.
HEADLINE = "test_accuracy_curves"


def report_files(report_dir: Path) -> list[Path]:
    """REPORT.md and the figures it shows, the headline figures first."""
    report_dir = Path(report_dir)
    figures = sorted(
        (report_dir / FIGURES).glob("*.png"), key=lambda p: (HEADLINE not in p.name, p.name)
    )
    return [report_dir / REPORT_FILE, *figures]


def report_digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def artifact_link(run_id: str, name: str) -> str:
    """A figure of the run as the tracking server serves it.

    ``get-artifact`` is relative to the UI's address, so it works behind any host or
    port the server is reached at.
    """
    query = urllib.parse.urlencode({"path": f"{FIGURES}/{name}", "run_uuid": run_id})
    return f"get-artifact?{query}"


def standalone_html(markdown: str, report_dir: Path, suite: str) -> str:
    """REPORT.md as one self-contained HTML page, its figures inlined as data URIs.

    MLflow's artifact view renders Markdown without images (``![...](...)`` shows as
    link text, whatever the link) and cuts wide table headers, but renders HTML files
    whole; the report run carries this page beside REPORT.md, so the report reads in
    the UI as it does on GitHub. Figures whose file is missing keep their link.
    """
    from markdown_it import MarkdownIt

    def inline(match: re.Match[str]) -> str:
        path = report_dir / urllib.parse.unquote(match.group(2))
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    text = re.sub(rf"!\[([^\]]*)\]\(({FIGURES}/[^)\s]+\.png)\)", inline, markdown)
    body = MarkdownIt("commonmark").enable("table").render(text)
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(suite)}: {REPORT_FILE}</title><style>{REPORT_CSS}</style>"
        f"</head><body>\n{body}</body></html>\n"
    )


#: Readable on a run page: figures never wider than the pane, tables scroll, not cut.
REPORT_CSS = (
    "body{font-family:system-ui,sans-serif;font-size:14px;line-height:1.45;margin:12px;"
    "max-width:1100px}img{max-width:100%;height:auto}"
    "table{border-collapse:collapse;display:block;overflow-x:auto;margin:8px 0}"
    "th,td{border:1px solid #ccc;padding:3px 8px;white-space:nowrap}"
    "th{background:#f3f3f3;text-align:left}code{background:#f3f3f3;padding:0 3px}"
)


def description(run_id: str, suite: str, figures: list[Path]) -> str:
    """Markdown for the run page: the figures inline, served by the tracking server."""
    lines = [
        f"Report of suite **{suite}**: the figures of `{REPORT_FILE}` (in *Artifacts*, "
        "with the tables and claims). Medians over seeds with min–max bands.",
        "",
    ]
    for figure in figures:
        lines += [f"![{figure.stem}]({artifact_link(run_id, figure.name)})", ""]
    return "\n".join(lines)


def log_report_run(tracker: Tracker, report_dir: Path, suite: str) -> ReportRunOutcome:
    """Log the report in ``report_dir`` as the suite's report run, unless already there.

    MLflow failures are returned in the outcome, never raised: the report on disk is
    complete without MLflow, and ``bench sync`` tries again. The report's claim
    (:data:`bench.ledger.cell_claims.REPORT_CLAIM`) is held meanwhile, so two processes (``bench
    report``, ``bench sync``) never log the same report twice.
    """
    report_dir = Path(report_dir)
    claim = CellClaims(report_dir, suite).take(REPORT_CLAIM, "the report run")
    if claim is None:
        return ReportRunOutcome(busy=True)
    with claim:
        return _log_report_run(tracker, report_dir, suite)


def _log_report_run(tracker: Tracker, report_dir: Path, suite: str) -> ReportRunOutcome:
    files = report_files(report_dir)
    if not files[0].exists():
        return ReportRunOutcome(error=f"no {REPORT_FILE} in {report_dir}")
    digest = report_digest(files)
    mine = str(report_dir.resolve())
    try:
        previous = report_runs(tracker, mine)
    except Exception as error:  # the store is unreachable
        return ReportRunOutcome(error=f"MLflow unreachable: {short_reason(error)}")
    previous = [_end_dead(tracker, run) for run in previous]
    for run in previous:
        if run.data.tags.get(DIGEST_TAG) == digest and run.info.status == "FINISHED":
            return ReportRunOutcome(run_id=run.info.run_id)
    tags = {
        **standard_tags(git_commit=None, description=f"Report of suite {suite}"),
        RUN_KIND_TAG: REPORT_KIND,
        REPORT_DIR_TAG: mine,
        DIGEST_TAG: digest,
    }
    run = tracker.start(RUN_NAME, {}, tags)
    try:
        _copy(run, files, suite)
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: not left RUNNING
        run.end("KILLED", reason=f"{describe(interrupt)} while its files were logged")
        raise
    if not run.synced:
        run.end("FAILED", reason=f"incomplete ({run.error}); logged again by bench sync")
        return ReportRunOutcome(run_id=run.run_id, error=run.error)
    run.end("FINISHED")
    for old in previous:  # replaced: one report run per folder
        _delete(tracker, old.info.run_id)
    return ReportRunOutcome(run_id=run.run_id, logged=True)


def _copy(run: RunLog, files: list[Path], suite: str) -> None:
    report, *figures = files
    if run.run_id is None:
        return
    run.log_file(report)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / HTML_FILE
        page.write_text(standalone_html(report.read_text("utf-8"), report.parent, suite), "utf-8")
        run.log_file(page)
    for figure in figures:
        run.log_file(figure, artifact_path=FIGURES)
    run.set_tags({NOTE_TAG: description(run.run_id, suite, figures)})


def report_runs(tracker: Tracker, report_dir: str) -> list[Any]:
    """The report runs of this experiment made from ``report_dir``, newest first."""
    tracker = tracker.open()
    return [
        run
        for run in tracker.client.search_runs(
            [tracker.experiment_id],
            filter_string=f"tags.{RUN_KIND_TAG} = {filter_literal(REPORT_KIND)}",
            order_by=["attributes.start_time DESC"],
            max_results=1000,
        )
        if run.data.tags.get(REPORT_DIR_TAG) == report_dir
    ]


def _end_dead(tracker: Tracker, run: Any) -> Any:
    """A report run left RUNNING by a process that died, ended KILLED (else as it is).

    Called under the report's claim: no live process is logging this folder's report.
    """
    if run.info.status != "RUNNING":
        return run
    try:
        end_killed(
            tracker.open(),
            run.info.run_id,
            "the process logging this report stopped without closing it",
        )
        return tracker.open().client.get_run(run.info.run_id)
    except Exception:  # the store failed meanwhile: the next report or sync retries
        return run


def _delete(tracker: Tracker, run_id: str) -> None:
    try:
        tracker.open().client.delete_run(run_id)
    except Exception:  # a stale copy left visible is harmless; the next report retries
        return
