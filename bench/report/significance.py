"""How sure we are: bootstrap confidence intervals and exact rank tests across seeds.

Why these choices:

* **Medians with percentile-bootstrap intervals.** Accuracy over seeds is not normal
  (one bad seed is common), so the report gives the median and a percentile bootstrap
  interval of it: ``BOOTSTRAP_RESAMPLES`` resamples with replacement, a fixed generator
  seed, so the same records always give the same interval. With few seeds the interval
  is wide (with 3 seeds it is about the min–max range): that is the honest answer.
* **Exact two-sided Mann–Whitney U test** for "method A is more accurate than B": seeds
  of different methods are independent runs, and the test assumes nothing about the
  distribution. With a handful of seeds the exact permutation distribution of U (every
  way to split the pooled values into groups of the two sizes; ties get midranks, so
  the test is exact conditional on the ties) is cheap to enumerate, and normal
  approximations are wrong at these sizes.
* **At least** :data:`MIN_SEEDS` **seeds** per method before a comparative verdict. The
  smallest two-sided p-value the exact test can reach is ``2 / C(n + m, n)``: 0.1 with 3
  against 3 seeds, 0.029 with 4 against 4. A verdict at ``ALPHA`` = 0.05 therefore needs
  4 seeds per method; with 3 the report shows the ordering and its p-value, and says
  that the test cannot reach significance.

Only numpy is used, so the statistics do not depend on an optional package; the tests
check the p-values against scipy where scipy is installed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from bench.report.stats import finite

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
MIN_SEEDS = 3
ALPHA = 0.05
#: Above this many splits the permutation distribution is sampled instead of enumerated.
EXACT_LIMIT = 200_000
PERMUTATION_SAMPLES = 100_000
TEST_NAME = "exact two-sided Mann–Whitney U test across seeds"


def bootstrap_median_ci(
    values: Iterable[Any],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """(median, low, high): the median of the finite values and its percentile bootstrap CI.

    NaNs when there are no finite values; a single value gives a zero-width interval.
    """
    data = finite(values)
    if not len(data):
        return math.nan, math.nan, math.nan
    centre = float(np.median(data))
    if len(data) == 1:
        return centre, centre, centre
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(data), size=(resamples, len(data)))
    medians = np.median(data[draws], axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(medians, [tail, 1.0 - tail])
    return centre, float(low), float(high)


def _ranks(pooled: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given the mean of the ranks they span (midranks)."""
    order = np.argsort(pooled, kind="stable")
    ranks = np.empty(len(pooled), dtype=float)
    ranks[order] = np.arange(1, len(pooled) + 1, dtype=float)
    for value in np.unique(pooled):
        tied = pooled == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def mann_whitney_u(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(U of ``a``, exact two-sided p-value) of the Mann–Whitney U test.

    U counts the pairs (x in a, y in b) with x > y, ties counting one half. The p-value
    is the share of all splits of the pooled ranks into groups of sizes len(a), len(b)
    whose U lies at least as far from its mean n·m/2 as the observed one (enumerated up
    to :data:`EXACT_LIMIT` splits, else estimated from a fixed-seed random sample).
    """
    x, y = finite(a), finite(b)
    n, m = len(x), len(y)
    if n == 0 or m == 0:
        raise ValueError(f"Mann–Whitney U needs values in both groups, got {n} and {m}")
    ranks = _ranks(np.concatenate([x, y]))
    offset = n * (n + 1) / 2.0
    observed = float(ranks[:n].sum() - offset)
    centre = n * m / 2.0
    distance = abs(observed - centre) - 1e-9  # float midranks: count equal distances in
    if math.comb(n + m, n) <= EXACT_LIMIT:
        sums = np.fromiter(
            (ranks[list(idx)].sum() for idx in combinations(range(n + m), n)), dtype=float
        )
    else:
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        sums = np.array(
            [rng.permutation(ranks)[:n].sum() for _ in range(PERMUTATION_SAMPLES)], dtype=float
        )
    u = sums - offset
    p = float(np.mean(np.abs(u - centre) >= distance))
    return observed, min(1.0, p)


def smallest_p(n: int, m: int) -> float:
    """The smallest two-sided p-value the exact test can give with n and m seeds."""
    return min(1.0, 2.0 / math.comb(n + m, n))


@dataclass(frozen=True)
class Comparison:
    """A against B on one figure (say test accuracy), over seeds."""

    a: str
    b: str
    n_a: int
    n_b: int
    median_a: float
    median_b: float
    u: float | None
    p: float | None

    @property
    def enough_seeds(self) -> bool:
        return min(self.n_a, self.n_b) >= MIN_SEEDS

    @property
    def significant(self) -> bool:
        return self.enough_seeds and self.p is not None and self.p <= ALPHA

    def evidence(self, spec: str = ".3f") -> str:
        """The numbers behind a verdict: medians, seeds, test and p-value."""
        text = (
            f"median {format(self.median_a, spec)} (n={self.n_a}) vs "
            f"{format(self.median_b, spec)} (n={self.n_b})"
        )
        if self.p is None:
            return text
        text += f"; {TEST_NAME}: U = {self.u:g}, p = {self.p:.3g}"
        floor = smallest_p(self.n_a, self.n_b)
        if floor > ALPHA:
            text += (
                f" (the smallest p attainable with {self.n_a} vs {self.n_b} seeds is {floor:.3g})"
            )
        return text


def compare(a: str, values_a: Iterable[Any], b: str, values_b: Iterable[Any]) -> Comparison:
    """Medians and the exact U test of two methods' per-seed values."""
    x, y = finite(values_a), finite(values_b)
    u = p = None
    if len(x) and len(y):
        u, p = mann_whitney_u(x, y)
    return Comparison(
        a=a,
        b=b,
        n_a=len(x),
        n_b=len(y),
        median_a=float(np.median(x)) if len(x) else math.nan,
        median_b=float(np.median(y)) if len(y) else math.nan,
        u=u,
        p=p,
    )


def too_few_seeds(n: int) -> str:
    """The verdict of a comparative claim made on fewer than :data:`MIN_SEEDS` seeds."""
    return f"too few seeds (n={n})"
