"""``python -m bench tune-all --setting quick``: studies of every method on equal terms.

Why one command: fairness. Every method of the setting file (``bench/suites/quick-tuned
.toml`` for ``quick``) gets the same data, model, per-trial budget and objective, trials
in proportion to its search space (``bench.tuning.spaces.trials_for``: 4 per searched
parameter, at least 8; ``--trials N`` gives every study N instead, for smoke runs), and
``--tuning-seeds`` (3) tuning seeds (``bench.tuning.seeds``). Seed 0's studies are named
as the setting file's ``tuned:<study>`` references, so ``make bench SUITE=quick-tuned``
evaluates exactly what was tuned. Studies run one after another, each with ``--workers``
processes; a rerun resumes every study (finished ones cost nothing).

Besides each study's own outputs it writes, under ``<out>/studies/``, the tuning report
``hypervolume-<setting>.{csv,md}`` (one row per study; the Markdown also holds the
tuning seeds' spreads and every seed's picked configuration) and
``pareto-fronts-<setting>.png``, all studies' Pareto fronts on one plot.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from bench.commands.args import POSITIVE_INT
from bench.commands.tune import (
    INPUT_ERRORS,
    InputError,
    add_common_options,
    load_checked_data,
    make_plan,
    run_studies,
)
from bench.training.budget import Budget
from bench.tuning.overview import write_overview
from bench.tuning.seeds import TUNING_SEEDS, study_name
from bench.tuning.settings import load_setting
from bench.tuning.spaces import MIN_TRIALS, TRIALS_PER_DIMENSION, space_for, trials_for


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--setting",
        default="quick",
        help="quick (default), or a suite file whose methods are tuned:<study>",
    )
    parser.add_argument(
        "--trials",
        type=POSITIVE_INT,
        default=None,
        help=f"N finished trials for every study (default: {TRIALS_PER_DIMENSION} per "
        f"searched parameter of the method's space, at least {MIN_TRIALS})",
    )
    parser.add_argument(
        "--tuning-seeds",
        type=POSITIVE_INT,
        default=TUNING_SEEDS,
        help=f"studies per method, seed k training with --seed + k and sampling with "
        f"--sampler-seed + k (default: {TUNING_SEEDS})",
    )
    parser.add_argument(
        "--only", default=None, help="comma-separated labels of the setting's methods to tune"
    )
    add_common_options(parser)


def _budget_caption(setting_budget: dict[str, float], trials: int | None, seeds: int) -> str:
    count = (
        f"{trials} trials per study"
        if trials is not None
        else f"{TRIALS_PER_DIMENSION} trials per searched parameter (at least {MIN_TRIALS})"
    )
    budget = Budget.from_config(setting_budget).describe()
    return f"{count}, {seeds} tuning seed(s) per method, each trial {budget}"


def run(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    try:
        setting = load_setting(args.setting, seed=args.seed)
        targets = list(setting.targets)
        if args.only:
            wanted = [label.strip() for label in args.only.split(",") if label.strip()]
            labels = [t.label for t in targets]
            unknown = [w for w in wanted if w not in labels]
            if unknown:
                raise InputError(
                    f"--only: setting {setting.name!r} has no method {unknown[0]!r}; "
                    f"its methods: {', '.join(labels)}"
                )
            targets = [t for t in targets if t.label in wanted]
        # Everything is validated before the first trial of the first study.
        plans = [
            replace(
                make_plan(
                    args,
                    replace(setting, seed=args.seed + k),
                    t,
                    trials=args.trials or trials_for(space_for(t.method, t.mode)),
                    study=study_name(t.study, k),
                ),
                sampler_seed=args.sampler_seed + k,
                tuning_seed=k,
            )
            for t in targets
            for k in range(args.tuning_seeds)
        ]
        data = load_checked_data(setting, targets, args.device)
        plans = [replace(plan, num_classes=data.num_classes) for plan in plans]
    except (InputError, *INPUT_ERRORS) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    summaries, failed = [], []
    for plan, result in run_studies(args, plans, data):
        if isinstance(result, Exception):  # e.g. a study resumed with another budget
            print(f"error: {result}", file=sys.stderr)
            failed.append(plan.study)
            continue
        print(result.message, flush=True)
        summaries.append(result.summary)
        if result.exit_code:
            failed.append(plan.study)

    caption = _budget_caption(setting.budget, args.trials, args.tuning_seeds)
    if summaries:
        paths = write_overview(summaries, args.out / "studies", setting.name, caption=caption)
        print(paths["markdown"].read_text())
        print(f"Pareto fronts: {paths['figure']}")
    minutes = (time.perf_counter() - began) / 60
    print(f"tune-all {setting.name}: {len(plans)} studies in {minutes:.1f} min; {caption}")
    if failed:
        print(f"studies short of their trials: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
