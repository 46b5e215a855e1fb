"""Argument checks shared by every optimizer.

Each check raises ``ValueError`` naming the argument, the bad value and what is allowed,
so a typo in a suite file or an Optuna search space fails at construction time with a
message the user can act on, not with NaNs a thousand steps later.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from torch import nn


def _finite(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def non_negative(name: str, value: float) -> float:
    """Return ``value`` as float if it is >= 0."""
    value = _finite(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def integer_at_least(name: str, value: int, minimum: int) -> int:
    """Return ``value`` if it is an int (not a bool) and >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def one_of(name: str, value: str, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def chunk_size(value: int | None) -> int | None:
    """The runtime option ``chunk_size``: unset, or the samples per chunk (>= 1)."""
    return None if value is None else integer_at_least("chunk_size", value, 1)


def sequential_model(model: object) -> nn.Sequential:
    """bSQH sweeps stage by stage, so the model must expose its stages as Sequential children."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(
            f"model must be a torch.nn.Sequential whose children are the stages, "
            f"got {type(model).__name__}"
        )
    if len(model) == 0:
        raise ValueError("model must be a non-empty torch.nn.Sequential, got one with no stages")
    return model


def torch_module(model: object) -> nn.Module:
    """Every method trains a ``torch.nn.Module``; anything else fails before any pass runs."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model
