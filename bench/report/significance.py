"""How sure we are: paired exact tests over seeds, intervals with their true level, and
multiplicity control.

Why these choices (the reasoning a reviewer asks for, in one place):

* **Seeds are paired.** A seed fixes the initialisation for every method, so two methods
  are compared through their per-seed differences d = a - b (:func:`paired_compare`),
  which removes the luck of the draw both share.
* **Exact Wilcoxon signed-rank test** on d, two-sided, its null distribution computed
  exactly for any n by convolution over doubled midranks (exact conditional on ties;
  zeros keep their rank but carry no sign, Pratt). Ranks rather than raw differences
  (a sign-flip test on the mean) because a failed seed enters at chance accuracy
  (:func:`failure_accuracy`), a gap far larger than the others that would dominate a sum
  of raw differences. The smallest p it can give is 2 / 2^n: 0.125 for 4 seeds, 0.0625
  for 5, 0.002 for 10 (:func:`smallest_paired_p`).
* **Effect size beside every p**: the matched-pairs rank-biserial correlation in [-1, 1]
  (+1: A better on every seed), and the median difference in accuracy units with its
  interval, so a "significant" 0.001 reads as what it is.
* **Intervals with their exact level.** The order-statistic interval for a median
  (:func:`median_interval`) covers it with probability 1 - 2 P(Binom(n, 1/2) <= k - 1)
  whatever the (continuous) distribution; the report prints that level (87.5 % for the
  range of 4 seeds) instead of a nominal 95 % that a percentile bootstrap does not have
  at these n (its coverage for the median of 4 seeds is about 0.88, of 3 about 0.75).
* **Holm–Bonferroni** within each family of claims (:func:`holm`, :func:`judge`): valid
  under any dependence (the tests share seeds and a reference method), uniformly more
  powerful than Bonferroni. A family of m tests on n seeds can reach m x 2 / 2^n at best
  (:func:`smallest_holm_p`); above alpha its claims say "too few seeds for this family".
* **Failures count**: any status but ``finished`` scores chance accuracy
  (:func:`scored_accuracy`); dropping failed seeds would favour the method that fails.

Pure functions of numbers (numpy and pandas only); the tests check them against hand
computations, brute-force enumeration, scipy and a simulated coverage.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

#: The one status that is not a failure: any other (diverged, capped, failed, killed)
#: counts as a failed seed in every comparison.
FINISHED = "finished"

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
MIN_SEEDS = 3
ALPHA = 0.05
#: Above this many splits the permutation distribution is sampled instead of enumerated.
EXACT_LIMIT = 200_000
PERMUTATION_SAMPLES = 100_000
TEST_NAME = "exact two-sided Mann–Whitney U test across seeds"


@dataclass(frozen=True)
class Interval:
    """A confidence interval for a population median with the coverage it really has.

    ``level`` is the exact probability, for any continuous distribution, that the
    interval covers the population median; it is what the report prints beside the
    interval (0.875 for the range of four seeds, never a nominal 95 %).
    """

    low: float
    high: float
    level: float

    def label(self, spec: str = ".3f") -> str:
        """``[low, high] (87.5 %)``: the interval with its exact level."""
        return f"[{format(self.low, spec)}, {format(self.high, spec)}] ({level_text(self.level)})"


def level_text(level: float) -> str:
    """A coverage as a percentage with just enough digits (87.5 %, 96.1 %, 98 %)."""
    if not math.isfinite(level):
        return "level n/a"
    return f"{100 * level:.3g} %"


def finite(values: Iterable[Any]) -> np.ndarray:
    """The finite numbers among ``values`` (None, NaN and inf removed) as floats."""
    array = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce")
    array = array.to_numpy(dtype=float, na_value=np.nan)
    return array[np.isfinite(array)]


def _checked(values: Iterable[Any], what: str) -> np.ndarray:
    """``values`` as floats; a missing, NaN or infinite value is an error naming it.

    Failed cells must already have their failure value (:func:`failure_accuracy`):
    dropping them here would silently favour the method that fails.
    """
    data = np.asarray([math.nan if v is None else v for v in values], dtype=float)
    bad = ~np.isfinite(data)
    if bad.any():
        raise ValueError(
            f"{what}: value {data[bad][0]!r} at position {int(np.flatnonzero(bad)[0])} is not "
            "finite; map failed cells to their failure value (failure_accuracy) first"
        )
    return data


def binomial_cdf_half(k: int, n: int) -> float:
    """P(Binom(n, 1/2) <= k), exactly (integer arithmetic, one division)."""
    if k < 0:
        return 0.0
    return sum(math.comb(n, i) for i in range(min(k, n) + 1)) / 2**n


def order_statistic_level(n: int, k: int) -> float:
    """Exact coverage of (x_(k), x_(n+1-k)) for the median of a continuous distribution.

    The interval misses the median exactly when fewer than k of the n values lie below it
    or fewer than k lie above it; each count is Binom(n, 1/2), so the level is
    1 - 2 P(Binom(n, 1/2) <= k - 1).
    """
    if not 1 <= k <= (n + 1) // 2:
        raise ValueError(f"order statistic k={k} must lie in 1..{(n + 1) // 2} for n={n}")
    return 1.0 - 2.0 * binomial_cdf_half(k - 1, n)


def median_interval(values: Iterable[Any], level: float = CONFIDENCE) -> Interval:
    """The distribution-free order-statistic interval for the median of ``values``.

    Among the intervals (x_(k), x_(n+1-k)) it takes the narrowest (largest k) whose exact
    level (:func:`order_statistic_level`) is at least ``level``. With too few values for
    that (fewer than 6 for 95 %), it is the full range with its exact, lower level: 75 %
    for 3 values, 87.5 % for 4, 0 for a single value. Ties can only raise the coverage.
    The interval is about the population median; the point estimate reported beside it is
    the sample median.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
    data = np.sort(_checked(values, "median_interval"))
    n = len(data)
    if n == 0:
        raise ValueError("median_interval needs at least one value, got none")
    k = 1
    while k + 1 <= (n + 1) // 2 and order_statistic_level(n, k + 1) >= level:
        k += 1
    return Interval(float(data[k - 1]), float(data[n - k]), order_statistic_level(n, k))


def _signed_rank_null(doubled_ranks: Sequence[int]) -> np.ndarray:
    """Counts of every value of sum(r_i for positive signs), in half-rank units, over all
    2^n sign patterns: the exact null distribution of the signed-rank statistic.

    Midranks are multiples of 1/2, so doubled ranks are integers and the distribution is
    a polynomial product built by one convolution per pair: exact for any n, ties and
    zeros included, in O(n * sum of ranks) integer steps.
    """
    counts = np.zeros(1, dtype=object)
    counts[0] = 1
    for r in doubled_ranks:
        grown = np.zeros(len(counts) + r, dtype=object)
        grown[: len(counts)] += counts  # this pair negative (or zero): adds nothing
        grown[r:] += counts  # this pair positive: adds its rank
        counts = grown
    return counts


def paired_ranks(d: np.ndarray) -> np.ndarray:
    """Midranks of |d| among all pairs, zeros included (Pratt's treatment of zeros)."""
    return _ranks(np.abs(d))


@dataclass(frozen=True)
class PairedComparison:
    """A against B on one figure over seeds paired by initialisation (d = a - b per seed).

    ``p_value`` is the exact two-sided Wilcoxon signed-rank p (Pratt's zeros, midranks,
    exact conditional distribution); ``effect_size`` is the matched-pairs rank-biserial
    correlation, oriented so that a positive value favours A (accounting for
    ``higher_is_better``); ``smallest_p`` is the smallest p this test can give with n pairs,
    2 / 2^n; ``interval`` is the order-statistic interval of the median difference.
    """

    n: int
    median_difference: float
    interval: Interval
    p_value: float
    effect_size: float
    effect_name: str
    smallest_p: float
    differences: tuple[float, ...]
    higher_is_better: bool = True
    wins: int = 0
    losses: int = 0
    ties: int = 0

    @property
    def favours_a(self) -> bool:
        """Whether the effect points to A (more pairs, weighted by rank, where A is better)."""
        return self.effect_size > 0

    def evidence(self, spec: str = ".3f") -> str:
        """The paired numbers behind a verdict, without the multiplicity adjustment."""
        return (
            f"median paired difference {format(self.median_difference, spec)} "
            f"{self.interval.label(spec)}, n={self.n} pairs (wins/losses/ties "
            f"{self.wins}/{self.losses}/{self.ties}); {PAIRED_TEST_NAME}: "
            f"p = {self.p_value:.3g}, {self.effect_name} = {self.effect_size:+.2f}"
        )


#: Differences are rounded to this many decimals before ranking (accuracies are ratios
#: of counts, so real ties differ only by floating-point noise far below this).
TIE_DECIMALS = 12
PAIRED_TEST_NAME = "exact two-sided Wilcoxon signed-rank test over paired seeds"
EFFECT_NAME = "rank-biserial r"


def paired_compare(
    a: Iterable[Any], b: Iterable[Any], *, higher_is_better: bool = True, level: float = CONFIDENCE
) -> PairedComparison:
    """Exact paired comparison of A and B, whose values are aligned by seed.

    Why the Wilcoxon signed-rank test rather than a sign-flip test on raw differences:
    a failed seed enters at chance accuracy (:func:`failure_accuracy`), a difference far
    larger than the others; on raw values that one pair would dominate the statistic,
    while ranks count it as one clearly worse seed. Its exact distribution is computed for
    every n (not only small ones) and is exact conditional on ties; without ties or zeros it
    equals scipy's ``wilcoxon(..., method="exact")``. Zero differences (both seeds equal,
    e.g. both failed) keep their rank among the pairs but carry no sign (Pratt), so they
    count towards n and pull the effect size towards 0.

    Effect size: the matched-pairs rank-biserial correlation r = (R+ - R-) / (n(n+1)/2),
    R+ (R-) the rank sum of pairs where A is better (worse): +1 when A wins every seed, -1
    when it loses every seed, 0 for no tendency.
    """
    x = _checked(a, "paired_compare: a")
    y = _checked(b, "paired_compare: b")
    if len(x) != len(y):
        raise ValueError(
            f"paired_compare needs values aligned by seed, got {len(x)} and {len(y)} values"
        )
    n = len(x)
    if n == 0:
        raise ValueError("paired_compare needs at least one pair, got none")
    # Rounded so that differences equal in exact arithmetic (0.80 - 0.78 and 0.90 - 0.88)
    # tie as they should instead of being ordered by floating-point noise.
    d = np.round(x - y, TIE_DECIMALS)
    better = d if higher_is_better else -d
    ranks = paired_ranks(d)
    doubled = np.rint(2 * ranks).astype(int)
    positive = d > 0
    nonzero = d != 0
    observed = int(doubled[positive].sum())
    total = int(doubled[nonzero].sum())
    counts = _signed_rank_null([int(r) for r in doubled[nonzero]])
    values = np.arange(len(counts))
    # Two-sided: sign patterns at least as far from the null mean total / 2 (in doubled
    # units, so the comparison is in exact integers).
    extreme = np.abs(2 * values - total) >= abs(2 * observed - total)
    p = float(counts[extreme].sum() / 2 ** int(nonzero.sum()))
    r_plus = float(ranks[better > 0].sum())
    r_minus = float(ranks[better < 0].sum())
    return PairedComparison(
        n=n,
        median_difference=float(np.median(d)),
        interval=median_interval(d, level),
        p_value=min(1.0, p),
        effect_size=(r_plus - r_minus) / (n * (n + 1) / 2),
        effect_name=EFFECT_NAME,
        smallest_p=smallest_paired_p(n),
        differences=tuple(float(v) for v in d),
        higher_is_better=higher_is_better,
        wins=int((better > 0).sum()),
        losses=int((better < 0).sum()),
        ties=int((~nonzero).sum()),
    )


def smallest_paired_p(n_pairs: int) -> float:
    """The smallest two-sided p the exact signed-rank test can give with n pairs: 2 / 2^n
    (every seed favouring the same method; 0.125 for 4 pairs, 0.002 for 10)."""
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be at least 1, got {n_pairs}")
    return min(1.0, 2.0 / 2**n_pairs)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, in the order given.

    Sorted ascending, the i-th smallest (i from 0) is multiplied by m - i, the running
    maximum keeps the adjusted values monotone in the raw ones, and 1 caps them. Rejecting
    every adjusted p <= alpha controls the family-wise error rate at alpha under any
    dependence between the tests (they share seeds and a reference method here).
    """
    raw = np.asarray(list(p_values), dtype=float)
    if (~np.isfinite(raw)).any() or (raw < 0).any() or (raw > 1).any():
        raise ValueError(f"holm needs p-values in [0, 1], got {list(p_values)!r}")
    m = len(raw)
    order = np.argsort(raw, kind="stable")
    adjusted = np.empty(m, dtype=float)
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * float(raw[index])))
        adjusted[index] = running
    return [float(v) for v in adjusted]


def smallest_holm_p(n_pairs: int, n_tests: int) -> float:
    """The smallest Holm-adjusted p a family of ``n_tests`` paired tests on ``n_pairs``
    seeds can reach: n_tests * 2 / 2^n_pairs (its first step), capped at 1."""
    if n_tests < 1:
        raise ValueError(f"n_tests must be at least 1, got {n_tests}")
    return min(1.0, n_tests * smallest_paired_p(n_pairs))


def verdict_possible(n_pairs: int, n_tests: int, alpha: float = ALPHA) -> bool:
    """Whether any test of the family could be significant at ``alpha`` after Holm; when
    not, the report says "too few seeds for this family" instead of a verdict."""
    return smallest_holm_p(n_pairs, n_tests) <= alpha


def failure_accuracy(num_classes: int) -> float:
    """The accuracy a failed cell counts with in comparisons: chance, 1 / num_classes.

    A diverged, capped, failed or killed cell (any status but ``finished``), or one whose
    accuracy is NaN, is neither dropped (that would let a method's failures vanish from
    its median) nor given its last good figures (that would reward stopping early): it is
    scored as a network that guesses. Paired tests see it as a clearly worse seed through
    its rank, not through the size of the gap.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return 1.0 / num_classes


def scored_accuracy(value: Any, status: str, num_classes: int) -> float:
    """``value`` for a finished cell with a finite accuracy, else :func:`failure_accuracy`."""
    number = math.nan if value is None else float(value)
    if status != FINISHED or not math.isfinite(number):
        return failure_accuracy(num_classes)
    return number


HOLDS = "holds"
FAILS = "does not hold"
NOT_SIGNIFICANT = f"no significant difference at Holm-adjusted p <= {ALPHA:g}"
TOO_FEW_FOR_FAMILY = "too few seeds for this family"


@dataclass(frozen=True)
class Judged:
    """One paired comparison of a family with its Holm-adjusted p and its verdict."""

    comparison: PairedComparison
    adjusted_p: float
    verdict: str
    family_size: int

    def evidence(self, spec: str = ".3f") -> str:
        return (
            f"{self.comparison.evidence(spec)}; Holm-adjusted p = {self.adjusted_p:.3g} "
            f"(family of {self.family_size})"
        )


@dataclass(frozen=True)
class Family:
    """A family of claims judged together (one report, or one target of a matched table)."""

    judged: tuple[Judged, ...]
    smallest_adjusted_p: float
    alpha: float

    @property
    def possible(self) -> bool:
        """Whether any claim of the family could be significant at ``alpha``."""
        return self.smallest_adjusted_p <= self.alpha

    def summary(self) -> str:
        """What the family can say at all: its size, seeds and smallest attainable p."""
        if not self.judged:
            return "no paired comparison"
        sizes = sorted({j.comparison.n for j in self.judged})
        seeds = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
        text = (
            f"{len(self.judged)} paired tests on {seeds} seeds; smallest attainable "
            f"Holm-adjusted p = {self.smallest_adjusted_p:.3g} (alpha = {self.alpha:g})"
        )
        if not self.possible:
            text += f": {TOO_FEW_FOR_FAMILY}, no claim of it can be significant"
        return text


def verdict_for(
    comparison: PairedComparison, adjusted_p: float, family_floor: float, alpha: float = ALPHA
) -> str:
    """The verdict of one comparison of a family whose smallest attainable adjusted p is
    ``family_floor`` (see :func:`judge`)."""
    if family_floor > alpha:
        return TOO_FEW_FOR_FAMILY
    if comparison.smallest_p > alpha:
        return too_few_seeds(comparison.n)
    if adjusted_p > alpha:
        return NOT_SIGNIFICANT
    return HOLDS if comparison.favours_a else FAILS


def judge(comparisons: Sequence[PairedComparison], alpha: float = ALPHA) -> Family:
    """Holm–Bonferroni over a family of paired comparisons, and each one's verdict.

    Verdicts: *holds* (A significantly better after adjustment), *does not hold* (B
    significantly better), *no significant difference* (adjusted p > alpha), *too few
    seeds (n=k)* when this comparison alone could never reach alpha, and *too few seeds
    for this family* for every claim when the family's smallest attainable adjusted p,
    m x 2 / 2^n at its largest n, exceeds alpha: a verdict is then impossible, whatever
    the data.
    """
    m = len(comparisons)
    if m == 0:
        return Family((), 1.0, alpha)
    adjusted = holm([c.p_value for c in comparisons])
    floor = min(smallest_holm_p(c.n, m) for c in comparisons)
    judged = tuple(
        Judged(c, p, verdict_for(c, p, floor, alpha), m)
        for c, p in zip(comparisons, adjusted, strict=True)
    )
    return Family(judged, floor, alpha)


# ----------------------------------------------------------------------------------------
# Unpaired statistics: the percentile bootstrap and the Mann–Whitney U test. The report
# no longer uses them (seeds are paired, and the bootstrap's coverage at 3-4 seeds is far
# below its nominal level); ``bench.tuning.matched`` still does until it moves to
# :func:`paired_compare`.


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
