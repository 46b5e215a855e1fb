"""Name -> optimizer class registry shared by the suite, the tuner and the perf harness."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from torch import Tensor, nn

from .stats import StepStats


class Method(Protocol):
    """The contract of every training method: it owns its forward and backward passes."""

    model: nn.Module

    def step(self, x: Tensor, y: Tensor) -> StepStats: ...

    def objective(self, x: Tensor, y: Tensor) -> Tensor:
        """J = mean loss + R at the current parameters, without building a graph."""
        ...


_METHODS: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make the class available to ``make(name, ...)``."""

    def add(cls: T) -> T:
        if name in _METHODS:
            raise ValueError(f"optimizer name {name!r} is registered twice")
        _METHODS[name] = cls
        cls.method_name = name
        return cls

    return add


def available() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)


def _method_class(name: str) -> type:
    if name not in _METHODS:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(available())}")
    return _METHODS[name]


def hyperparameters(name: str) -> dict[str, Any]:
    """Keyword hyperparameters of a method with their defaults (for search spaces and logs)."""
    signature = inspect.signature(_method_class(name).__init__)
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def make(name: str, model: nn.Module, **hparams: Any) -> Method:
    """Build method ``name`` for ``model``; unknown names or hyperparameters raise ValueError."""
    allowed = hyperparameters(name)
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for optimizer {name!r}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    return _method_class(name)(model, **hparams)
