"""What a researcher sees in MLflow's UI, checked in a real browser (headless Chromium).

Runs the smoke suite into a temporary store, starts ``mlflow server`` on a free local
port (one worker, as ``make ui`` does), and drives Debian's ``chromium`` with Playwright.
Screenshots go to ``$PMP_BENCH_SCREENSHOTS`` (default: the test's tmp folder).
"""

from __future__ import annotations

import os
import shutil
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
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Seconds the UI may take to show something on a loaded 2-core CI machine.
PATIENCE_MS = 90_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra)")
    from bench.runner import run_suite
    from bench.suites import load_suite
    from bench.tracking import tracking_uri

    out = tmp_path_factory.mktemp("ui")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    run_suite(load_suite("smoke"), out, torch.device("cpu"), progress=False)
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow_bin), "server", "--backend-store-uri", tracking_uri(out), "--host",
         "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
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
            yield page, base, out, shots
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def _experiment(out: Path):
    from mlflow import MlflowClient

    from bench.tracking import tracking_uri

    client = MlflowClient(tracking_uri(out))
    return client, client.get_experiment_by_name("pmp-bench/smoke")


def run_source(client, experiment) -> str:
    (run, *_) = client.search_runs([experiment.experiment_id], max_results=1)
    return run.data.tags["mlflow.source.name"]


def test_run_table_system_metrics_and_training_view(ui) -> None:
    page, base, out, shots = ui
    client, experiment = _experiment(out)
    page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs")
    page.get_by_text("bsqh/s0").first.wait_for(timeout=PATIENCE_MS)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(shots / "run-table.png"))
    text = page.inner_text("body")
    # The model-training view of the experiment, with the suite's description.
    assert "Training runs" in text
    assert "Smoke test: scikit-learn digits" in text
    # Run names carry the seed; Dataset (with split contexts) and Source are filled.
    for label in ("sgd", "adam", "prox-sgd-l0", "bsqh"):
        assert f"{label}/s0" in text
    assert "Dataset" in text and "digits (" in text and "Train" in text
    source = run_source(client, experiment)
    # The Source column shows the last path component of mlflow.source.name.
    assert "Source" in text and source.rsplit("/", 1)[-1][:6] in text

    run = client.search_runs([experiment.experiment_id], "tags.label = 'bsqh'")[0]
    page.goto(
        f"{base}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}/system-metrics"
    )
    page.get_by_text("cpu_utilization_percentage").first.wait_for(timeout=PATIENCE_MS)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(shots / "system-metrics.png"))
    assert "No charts in this section" not in page.inner_text("body")


@pytest.mark.xfail(
    reason="the chart view is not reached by URL in MLflow 3.17; to be driven by clicks",
    run=False,
)
def test_test_accuracy_against_device_time_chart(ui) -> None:
    """The README's steps: chart view, a test_accuracy chart, X-axis set to a metric."""
    page, base, out, shots = ui
    _, experiment = _experiment(out)
    page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs?compareRunsMode=CHART")
    page.get_by_text("test_accuracy", exact=True).first.wait_for(timeout=PATIENCE_MS)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(shots / "charts.png"))
    assert "device_time_s" in page.inner_text("body")
