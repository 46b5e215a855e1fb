"""Suite files (TOML): the grid of a benchmark, validated on load.

A bad file fails at once, naming the file, the key and the problem, before any data is
loaded or any model trained. Layout (every key documented in docs/suites.md)::

    name = "quick"                    # a plain folder name; MLflow experiment "pmp-bench/<name>"
    description = "..."
    datasets = ["fashion-mnist"]
    models = ["lenet5"]
    seeds = [0, 1]
    target_accuracy = 0.8             # optional: the report's time-to-accuracy column
    precision = "float32"             # optional: "float32" (default) or "tf32", CUDA only

    [data]                            # load_dataset options for every dataset ...
    train_subset = 6000
    [data.mnist]                      # ... overridden per dataset
    train_subset = 10000

    [model_options.lenet5]            # build_model options per model
    act = "tanh"

    [budget]                          # per cell: exactly one clock-free count (training.budget)
    epochs = 3                        # or steps = N, or passes = N (forward + backward)
    safety_cap_seconds = 60           # optional safety net: a cell that hits it is `capped`

    [eval]
    every_epochs = 0.5                # evaluation cadence (full-batch: every k iterations)
    train_eval_size = 2000            # training samples used for the train objective

    [[methods]]
    label = "bsqh-mb"                 # unique within the suite; defaults to name
    name = "bsqh"                     # an optimizers registry name
    mode = "minibatch"                # or "fullbatch"
    batch_size = 128                  # mini-batch only
    chunk_size = 2000                 # full-batch only, optional
    hparams = { eps = 1.0, beta = 1e-4 }   # or "tuned:<study>"
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from itertools import product
from pathlib import Path
from typing import Any

import torch

import optimizers
from bench.data import SPLIT_OPTIONS, available_datasets, check_data_option
from bench.data.registry import ensure_dataset_name
from bench.ledger.identity import OUTSIDE, VARIED, configuration, renamed
from bench.training.budget import KEYS as BUDGET_KEYS
from bench.training.budget import RETIRED as RETIRED_BUDGET_KEYS
from bench.training.budget import UNITS as BUDGET_UNITS
from bench.training.budget import Budget, BudgetError
from bench.training.models import available_models, check_model_options, ensure_model
from bench.training.numerics import DEFAULT_PRECISION, check_precision

SUITES_DIR = Path(__file__).parent / "suites"
MODES = ("minibatch", "fullbatch")
TUNED_PREFIX = "tuned:"

_TOP_KEYS = {
    "name",
    "description",
    "datasets",
    "models",
    "seeds",
    "target_accuracy",
    "precision",
    "data",
    "model_options",
    "budget",
    "eval",
    "methods",
}
_METHOD_KEYS = {"label", "name", "mode", "batch_size", "chunk_size", "hparams"}
_EVAL_KEYS = {"every_epochs", "train_eval_size"}
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
#: Defaults of ``[eval]``, shared with ``bench tune``'s flags so a study and a suite
#: without an ``[eval]`` table evaluate alike.
DEFAULT_EVAL_EVERY_EPOCHS = 0.5
DEFAULT_TRAIN_EVAL_SIZE = 2000


#: Suite and study names: they name folders under ``--out`` and appear in MLflow filter
#: strings, so no separator, no ``..``, no quote, no NUL byte, no leading dot.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SAFE_NAME_RULE = (
    "must start with a letter or digit and contain only letters, digits, '.', '_' and '-' "
    "(at most 100 characters: it names a folder under --out)"
)


class SuiteError(ValueError):
    """A suite file is invalid; the message names the file, the key and the problem."""


def is_safe_name(name: object) -> bool:
    """Whether ``name`` may name a folder and be put in a filter string as it is."""
    return isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None


@dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """A method as a suite entry: registry name, batch setup and hyperparameters."""

    label: str = field(metadata=VARIED)
    name: str = field(metadata=renamed("method"))
    hparams: dict[str, Any] = field(metadata=VARIED)
    # The study (or calibration) that ``hparams`` came from.
    tuned_from: str | None = field(default=None, metadata=VARIED)
    mode: str
    batch_size: int | None
    chunk_size: int | None


@dataclass(frozen=True, kw_only=True)
class Setup:
    """What a method trains under: model, data, seed, budget, evaluation and precision.

    Shared by a cell (:class:`Cell`), a tuning setting (:class:`bench.tuning.settings.
    Setting`) and a matched study's calibration runs, which all take it whole
    (:meth:`Cell.of`), so none of them lists these fields again."""

    model: str
    model_options: dict[str, Any]
    dataset: str
    data: dict[str, Any]
    seed: int
    budget: dict[str, float]
    eval_every_epochs: float
    train_eval_size: int
    precision: str = DEFAULT_PRECISION

    def setup(self) -> Setup:
        """The setup alone, without what a subclass adds."""
        return Setup(**{f.name: getattr(self, f.name) for f in fields(Setup)})


@dataclass(frozen=True, kw_only=True)
class _Filed:
    """A method run for a suite: the fields a cell adds to its setup."""

    suite: str = field(metadata=OUTSIDE)  # names the ledger folder, not the result
    method: MethodSpec


@dataclass(frozen=True, kw_only=True)
class Cell(Setup, _Filed):
    """One training run: a method on a model and dataset with one seed.

    Its configuration, key and tuning fingerprint are derived from these fields by
    :mod:`bench.ledger.identity`. (A dataclass collects the last base's fields first, so the
    fields read suite, method, then the setup: the order the configuration keeps.)
    """

    @classmethod
    def of(cls, setup: Setup, *, suite: str, method: MethodSpec) -> Cell:
        """``method`` trained under ``setup``, filed in ``suite``."""
        return cls(suite=suite, method=method, **vars(setup.setup()))

    @property
    def name(self) -> str:
        return f"{self.method.label}/{self.model}/{self.dataset}/seed{self.seed}"

    def config(self) -> dict[str, Any]:
        """Everything that determines the cell's result (hashed into its key)."""
        return configuration(self)


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    description: str
    datasets: list[str]
    models: list[str]
    seeds: list[int]
    methods: list[MethodSpec]
    data: dict[str, dict[str, Any]]  # per dataset, defaults merged in
    model_options: dict[str, dict[str, Any]]
    budget: dict[str, float]
    eval_every_epochs: float
    train_eval_size: int
    target_accuracy: float | None = None
    precision: str = DEFAULT_PRECISION
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    # Several budgets make the budget an axis of the grid (a budget sweep); ``budget`` is
    # then the first of them (what a tuning setting read from this suite trains with).
    budgets: list[dict[str, float]] = field(default_factory=list)

    def grid_budgets(self) -> list[dict[str, float]]:
        """The budgets the grid spans: the axis, unless ``budget`` was since replaced by
        one outside it (``dataclasses.replace(suite, budget=...)`` sets one budget)."""
        return self.budgets if self.budget in self.budgets else [self.budget]

    def cells(self) -> list[Cell]:
        """The grid, in a stable order: dataset, model, budget, method, seed.

        With several budgets each method's label gets the budget as a suffix
        (``adam@20ep``), so every table and figure of the report keeps the cells of one
        budget together and says which one it is.
        """
        budgets = self.grid_budgets()
        return [
            Cell.of(
                self.setup_of(dataset, model, budget, seed),
                suite=self.name,
                method=method
                if len(budgets) == 1
                else replace(method, label=f"{method.label}@{budget_tag(budget)}"),
            )
            for dataset, model, budget, method, seed in product(
                self.datasets, self.models, budgets, self.methods, self.seeds
            )
        ]

    def setup_of(self, dataset: str, model: str, budget: dict[str, float], seed: int) -> Setup:
        """What a method trains under at one point of the grid: the one place where a
        suite's tables become a cell's setup (its data and model options per name)."""
        return Setup(
            model=model,
            model_options=self.model_options.get(model, {}),
            dataset=dataset,
            data=self.data[dataset],
            seed=seed,
            budget=budget,
            eval_every_epochs=self.eval_every_epochs,
            train_eval_size=self.train_eval_size,
            precision=self.precision,
        )


def budget_tag(budget: dict[str, float]) -> str:
    """The short form of a budget in a label: ``6ep``, ``300st``, ``20000pa``."""
    unit = Budget.from_config(budget).unit
    return f"{budget[unit]:g}{BUDGET_TAGS[unit]}"


BUDGET_TAGS = {"epochs": "ep", "steps": "st", "passes": "pa"}


def available_suites() -> list[str]:
    """Names of the suite files shipped in ``bench/suites``."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def resolve_toml(
    name_or_path: str | Path,
    *,
    suffix: str = "",
    what: str = "suite",
    error: type[ValueError] = ValueError,
    hint: str = "or pass the path of a .toml file",
) -> Path:
    """A path to an existing file, or the name of a file shipped in ``bench/suites``.

    ``suffix`` narrows the shipped files to ``<name><suffix>.toml`` (tuning settings).
    """
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise error(f"{what} file {path} does not exist")
        return path
    shipped = SUITES_DIR / f"{name_or_path}{suffix}.toml"
    if not shipped.is_file():
        names = sorted(p.name[: -len(f"{suffix}.toml")] for p in SUITES_DIR.glob(f"*{suffix}.toml"))
        raise error(
            f"unknown {what} {str(name_or_path)!r}; shipped {what}s: {', '.join(names)} ({hint})"
        )
    return shipped


def resolve_suite_path(name_or_path: str | Path) -> Path:
    """A path to an existing file, or the name of a shipped suite."""
    return resolve_toml(name_or_path, error=SuiteError)


def load_suite(name_or_path: str | Path, *, studies_dir: Path | None = None) -> Suite:
    """Load and validate a suite; ``studies_dir`` resolves ``hparams = "tuned:<study>"``."""
    path = resolve_suite_path(name_or_path)
    return _Validator(path, studies_dir).suite(read_toml(path, SuiteError))


def read_toml(path: Path, error: type[ValueError]) -> dict[str, Any]:
    """A TOML file's table; a file that is not UTF-8 TOML raises ``error`` naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as problem:
        raise error(
            f"{path}: not UTF-8 text (byte {problem.object[problem.start]:#04x} at offset "
            f"{problem.start}); TOML files must be UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as problem:
        raise error(f"{path}: not valid TOML: {problem}") from None
    except OSError as problem:
        raise error(f"{path}: cannot be read: {problem.strerror or problem}") from None


class _Validator:
    def __init__(self, path: Path, studies_dir: Path | None) -> None:
        self.path = path
        self.studies_dir = studies_dir

    def fail(self, key: str, problem: str) -> SuiteError:
        return SuiteError(f"{self.path}: key '{key}': {problem}")

    def keys(self, table: Any, allowed: set[str], where: str) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise self.fail(where, f"must be a table, got {table!r}")
        unknown = sorted(set(table) - allowed)
        if unknown:
            prefix = f"{where}." if where else ""
            raise self.fail(
                f"{prefix}{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}"
            )
        return table

    def names(self, raw: dict, key: str, known: list[str]) -> list[str]:
        value = raw.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(key, f"must be a non-empty list of names, got {value!r}")
        ensure = {"models": ensure_model, "datasets": ensure_dataset_name}.get(key)
        for item in value:
            if item in known:
                continue
            if ensure is None:
                raise self.fail(key, f"unknown name {item!r}; known: {', '.join(known)}")
            try:  # your own builder or loader (reference or entry point): checked now
                ensure(item)
            except ValueError as error:
                raise self.fail(key, str(error)) from None
        if len(set(value)) != len(value):
            raise self.fail(key, f"lists a name twice: {value!r}")
        return value

    def number(self, table: dict, key: str, where: str, *, integer: bool = False) -> float | None:
        """A positive finite number (or integer) at ``where.key``; None when absent."""
        value = table.get(key)
        if value is None:
            return None
        kind = int if integer else (int, float)
        if (
            isinstance(value, bool)
            or not isinstance(value, kind)
            or not math.isfinite(value)
            or value <= 0
        ):
            what = "a positive integer" if integer else "a positive number, not inf or nan,"
            raise self.fail(f"{where}.{key}", f"must be {what}, got {value!r}")
        return value

    def suite(self, raw: dict[str, Any]) -> Suite:
        self.keys(raw, _TOP_KEYS, "")
        name = raw.get("name")
        if not is_safe_name(name):
            raise self.fail("name", f"{SAFE_NAME_RULE}; got {name!r}")
        datasets = self.names(raw, "datasets", available_datasets())
        models = self.names(raw, "models", available_models())
        seeds = raw.get("seeds")
        if (
            not isinstance(seeds, list)
            or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
            or len(set(seeds)) != len(seeds)
        ):
            raise self.fail(
                "seeds", f"must be a non-empty list of distinct integers >= 0, got {seeds!r}"
            )
        target = raw.get("target_accuracy")
        if target is not None and (
            isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target <= 1
        ):
            raise self.fail("target_accuracy", f"must be a number in (0, 1], got {target!r}")
        try:
            precision = check_precision(raw.get("precision", DEFAULT_PRECISION))
        except ValueError as error:
            raise self.fail("precision", str(error)) from None

        budgets = self.budgets(raw.get("budget", {}))
        eval_raw = self.keys(raw.get("eval", {}), _EVAL_KEYS, "eval")
        every = self.number(eval_raw, "every_epochs", "eval") or DEFAULT_EVAL_EVERY_EPOCHS
        train_eval = (
            self.number(eval_raw, "train_eval_size", "eval", integer=True)
            or DEFAULT_TRAIN_EVAL_SIZE
        )

        data = self.data(raw.get("data", {}), datasets)
        model_options = self.model_options(raw.get("model_options", {}), models)
        methods = self.methods(raw.get("methods"))
        return Suite(
            name=name,
            path=self.path,
            description=str(raw.get("description", "")),
            datasets=datasets,
            models=models,
            seeds=seeds,
            methods=methods,
            data=data,
            model_options=model_options,
            budget=budgets[0],
            budgets=budgets,
            eval_every_epochs=float(every),
            train_eval_size=int(train_eval),
            target_accuracy=None if target is None else float(target),
            precision=precision,
            raw=raw,
        )

    def budgets(self, table: Any) -> list[dict[str, float]]:
        """``[budget]``: one clock-free count (a list of them: a budget axis of the grid)
        and an optional safety cap; see :mod:`bench.training.budget`."""
        self.keys(table, set(BUDGET_KEYS), "budget")
        for key, reason in RETIRED_BUDGET_KEYS.items():
            if key in table:
                raise self.fail(f"budget.{key}", reason)
        fixed: dict[str, float] = {}
        axis: tuple[str, list[float]] | None = None
        for key in BUDGET_KEYS:
            integer = key in BUDGET_UNITS and key != "epochs"
            value = table.get(key)
            if key in BUDGET_UNITS and isinstance(value, list):
                if not value or len(set(value)) != len(value):
                    raise self.fail(
                        f"budget.{key}",
                        f"a list of budgets must be non-empty and distinct, got {value!r}",
                    )
                axis = (key, [self.number({key: v}, key, "budget", integer=integer) for v in value])
                continue
            number = self.number(table, key, "budget", integer=integer)
            if number is not None:
                fixed[key] = number
        budgets = [fixed] if axis is None else [{**fixed, axis[0]: v} for v in axis[1]]
        for budget in budgets:
            try:
                Budget.from_config(budget)
            except BudgetError as error:
                raise self.fail("budget", str(error)) from None
        return budgets

    def data(self, table: Any, datasets: list[str]) -> dict[str, dict[str, Any]]:
        """``[data]`` defaults and ``[data.<dataset>]`` overrides, every key and value checked.

        The defaults take the options every dataset accepts; a dataset's own table also
        takes that loader's options (e.g. ``n_train`` of ``synthetic``). Tables of
        datasets the suite does not use are checked too: a typo there is still a typo.
        """
        self.keys(table, set(SPLIT_OPTIONS) | set(available_datasets()), "data")
        defaults = {k: v for k, v in table.items() if k in SPLIT_OPTIONS}
        for key, value in defaults.items():
            self.data_option(f"data.{key}", datasets[0], key, value)
        result = {}
        for dataset in available_datasets():
            override = table.get(dataset, {})
            if not isinstance(override, dict):
                raise self.fail(f"data.{dataset}", f"must be a table, got {override!r}")
            for key, value in override.items():
                self.data_option(f"data.{dataset}.{key}", dataset, key, value)
            if dataset in datasets:
                result[dataset] = {**defaults, **override}
        return result

    def data_option(self, where: str, dataset: str, key: str, value: Any) -> None:
        try:
            check_data_option(dataset, key, value)
        except ValueError as error:
            raise self.fail(where, str(error)) from None

    def model_options(self, table: Any, models: list[str]) -> dict[str, dict[str, Any]]:
        """``[model_options.<model>]``: keys and values checked against the builder."""
        self.keys(table, set(available_models()), "model_options")
        for model, options in table.items():
            if not isinstance(options, dict):
                raise self.fail(f"model_options.{model}", f"must be a table, got {options!r}")
            for key, value in options.items():
                try:
                    check_model_options(model, {key: value})
                except ValueError as error:
                    raise self.fail(f"model_options.{model}.{key}", str(error)) from None
        return {m: dict(table.get(m, {})) for m in models}

    def methods(self, entries: Any) -> list[MethodSpec]:
        if not isinstance(entries, list) or not entries:
            raise self.fail("methods", "needs at least one [[methods]] entry")
        specs, labels = [], set()
        for i, entry in enumerate(entries):
            where = f"methods[{i}]"
            self.keys(entry, _METHOD_KEYS, where)
            name = entry.get("name")
            if name not in optimizers.available():
                raise self.fail(
                    f"{where}.name",
                    f"unknown method {name!r}; available: {', '.join(optimizers.available())}",
                )
            label = entry.get("label", name)
            if not isinstance(label, str) or not label or "/" in label:
                raise self.fail(
                    f"{where}.label", f"must be a non-empty string without '/', got {label!r}"
                )
            if label in labels:
                raise self.fail(f"{where}.label", f"{label!r} is used twice; labels must be unique")
            labels.add(label)
            mode = entry.get("mode", "minibatch")
            if mode not in MODES:
                raise self.fail(f"{where}.mode", f"must be one of {list(MODES)}, got {mode!r}")
            batch_size = self.number(entry, "batch_size", where, integer=True)
            chunk_size = self.number(entry, "chunk_size", where, integer=True)
            if mode == "minibatch" and batch_size is None:
                raise self.fail(f"{where}.batch_size", "mini-batch mode needs a batch_size")
            if mode == "fullbatch" and batch_size is not None:
                raise self.fail(f"{where}.batch_size", "full-batch mode takes no batch_size")
            if mode == "minibatch" and chunk_size is not None:
                raise self.fail(f"{where}.chunk_size", "only full-batch mode takes a chunk_size")
            hparams, tuned_from = self.hparams(entry.get("hparams", {}), name, f"{where}.hparams")
            specs.append(
                MethodSpec(
                    label=label,
                    name=name,
                    mode=mode,
                    batch_size=batch_size,
                    chunk_size=chunk_size,
                    hparams=hparams,
                    tuned_from=tuned_from,
                )
            )
        return specs

    def hparams(self, value: Any, method: str, where: str) -> tuple[dict[str, Any], str | None]:
        tuned_from = None
        if isinstance(value, str):
            if not value.startswith(TUNED_PREFIX) or len(value) == len(TUNED_PREFIX):
                raise self.fail(where, f'must be a table or "tuned:<study>", got {value!r}')
            tuned_from = value[len(TUNED_PREFIX) :]
            value = self.tuned(tuned_from, where)
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a table of hyperparameters, got {value!r}")
        runtime = sorted(set(optimizers.runtime_options(method)) & set(value))
        if runtime:
            raise self.fail(f"{where}.{runtime[0]}", "is set by the runner, not the suite")
        for key, number in value.items():  # training runs in float32: it must hold the value
            if isinstance(number, float) and math.isfinite(number) and abs(number) > FLOAT32_MAX:
                raise self.fail(
                    f"{where}.{key}",
                    f"{number:g} does not fit in float32 (largest {FLOAT32_MAX:.3g}), the "
                    "precision training runs in",
                )
        try:  # names, types and bounds come from the method's dataclass; nothing is built
            # Every hyperparameter with its effective value, defaults included: the cell
            # key, MLflow params, runs.csv and the report then all show what actually ran.
            return optimizers.effective_hparams(method, **value), tuned_from
        except (ValueError, TypeError) as error:
            raise self.fail(where, str(error)) from None

    def tuned(self, study: str, where: str) -> dict[str, Any]:
        if not is_safe_name(study):
            raise self.fail(where, f"the study name {SAFE_NAME_RULE}; got {study!r}")
        if self.studies_dir is None:
            raise self.fail(where, f"refers to study {study!r} but no studies folder was given")
        path = self.studies_dir / study / "best.json"
        if not path.is_file():
            raise self.fail(
                where,
                f"study {study!r} has no tuned settings at {path}; run `make tune` "
                f"(or `python -m bench tune --study {study} ...`) first",
            )
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as error:  # truncated, not UTF-8, unreadable
            raise self.fail(
                where,
                f"{path} cannot be read as JSON ({error}); rerun the study "
                f"(`python -m bench tune --study {study} ...`) to write it again",
            ) from None
        params = content.get("params") if isinstance(content, dict) else None
        if not isinstance(params, dict):
            raise self.fail(where, f"{path} holds no 'params' table")
        return params
