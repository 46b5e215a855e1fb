"""Faults a probe of bad inputs and signals found: each is refused or survived cleanly.

A user's mistake (a suite name that would escape ``--out``, a file that is not UTF-8, a
tuned-settings file cut short, a data option out of range, a ledger record of the
wrong shape) ends in one ``error:`` line with exit status 2, or in a quarantined record
that is trained again; nothing is written outside the output folder; SIGTERM takes the
path of Ctrl-C.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from bench.cli import main
from tests.test_inputs import suite_text


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single ``error:`` line a user's mistake prints (never an internal error)."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "internal error" not in err and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------- names and paths


@pytest.mark.parametrize(
    "name",
    ["../escaped", "{tmp}/absolute-suite", "a\\u0000b", "o'q", "a b", ".hidden", "x" * 101, ""],
)
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_suite_name_that_is_no_plain_folder_name_is_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, dry_run: bool
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    path = work / "s.toml"
    name = name.format(tmp=tmp_path)  # an absolute path: must not escape the test's folder
    path.write_text(suite_text().replace('name = "t"', f'name = "{name}"'))
    before = files_under(tmp_path)
    args = ["run", "--suite", str(path), "--out", str(work / "out"), "--no-progress"]
    assert main(args + (["--dry-run"] if dry_run else [])) == 2
    assert "key 'name'" in one_error_line(capsys)
    assert files_under(tmp_path) == before


def test_a_tuned_study_name_outside_the_studies_folder_is_refused_before_any_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    (tmp_path / "system-tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-tmp"))
    work.mkdir()
    path = work / "s-tuned.toml"
    path.write_text(suite_text(hparams='"tuned:../../escaped-study"'))
    before = files_under(tmp_path)
    code = main(["tune-all", "--setting", str(path), "--out", str(work / "out"), "--trials", "1"])
    assert code == 2
    assert "escaped-study" in one_error_line(capsys)
    assert files_under(tmp_path) == before
    assert main(["run", "--suite", str(path), "--out", str(work / "out"), "--dry-run"]) == 2
    assert "study name" in one_error_line(capsys)


# --------------------------------------------------------------------------- files a user wrote


def test_a_suite_file_that_is_not_utf8_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(suite_text(top='description = "caf\xe9"').encode("latin-1"))
    assert main(["run", "--suite", str(path), "--out", str(tmp_path), "--dry-run"]) == 2
    err = one_error_line(capsys)
    assert str(path) in err and "UTF-8" in err and "0xe9" in err


def test_truncated_tuned_settings_are_named_with_the_remedy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    best = tmp_path / "out" / "studies" / "mine" / "best.json"
    best.parent.mkdir(parents=True)
    best.write_text('{"params": {"lr": 0.')
    path = tmp_path / "s.toml"
    path.write_text(suite_text(hparams='"tuned:mine"'))
    assert main(["run", "--suite", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = one_error_line(capsys)
    assert str(best) in err and "bench tune --study mine" in err
