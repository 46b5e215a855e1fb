"""The code version: a hash of the training code's import closure (bench.ledger.import_closure)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.ledger.identity import config_key
from bench.ledger.import_closure import (
    PROJECT_PACKAGES,
    REPOSITORY_ROOT,
    closure_files,
    code_version,
    version_of,
)
from bench.suites import Cell, load_suite


def quick_cell() -> Cell:
    return load_suite("quick").cells()[0]


def copy_of_packages(tmp_path: Path) -> Path:
    """This checkout's packages in a folder of their own, to edit."""
    for package in PROJECT_PACKAGES:
        shutil.copytree(
            REPOSITORY_ROOT / package,
            tmp_path / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    return tmp_path


def edited(root: Path, relative: str) -> str:
    """The code version of ``root`` with a comment appended to one of its files."""
    path = root / relative
    original = path.read_bytes()
    path.write_bytes(original + b"\n# an edit\n")
    try:
        return version_of(root=root)
    finally:
        path.write_bytes(original)


def test_the_closure_holds_the_training_code_metrics_and_methods_but_no_report() -> None:
    files = set(closure_files())
    for needed in (
        "bench/training/loop.py",
        "bench/training/metrics.py",  # how a figure is computed
        "bench/ledger/checkpoints.py",  # what a resumed cell continues from
        "bench/data/splits.py",
        "bench/training/models.py",
        "bench/training/budget.py",
        "bench/suites.py",  # a cell's specification
        "optimizers/bsqh.py",
        "optimizers/emsa.py",  # imported only as `from . import emsa` (relative)
        "bench/__init__.py",  # importing bench.training runs it
    ):
        assert needed in files, needed
    assert not [
        f for f in files if f.startswith(("bench/report/", "bench/commands/", "bench/tracking/"))
    ]
    assert "bench/cli.py" not in files
    assert files == set(closure_files())  # deterministic


def test_the_version_is_the_same_for_the_same_tree_in_another_folder(tmp_path: Path) -> None:
    root = copy_of_packages(tmp_path)
    assert closure_files(root=root) == closure_files()
    assert version_of(root=root) == code_version()


@pytest.mark.parametrize(
    "module",
    [
        "bench/training/metrics.py",
        "bench/ledger/checkpoints.py",
        "bench/data/loaders.py",
        "bench/training/loop.py",
        "bench/ledger/identity.py",
        "optimizers/regularizers.py",
        "optimizers/__init__.py",
    ],
)
def test_editing_a_training_module_changes_the_keys(tmp_path: Path, module: str) -> None:
    root = copy_of_packages(tmp_path)
    config = quick_cell().config()
    before = config_key(config, version_of(root=root))
    assert config_key(config, edited(root, module)) != before


@pytest.mark.slow
def test_editing_any_module_in_the_closure_changes_the_version(tmp_path: Path) -> None:
    root = copy_of_packages(tmp_path)
    before = version_of(root=root)
    for module in closure_files(root=root):
        assert edited(root, module) != before, module


@pytest.mark.parametrize(
    "module",
    [
        "bench/report/figures.py",
        "bench/report/stats.py",
        "bench/cli.py",
        "bench/tracking/sync.py",
        "bench/runner.py",
    ],
)
def test_editing_a_report_module_keeps_the_keys(tmp_path: Path, module: str) -> None:
    root = copy_of_packages(tmp_path)
    assert edited(root, module) == version_of(root=root)


def test_a_module_training_starts_importing_joins_the_closure(tmp_path: Path) -> None:
    """No list to keep: a new import (even inside a function) is followed."""
    root = copy_of_packages(tmp_path)
    (root / "bench" / "extra_figure.py").write_text("SCALE = 1\n")
    assert "bench/extra_figure.py" not in closure_files(root=root)
    training = root / "bench" / "training" / "loop.py"
    training.write_text(
        training.read_text() + "\n\ndef _scale():\n    from ..extra_figure import SCALE\n"
    )
    assert "bench/extra_figure.py" in closure_files(root=root)
    assert edited(root, "bench/extra_figure.py") != version_of(root=root)


def test_every_module_of_the_training_package_counts_even_unimported(tmp_path: Path) -> None:
    root = copy_of_packages(tmp_path)
    (root / "bench" / "training" / "schedule.py").write_text("WARMUP = 0\n")
    assert "bench/training/schedule.py" in closure_files(root=root)


def test_a_missing_training_module_is_an_error(tmp_path: Path) -> None:
    root = copy_of_packages(tmp_path)
    with pytest.raises(ValueError, match=r"bench\.nothing"):
        version_of(("bench.nothing",), root)
