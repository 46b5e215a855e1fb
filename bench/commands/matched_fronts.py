"""``python -m bench matched-fronts --setting quick``: accuracy at sparsity ≥ s from tuned fronts.

An extra beside ``bench matched`` (sparsity matched by construction, :mod:`bench.matched`):
the picks here merely reach a target, so two methods can sit at very different sparsities
above it. Kept for reading tuned fronts; the matched comparison is ``bench matched``.

Run after ``make tune`` (``tune-all``). For every method of the setting and every target
sparsity (default 0.5, 0.8, 0.9, 0.95) it picks, on validation, the most accurate trial
of the method's study with at least that sparsity (``bench.tuning.matched``), retrains
each distinct pick with the setting file's seeds, evaluates on test and writes:

- the ledger, MLflow runs and a full ``REPORT.md`` of the retrained cells under
  ``<out>/<setting>-matched/`` (experiment ``pmp-bench/<setting>-matched``); cells are
  labelled ``<method>@matched-<s>[+<s>...]``, so a rerun resumes;
- ``<out>/studies/matched-<setting>.{csv,md,png}``: the accuracy-at-sparsity table and
  its figure, next to the hypervolume table of ``tune-all``, and
  ``matched-<setting>-pairwise.csv``: the paired tests at each target (seeds are paired:
  every pick is retrained with the same seeds). A seed that did not finish counts at
  chance accuracy, never dropped.

``--dry-run`` prints the picks and trains nothing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import optimizers
from bench.commands.args import add_device, add_out
from bench.environment import resolve_device
from bench.ledger.records import load_records
from bench.ledger.safe_files import OutputWriteError
from bench.report import write_report
from bench.runner import cell_key, cells_dir, run_suite, suite_dir
from bench.suites import Suite, SuiteError, load_suite
from bench.tuning import matched
from bench.tuning.plan import study_dir
from bench.tuning.settings import SettingError, load_setting, resolve_setting_path


def _targets(text: str) -> tuple[float, ...]:
    try:
        values = tuple(sorted({float(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--targets must be comma-separated numbers in [0, 1), got {text!r}"
        ) from None
    if not values or not all(0.0 <= v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(
            f"--targets must be comma-separated numbers in [0, 1), got {text!r}"
        )
    return values


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--setting", default="quick", help="quick (default), or a setting file (tuned:<study>)"
    )
    parser.add_argument(
        "--targets",
        type=_targets,
        default=matched.MATCHED_SPARSITIES,
        help="target sparsities (default: "
        + ",".join(f"{s:g}" for s in matched.MATCHED_SPARSITIES)
        + ")",
    )
    add_out(parser)
    add_device(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the picks, train nothing")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def matched_suite(
    base: Suite, picks: list[matched.MatchedPick], name: str, description: str
) -> Suite:
    """The setting's grid (data, model, budget, seeds) with one method per distinct pick."""
    by_label = {m.label: m for m in base.methods}
    methods = []
    for pick in picks:
        spec = by_label[pick.label]  # the same method, mode and batch with the picked values
        methods.append(
            replace(
                spec,
                label=pick.cell_label,
                hparams=optimizers.effective_hparams(spec.name, **pick.params),
                tuned_from=f"{pick.study}#trial{pick.trial}",
            )
        )
    return replace(base, name=name, description=description, methods=methods)


def run(args: argparse.Namespace) -> int:
    studies = args.out / "studies"
    try:
        setting = load_setting(args.setting)
        base = load_suite(resolve_setting_path(args.setting), studies_dir=studies)
    except (SettingError, SuiteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    picks: list[matched.MatchedPick] = []
    chances: list[float | None] = []
    per_method: dict[str, dict[float, matched.MatchedPick | str]] = {}
    for target in setting.targets:
        front = study_dir(args.out, target.study) / "pareto.json"
        if not front.is_file():
            print(
                f"error: study {target.study!r} has no {front}; run `make tune` first",
                file=sys.stderr,
            )
            return 2
        points, chance = matched.front_points(front)
        chances.append(chance)
        found, per_target = matched.picks_for_study(
            target.label, target.study, points, args.targets, chance
        )
        picks += found
        per_method[target.label] = per_target
        for s, pick in per_target.items():
            what = (
                pick
                if isinstance(pick, str)
                else (
                    f"trial {pick.trial} (val acc {pick.val_accuracy:.4f}, "
                    f"sparsity {pick.val_sparsity:.3f})"
                )
            )
            print(f"{target.label} at sparsity >= {s:g}: {what}")
    if args.dry_run:
        return 0

    name = f"{setting.name}-matched"
    suite = matched_suite(
        base,
        picks,
        name,
        f"Accuracy at matched sparsity for setting {setting.name}: picked on validation, "
        f"retrained with seeds {base.seeds}, evaluated on test. {base.description}",
    )
    try:
        outcome = run_suite(
            suite, args.out, resolve_device(args.device), progress=not args.no_progress
        )
    except OutputWriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    wanted = {cell_key(cell) for cell in suite.cells()}
    records = [r for r in load_records(cells_dir(args.out, name)) if r.key in wanted]
    if records:
        write_report(records, suite_dir(args.out, name), suite=name, description=suite.description)
    try:
        results = matched.retrained_figures(records, matched.classes_of(records, chances))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = matched.matched_rows(per_method, results)
    studies.mkdir(parents=True, exist_ok=True)
    stem = studies / f"matched-{setting.name}"
    matched.write_csv(rows, stem.with_suffix(".csv"))
    ours = {t.label for t in setting.targets if optimizers.traits(t.method).focus}
    pairs = matched.pairwise_rows(per_method, results, focus=ours)
    matched.write_csv(pairs, stem.with_name(stem.name + "-pairwise.csv"), matched.PAIRWISE_COLUMNS)
    text = (
        matched.markdown(rows, setting.name, base.seeds) + "\n" + matched.pairwise_markdown(pairs)
    )
    stem.with_suffix(".md").write_text(text)
    matched.plot(
        rows, stem.with_suffix(".png"), f"Test accuracy at matched sparsity, setting {setting.name}"
    )
    print(text)
    print(f"figure: {stem.with_suffix('.png')}; cells and REPORT.md: {suite_dir(args.out, name)}")
    return outcome.exit_code
