"""Typed hyperparameters: one frozen dataclass per method, validated in one place.

Why a dataclass and not the ``__init__`` signature: a method's constructor also takes
runtime options (``chunk_size``, ``loss_fn``, ``post_step_loss``, ``cuda_graph``) that
change how a step is computed, not what it computes. Keeping the hyperparameters apart
lets the registry, suite validation, search spaces, MLflow params and the docs read
one definition, with its defaults, bounds and a one-line help each.

Declare a field with :func:`hparam`; the bounds are checked in ``__post_init__`` and
every error names the field, the bad value and what is allowed::

    @dataclass(frozen=True)
    class SGDHParams(HParams):
        lr: float = hparam(
            0.05, "learning rate", low=0.0, low_open=True, search=log_uniform(1e-3, 0.5)
        )

``search`` (see ``optimizers.search``) is the field's search space: the tuner reads it
from here, so a method's ranges live in its own module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from .search import Search

_SPEC = "hparam"


@dataclass(frozen=True)
class HParamSpec:
    """What one hyperparameter accepts. ``None`` bounds are unbounded."""

    help: str
    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    optional: bool = False  # None is allowed (e.g. an unset clamp)
    search: Search | None = None  # how the tuner treats it (``optimizers.search``)

    def allowed(self) -> str:
        """Human-readable description of the accepted values."""
        if self.choices is not None:
            text = f"one of {list(self.choices)}"
        else:
            noun = {int: "an integer", bool: "true or false", str: "a string"}.get(
                self.kind, "a finite number"
            )
            parts = []
            if self.low is not None:
                parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
            if self.high is not None:
                parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
            text = noun + (" " + " and ".join(parts) if parts else "")
        return text + (" (or unset)" if self.optional else "")

    def check(self, name: str, value: Any) -> Any:
        """``value`` converted to the field's type; ValueError naming ``name`` otherwise."""
        if value is None and self.optional:
            return None
        bad = ValueError(f"{name} must be {self.allowed()}, got {value!r}")
        if self.choices is not None:
            if value not in self.choices or isinstance(value, bool) != isinstance(
                self.choices[0], bool
            ):
                raise bad
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind is str:
            if not isinstance(value, str):
                raise bad
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        if self.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise bad
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise bad
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise bad
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            raise bad
        return value


def hparam(
    default: Any,
    help: str,
    *,
    kind: type | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: Sequence[Any] | None = None,
    optional: bool = False,
    search: Search | None = None,
) -> Any:
    """A dataclass field carrying its bounds, help and search space (module docstring).

    ``kind`` defaults to the type of ``default`` (float for ints given as bounds-only
    floats is not guessed: pass ``kind=float`` where a float field has an int default).
    """
    if kind is None:
        kind = type(default) if default is not None else float
    spec = HParamSpec(
        help=help,
        kind=kind,
        low=low,
        high=high,
        low_open=low_open,
        high_open=high_open,
        choices=tuple(choices) if choices is not None else None,
        optional=optional,
        search=search,
    )
    return field(default=default, metadata={_SPEC: spec})


@dataclass(frozen=True)
class HParams:
    """Base of every method's hyperparameter dataclass (declare subclasses frozen)."""

    #: Registry name of the method, set by ``optimizers.register``.
    method: ClassVar[str] = ""
    #: Order in which the tuner samples the searched fields (default: declaration order).
    #: A seeded sampler draws its random start-up points in this order, so changing it
    #: changes which trials a study runs.
    search_order: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            spec = f.metadata.get(_SPEC)
            if spec is not None:
                object.__setattr__(self, f.name, spec.check(f.name, getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Cross-field rules (override); raise ValueError naming the fields."""

    @classmethod
    def specs(cls) -> dict[str, tuple[Any, HParamSpec]]:
        """Field name -> (default, spec), in declaration order."""
        return {
            f.name: (f.default, f.metadata[_SPEC])
            for f in dataclasses.fields(cls)
            if _SPEC in f.metadata
        }

    @classmethod
    def searches(cls) -> dict[str, Search]:
        """Field name -> search declaration, searched fields in ``search_order`` first."""
        found = {name: spec.search for name, (_, spec) in cls.specs().items() if spec.search}
        unknown = sorted(set(cls.search_order) - set(found))
        if unknown:
            raise ValueError(f"{cls.__name__}.search_order names unsearched fields {unknown}")
        order = [*cls.search_order, *(n for n in found if n not in cls.search_order)]
        return {name: found[name] for name in order}

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """Build from a mapping; unknown names raise ValueError listing the allowed ones."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            label = f" for optimizer {cls.method!r}" if cls.method else ""
            raise ValueError(
                f"unknown hyperparameter(s) {unknown}{label}; "
                f"allowed: {', '.join(sorted(cls.names()))}"
            )
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """Every hyperparameter with its effective value, defaults included."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
