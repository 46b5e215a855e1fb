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

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.suites import (
    SAFE_NAME_RULE,
    Cell,
    MethodSpec,
    SuiteError,
    is_safe_name,
    load_suite,
    read_toml,
    resolve_toml,
)
from bench.training.numerics import DEFAULT_PRECISION

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


@dataclass(frozen=True)
class Setting:
    """Everything but the hyperparameters that determines a trial's result."""

    name: str
    dataset: str
    data: dict[str, Any]
    model: str
    model_options: dict[str, Any]
    budget: dict[str, float]
    eval_every_epochs: float
    train_eval_size: int
    seed: int = 0
    targets: tuple[Target, ...] = field(default=())
    precision: str = DEFAULT_PRECISION  # the suite's, so trials train as the tuned suite will

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
        spec = MethodSpec(
            label=target.label,
            name=target.method,
            mode=target.mode,
            batch_size=target.batch_size,
            chunk_size=target.chunk_size,
            hparams=hparams,
            tuned_from=None,
        )
        return Cell(
            suite=f"tune:{target.study}",
            method=spec,
            model=self.model,
            model_options=self.model_options,
            dataset=self.dataset,
            data=self.data,
            seed=self.seed,
            budget=self.budget,
            eval_every_epochs=self.eval_every_epochs,
            train_eval_size=self.train_eval_size,
            precision=self.precision,
        )

    def fingerprint(self, target: Target) -> dict[str, Any]:
        """What must not change when a study is resumed (stored as a study user attr)."""
        return json.loads(
            json.dumps(
                {
                    "dataset": self.dataset,
                    "data": self.data,
                    "model": self.model,
                    "model_options": self.model_options,
                    "budget": self.budget,
                    "eval_every_epochs": self.eval_every_epochs,
                    "train_eval_size": self.train_eval_size,
                    "precision": self.precision,
                    "seed": self.seed,
                    "method": target.method,
                    "mode": target.mode,
                    "batch_size": target.batch_size,
                    "chunk_size": target.chunk_size,
                },
                sort_keys=True,
            )
        )


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
        dataset=dataset,
        data=dict(suite.data[dataset]),
        model=model,
        model_options=dict(suite.model_options.get(model, {})),
        budget=dict(suite.budget),
        eval_every_epochs=suite.eval_every_epochs,
        train_eval_size=suite.train_eval_size,
        precision=suite.precision,
        seed=seed,
        targets=tuple(
            Target(m.label, m.name, m.mode, m.batch_size, m.chunk_size, str(m.tuned_from))
            for m in suite.methods
        ),
    )
