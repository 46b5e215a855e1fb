"""``python -m bench tune --method M --trials N ...``: an Optuna study for one method.

Two ways to say what a trial trains:

- ``--setting quick`` (or the path of a setting file): data, model, budget and the
  method's batch setup come from ``bench/suites/quick-tuned.toml``, which ``make bench
  SUITE=quick-tuned`` evaluates afterwards; the study is named as that file says
  (``quick-<label>``). Flags that would change the setting are refused, so every method
  of a setting is tuned on the same budget.
- ``--model X --dataset D`` and a budget (``--budget-epochs E``; ``--safety-cap-seconds
  T`` adds a safety net, never a budget: see ``bench.training.budget``), with
  ``--batch-size``, ``--mode``, ``--train-subset``... The study defaults to
  ``<method>-<mode>-<model>-<dataset>``.

Every bad input fails at once, exit code 2, before any data is trained on: unknown
method or setting, an empty or inverted ``--space`` range, an unreachable ``--storage``
or one in a folder that cannot be written, a read-only ``--out``, a number flag that is
not finite or out of range (``--safety-cap-seconds inf``, ``--trials 0``: refused by argparse,
naming the flag), a study resumed with another objective, space or budget.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import optimizers
from bench.commands.args import (
    CLOSED_FRACTION,
    NONNEGATIVE_INT,
    OPEN_FRACTION,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    add_device,
    add_out,
)
from bench.data import (
    DataFileError,
    DataOptionError,
    DatasetUnavailable,
    DataSplits,
    available_datasets,
)
from bench.distributed.spec import add_scheduler_option
from bench.environment import resolve_device
from bench.ledger.writable import PathNotWritable, ensure_writable_dir
from bench.suites import (
    DEFAULT_EVAL_EVERY_EPOCHS,
    DEFAULT_TRAIN_EVAL_SIZE,
    MODES,
    SAFE_NAME_RULE,
    is_safe_name,
)
from bench.training.budget import SAFETY_CAP
from bench.training.loop import iterations_per_epoch
from bench.training.models import available_models, build_model
from bench.tuning.objective import load_tuning_data
from bench.tuning.pareto import DEFAULT_MIN_SPARSITY
from bench.tuning.plan import OBJECTIVES, StudyPlan
from bench.tuning.settings import Setting, SettingError, Target, load_setting
from bench.tuning.spaces import (
    MIN_TRIALS,
    TRIALS_PER_DIMENSION,
    SpaceError,
    space_for,
    trials_for,
)
from bench.tuning.storage import StorageError, check_storage, default_storage, parse_storage
from bench.tuning.study import TuneResult, tune
from bench.tuning.validation import StudyError

#: Errors that mean "bad input": reported in one line, exit code 2.
INPUT_ERRORS = (
    SpaceError,
    SettingError,
    StorageError,
    StudyError,
    DatasetUnavailable,
    DataFileError,
    DataOptionError,
    PathNotWritable,
)
#: Flags that describe the setting; refused together with --setting.
_SETTING_FLAGS = (
    "model",
    "dataset",
    "budget_epochs",
    "safety_cap_seconds",
    "batch_size",
    "chunk_size",
    "train_subset",
    "val_fraction",
    "split_seed",
    "eval_every",
    "train_eval_size",
)


class InputError(ValueError):
    """A command-line value is invalid."""


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``tune`` and ``tune-all``."""
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL or journal file path "
        "(default: sqlite:///<out>/optuna.db; <out>/optuna-journal.log with "
        "--workers > 1)",
    )
    add_out(parser)
    add_device(parser)
    parser.add_argument(
        "--workers",
        type=POSITIVE_INT,
        default=1,
        help="worker processes on this machine (default: 1)",
    )
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="pareto",
        help="pareto: maximise (val accuracy, sparsity); accuracy: maximise val "
        "accuracy subject to sparsity >= --min-sparsity (default: pareto)",
    )
    parser.add_argument(
        "--min-sparsity",
        type=CLOSED_FRACTION,
        default=DEFAULT_MIN_SPARSITY,
        help="S: the accuracy objective's constraint, and the pick rule of "
        f"best.json (default: {DEFAULT_MIN_SPARSITY})",
    )
    parser.add_argument(
        "--seed", type=NONNEGATIVE_INT, default=0, help="training seed of every trial (default: 0)"
    )
    parser.add_argument(
        "--sampler-seed", type=NONNEGATIVE_INT, default=0, help="TPE seed (default: 0)"
    )
    parser.add_argument(
        "--max-failures",
        type=POSITIVE_INT,
        default=None,
        help="crashed trials after which a worker gives up (default: max(3, N))",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-trial lines")
    add_scheduler_option(parser, "the trials (instead of --workers)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method", required=True, help="optimizer name (or a label of the setting, e.g. bsqh-full)"
    )
    parser.add_argument(
        "--trials",
        type=POSITIVE_INT,
        default=None,
        help="N: run until the study holds N finished (complete or pruned) trials "
        f"(default: {TRIALS_PER_DIMENSION} per searched parameter, at least {MIN_TRIALS})",
    )
    parser.add_argument(
        "--study",
        default=None,
        help="study name (default: from the setting, else <method>-<mode>-<model>-<dataset>)",
    )
    parser.add_argument(
        "--setting", default=None, help="quick, or a suite file whose methods are tuned:<study>"
    )
    parser.add_argument(
        "--mode", choices=MODES, default=None, help="minibatch (default) or fullbatch"
    )
    parser.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="NAME=LOW:HIGH|A,B",
        help="override one parameter's range or choices (repeatable)",
    )
    group = parser.add_argument_group("setting without --setting")
    group.add_argument("--model", choices=available_models(), default=None)
    group.add_argument("--dataset", choices=available_datasets(), default=None)
    group.add_argument("--budget-epochs", type=POSITIVE_NUMBER, default=None)
    group.add_argument(
        "--safety-cap-seconds",
        type=POSITIVE_NUMBER,
        default=None,
        help="safety net only: a trial whose steps reach T device-seconds ends capped",
    )
    group.add_argument(
        "--batch-size", type=POSITIVE_INT, default=None, help="mini-batch size (default 128)"
    )
    group.add_argument(
        "--chunk-size", type=POSITIVE_INT, default=None, help="full-batch chunk size"
    )
    group.add_argument(
        "--train-subset",
        type=POSITIVE_INT,
        default=None,
        help="train + val pool size (default: the whole training set)",
    )
    group.add_argument("--val-fraction", type=OPEN_FRACTION, default=None, help="default 0.1")
    group.add_argument("--split-seed", type=NONNEGATIVE_INT, default=None, help="default 0")
    group.add_argument(
        "--eval-every",
        type=POSITIVE_NUMBER,
        default=None,
        help=f"evaluation cadence in epochs (default {DEFAULT_EVAL_EVERY_EPOCHS})",
    )
    group.add_argument(
        "--train-eval-size",
        type=POSITIVE_INT,
        default=None,
        help=f"default {DEFAULT_TRAIN_EVAL_SIZE}",
    )
    add_common_options(parser)


# --------------------------------------------------------------------------- validation


def check_study_name(name: str) -> str:
    if not is_safe_name(name):
        raise InputError(f"study name {name!r}: {SAFE_NAME_RULE}")
    return name


def setting_from_flags(args: argparse.Namespace, method: str) -> tuple[Setting, Target]:
    """A one-method setting from ``--model/--dataset/--budget-*`` flags."""
    if args.model is None or args.dataset is None:
        raise InputError("pass --setting, or both --model and --dataset")
    budget: dict[str, float] = {}
    for key, value in (("epochs", args.budget_epochs), (SAFETY_CAP, args.safety_cap_seconds)):
        if value is not None:  # finite and > 0: checked by the flag's type
            budget[key] = value
    if args.budget_epochs is None:  # a clock is never a budget (bench.training.budget)
        raise InputError(
            "pass a budget: --budget-epochs E (and, as a safety net only, --safety-cap-seconds T)"
        )
    mode = args.mode or "minibatch"
    batch = args.batch_size if args.batch_size is not None else 128
    if mode == "fullbatch":
        if args.batch_size is not None:
            raise InputError("--batch-size applies to mini-batch mode only")
        batch = None
    elif args.chunk_size is not None:
        raise InputError("--chunk-size applies to full-batch mode only")
    data: dict[str, Any] = {}
    for key in ("train_subset", "val_fraction", "split_seed"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    study = args.study or f"{method}-{mode}-{args.model}-{args.dataset}"
    target = Target(method, method, mode, batch, args.chunk_size, study)
    setting = Setting(
        name="custom",
        dataset=args.dataset,
        data=data,
        model=args.model,
        model_options={},
        budget=budget,
        eval_every_epochs=args.eval_every or DEFAULT_EVAL_EVERY_EPOCHS,
        train_eval_size=args.train_eval_size or DEFAULT_TRAIN_EVAL_SIZE,
        seed=args.seed,
        targets=(target,),
    )
    return setting, target


def check_trainable(setting: Setting, target: Target, data: DataSplits) -> None:
    """The model builds for the data and the batch fits the training split."""
    try:
        build_model(
            setting.model,
            in_channels=data.in_channels,
            image_size=data.image_size,
            num_classes=data.num_classes,
            **setting.model_options,
        )
        iterations_per_epoch(setting.cell(target, {}), len(data.train_y))
    except ValueError as error:
        raise InputError(str(error)) from None


def make_plan(
    args: argparse.Namespace,
    setting: Setting,
    target: Target,
    *,
    trials: int,
    study: str | None = None,
    overrides: list[str] | None = None,
) -> StudyPlan:
    """Validate everything a study needs and return its plan (no training happens here)."""
    if trials < 1:
        raise InputError(f"--trials must be >= 1, got {trials}")
    name = check_study_name(study or target.study)
    space = space_for(target.method, target.mode)
    if overrides:
        space = space.with_overrides(overrides)
    # Studies write their outputs (and the default storage) under --out: prove it is
    # writable before a trial trains.
    out = ensure_writable_dir(Path(args.out).resolve(), "output folder", flag="--out")
    concurrent = concurrent_workers(args)
    if args.storage:
        storage = parse_storage(args.storage)
    else:
        storage = default_storage(out, name, concurrent)
    check_storage(storage, concurrent)
    return StudyPlan(
        study=name,
        storage=storage,
        setting=setting,
        target=target,
        space=space,
        objective=args.objective,
        min_sparsity=args.min_sparsity,
        trials=trials,
        device=args.device,
        out=out,
        sampler_seed=args.sampler_seed,
        max_failures=args.max_failures,
        quiet=args.quiet,
    )


def concurrent_workers(args: argparse.Namespace) -> int:
    """How many processes may write the study at once (a cluster counts as several)."""
    if getattr(args, "scheduler", None) is None:
        return args.workers
    if args.workers > 1:
        raise InputError("--workers runs processes here; with --scheduler drop it")
    return 2  # a journal file or a database: the cluster's workers share the study


def run_studies(
    args: argparse.Namespace, plans: list[StudyPlan], data: DataSplits
) -> Iterator[tuple[StudyPlan, TuneResult | Exception]]:
    """Each plan's study, here with ``--workers`` or on the ``--scheduler`` cluster.

    Yields the plan with its result, or with the input error a study raised (a study
    resumed with another budget), so ``tune-all`` can go on with the next one.
    """
    from bench.distributed.trials import cluster_trials

    with cluster_trials(args.scheduler) as cluster:
        for plan in plans:
            try:
                if cluster is None:
                    result = tune(plan, args.workers, data if args.workers == 1 else None)
                else:
                    workers, run_trials = cluster
                    result = tune(plan, workers, run=run_trials)
            except INPUT_ERRORS as error:
                yield plan, error
                continue
            yield plan, result


def load_checked_data(setting: Setting, targets: list[Target], device: str) -> DataSplits:
    """Load the setting's data once, up front, and check each target can train on it."""
    try:
        resolved = resolve_device(device)
        data = load_tuning_data(setting, resolved)
    except ValueError as error:
        raise InputError(str(error)) from None
    for target in targets:
        check_trainable(setting, target, data)
    return data


def resolve_method(args: argparse.Namespace) -> tuple[Setting, Target]:
    method = args.method
    known = optimizers.available()
    if args.setting is None:
        if method not in known:
            raise InputError(f"unknown method {method!r}; available: {', '.join(known)}")
        return setting_from_flags(args, method)
    given = [f"--{f.replace('_', '-')}" for f in _SETTING_FLAGS if getattr(args, f) is not None]
    if given:
        raise InputError(
            f"--setting fixes the data, model and budget of every method; drop {', '.join(given)} "
            "(or drop --setting and describe the setting with flags)"
        )
    setting = load_setting(args.setting, seed=args.seed)
    if method not in known and method not in {t.label for t in setting.targets}:
        raise InputError(f"unknown method {method!r}; available: {', '.join(known)}")
    return setting, setting.target(method, args.mode)


# --------------------------------------------------------------------------- command


def run(args: argparse.Namespace) -> int:
    try:
        setting, target = resolve_method(args)
        trials = args.trials or trials_for(space_for(target.method, target.mode))
        plan = make_plan(
            args, setting, target, trials=trials, study=args.study, overrides=args.space
        )
        data = load_checked_data(setting, [target], args.device)
        plan = replace(plan, num_classes=data.num_classes)
        ((_, result),) = run_studies(args, [plan], data)
        if isinstance(result, Exception):
            raise result
    except (InputError, *INPUT_ERRORS) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.message, file=sys.stdout if result.exit_code == 0 else sys.stderr)
    return result.exit_code
