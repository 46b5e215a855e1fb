"""Where a hyperparameter is searched, declared on its field (``hparam(..., search=...)``).

Why on the field: a method's ranges then live in its own module beside its defaults and
bounds, so adding a method never means editing the tuner. These are plain values: the
tuner (``bench.tuning.spaces``) turns them into Optuna suggestions and validates them
against the method, so this package stays free of Optuna.

- :func:`log_uniform` / :func:`uniform`: a float range (log scale excludes 0).
- :func:`choice`: a categorical parameter.
- :func:`fixed`: not searched but set for every trial, optionally in some training modes
  only (``bsqh``'s ``max_retries = 5`` in mini-batch mode).

``penalty=True`` marks a weight of R (``beta``, ``gamma``): it is searched only by
methods whose step applies R (trait ``applies_penalty``); a method that carries R only
to report J searches none of its weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Search:
    """How the tuner treats one hyperparameter; ``note`` says why (the docs' table)."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    fixed: Any = None
    modes: tuple[str, ...] | None = None  # fixed values only: the modes it applies in
    note: str = ""
    penalty: bool = False

    @property
    def searched(self) -> bool:
        """Whether trials sample it (a fixed value is set, not sampled)."""
        return self.modes is None and (self.choices is not None or self.low is not None)

    def fixed_in(self, mode: str) -> bool:
        """Whether this is a fixed value that applies to trials in ``mode``."""
        return self.modes is not None and (not self.modes or mode in self.modes)


def log_uniform(low: float, high: float, note: str = "", *, penalty: bool = False) -> Search:
    """A float searched on a log scale over [low, high]."""
    return Search(low=low, high=high, log=True, note=note, penalty=penalty)


def uniform(low: float, high: float, note: str = "", *, penalty: bool = False) -> Search:
    """A float searched uniformly over [low, high]."""
    return Search(low=low, high=high, note=note, penalty=penalty)


def choice(*choices: Any, note: str = "") -> Search:
    """A categorical parameter over ``choices``."""
    return Search(choices=tuple(choices), note=note)


def fixed(value: Any, *modes: str, note: str = "") -> Search:
    """Not searched: ``value`` for every trial (in ``modes`` only, when given)."""
    return Search(fixed=value, modes=tuple(modes), note=note)


# Ranges several methods share, defined once so that equal knobs get equal ranges.
#: The SGD family's step size (sgd, the proximal SGD variants, gmp).
LR_SGD = log_uniform(1e-3, 0.5, "step size")
#: The Adam family's step size (adam, prox-adam-l0, l0-hc).
LR_ADAM = log_uniform(1e-4, 3e-2, "Adam step size")
#: Heavy-ball momentum, searched by every SGD-family method.
MOMENTUM = uniform(0.0, 0.95, "heavy ball")
#: Weight of R's sparsity term; ``sqrt(2 t beta)`` spans "prunes nothing" to "prunes all".
BETA = log_uniform(1e-6, 1e-1, "L0 / L1 weight of R", penalty=True)
#: Weight of R's L2 term.
GAMMA = log_uniform(1e-6, 1e-2, "L2 weight of R", penalty=True)
#: E-MSA's feasibility penalty, the reference's scale (excludes plain MSA's 0).
RHO = log_uniform(1e-4, 1.0, "feasibility penalty (reference scale)")
