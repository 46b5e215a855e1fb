"""What a study trains: data, model, budget and the method's batch setup.

Why settings come from suite files: ``make tune`` must tune every method with exactly the
data and budget that ``make bench SUITE=quick-tuned`` then evaluates on test. So a
*setting* is a suite file whose methods all say ``hparams = "tuned:<study>"``
(``bench/suites/quick-tuned.toml`` is the setting ``quick``); the tuner reads its
dataset, data options, model, budget, evaluation cadence and, per method, the label,
mode, batch size and study name. The suite and the tuner therefore cannot drift apart,
and the study names the suite refers to are the ones ``tune-all`` creates.

Settings are validated with :func:`bench.suites.load_suite` itself (its ``tuned:``
references are pointed at placeholder settings during validation), so a setting file
obeys every rule of a suite file. Tuning trains with ``seed`` (default 0, not the
suite's seeds: the benchmark's seeds are fresh, so its test numbers are not the luck of
the initialisation the tuner selected on).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.ledger.identity import fingerprint
from bench.suites import (
    SAFE_NAME_RULE,
    Cell,
    MethodSpec,
    Setup,
    SuiteError,
    is_safe_name,
    load_suite,
    read_toml,
    resolve_toml,
)

#: ``--setting NAME`` resolves to ``bench/suites/<NAME><SETTING_SUFFIX>.toml``.
SETTING_SUFFIX = "-tuned"


class SettingError(ValueError):
    """A setting (or a CLI replacement for one) is invalid."""


@dataclass(frozen=True)
class Target:
    """One method to tune, in one mode, with its batch setup and the study's name."""

    label: str
    method: str
    mode: str
    batch_size: int | None
    chunk_size: int | None
    study: str

    def spec(self, hparams: dict[str, Any]) -> MethodSpec:
        """The method of one trial: this entry with ``hparams``."""
        return MethodSpec(
            label=self.label,
            name=self.method,
            mode=self.mode,
            batch_size=self.batch_size,
            chunk_size=self.chunk_size,
            hparams=hparams,
        )


@dataclass(frozen=True, kw_only=True)
class Setting(Setup):
    """Everything but the hyperparameters that determines a trial's result: a setup
    (trained with ``seed``) and the methods to tune in it."""

    name: str
    seed: int = 0
    targets: tuple[Target, ...] = field(default=())

    def target(self, method: str, mode: str | None = None) -> Target:
        """The entry for ``method`` (a registry name or a label), disambiguated by mode."""
        found = [t for t in self.targets if t.label == method]
        if not found:
            found = [t for t in self.targets if t.method == method]
        if mode is not None:
            found = [t for t in found if t.mode == mode]
        labels = ", ".join(f"{t.label} ({t.method}, {t.mode})" for t in self.targets)
        if not found:
            raise SettingError(
                f"setting {self.name!r} has no entry for method {method!r}"
                + (f" in mode {mode!r}" if mode else "")
                + f"; its entries: {labels}"
            )
        if len(found) > 1:
            raise SettingError(
                f"setting {self.name!r} has several entries for {method!r}: pass --mode or "
                f"one of the labels: {', '.join(t.label for t in found)}"
            )
        return found[0]

    def cell(self, target: Target, hparams: dict[str, Any]) -> Cell:
        """The training cell of one trial."""
        return Cell.of(self, suite=f"tune:{target.study}", method=target.spec(hparams))

    def fingerprint(self, target: Target) -> dict[str, Any]:
        """What must not change when a study is resumed (stored as a study user attr):
        a trial's identity less what varies between trials (:mod:`bench.ledger.identity`)."""
        return fingerprint(self.cell(target, {}))


def resolve_setting_path(name_or_path: str | Path) -> Path:
    """A shipped setting name (``quick``) or the path of a setting file."""
    return resolve_toml(
        name_or_path,
        suffix=SETTING_SUFFIX,
        what="setting",
        error=SettingError,
        hint='or pass the path of a suite file whose methods use hparams = "tuned:<study>"',
    )


def load_setting(name_or_path: str | Path, *, seed: int = 0) -> Setting:
    """Read a setting from a suite file whose every method is ``tuned:<study>``."""
    path = resolve_setting_path(name_or_path)
    raw = read_toml(path, SettingError)
    studies = []
    for i, entry in enumerate(raw.get("methods") or []):
        hparams = entry.get("hparams") if isinstance(entry, dict) else None
        if not (isinstance(hparams, str) and hparams.startswith("tuned:") and len(hparams) > 6):
            raise SettingError(
                f'{path}: methods[{i}].hparams must be "tuned:<study>" in a setting file, '
                f"got {hparams!r}"
            )
        study = hparams[len("tuned:") :]
        if not is_safe_name(study):  # checked before it names a placeholder folder below
            raise SettingError(
                f"{path}: methods[{i}].hparams: the study name {SAFE_NAME_RULE}; got {study!r}"
            )
        studies.append(study)
    with tempfile.TemporaryDirectory() as tmp:
        for study in studies:  # placeholders: validate the file without tuned settings
            (Path(tmp) / study).mkdir(parents=True, exist_ok=True)
            (Path(tmp) / study / "best.json").write_text('{"params": {}}')
        try:
            suite = load_suite(path, studies_dir=Path(tmp))
        except SuiteError as error:
            raise SettingError(str(error)) from None
    if len(suite.datasets) != 1 or len(suite.models) != 1:
        raise SettingError(
            f"{path}: a setting needs exactly one dataset and one model, got datasets "
            f"{suite.datasets} and models {suite.models}"
        )
    if len(set(studies)) != len(studies):
        raise SettingError(f"{path}: two methods refer to the same study: {studies}")
    dataset, model = suite.datasets[0], suite.models[0]
    name = path.stem[: -len(SETTING_SUFFIX)] if path.stem.endswith(SETTING_SUFFIX) else path.stem
    return Setting(
        name=name,
        targets=tuple(
            Target(m.label, m.name, m.mode, m.batch_size, m.chunk_size, str(m.tuned_from))
            for m in suite.methods
        ),
        **vars(suite.setup_of(dataset, model, suite.budget, seed)),
    )
