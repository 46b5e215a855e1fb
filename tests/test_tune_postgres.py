"""Distributed tuning against a real PostgreSQL server: two "machines" share one study.

``.ci/run`` starts a PostgreSQL server (Debian package) and exports
``PMP_BENCH_TEST_POSTGRES``; without that variable, or without a reachable server, the
test is skipped and says why. Each worker is a separate ``python -m bench tune`` process
with its own output folder, as on two machines; together they must leave exactly N
finished trials with unique numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bench.tuning.storage import StorageError, check_storage, parse_storage
from tests.test_tuning import SETTING as TINY_SETTING

ENV = "PMP_BENCH_TEST_POSTGRES"
TRIALS = 5

# The tuning tests' setting with only its sgd method, under study names of its own.
SETTING = (
    TINY_SETTING.split('[[methods]]\nname = "bsqh"')[0]
    .replace('name = "tiny-tuned"', 'name = "pg-tuned"')
    .replace("tuned:tiny-sgd", "tuned:pg-sgd")
)


@pytest.fixture(scope="module")
def postgres_url() -> str:
    url = os.environ.get(ENV)
    if not url:
        pytest.skip(
            f"{ENV} is not set: no PostgreSQL server to test against (.ci/run starts one and "
            f"exports it, e.g. postgresql://postgres:postgres@127.0.0.1:5432/pmp_bench_test)"
        )
    spec = parse_storage(url)
    try:
        check_storage(spec, workers=2)
    except StorageError as error:
        pytest.skip(f"{ENV} is set but the server is unreachable: {error}")
    return spec.location


def test_two_worker_processes_share_one_postgres_study(postgres_url: str, tmp_path: Path) -> None:
    setting = tmp_path / "pg-tuned.toml"
    setting.write_text(SETTING)
    study_name = f"pg-{uuid.uuid4().hex[:12]}"
    root = Path(__file__).parent.parent
    commands = [
        [
            sys.executable, "-m", "bench", "tune", "--setting", str(setting), "--method", "sgd",
            "--study", study_name, "--trials", str(TRIALS), "--storage", postgres_url,
            "--out", str(tmp_path / f"machine{i}"), "--sampler-seed", str(i), "--quiet",
        ]
        for i in range(2)
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(c, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for c in commands
    ]
    outputs = [p.communicate(timeout=300)[0].decode() for p in processes]
    storage = parse_storage(postgres_url).open()
    try:
        for process, output in zip(processes, outputs, strict=True):
            assert process.returncode == 0, output
        study = optuna.load_study(study_name=study_name, storage=storage)
        done = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
        numbers = [t.number for t in done]
        assert len(numbers) == TRIALS and len(set(numbers)) == TRIALS
        for trial in study.get_trials(states=(TrialState.FAIL,)):
            assert trial.user_attrs.get("surplus") is True, trial.user_attrs
        assert not study.get_trials(states=(TrialState.RUNNING,))
        for i in range(2):  # each machine wrote the study's outputs from the shared storage
            assert (tmp_path / f"machine{i}" / "studies" / study_name / "best.json").is_file()
    finally:
        optuna.delete_study(study_name=study_name, storage=storage)
