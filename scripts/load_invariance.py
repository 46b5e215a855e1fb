"""Does a suite give the same results on a loaded machine? Run it twice and compare.

Runs ``python -m bench run`` and ``python -m bench report`` for one suite into two fresh
output folders, ``quiet/`` and then ``loaded/`` (the second with CPU hogs beside it,
``python -c "while True: pass"``, started and stopped by this script), and prints, per
cell, the final test accuracy, sparsity and step count of both runs and whether they are
identical, then how many cells each run's report flags for interference. Exit status 0
when every cell is identical in both and the loaded report flags interference, 1
otherwise.

    python scripts/load_invariance.py --suite smoke --out results/load-invariance
        [--hogs 1] [--device cpu]

The output folders must not hold an earlier run of the suite (the ledger would skip its
cells): pass a new ``--out`` or remove it first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ledger.records import load_records
from bench.runner import cells_dir
from bench.suites import load_suite

ROOT = Path(__file__).resolve().parent.parent
COMPARED = ("test_accuracy", "sparsity", "iterations")
FLAG = "**Interference:**"


def run(suite: str, out: Path, device: str) -> None:
    """The suite's cells and its report, as `make bench` runs them."""
    base = [sys.executable, "-m", "bench"]
    common = ["--suite", suite, "--out", str(out)]
    subprocess.run(
        [*base, "run", *common, "--device", device, "--no-progress", "--no-models"],
        cwd=ROOT,
        check=True,
    )
    subprocess.run([*base, "report", *common], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def finals(out: Path, suite: str) -> dict[str, dict]:
    """Per cell name: its status, compared figures and interference flag."""
    table = {}
    for record in load_records(cells_dir(out, suite)):
        c = record.config
        name = f"{c['label']}/{c['model']}/{c['dataset']}/seed{c['seed']}"
        table[name] = {
            "status": record.status,
            **{k: record.summary.get(k) for k in COMPARED},
            "interference": record.summary.get("interference"),
        }
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="smoke")
    parser.add_argument("--out", type=Path, default=Path("results/load-invariance"))
    parser.add_argument("--hogs", type=int, default=1, help="busy-loop processes beside run 2")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    suite = load_suite(args.suite).name
    quiet, loaded = args.out / "quiet", args.out / "loaded"
    for folder in (quiet, loaded):
        if cells_dir(folder, suite).exists():
            print(f"error: {folder} already holds a run of {suite}; pass a new --out")
            return 2

    run(args.suite, quiet, args.device)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)]
    try:
        run(args.suite, loaded, args.device)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()

    a, b = finals(quiet, suite), finals(loaded, suite)
    width = max(len(n) for n in a | b)
    header = f"{'test acc quiet/loaded':>23}  {'sparsity':>15}  {'steps':>11}  same"
    print(f"\n{'cell':<{width}}  {header}")
    same_all = set(a) == set(b)
    for name in sorted(a | b):
        x, y = a.get(name, {}), b.get(name, {})
        same = all(x.get(k) == y.get(k) for k in (*COMPARED, "status")) and bool(x)
        same_all &= same

        def pair(key: str, spec: str, x=x, y=y) -> str:
            return "/".join("–" if d.get(key) is None else format(d[key], spec) for d in (x, y))

        print(
            f"{name:<{width}}  {pair('test_accuracy', '.4f'):>23}  "
            f"{pair('sparsity', '.4f'):>15}  {pair('iterations', 'd'):>11}  "
            f"{'yes' if same else 'NO'}"
        )
    flagged = {
        label: sum(bool(v["interference"]) for v in table.values())
        for label, table in (("quiet", a), ("loaded", b))
    }
    report = (loaded / suite / "REPORT.md").read_text(encoding="utf-8")
    reported = FLAG in report
    print(
        f"\nidentical accuracy, sparsity and steps in every cell: {'yes' if same_all else 'NO'}"
        f"\ncells flagged for interference: quiet run {flagged['quiet']} of {len(a)}, loaded "
        f"run {flagged['loaded']} of {len(b)}; loaded REPORT.md names them: "
        f"{'yes' if reported else 'NO'}"
    )
    return 0 if same_all and reported else 1


if __name__ == "__main__":
    sys.exit(main())
