"""The command line as a user meets it: ``python -m bench ...`` in a subprocess.

A user's mistake must end in one line on stderr that starts with ``error:`` and names
what was wrong, with exit status 2, never a Python traceback; the usage names the
program the user typed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.slow
def test_user_mistakes_are_one_line_with_status_2(tmp_path: Path) -> None:
    line = one_error_line(bench("run", "--suite", "smok", "--out", str(tmp_path)))
    assert "'smok'" in line and "smoke" in line  # names the bad value and the allowed ones

    line = one_error_line(bench("run", "--suite", "smoke", "--only", "zzz", "--dry-run"))
    assert "--only 'zzz'" in line and "sgd/cnn-tiny/digits/seed0" in line

    bad = tmp_path / "bad.toml"
    bad.write_text(
        (ROOT / "bench/suites/smoke.toml").read_text().replace("epochs = 2", "epochz = 2")
    )
    line = one_error_line(bench("run", "--suite", str(bad), "--dry-run"))
    assert str(bad) in line and "epochz" in line and "epochs" in line


@pytest.mark.slow
def test_cuda_without_cuda_and_missing_data_file(tmp_path: Path) -> None:
    line = one_error_line(
        bench("run", "--suite", "smoke", "--device", "cuda", "--out", str(tmp_path / "o"))
    )
    assert "--device cuda" in line and "cpu or auto" in line
    suite = tmp_path / "mnist.toml"
    suite.write_text(
        (ROOT / "bench/suites/smoke.toml")
        .read_text()
        .replace('datasets = ["digits"]', 'datasets = ["mnist"]')
        .replace("[data]", f'[data]\nroot = "{tmp_path / "no-data"}"')
    )
    line = one_error_line(
        bench("run", "--suite", str(suite), "--device", "cpu", "--out", str(tmp_path / "o"))
    )
    assert "mnist" in line


def test_usage_names_the_program_and_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The real entry point names itself (a subprocess that loads no command: fast) ...
    version = bench("--version")
    assert version.returncode == 0 and version.stdout.startswith("python -m bench ")
    # ... and a typo in a command's flags gets that command's usage, under the same name
    # (in this process: a subprocess would spend seconds importing torch and MLflow).
    from bench.cli import main

    monkeypatch.setattr(sys, "argv", [str(ROOT / "bench" / "__main__.py")])
    with pytest.raises(SystemExit) as stop:
        main(["run", "--suite", "smoke", "--onyl", "x"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m bench run ")
    assert "unrecognized arguments: --onyl x" in err.splitlines()[-1]


def test_console_script_shows_its_own_name() -> None:
    from bench.cli import program_name

    assert program_name("/usr/local/bin/pmp-bench") == "pmp-bench"
    assert program_name(str(ROOT / "bench" / "__main__.py")) == "python -m bench"


@pytest.mark.slow
def test_list_and_dry_run(tmp_path: Path) -> None:
    from bench.runner import cell_key
    from bench.suites import load_suite

    listing = bench("list")
    assert listing.returncode == 0
    for name in ("smoke", "bsqh", "prox-sgd-l0", "lenet5", "fashion-mnist"):
        assert f"  {name} " in listing.stdout
    dry = bench("run", "--suite", "smoke", "--dry-run", "--out", str(tmp_path))
    assert dry.returncode == 0 and not (tmp_path / "smoke").exists()  # nothing trained
    for cell in load_suite("smoke").cells():
        line = next(l for l in dry.stdout.splitlines() if cell.name in l)
        assert cell_key(cell) in line and "to run" in line
    assert "0 done, 4 to run" in dry.stdout


def test_internal_errors_are_one_line_unless_debug(monkeypatch, capsys) -> None:
    from bench import cli
    from bench.commands import listing

    def broken(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(listing, "run", broken)
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RuntimeError: boom" in err[0] and "--debug" in err[0]
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["list", "--debug"])
