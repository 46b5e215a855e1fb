"""Name -> method registry shared by the suite, the tuner and the perf harness.

A method registers with its hyperparameter dataclass (``optimizers.hparams``) and the
names of its runtime options (keyword arguments of ``__init__`` that change how a step
is computed, never what: ``chunk_size``, ``loss_fn``, ``post_step_loss``, ``cuda_graph``).
``make(name, model, **kwargs)`` sorts the keywords into the two, so callers keep one
flat call while the registry, suites, search spaces and logs read the dataclass alone.

Classes registered without ``hparams`` fall back to their keyword-only ``__init__``
parameters (transitional; every shipped method declares a dataclass).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from torch import Tensor, nn

from .hparams import HParams
from .stats import StepStats


class Method(Protocol):
    """The contract of every training method: it owns its forward and backward passes."""

    model: nn.Module

    def step(self, x: Tensor, y: Tensor) -> StepStats: ...

    def objective(self, x: Tensor, y: Tensor) -> Tensor:
        """J = mean loss + R at the current parameters, without building a graph."""
        ...


@dataclass(frozen=True)
class Entry:
    """One registered method: its class, hyperparameter dataclass and runtime options."""

    name: str
    cls: type
    hparams: type[HParams] | None
    runtime: tuple[str, ...]


_METHODS: dict[str, Entry] = {}
T = TypeVar("T", bound=type)


def register(
    name: str, *, hparams: type[HParams] | None = None, runtime: tuple[str, ...] = ()
) -> Callable[[T], T]:
    """Class decorator: make the class available to ``make(name, ...)``.

    With ``hparams`` the class is built as ``cls(model, hparams_instance, **runtime)``.
    """

    def add(cls: T) -> T:
        if name in _METHODS:
            raise ValueError(f"optimizer name {name!r} is registered twice")
        if hparams is not None and not hparams.method:
            hparams.method = name  # one dataclass may serve variants: the first name stays
        _METHODS[name] = Entry(name, cls, hparams, tuple(runtime))
        cls.method_name = name
        return cls

    return add


def available() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)


def entry(name: str) -> Entry:
    """The registry entry of ``name``; unknown names raise ValueError listing the known."""
    if name not in _METHODS:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(available())}")
    return _METHODS[name]


def hparams_class(name: str) -> type[HParams] | None:
    """The hyperparameter dataclass of method ``name`` (None for a legacy class)."""
    return entry(name).hparams


def runtime_options(name: str) -> tuple[str, ...]:
    """Keyword options of ``name`` that are not hyperparameters."""
    found = entry(name)
    if found.hparams is not None:
        return found.runtime
    return tuple(k for k in _legacy_keywords(found.cls) if k in _LEGACY_RUNTIME)


_LEGACY_RUNTIME = ("chunk_size", "loss_fn", "post_step_loss", "cuda_graph", "reuse_adjoints")


def _legacy_keywords(cls: type) -> dict[str, Any]:
    signature = inspect.signature(cls.__init__)
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def hyperparameters(name: str) -> dict[str, Any]:
    """Hyperparameters of a method with their defaults (for search spaces and logs)."""
    found = entry(name)
    if found.hparams is not None:
        return {k: default for k, (default, _) in found.hparams.specs().items()}
    return {k: v for k, v in _legacy_keywords(found.cls).items() if k not in _LEGACY_RUNTIME}


def effective_hparams(name: str, **values: Any) -> dict[str, Any]:
    """Every hyperparameter of ``name`` with its effective value, defaults included."""
    found = entry(name)
    if found.hparams is not None:
        return found.hparams.from_dict(values).as_dict()
    return {**hyperparameters(name), **values}


def make(name: str, model: nn.Module, **kwargs: Any) -> Method:
    """Build method ``name`` for ``model``; unknown names or keywords raise ValueError."""
    found = entry(name)
    if found.hparams is None:
        allowed = _legacy_keywords(found.cls)
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown} for optimizer {name!r}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
        return found.cls(model, **kwargs)
    runtime = {k: v for k, v in kwargs.items() if k in found.runtime}
    values = {k: v for k, v in kwargs.items() if k not in found.runtime}
    unknown = sorted(set(values) - set(found.hparams.names()))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for optimizer {name!r}; "
            f"allowed: {', '.join(sorted(found.hparams.names()))}"
            + (f" (runtime options: {', '.join(found.runtime)})" if found.runtime else "")
        )
    return found.cls(model, found.hparams.from_dict(values), **runtime)
