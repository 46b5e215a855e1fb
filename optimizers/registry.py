"""Name -> method registry shared by the suite, the tuner and the perf harness.

A method registers with its hyperparameter dataclass (``optimizers.hparams``) and the
names of its runtime options (keyword arguments of ``__init__`` that change how a step
is computed, never what: ``chunk_size``, ``loss_fn``, ``post_step_loss``, ``cuda_graph``).
``make(name, model, **kwargs)`` sorts the keywords into the two, so callers keep one
flat call while the registry, suites, search spaces and logs read the dataclass alone.

What a name means is decided here, once. Two kinds of derived names exist:

* an *execution variant* (``same_as``): the same algorithm and iterates, run differently
  (``<method>-graph``, ``bsqh-fast``); it is reported, tuned and compared as its method;
* a *labelled variant* (``variant_of`` with a ``label``): a different algorithm derived
  from a method (our E-MSA + L0 prox hybrid ``emsa-l0``, the parallel-sweep ablation
  ``bsqh-parallel``); it keeps its own name everywhere and never stands for its method.

``pinned`` values are hyperparameters a name fixes (``bsqh`` is the sequential sweep,
``bsqh-parallel`` the parallel one): passing another value is an error naming the
registered name that runs it. :func:`algorithm` is what the suite, the tuner and the
report ask when they need to know which method a name runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from torch import Tensor, nn

from .hparams import HParams
from .stats import StepStats


class Method(Protocol):
    """The contract of every training method: it owns its forward and backward passes."""

    model: nn.Module
    hp: HParams  # the hyperparameters it was built with (frozen)

    def step(self, x: Tensor, y: Tensor) -> StepStats: ...

    def state_dict(self) -> dict[str, Any]:
        """Everything beyond the model's parameters that the next step depends on."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()`` (load the model's parameters first)."""
        ...

    def objective(self, x: Tensor, y: Tensor) -> Tensor:
        """J = mean loss + R at the current parameters, without building a graph."""
        ...


@dataclass(frozen=True)
class Entry:
    """One registered method: its class, hyperparameter dataclass and runtime options."""

    name: str
    cls: type
    hparams: type[HParams]
    runtime: tuple[str, ...]
    same_as: str | None = None  # execution variant of that method (same iterates)
    variant_of: str | None = None  # labelled variant (another algorithm) of that method
    label: str = ""  # what a labelled variant is, e.g. "ablation: ..."
    pinned: tuple[tuple[str, Any], ...] = ()  # hyperparameters this name fixes


_METHODS: dict[str, Entry] = {}
T = TypeVar("T", bound=type)


def register(
    name: str,
    *,
    hparams: type[HParams],
    runtime: tuple[str, ...] = (),
    same_as: str | None = None,
    variant_of: str | None = None,
    label: str = "",
    pinned: dict[str, Any] | None = None,
) -> Callable[[T], T]:
    """Class decorator: make the class available to ``make(name, ...)``.

    The class is built as ``cls(model, hparams_instance, **runtime)``, or, like a
    ``torch.optim`` optimizer, as ``cls(model, lr=0.1, **runtime)``: the registry wraps the
    constructor so that hyperparameter keywords build the (validated) dataclass. One
    dataclass may serve several names (a method and its graphed variant); its label is the
    first name. ``same_as``, ``variant_of``, ``label`` and ``pinned``: see the module
    docstring; a labelled variant needs its label.
    """
    if same_as is not None and variant_of is not None:
        raise ValueError(f"{name!r}: an execution variant cannot also be a labelled variant")
    if variant_of is not None and not label:
        raise ValueError(f"{name!r}: a labelled variant of {variant_of!r} needs its label")
    for base in (same_as, variant_of):
        if base is not None and base not in _METHODS:
            raise ValueError(f"{name!r}: {base!r} must be registered before its variants")
    fixed = dict(pinned or {})
    unknown = sorted(set(fixed) - set(hparams.names()))
    if unknown:
        raise ValueError(f"{name!r}: pinned {unknown} are not hyperparameters")

    def add(cls: T) -> T:
        if name in _METHODS:
            raise ValueError(f"optimizer name {name!r} is registered twice")
        clash = sorted(set(runtime) & set(hparams.names()))
        if clash:
            raise ValueError(f"{name!r}: {clash} cannot be both hyperparameter and runtime option")
        if not vars(hparams).get("method"):
            hparams.method = name
        found = Entry(
            name, cls, hparams, tuple(runtime), same_as, variant_of, label, tuple(fixed.items())
        )
        _METHODS[name] = found
        setattr(cls, "method_name", name)  # noqa: B010  (any class, whatever it declares)
        init = vars(cls).get("__init__") or getattr(cls, "__init__")  # noqa: B009
        setattr(cls, "__init__", _keyword_constructor(init, found))  # noqa: B010
        return cls

    return add


def available() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)


def description(name: str) -> str:
    """The first line of the method's class docstring: what ``bench list`` shows.

    A labelled variant's label comes first, so no listing can show it without it.
    """
    found = entry(name)
    text = _first_line(found.cls.__doc__)
    return f"[{found.label}] {text}" if found.label else text


def algorithm(name: str) -> str:
    """The registered method whose algorithm ``name`` runs.

    An execution variant (``sgd-graph``, ``bsqh-fast``) runs its method's algorithm; a
    labelled variant (``emsa-l0``, ``bsqh-parallel``) and every method run their own.
    A name that is not registered (a record of a method since removed) is returned as it
    is, so readers of old records never fail on it.
    """
    found = _METHODS.get(name)
    while found is not None and found.same_as is not None:
        found = _METHODS[found.same_as]
    return found.name if found is not None else name


def variant_label(name: str) -> str:
    """What a labelled variant is (its algorithm's label), or "" for a method itself."""
    found = _METHODS.get(algorithm(name))
    return found.label if found is not None else ""


def pinned(name: str) -> dict[str, Any]:
    """The hyperparameters ``name`` fixes (empty for most methods)."""
    return dict(entry(name).pinned)


def _first_line(doc: str | None) -> str:
    lines = [line.strip() for line in (doc or "").strip().splitlines()]
    return lines[0] if lines else ""


def entry(name: str) -> Entry:
    """The registry entry of ``name``; unknown names raise ValueError listing the known."""
    if name not in _METHODS:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(available())}")
    return _METHODS[name]


def hparams_class(name: str) -> type[HParams]:
    """The hyperparameter dataclass of method ``name``."""
    return entry(name).hparams


def runtime_options(name: str) -> tuple[str, ...]:
    """Keyword options of ``name`` that are not hyperparameters."""
    return entry(name).runtime


def hyperparameters(name: str) -> dict[str, Any]:
    """Hyperparameters of a method with their defaults (for search spaces and logs)."""
    return {k: default for k, (default, _) in entry(name).hparams.specs().items()}


def effective_hparams(name: str, **values: Any) -> dict[str, Any]:
    """Every hyperparameter of ``name`` with its effective value, defaults included."""
    return _hparams(entry(name), values).as_dict()


def make(name: str, model: nn.Module, **kwargs: Any) -> Method:
    """Build method ``name`` for ``model``; unknown names or keywords raise ValueError."""
    found = entry(name)
    runtime = {k: v for k, v in kwargs.items() if k in found.runtime}
    values = {k: v for k, v in kwargs.items() if k not in found.runtime}
    method: Method = found.cls(model, _hparams(found, values), **runtime)
    return method


def _keyword_constructor(init: Callable[..., None], found: Entry) -> Callable[..., None]:
    """``init`` that also takes the hyperparameters as keywords (torch.optim's style).

    Keywords that name a hyperparameter build ``found.hparams``; the runtime options pass
    through. Giving both a dataclass and hyperparameter keywords is ambiguous, so it is an
    error naming both; unknown keywords are named with the allowed ones.
    """

    @functools.wraps(init)
    def __init__(self: Any, model: nn.Module, hp: HParams | None = None, **kwargs: Any) -> None:
        values = {k: v for k, v in kwargs.items() if k not in found.runtime}
        if values:
            if hp is not None and set(values) <= set(found.hparams.names()):
                raise ValueError(
                    f"{found.name}: give the hyperparameters either as a "
                    f"{type(hp).__name__} or as keywords, not both "
                    f"(got {type(hp).__name__} and {', '.join(sorted(values))})"
                )
            hp = _hparams(found, values)
        runtime = {k: v for k, v in kwargs.items() if k in found.runtime}
        init(self, model, hp, **runtime)

    return __init__


def _hparams(found: Entry, values: dict[str, Any]) -> HParams:
    """The method's dataclass built from ``values``; unknown names are named with the method.

    A value that contradicts one the name pins is refused, naming the registered method
    that runs it (``bsqh`` with ``sweep="parallel"`` points to ``bsqh-parallel``).
    """
    unknown = sorted(set(values) - set(found.hparams.names()))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for optimizer {found.name!r}; "
            f"allowed: {', '.join(sorted(found.hparams.names()))}"
            + (f" (runtime options: {', '.join(found.runtime)})" if found.runtime else "")
        )
    hp = found.hparams(**{**values, **dict(found.pinned)})
    for key, fixed in found.pinned:
        if key in values and found.hparams(**{**values, key: values[key]}).as_dict()[key] != fixed:
            runs = [e.name for e in _METHODS.values() if (key, values[key]) in e.pinned]
            where = f"; {key}={values[key]!r} is method {runs[0]!r}" if runs else ""
            raise ValueError(
                f"optimizer {found.name!r} runs {key}={fixed!r} (fixed by its name), "
                f"got {key}={values[key]!r}{where}"
            )
    return hp
