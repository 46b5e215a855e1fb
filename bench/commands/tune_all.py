"""``python -m bench tune-all --setting quick``: an equal-budget study for every method.

Why one command: fairness. Every method of the setting file (``bench/suites/quick-tuned
.toml`` for ``quick``) gets the same number of trials, the same data, model and
per-trial budget, and the same objective; the studies are named as the setting file's
``tuned:<study>`` references, so ``make bench SUITE=quick-tuned`` evaluates exactly what
was tuned. Studies run one after another, each with ``--workers`` processes; a rerun
resumes every study (finished ones cost nothing).

Besides each study's own outputs it writes, under ``<out>/studies/``, the hypervolume
table ``hypervolume-<setting>.{csv,md}`` and ``pareto-fronts-<setting>.png``, all
methods' Pareto fronts on one plot.

``make tune`` runs ``tune-all --setting quick`` with :data:`DEFAULT_TRIALS` trials per
method; the trial count was sized so the whole run fits 30 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from bench.budget import Budget
from bench.commands.args import POSITIVE_INT
from bench.commands.tune import (
    INPUT_ERRORS,
    InputError,
    add_common_options,
    load_checked_data,
    make_plan,
    run_studies,
)
from bench.tuning.overview import write_overview
from bench.tuning.settings import load_setting

#: Trials per method when --trials is not given, per shipped setting.
DEFAULT_TRIALS = {"quick": 10}
FALLBACK_TRIALS = 10


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
        help="N finished trials per method (default: "
        + ", ".join(f"{k}: {v}" for k, v in DEFAULT_TRIALS.items())
        + f", else {FALLBACK_TRIALS})",
    )
    parser.add_argument(
        "--only", default=None, help="comma-separated labels of the setting's methods to tune"
    )
    add_common_options(parser)


def _budget_caption(setting_budget: dict[str, float], trials: int) -> str:
    return f"{trials} trials per method, each {Budget.from_config(setting_budget).describe()}"


def run(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    try:
        setting = load_setting(args.setting, seed=args.seed)
        trials = (
            args.trials
            if args.trials is not None
            else DEFAULT_TRIALS.get(setting.name, FALLBACK_TRIALS)
        )
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
        plans = [make_plan(args, setting, t, trials=trials) for t in targets]
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

    caption = _budget_caption(setting.budget, trials)
    if summaries:
        paths = write_overview(summaries, args.out / "studies", setting.name, caption=caption)
        print(paths["markdown"].read_text())
        print(f"Pareto fronts: {paths['figure']}")
    minutes = (time.perf_counter() - began) / 60
    print(f"tune-all {setting.name}: {len(plans)} studies in {minutes:.1f} min; {caption}")
    if failed:
        print(f"studies short of {trials} finished trials: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
