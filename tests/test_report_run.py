"""The suite's report as an MLflow run: logged once per content, replaced, rebuilt by sync."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from bench.cli import main
from bench.tracking.client import EXPERIMENT_PREFIX, Tracker, tracking_uri
from bench.tracking.report_run import log_report_run

#: The smallest valid PNG (1x1), enough for MLflow to store and serve.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """One output folder (one SQLite store: creating one costs seconds) for the module."""
    return tmp_path_factory.mktemp("out")


def write_report(folder: Path, text: str = "# Report\n") -> Path:
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    (folder / "REPORT.md").write_text(text)
    for name in ("d__m__test_accuracy_curves.png", "performance_profile.png"):
        (folder / "figures" / name).write_bytes(PNG)
    return folder


def report_runs(out: Path, suite: str, view: str = "ACTIVE_ONLY"):
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri(out))
    experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + suite)
    kind = "tags.run_kind = 'report'"
    view_type = getattr(ViewType, view)
    return client, client.search_runs([experiment.experiment_id], kind, run_view_type=view_type)


def test_report_run_holds_the_figures_and_is_replaced_not_duplicated(out):
    folder = write_report(
        out / "t", "# Report\n\n![curves](figures/d__m__test_accuracy_curves.png)\n"
    )
    tracker = Tracker.for_output(out, EXPERIMENT_PREFIX + "t")
    first = log_report_run(tracker, folder, "t")
    assert first.logged and first.error is None
    client, (run,) = report_runs(out, "t")
    assert run.info.run_id == first.run_id and run.info.status == "FINISHED"
    assert run.info.run_name == "report"
    assert "suite" not in run.data.tags and "cell_key" not in run.data.tags  # not a cell
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert top == {"REPORT.md", "REPORT.html", "figures"}
    assert figures == {"figures/d__m__test_accuracy_curves.png", "figures/performance_profile.png"}
    note = run.data.tags["mlflow.note.content"]  # the figures inline, headline first
    assert note.index("test_accuracy_curves") < note.index("performance_profile")
    assert f"run_uuid={run.info.run_id}" in note
    # REPORT.html: the report as one page with its figures inline (MLflow's artifact view
    # shows Markdown without images); REPORT.md as on disk, relative links (GitHub).
    (out / "download").mkdir()
    page = client.download_artifacts(run.info.run_id, "REPORT.html", str(out / "download"))
    page = Path(page).read_text()
    assert '<img src="data:image/png;base64,' in page and 'alt="curves"' in page
    assert "(figures/d__m__test_accuracy_curves.png)" in (folder / "REPORT.md").read_text()

    again = log_report_run(tracker, folder, "t")  # the same report: nothing new
    assert not again.logged and again.run_id == first.run_id
    write_report(folder, "# Report, rewritten\n")
    newer = log_report_run(tracker, folder, "t")
    assert newer.logged and newer.run_id != first.run_id
    _, active = report_runs(out, "t")
    assert [r.info.run_id for r in active] == [newer.run_id]  # the old one deleted
    _, everything = report_runs(out, "t", "ALL")
    assert {r.info.run_id for r in everything} == {first.run_id, newer.run_id}


def test_unreachable_store_costs_only_the_report_run(tmp_path, monkeypatch):
    folder = write_report(tmp_path / "t")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    outcome = log_report_run(Tracker.for_output(tmp_path, EXPERIMENT_PREFIX + "t"), folder, "t")
    assert outcome.error and "unreachable" in outcome.error and not outcome.logged


def test_bench_sync_logs_a_report_the_store_lacks(out, capsys):
    """A report written without MLflow (or into another store) is logged by `bench sync`."""
    write_report(out / "smoke")
    assert main(["sync", "--suite", "smoke", "--out", str(out)]) == 0
    _, (run,) = report_runs(out, "smoke")
    assert "report run" in capsys.readouterr().out
    assert main(["sync", "--suite", "smoke", "--out", str(out)]) == 0
    _, runs = report_runs(out, "smoke")
    assert [r.info.run_id for r in runs] == [run.info.run_id]


def test_a_report_run_another_process_is_logging_is_left_to_it(out, capsys):
    from bench.ledger.cell_claims import REPORT_CLAIM, CellClaims
    from bench.ledger.locking import OwnerLock

    write_report(out / "smoke", "# Report, a version no run holds yet\n")
    before = [r.info.run_id for r in report_runs(out, "smoke")[1]]
    claims = CellClaims(out / "smoke", "smoke")
    with OwnerLock(claims.path(REPORT_CLAIM), "x", claims.guard):  # a live process: this one
        assert main(["sync", "--suite", "smoke", "--out", str(out)]) == 0
        assert [r.info.run_id for r in report_runs(out, "smoke")[1]] == before
        assert "another process is logging the report run" in capsys.readouterr().out
    assert main(["sync", "--suite", "smoke", "--out", str(out)]) == 0
    after = [r.info.run_id for r in report_runs(out, "smoke")[1]]
    assert len(after) == 1 and after != before  # logged once its claim was free
    assert not claims.path(REPORT_CLAIM).exists()
