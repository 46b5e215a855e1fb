"""``"package.module:function"`` references: your own model builder or dataset loader.

A suite may name a model or a dataset that the bench does not register, as the import
path of the function that builds or loads it (``models = ["mylab.nets:resnet_bn"]``),
or as the name of an entry point in the group ``pmp_bench.models`` or
``pmp_bench.datasets`` that an installed package declares. The function is imported
when the suite is read, so a reference that cannot work fails then, with an error
naming the reference and what is wrong (module not importable, attribute missing, not
callable), never after hours of other cells.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

SEPARATOR = ":"


def is_reference(name: str) -> bool:
    """Whether ``name`` is ``module:attribute`` rather than a registered name."""
    return SEPARATOR in name


def entry_point(group: str, name: str) -> Callable[..., Any] | None:
    """The function an installed package declares as ``name`` in ``group``, or None."""
    for point in entry_points(group=group, name=name):
        return _callable(point.load(), f"entry point {name!r} of {group}")
    return None


def find(name: str, *, what: str, group: str, kind: str, known: list[str]) -> Callable[..., Any]:
    """The ``what`` (e.g. "model builder") that ``name`` references or an installed
    package declares as entry point ``name`` of ``group``; ValueError naming the ``kind``
    (e.g. "model") and the ``known`` names when it is neither."""
    found = resolve(name, what) if is_reference(name) else entry_point(group, name)
    if found is None:
        raise ValueError(
            f"unknown {kind} {name!r}; known {kind}s: {', '.join(known)} "
            f"(or your own {what} as 'package.module:function')"
        )
    return found


def resolve(reference: str, what: str) -> Callable[..., Any]:
    """The function ``reference`` (``"package.module:function"``) names.

    ``what`` says what it should be (``"model builder"``) in the error messages.
    Raises ValueError naming the reference and the problem.
    """
    module_name, _, attribute = reference.partition(SEPARATOR)
    if not module_name or not attribute:
        raise ValueError(f"{what} {reference!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"{what} {reference!r}: module {module_name!r} cannot be imported ({error}); "
            "is it on PYTHONPATH (run from the folder that holds it, or pip install it)?"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(
                f"{what} {reference!r}: module {module_name!r} has no attribute {attribute!r}"
            )
        target = getattr(target, part)
    return _callable(target, f"{what} {reference!r}")


def _callable(target: Any, label: str) -> Callable[..., Any]:
    if not callable(target):
        raise ValueError(f"{label} is a {type(target).__name__}, not a function")
    return target  # type: ignore[no-any-return]
