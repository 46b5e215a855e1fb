#!/usr/bin/env bash
# GPU check (`make gpu-check`): the CUDA tests of the fast path, the perf harness on the
# GPU (with kernels per step), the fused-kernel count per function, then the `gpu-quick` suite and its full-batch panel
# `gpu-quick-fullbatch`, trained, tracked in MLflow and reported, in about 7 minutes on
# an H100 or H200. Set GPU_CHECK_SUITES=0 to stop after the perf table, and
# PERF_METHODS=sgd,bsqh-fast (a `bench perf --methods` list) to time fewer methods;
# GPU_CHECK_PERF=0 skips the CUDA tests, the perf table and the fused-kernel count (the
# suites alone, e.g. a second call on a machine that has run the first part).
#
# Works from a fresh copy of the repository: uses .venv/bin/python when it exists, else
# python3 (a GPU machine with torch installed system-wide is enough; MLflow, Optuna and
# even pytest may be missing: without pytest the CUDA checks run as a plain script).
# The JSON report goes to $OUT/perf.json when OUT is set, else results/perf.json; the
# suites' ledger, mlflow.db and reports go to the same folder. The suites need MLflow.
# GPU_CHECK_SCHEDULER=local-cuda runs the suites on a dask-cuda cluster instead (one
# worker per GPU; needs the `cuda` extra) and then counts each suite's MLflow runs by
# status against its ledger: the end-to-end check of `--scheduler local-cuda`.
# Exit status: non-zero if the CUDA checks or the harness failed (the table still prints).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
REPORT_DIR="${OUT:-results}"
mkdir -p "$REPORT_DIR"

"$PY" - <<'PYEOF' || exit 1
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu-check: torch sees no CUDA device")
print(f"gpu-check: {torch.cuda.get_device_name()}, torch {torch.__version__}, python {sys.version.split()[0]}")
PYEOF

status=0
if [ "${GPU_CHECK_PERF:-1}" != 0 ]; then
    echo "== CUDA tests (tests/test_fast_path.py tests/test_cuda_training.py -m cuda)"
    if "$PY" -c "import pytest" 2>/dev/null; then
        # The limit leaves room for the first compilation of bsqh-fast's fused kernels
        # (Triton; tens of seconds on a machine whose compile cache is empty).
        timeout 300 "$PY" -m pytest -m cuda -p no:cacheprovider tests/test_fast_path.py tests/test_cuda_training.py || status=$?
    else
        echo "pytest is not installed: running the test_cuda_* checks as a script"
        timeout 280 "$PY" -m tests.test_fast_path || status=$?
    fi

    echo "== bench perf --device cuda --kernels"
    perf_methods=()
    [ -n "${PERF_METHODS:-}" ] && perf_methods=(--methods "$PERF_METHODS")
    timeout 300 "$PY" -m bench perf --device cuda --kernels --no-progress "${perf_methods[@]}" \
        --json "$REPORT_DIR/perf.json" || {
        rc=$?
        echo "gpu-check: bench perf failed (exit $rc)"
        [ "$status" -eq 0 ] && status=$rc
    }

    echo "== scripts/fusion_kernels.py --device cuda (operators fused away, per function)"
    timeout 120 "$PY" scripts/fusion_kernels.py --device cuda || echo "gpu-check: fusion_kernels failed"
fi

if [ "${GPU_CHECK_SUITES:-1}" != 0 ]; then
    if ! "$PY" -c "import mlflow" 2>/dev/null; then
        echo "gpu-check: MLflow is not installed, so the gpu-quick suites cannot run (pip install -e .)"
        exit 1
    fi
    scheduler=()
    [ -n "${GPU_CHECK_SCHEDULER:-}" ] && scheduler=(--scheduler "$GPU_CHECK_SCHEDULER")
    for suite in gpu-quick gpu-quick-fullbatch; do
        echo "== bench run --suite $suite --device cuda ${scheduler[*]}"
        began=$(date +%s)
        timeout 420 "$PY" -m bench run --suite "$suite" --device cuda --out "$REPORT_DIR" \
            --no-progress "${scheduler[@]}" &&
            "$PY" -m bench report --suite "$suite" --out "$REPORT_DIR" || {
            rc=$?
            echo "gpu-check: $suite failed (exit $rc)"
            [ "$status" -eq 0 ] && status=$rc
        }
        echo "gpu-check: $suite took $(( $(date +%s) - began )) s (training, evaluation, MLflow, report)"
        [ -n "${GPU_CHECK_SCHEDULER:-}" ] && "$PY" - "$REPORT_DIR" "$suite" <<'PYEOF'
import collections, sys
from pathlib import Path
from mlflow.tracking import MlflowClient
from bench.records import load_records
from bench.tracking import EXPERIMENT_PREFIX, tracking_uri
out, suite = Path(sys.argv[1]), sys.argv[2]
records = load_records(out / suite / "cells")
client = MlflowClient(tracking_uri(out))
experiment = client.get_experiment_by_name(EXPERIMENT_PREFIX + suite)
runs = client.search_runs([experiment.experiment_id], "tags.run_kind = 'cell'", max_results=5000)
finished = collections.Counter(r.data.tags.get("cell_key") for r in runs if r.info.status == "FINISHED")
statuses = collections.Counter(r.info.status for r in runs)
once = sum(finished[r.key] == 1 for r in records if r.status == "finished")
print(f"gpu-check: {suite}: {len(records)} ledger records, MLflow runs {dict(statuses)}, "
      f"{once} of {sum(r.status == 'finished' for r in records)} finished cells with exactly one FINISHED run")
PYEOF
    done
fi
exit "$status"
