"""Adding a method touches no file of ours: a plugin module, its entry point, a suite entry.

The toy method (``tests/toy_method.py``) is registered through the entry-point group
``pmp_bench.methods`` of a package whose metadata the test writes on ``sys.path``, as an
installed distribution would have it; the bench then lists, tunes, trains and reports it
with the search space, runtime options and traits the module declares.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import optimizers
from bench.cli import main
from bench.report.frames import penalty_family
from bench.tracking.colours import run_colour
from bench.tuning.spaces import knob_asymmetries, space_for, tunable_methods
from optimizers import registry

TOY = "toy-sign-l0"
MODULE = "tests.toy_method"


def install(folder: Path, entry: str = f"toy = {MODULE}") -> None:
    """The metadata an installed distribution with that entry point has."""
    info = folder / "pmp_bench_toy-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pmp-bench-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{entry}\n")


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch):
    """The registry as it is now, restored afterwards (the plugin's names leave with it)."""
    optimizers.available()  # the built-in methods, loaded
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    monkeypatch.setattr(registry, "_LOADED", set(registry._LOADED))
    yield
    sys.modules.pop(MODULE, None)


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_registry) -> str:
    install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert TOY not in optimizers.available()
    optimizers.load_methods()
    return TOY


def test_an_entry_point_registers_a_method_with_what_its_module_declares(toy: str) -> None:
    assert toy in optimizers.available()
    assert optimizers.runtime_options(toy) == ("loss_fn",)  # read from its constructor
    assert optimizers.hyperparameters(toy) == {"lr": 0.01, "beta": 1e-4}
    assert optimizers.traits(toy).colour == "#0a0b0c" and run_colour(toy) == "#0a0b0c"
    assert penalty_family({"method": toy, "hparams": {"beta": 1e-3}}) == "L0, beta=0.001"
    space = space_for(toy)
    assert toy in tunable_methods() and space.names() == ["lr", "beta"]
    assert (space.params[0].low, space.params[0].high, space.params[0].log) == (1e-3, 1e-1, True)
    assert knob_asymmetries() == []
    optimizers.load_methods()  # loading again registers nothing twice
    assert optimizers.available().count(toy) == 1


def test_a_plugin_that_fails_to_import_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, isolated_registry
) -> None:
    install(tmp_path / "site", entry="broken = tests.no_such_module")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(registry.PluginError, match=r"plugin 'broken' \(tests.no_such_module"):
        optimizers.load_methods()
    # A fresh process (nothing loaded yet) fails at its first look-up: the CLI says so on
    # one line, exit status 2.
    monkeypatch.setattr(registry, "_LOADED", set())
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: method plugin 'broken'") and err.count("\n") == 1


def test_unknown_traits_are_refused_with_the_allowed_ones() -> None:
    with pytest.raises(TypeError, match=r"unknown register\(\) keyword.*colour"):
        optimizers.register("never", hparams=optimizers.SGDHParams, color="#000000")
    with pytest.raises(ValueError, match=r"penalty must be one of \['l0', 'l1', 'l0-gates'\]"):
        optimizers.Traits(penalty="l2")


def toy_suite() -> str:
    """The tuning tests' setting, with the toy method as its one entry."""
    from tests.test_tuning import SETTING

    head = SETTING.split("[[methods]]")[0].replace('name = "tiny-tuned"', 'name = "toy"')
    return head + f'[[methods]]\nname = "{TOY}"\nbatch_size = 64\nhparams = "tuned:toy-{TOY}"\n'


@pytest.mark.slow
def test_the_bench_tunes_trains_and_reports_a_plugin_method(toy: str, tmp_path: Path) -> None:
    suite = tmp_path / "toy.toml"
    suite.write_text(toy_suite())
    out = tmp_path / "out"
    tune = ["tune", "--setting", str(suite), "--out", str(out), "--quiet", "--method", toy]
    assert main([*tune, "--trials", "2"]) == 0
    assert (out / "studies" / f"toy-{toy}" / "best.json").is_file()
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    assert main(["report", "--suite", str(suite), "--out", str(out)]) == 0
    report = (out / "toy" / "REPORT.md").read_text()
    assert f"| {toy} |" in report
