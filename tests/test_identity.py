"""A cell's identity: configuration, key and tuning fingerprint derived from its fields."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pytest

from bench.ledger import identity
from bench.ledger.identity import cell_key, config_key, configuration, fingerprint
from bench.ledger.import_closure import code_version
from bench.suites import Cell, MethodSpec, Setup, load_suite
from bench.tuning.settings import load_setting


def quick_cell() -> Cell:
    return load_suite("quick").cells()[0]


def test_the_key_hashes_the_configuration_and_this_code_version() -> None:
    cell = quick_cell()
    assert cell_key(cell) == config_key(cell.config(), code_version())
    assert config_key(cell.config(), "other code") != cell_key(cell)


def changed(value: Any) -> Any:
    """A value of the same kind that differs from ``value``."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, dict):
        return {**value, "extra": 1}
    return "set"  # None


def test_every_field_but_the_suite_is_part_of_the_key() -> None:
    cell = quick_cell()
    key = cell_key(cell)
    for spec_field in fields(MethodSpec):
        other = replace(
            cell,
            method=replace(
                cell.method, **{spec_field.name: changed(getattr(cell.method, spec_field.name))}
            ),
        )
        assert cell_key(other) != key, spec_field.name
    for spec_field in fields(Setup):
        other = replace(cell, **{spec_field.name: changed(getattr(cell, spec_field.name))})
        assert cell_key(other) != key, spec_field.name
    assert cell_key(replace(cell, suite="another-suite")) == key  # filed elsewhere, same run


def test_the_configuration_is_the_flattened_specification_under_its_names() -> None:
    cell = quick_cell()
    config = configuration(cell)
    assert config["method"] == cell.method.name and "name" not in config
    assert config["hparams"] == cell.method.hparams
    assert "suite" not in config
    expected = len(fields(MethodSpec)) + len(fields(Setup))
    assert len(config) == expected


def test_a_field_added_to_the_specification_is_part_of_the_identity() -> None:
    @dataclass(frozen=True, kw_only=True)
    class AugmentedCell(Cell):
        augmentation: str = "none"
        note: str = field(default="", metadata=identity.OUTSIDE)

    plain = AugmentedCell(**{f.name: getattr(quick_cell(), f.name) for f in fields(Cell)})
    flipped = replace(plain, augmentation="flip")
    assert configuration(flipped)["augmentation"] == "flip"
    assert cell_key(flipped) != cell_key(plain)
    assert fingerprint(flipped) != fingerprint(plain)
    assert cell_key(replace(plain, note="ignored")) == cell_key(plain)


def test_two_fields_under_one_name_are_refused() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Clashing(Cell):
        label: str = "clash"  # the method's label is already in the configuration

    with pytest.raises(TypeError, match="'label'"):
        configuration(Clashing(**{f.name: getattr(quick_cell(), f.name) for f in fields(Cell)}))


def test_the_fingerprint_is_the_trial_identity_less_what_a_study_varies() -> None:
    setting = load_setting("quick")
    target = setting.targets[0]
    stored = setting.fingerprint(target)
    trial = setting.cell(target, {"lr": 0.5})
    assert fingerprint(trial) == stored  # hyperparameters vary between trials
    assert set(stored) == set(trial.config()) - {"label", "hparams", "tuned_from"}
    assert stored["seed"] == setting.seed and stored["method"] == target.method
    assert replace(setting, seed=7).fingerprint(target) != stored
    assert replace(setting, budget={"epochs": 1.0}).fingerprint(target) != stored
    assert setting.fingerprint(replace(target, batch_size=7)) != stored
    assert setting.fingerprint(replace(target, label="renamed")) == stored


def test_every_builder_of_a_cell_takes_the_setup_whole(tmp_path: Path) -> None:
    """The tuned suite's grid, a trial of its setting and a calibration run train alike."""
    from bench.matched.study import CALIBRATION_SEED, calibration_cell

    setting = load_setting("quick", seed=3)
    for target in setting.targets:  # the tuned settings the suite refers to
        (tmp_path / target.study).mkdir()
        (tmp_path / target.study / "best.json").write_text('{"params": {}}')
    suite = load_suite("quick-tuned", studies_dir=tmp_path)
    cell = next(c for c in suite.cells() if c.seed == 3)
    assert setting.setup() == cell.setup()
    assert setting.cell(setting.targets[0], {}).setup() == cell.setup()
    calibration = calibration_cell(suite, suite.methods[0], "lr", 0.1)
    assert calibration.setup() == replace(cell.setup(), seed=CALIBRATION_SEED)
    assert calibration.config()["hparams"]["lr"] == 0.1
