"""What a researcher sees in MLflow's UI, checked in a real browser (headless Chromium).

Runs the smoke suite and its report into a temporary store, starts ``mlflow server`` on
a free local port (one worker, as ``make ui`` does), and drives Debian's ``chromium``
with Playwright through what the README's walkthrough tells a user to do. Screenshots go
to ``$PMP_BENCH_SCREENSHOTS`` (default: the test's tmp folder).

The suite is ``smoke`` evaluated every 0.2 epochs instead of 0.5 (11 evaluation points,
about as many as a ``quick`` cell's 13): its cells train for a second or two, and the
system metrics take a sample at every evaluation besides one per second.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Seconds the UI may take to show something on a loaded 2-core CI machine.
PATIENCE_MS = 90_000


#: The traces of every Plotly chart on the page: type, mode and number of points.
TRACES = """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(g =>
    (g.data || []).map(t => ({type: t.type || 'scatter', mode: t.mode || '',
                              points: (t.x || t.y || []).length})))"""
PLOTTED = "() => document.querySelectorAll('.js-plotly-plot').length > 0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra)")
    from bench.cli import main
    from bench.runner import run_suite
    from bench.suites import load_suite, resolve_suite_path
    from bench.tracking.client import tracking_uri

    out = tmp_path_factory.mktemp("ui")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    source = resolve_suite_path("smoke").read_text()
    assert "every_epochs = 0.5" in source
    suite_file = out / "smoke.toml"
    suite_file.write_text(source.replace("every_epochs = 0.5", "every_epochs = 0.2"))
    run_suite(load_suite(suite_file), out, torch.device("cpu"), progress=False)
    assert main(["report", "--suite", str(suite_file), "--out", str(out)]) == 0
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow_bin), "server", "--backend-store-uri", tracking_uri(out), "--host",
         "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # as `make ui`
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.3)
        shots = Path(os.environ.get("PMP_BENCH_SCREENSHOTS") or out / "screenshots")
        shots.mkdir(parents=True, exist_ok=True)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(PATIENCE_MS)
            page.goto(f"{base}/#/experiments")
            _model_training_view(page)  # the README's one click; the browser remembers it
            yield page, base, out, shots, browser
            browser.close()
    finally:
        _stop(server)


def _stop(server: subprocess.Popen) -> None:
    """End the server's whole process group: MLflow 3 spawns job consumers (huey)
    that outlive a server killed alone."""
    for sig, patience in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)  # its own group: start_new_session=True
        try:
            server.wait(timeout=patience)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)  # children still alive after the main exit


def _experiment(out: Path):
    from mlflow import MlflowClient

    from bench.tracking.client import tracking_uri

    client = MlflowClient(tracking_uri(out))
    return client, client.get_experiment_by_name("pmp-bench/smoke")


def run_source(client, experiment) -> str:
    (run, *_) = client.search_runs([experiment.experiment_id], max_results=1)
    return run.data.tags["mlflow.source.name"]


def _model_training_view(page) -> None:
    """Switch MLflow 3's sidebar to *Model training* (what the README tells a user)."""
    page.get_by_text("Model training", exact=True).first.click()
    page.wait_for_function("() => localStorage.getItem('mlflow.workflowType_v1') !== null")


def _wait_for_runs(page) -> None:
    """Wait until the single-page app's route is an experiment's run list."""
    page.wait_for_function("() => /#\\/experiments\\/[^/]+\\/runs/.test(location.hash)")


def _open_run_table(page, base: str, experiment) -> None:
    page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs")
    page.get_by_text("bsqh/s0").first.wait_for()
    _close_assistant(page)


def _close_assistant(page) -> None:
    """Close MLflow 3's assistant panel where it is open: it can cover what a test clicks."""
    assistant = page.get_by_role("button", name="Close")
    if assistant.count():
        assistant.first.click()


def _row(page, run):
    """The run table's row of ``run`` (the grid splits it into pinned and scrolled parts)."""
    return page.locator(f"[role=row][row-id='{run.info.run_id}']")


def _cells(client, experiment) -> dict:
    """The cell runs by run name (``sgd/s0``...)."""
    runs = client.search_runs([experiment.experiment_id], "tags.run_kind = 'cell'")
    return {run.info.run_name: run for run in runs}


def test_run_table_system_metrics_and_training_view(ui) -> None:
    page, base, out, shots, _ = ui
    client, experiment = _experiment(out)
    _open_run_table(page, base, experiment)
    page.get_by_text("bsqh-s0", exact=True).first.wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shots / "run-table.png"))
    text = page.inner_text("body")
    # The model-training view of the experiment, with the suite's description.
    assert "Smoke test: scikit-learn digits" in text
    # Run names carry the seed; Dataset (with split contexts) and Source are filled.
    cells = _cells(client, experiment)
    assert sorted(cells) == ["adam/s0", "bsqh/s0", "prox-sgd-l0/s0", "sgd/s0"]
    for name, run in cells.items():
        assert name in text
        # Models: each finished cell's logged model, linked from its row.
        model = name.replace("/", "-")  # the logged model is named after its cell
        assert _row(page, run).get_by_role("link", name=model).count() == 1
    assert "Dataset" in text and "digits (" in text and "Train" in text
    source = run_source(client, experiment)
    # The Source column shows the last path component of mlflow.source.name.
    assert "Source" in text and source.rsplit("/", 1)[-1][:6] in text
    assert "Models" in text

    run = client.search_runs([experiment.experiment_id], "tags.label = 'bsqh'")[0]
    page.goto(
        f"{base}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}/system-metrics"
    )
    page.get_by_text("cpu_utilization_percentage").first.wait_for()
    page.wait_for_function(PLOTTED)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shots / "system-metrics.png"))
    assert "No charts in this section" not in page.inner_text("body")
    # Curves, not bars of one number: a line of at least ten samples per chart.
    traces = page.evaluate(TRACES)
    assert traces, "no chart drawn"
    lines = [t for t in traces if t["type"] == "scatter" and t["points"] >= 10]
    assert lines, traces
    assert not [t for t in traces if t["type"] == "bar"], traces


def test_test_accuracy_against_device_time_chart(ui) -> None:
    """The README's steps: two runs shown, chart view, test_accuracy's X-axis a metric."""
    from playwright.sync_api import expect

    page, base, out, shots, _ = ui
    client, experiment = _experiment(out)
    cells = _cells(client, experiment)
    _open_run_table(page, base, experiment)
    # The chart view: the second of the three view buttons left of the search box.
    page.locator("label:has(input[name=runs-view-mode][value=CHART])").click()
    # Its run list: the eye in the header -> "Hide all runs", then the eyes of two runs.
    page.get_by_test_id("experiment-view-runs-visibility-column-header").click()
    page.get_by_text("Hide all runs", exact=True).click()
    shown = ("bsqh/s0", "sgd/s0")
    for name in shown:
        _row(page, cells[name]).locator("label", has_text="Unhide run").click()
    page.get_by_placeholder("Search metric charts").fill("test_accuracy")
    card = page.locator("[data-testid=experiment-view-compare-runs-card-menu]")
    expect(card).to_have_count(1, timeout=PATIENCE_MS)  # the test_accuracy chart alone
    card.click()
    page.get_by_role("menuitem", name="Configure").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("radio", name="Metric").check()
    metric = dialog.get_by_role("combobox").first  # "Select metric", the X-axis's
    metric.click()
    metric.fill("device_time_s")
    metric.press("Enter")
    dialog.get_by_role("button", name="Save changes").click()
    dialog.wait_for(state="hidden")
    page.get_by_text("device_time_s", exact=True).first.wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shots / "chart-test-accuracy-vs-device-time.png"))
    text = page.inner_text("body")
    chart = text[text.index("Model metrics") :]
    assert "device_time_s" in chart and "test_accuracy" in chart  # X and Y of the chart
    for name in shown:  # the legend lists both runs, the hidden ones not
        assert f"{name} (test_accuracy)" in chart
    for hidden in ("adam/s0", "prox-sgd-l0/s0"):
        assert f"{hidden} (test_accuracy)" not in chart
    assert page.locator(".js-plotly-plot").count() == 1  # one chart, drawn


def test_report_run_shows_the_figures(ui) -> None:
    """The comparison without clicks: the report run's page shows REPORT.md's figures,
    without horizontal scrolling at 1280 px, and REPORT.md renders with its images."""
    page, base, out, shots, _ = ui
    page.set_viewport_size({"width": 1280, "height": 900})
    client, experiment = _experiment(out)
    (report,) = client.search_runs([experiment.experiment_id], "tags.run_kind = 'report'")
    cells = client.search_runs([experiment.experiment_id], "tags.run_kind = 'cell'")
    assert len(cells) == 4 and report.info.run_name == "report"
    page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs/{report.info.run_id}")
    more = page.get_by_text("Show more", exact=True)
    more.first.wait_for()
    more.first.click()
    # The description's figures, served from the run's artifacts (MLflow drops alt texts).
    figures = page.locator("img[src*='get-artifact'][src*='figures%2F']")
    figure = figures.and_(page.locator("img[src*='test_accuracy_curves']"))
    figure.wait_for()
    figure.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.images].filter(i => i.src.includes('get-artifact')).every("
        "i => i.complete && i.naturalWidth > 0)"
    )
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "report-run.png"))
    assert figure.is_visible() and figure.evaluate("i => i.naturalWidth") > 400
    sources = figures.evaluate_all("imgs => imgs.map(i => decodeURIComponent(i.src))")
    for name in ("performance_profile", "accuracy_vs_sparsity", "train_loss_curves"):
        assert any(name in src for src in sources), name
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"horizontal scrolling: {widths}"
    edges = page.evaluate(
        "() => [document.querySelector('main').getBoundingClientRect().right, ...[...document"
        ".images].filter(i => i.src.includes('get-artifact')).map(i => i.getBoundingClientRect()"
        ".right)]"
    )
    assert max(edges[1:]) <= edges[0], f"a figure is cut at the pane's edge: {edges}"
    # REPORT.html in Artifacts: the report with its figures as images (MLflow renders
    # REPORT.md without them).
    page.goto(
        f"{base}/#/experiments/{experiment.experiment_id}/runs/{report.info.run_id}"
        "/artifacts/REPORT.html"
    )
    frame = page.frame_locator("iframe").first
    frame.locator("h1").first.wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shots / "report-html.png"))
    images = frame.locator("img").evaluate_all(
        "imgs => imgs.map(i => [i.naturalWidth, i.getBoundingClientRect().right,"
        " document.documentElement.clientWidth])"
    )
    assert len(images) >= 3 and all(w > 0 and right <= pane + 1 for w, right, pane in images)


def test_experiment_opens_on_training_runs(ui) -> None:
    """MLflow 3 opens experiments on its GenAI overview unless the sidebar is in *Model
    training* mode (a browser setting the store cannot change, not even through the
    experiment's kind tag): after the README's one click (the fixture's), an experiment
    opens on its runs, from the list and on a reload."""
    page, base, out, shots, _ = ui
    _, experiment = _experiment(out)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{base}/#/experiments")
    page.reload()  # a fresh app: a hash change alone keeps the earlier page's state
    link = page.get_by_role("link", name="pmp-bench/smoke")
    link.first.wait_for()
    _close_assistant(page)  # MLflow 3's assistant panel, if an earlier page opened it
    link.first.click()
    _wait_for_runs(page)
    page.get_by_text("bsqh/s0").first.wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shots / "experiment-opened.png"))
    assert "/overview" not in page.url and "workflowType=genai" not in page.url
    page.goto(f"{base}/#/experiments/{experiment.experiment_id}")  # remembered on reload
    _wait_for_runs(page)


def test_model_page_shows_the_trained_network_figures(ui) -> None:
    """The logged model's page lists the cell's final figures, not the untrained ones."""
    from bench.ledger.records import load_records
    from bench.runner import cells_dir

    page, base, out, shots, _ = ui
    client, experiment = _experiment(out)
    records = {r.key: r for r in load_records(cells_dir(out, "smoke"))}
    for name, run in sorted(_cells(client, experiment).items()):
        (output,) = run.outputs.model_outputs
        record = records[run.data.tags["cell_key"]]
        page.goto(f"{base}/#/experiments/{experiment.experiment_id}/models/{output.model_id}")
        page.get_by_text("test_accuracy", exact=True).first.wait_for()
        page.wait_for_timeout(500)
        if name == "bsqh/s0":
            page.screenshot(path=str(shots / "model-page.png"), full_page=True)
        assert name.replace("/", "-") in page.inner_text("body")
        for metric in ("test_accuracy", "sparsity"):
            row = page.locator("tr, [role=row]").filter(has=page.get_by_text(metric, exact=True))
            cells = row.first.inner_text().split()
            shown = float(cells[-1])
            decimals = len(cells[-1].partition(".")[2])
            assert abs(shown - record.summary[metric]) <= 0.5 * 10**-decimals + 1e-12, (
                name,
                metric,
                cells,
                record.summary[metric],
            )


def test_chart_view_lists_no_single_point_charts(ui) -> None:
    """Every metric chart of the cells is a curve: summary figures are tags, not metrics."""
    page, base, out, shots, _ = ui
    client, experiment = _experiment(out)
    _open_run_table(page, base, experiment)
    page.locator("label:has(input[name=runs-view-mode][value=CHART])").click()
    page.wait_for_function(PLOTTED)
    page.wait_for_timeout(2000)
    page.screenshot(path=str(shots / "chart-view.png"), full_page=True)
    text = page.inner_text("body")
    for single in ("attempts", "eval_time_s", "warmup_time_s", "iterations", "epochs"):
        assert f"\n{single}\n" not in f"\n{text}\n", single
    for name, run in _cells(client, experiment).items():
        for key in run.data.metrics:
            if not key.startswith("system/"):
                history = client.get_metric_history(run.info.run_id, key)
                assert len(history) >= 2, (name, key)
