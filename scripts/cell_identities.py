"""Print the identity of every cell the shipped suites define, as JSON, for comparisons.

A refactoring that must keep results identical must keep these identical too: the
configuration of every cell of every shipped suite (as its ledger record writes it, key
order included), the cell key under a fixed code version (so only the configuration
counts), the calibration cells of the matched suites, and per tuning setting the
fingerprint a resumed study is checked against and the configuration of a trial.
Run it before and after a change and compare the two outputs byte for byte::

    PYTHONPATH=. python scripts/cell_identities.py > before.json
    ... change ...
    PYTHONPATH=. python scripts/cell_identities.py > after.json
    cmp before.json after.json

Suites whose methods use ``hparams = "tuned:<study>"`` are read with empty tuned settings
(the defaults of each method), since the studies need not exist.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.ledger.identity import config_key
from bench.matched.study import CALIBRATION_SEED, calibration_cell, check_suite, sparsity_knob
from bench.suites import TUNED_PREFIX, available_suites, load_suite, read_toml, resolve_suite_path
from bench.tuning.settings import SettingError, load_setting

#: The code version the keys are computed with: fixed, so that only configurations count.
FIXED_CODE = "fixed-code-version"


def placeholder_studies(raw: dict[str, Any], folder: Path) -> None:
    """An empty ``best.json`` for every study the suite refers to."""
    for entry in raw.get("methods") or []:
        hparams = entry.get("hparams")
        if isinstance(hparams, str) and hparams.startswith(TUNED_PREFIX):
            study = folder / hparams[len(TUNED_PREFIX) :]
            study.mkdir(parents=True, exist_ok=True)
            (study / "best.json").write_text('{"params": {}}')


def described(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "config": json.dumps(config, indent=1),
        "key": config_key(config, FIXED_CODE),
    }


def suite_identities(name: str) -> dict[str, Any]:
    path = resolve_suite_path(name)
    with tempfile.TemporaryDirectory() as tmp:
        placeholder_studies(read_toml(path, ValueError), Path(tmp))
        suite = load_suite(path, studies_dir=Path(tmp))
    out: dict[str, Any] = {"cells": {c.name: described(c.config()) for c in suite.cells()}}
    try:
        check_suite(suite)
    except ValueError:
        return out
    out["calibration"] = {
        method.label: described(
            calibration_cell(suite, method, sparsity_knob(method), 0.5).config()
        )
        for method in suite.methods
    }
    out["calibration_seed"] = CALIBRATION_SEED
    return out


def setting_identities(name: str) -> dict[str, Any] | None:
    try:
        setting = load_setting(resolve_suite_path(name), seed=3)
    except SettingError:
        return None
    return {
        target.label: {
            "fingerprint": json.dumps(setting.fingerprint(target), sort_keys=True),
            "trial": described(setting.cell(target, {"lr": 0.25}).config()),
        }
        for target in setting.targets
    }


def main() -> None:
    report = {
        name: {"suite": suite_identities(name), "setting": setting_identities(name)}
        for name in available_suites()
    }
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
