"""Search spaces of every method, read from the methods' own hyperparameter dataclasses.

Each method declares its ranges on its fields (``hparam(..., search=log_uniform(...))``,
``optimizers.search``), beside its defaults and bounds, so adding a method never means
editing this module; this module turns those declarations into Optuna suggestions,
validates them against the method and enforces the equal-terms rules below. A study
records the exact space it was created with (``SPACE_VERSION`` and the space as JSON, as
study user attributes). Resuming a study with a different space fails instead of
silently mixing trials drawn from two different distributions.

Version 2 (equal terms, see below; a study created with version 1 is refused on resume,
not mixed). Each parameter carries a one-line note; the docs' table is generated from
the declarations (``python -m bench.docs``), so the ranges are written down once. In
mini-batch mode ``bsqh`` has ``max_retries = 5`` fixed (a rejected mini-batch step is
retried at most 5 times, so one step cannot eat the budget); full-batch mode keeps the
method's default (``optimizers.fixed(5, "minibatch")`` on the field). Execution variants
(``bsqh-fast``, every ``<method>-graph``: the same algorithm, run differently;
``optimizers.registry.algorithm``) share their method's declarations (``bsqh-fast``'s
dataclass fixes ``max_retries = 0``: it has no retries). Labelled variants (``emsa-l0``,
``bsqh-parallel``) have spaces of their own and are studied under their own names.

Equal terms, the rules a reviewer checks first:

- ``bsqh`` is the sequential sweep: its space has no ``sweep`` (the name pins it). The
  parallel sweep, proximal gradient with bSQH's adaptive step, is the ablation
  ``bsqh-parallel``, tuned over the same ranges and reported under that name.
- The weights of R (fields declared with ``penalty=True``) are searched only by methods
  whose step applies R (trait ``applies_penalty``); the others (:func:`report_only`)
  carry beta and gamma only to report J.
- Shared knobs are searched for every method that has them or for none
  (:data:`SHARED_KNOBS`, checked by :func:`knob_asymmetries`): ``gamma``, the L2 weight
  of R, for every method whose step applies R; ``momentum`` for every SGD-family method
  (sgd, prox-sgd-l0/l1, gmp); Adam's ``weight_decay`` and betas and SGD's ``nesterov``
  for none (an L2 that only the Adam family searched would be a knob the others lack).
- Trials grow with the space: :func:`trials_for` gives ``TRIALS_PER_DIMENSION`` (4)
  trials per searched parameter, at least ``MIN_TRIALS`` (8), so a 7-dimensional bSQH
  space is not searched as thinly as a 1-dimensional Adam space.

Why these bounds: the L0 prox zeroes a weight when ``|v| < sqrt(2 t beta)`` with step
``t`` (``lr`` for the proximal baselines, ``1/(2 eps)`` for bSQH), so ``beta`` from 1e-6
to 1e-1 sweeps from "prunes nothing" to "prunes every weight" for LeNet-sized weights at
the step sizes in range: the whole accuracy-sparsity trade-off is reachable, which a
Pareto front needs. Log-scale ranges exclude 0; a method's plain default (for example
``gamma = 0``) is not in its space. ``sgd`` has no ``beta``: plain SGD only reports R.

The peers' knobs are their own forms of that trade-off: GMP's ``final_sparsity`` sets the
sparsity directly (0.5 to 0.98 spans the matched-sparsity grid of the report), and
L0-HC's ``lam`` prices one open gate in units of the mean cross-entropy, as ``beta`` does
for one nonzero weight, so it gets the same range. GMP's window is searched as fractions
of the step budget (ending by 0.9 leaves steps for the pruned network to recover), so a
tuned schedule transfers between budgets; ``frequency`` stays coarse
because a mask update is cheap but a too-frequent one leaves no steps to recover. E-MSA's
ascent solver's first step is a (proximal) gradient step, so ``emsa-l0``'s ``inner_lr``
gets the SGD learning-rate range; ``rho`` (the reference's scale, feasibility terms summed
over the batch) spans 1e-4 to 1 on a log scale, which excludes 0 (plain MSA) and holds
the reference's 0.03. ``emsa`` is the reference: L-BFGS with 10 iterations per stage,
searched over ``rho`` and ``gamma`` only.

CLI overrides (``--space lr=1e-4:1e-1``, ``--space sweep=sequential``) replace a range or
the choices of one parameter; they are validated like the table itself (non-empty, not
inverted, positive for log scale, inside what the method accepts), and they change the
space a study records, so a study cannot be resumed with different overrides.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import optuna
from torch import nn

import optimizers

#: Bump when a range, a choice or a fixed value below changes.
SPACE_VERSION = 2

#: Knobs several methods share: searched by every method that has them ("all"; for
#: gamma, every method whose step applies R) or by none ("none").
SHARED_KNOBS: dict[str, str] = {
    "gamma": "all",
    "momentum": "all",
    "weight_decay": "none",
    "beta1": "none",
    "beta2": "none",
    "nesterov": "none",
    "temperature": "none",
}
#: Trials of a study per searched parameter, and the fewest trials of any study.
TRIALS_PER_DIMENSION = 4
MIN_TRIALS = 8


class SpaceError(ValueError):
    """A search space or an override of it is invalid; the message names the parameter."""


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: a float range (optionally log scale) or choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    note: str = field(default="", compare=False)  # why this range (the docs' generated table)

    @property
    def categorical(self) -> bool:
        return self.choices is not None

    def check(self, method: str) -> None:
        """Raise :class:`SpaceError` if the range is empty, inverted or not a range."""
        where = f"search space of {method!r}: parameter {self.name!r}"
        if self.categorical:
            assert self.choices is not None
            if not self.choices:
                raise SpaceError(f"{where}: has no choices")
            if len(set(self.choices)) != len(self.choices):
                raise SpaceError(f"{where}: lists a choice twice: {list(self.choices)}")
            return
        if self.low is None or self.high is None:
            raise SpaceError(f"{where}: needs both a low and a high bound")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise SpaceError(f"{where}: bounds must be finite, got [{self.low}, {self.high}]")
        if self.low > self.high:
            raise SpaceError(f"{where}: inverted range [{self.low}, {self.high}] (low > high)")
        if self.low == self.high:
            raise SpaceError(f"{where}: empty range [{self.low}, {self.high}] (low == high)")
        if self.log and self.low <= 0:
            raise SpaceError(f"{where}: a log-scale range needs low > 0, got {self.low}")

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.categorical:
            assert self.choices is not None
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None and self.high is not None
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def corners(self) -> list[Any]:
        """The extreme values of the parameter (used to validate against the method)."""
        if self.categorical:
            assert self.choices is not None
            return list(self.choices)
        return [self.low, self.high]

    def as_dict(self) -> dict[str, Any]:
        if self.categorical:
            return {"choices": list(self.choices or ())}
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Space:
    """The searched parameters of one method (in one mode) plus values fixed for it."""

    method: str
    params: tuple[Param, ...]
    fixed: dict[str, Any] = field(default_factory=dict)

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The method's hyperparameters for ``trial``: the fixed ones plus the sampled ones."""
        return {**self.fixed, **{p.name: p.suggest(trial) for p in self.params}}

    def as_dict(self) -> dict[str, Any]:
        """JSON form, stored with the study so a resume can detect a changed space."""
        return {
            "version": SPACE_VERSION,
            "method": self.method,
            "params": {p.name: p.as_dict() for p in self.params},
            "fixed": dict(self.fixed),
        }

    def validate(self) -> None:
        """Check every range and that the method accepts every corner of the space.

        Building the optimizer on a tiny model at each extreme value lets the method's own
        argument checks (``sigma > 1``, ``0 < zeta < 1``, ...) vet the table, so a bad
        range fails here, before any training, not as a crashed trial.
        """
        known = optimizers.hyperparameters(self.method)
        for param in self.params:
            param.check(self.method)
            if param.name not in known:
                raise SpaceError(
                    f"search space of {self.method!r}: {param.name!r} is not a hyperparameter "
                    f"of the method; it takes: {', '.join(sorted(known))}"
                )
        for name in self.fixed:
            if name not in known:
                raise SpaceError(
                    f"search space of {self.method!r}: fixed {name!r} is not a hyperparameter"
                )
        base = {**self.fixed, **{p.name: p.corners()[0] for p in self.params}}
        for param in self.params:
            for value in param.corners():
                try:
                    optimizers.make(
                        self.method, nn.Sequential(nn.Linear(2, 2)), **{**base, param.name: value}
                    )
                except ValueError as error:
                    raise SpaceError(
                        f"search space of {self.method!r}: {param.name}={value!r} is rejected "
                        f"by the method: {error}"
                    ) from None

    def with_overrides(self, overrides: Iterable[str]) -> Space:
        """This space with ``name=low:high`` / ``name=a,b,c`` overrides applied, validated."""
        params = {p.name: p for p in self.params}
        for text in overrides:
            name, param = _parse_override(text, params, self.method)
            params[name] = param
        space = dataclasses.replace(self, params=tuple(params.values()))
        space.validate()
        return space


def _number(text: str, override: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpaceError(f"--space {override!r}: {text!r} is not a number") from None
    return value


def _parse_override(text: str, params: dict[str, Param], method: str) -> tuple[str, Param]:
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name or not value.strip():
        raise SpaceError(
            f"--space {text!r}: expected NAME=LOW:HIGH (a range) or NAME=A,B (choices)"
        )
    if name not in params:
        raise SpaceError(
            f"--space {text!r}: {method!r} has no searched parameter {name!r}; "
            f"searched: {', '.join(params)}"
        )
    old = params[name]
    if old.categorical:
        assert old.choices is not None
        kinds = {type(c) for c in old.choices}
        raw = [v.strip() for v in value.split(",") if v.strip()]
        choices: list[Any] = []
        for item in raw:
            if int in kinds:
                try:
                    choices.append(int(item))
                except ValueError:
                    raise SpaceError(f"--space {text!r}: {item!r} is not an integer") from None
            else:
                choices.append(item)
        param = Param(name, choices=tuple(choices))
    else:
        low_text, colon, high_text = value.partition(":")
        if not colon:
            raise SpaceError(
                f"--space {text!r}: a range is written LOW:HIGH, e.g. {name}=1e-4:1e-1"
            )
        param = Param(name, _number(low_text, text), _number(high_text, text), log=old.log)
    param.check(method)
    return name, param


def report_only(method: str) -> bool:
    """Whether ``method``'s step never applies R (beta and gamma only price its J)."""
    return not optimizers.traits(method).applies_penalty


def _declared(method: str, mode: str) -> tuple[tuple[Param, ...], dict[str, Any]]:
    """The searched parameters and fixed values ``method`` declares for ``mode``."""
    params, fixed = [], {}
    skip_penalty = report_only(method)
    for name, search in optimizers.hparams_class(method).searches().items():
        if search.fixed_in(mode):
            fixed[name] = search.fixed
        elif search.searched and not (search.penalty and skip_penalty):
            params.append(
                Param(name, search.low, search.high, search.log, search.choices, search.note)
            )
    return tuple(params), fixed


def own_spaces() -> dict[str, tuple[Param, ...]]:
    """Mini-batch search parameters of every tunable method that is not an execution
    variant (those share their method's), in name order: the docs' table and the
    equal-terms check read these."""
    found = {}
    for method in optimizers.available():
        if optimizers.algorithm(method) == method:
            params, _ = _declared(method, "minibatch")
            if params:
                found[method] = params
    return found


def trials_for(space: Space) -> int:
    """Trials a study of ``space`` gets: 4 per searched parameter, at least 8."""
    return max(MIN_TRIALS, TRIALS_PER_DIMENSION * len(space.params))


def knob_asymmetries() -> list[str]:
    """Every breach of the equal-terms rule of :data:`SHARED_KNOBS` (empty when fair)."""
    problems = []
    spaces = own_spaces()
    for knob, rule in SHARED_KNOBS.items():
        for method, params in spaces.items():
            has = knob in optimizers.hyperparameters(method)
            searched = knob in {p.name for p in params}
            applies = not (knob == "gamma" and report_only(method))
            wanted = rule == "all" and has and applies
            if searched != wanted:
                problems.append(
                    f"{method!r} {'searches' if searched else 'does not search'} {knob!r}, "
                    f"which the rule {knob}={rule!r} "
                    f"{'forbids' if searched else 'requires'}"
                )
    return problems


def tunable_methods() -> list[str]:
    """Registered methods that declare a search space (execution variants: their method's)."""
    return [m for m in optimizers.available() if _declared(m, "minibatch")[0]]


def space_for(method: str, mode: str = "minibatch") -> Space:
    """The validated search space of ``method`` in ``mode`` (minibatch or fullbatch).

    Unknown methods, and registered methods without a space, fail with the list of
    methods that can be tuned.
    """
    if method not in optimizers.available():
        raise SpaceError(
            f"unknown method {method!r}; available: {', '.join(optimizers.available())}"
        )
    params, fixed = _declared(method, mode)
    if not params:
        raise SpaceError(
            f"method {method!r} declares no search space (hparam(..., search=...) on its "
            f"hyperparameter fields); tunable methods: {', '.join(tunable_methods())}"
        )
    space = Space(method, params, fixed)
    space.validate()
    return space
