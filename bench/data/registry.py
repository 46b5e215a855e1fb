"""Name -> dataset loader registry, with the options each loader accepts.

A loader declares its options (defaults and value checks) when it registers, so the
options are checked in one place before any file is read: by :func:`load_dataset` when
data is loaded, and by the suite validator when a suite file is read, so a typo such as
``n_trian`` fails at load time, naming the key and the allowed ones.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.references import find

__all__ = [
    "DatasetLoader",
    "IntOption",
    "NumberOption",
    "RawData",
    "available_datasets",
    "check_loader_options",
    "get_loader",
    "loader_options",
    "register_dataset",
]


@dataclass(frozen=True)
class RawData:
    """What a dataset loader returns: official splits, unnormalised, NCHW."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    source: str


@dataclass(frozen=True)
class IntOption:
    """An integer loader option with a lower bound."""

    default: int
    minimum: int

    def check(self, dataset: str, key: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < self.minimum:
            raise ValueError(
                f"option {key}={value!r} of dataset {dataset!r} must be an integer "
                f">= {self.minimum}"
            )
        return value


@dataclass(frozen=True)
class NumberOption:
    """A finite real loader option with a lower bound."""

    default: float
    minimum: float

    def check(self, dataset: str, key: str, value: object) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not value >= self.minimum
        ):
            raise ValueError(
                f"option {key}={value!r} of dataset {dataset!r} must be a finite number "
                f">= {self.minimum:g}"
            )
        return float(value)


Option = IntOption | NumberOption
#: ``loader(root, *, allow_download, **options)``; options arrive checked, defaults filled.
DatasetLoader = Callable[..., RawData]


@dataclass(frozen=True)
class _Entry:
    loader: DatasetLoader
    options: dict[str, Option] = field(default_factory=dict)


_DATASETS: dict[str, _Entry] = {}


def register_dataset(
    name: str, options: Mapping[str, Option] | None = None
) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader under ``name`` so suites can refer to datasets by string.

    A loader is called as ``loader(root: Path, *, allow_download: bool, **options)``
    with every option of ``options`` present and checked, and returns the official train
    and test splits; :func:`bench.data.load_dataset` does the rest, so every dataset is
    split and normalised by the same code.
    """

    def decorator(loader: DatasetLoader) -> DatasetLoader:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        _DATASETS[name] = _Entry(loader, dict(options or {}))
        return loader

    return decorator


def available_datasets() -> list[str]:
    """Names of all registered datasets, sorted, for CLIs, suites and error messages."""
    return sorted(_DATASETS)


#: Entry-point group where installed packages declare dataset loaders by name.
DATASET_ENTRY_POINTS = "pmp_bench.datasets"


def ensure_dataset_name(name: str) -> None:
    """Make ``name`` loadable: registered, or a ``"package.module:function"`` loader or
    an entry point of :data:`DATASET_ENTRY_POINTS`, imported and registered now.

    Such a loader is called as ``loader(root, *, allow_download)`` (plus the options it
    declares in a ``loader.options`` mapping of :class:`IntOption`/:class:`NumberOption`)
    and returns :class:`RawData`. Raises ValueError naming the dataset and the problem.
    """
    if name in _DATASETS:
        return
    loader = find(
        name, what="dataset loader", group=DATASET_ENTRY_POINTS, kind="dataset",
        known=available_datasets(),
    )  # fmt: skip
    options = getattr(loader, "options", {})
    if not isinstance(options, Mapping) or not all(
        isinstance(o, IntOption | NumberOption) for o in options.values()
    ):
        raise ValueError(
            f"dataset loader {name!r}: its 'options' must map option names to "
            f"IntOption or NumberOption, got {options!r}"
        )
    try:
        inspect.signature(loader).bind(Path("datasets"), allow_download=False, **options)
    except TypeError as error:
        raise ValueError(
            f"dataset loader {name!r} cannot be called as loader(root, *, allow_download"
            f"{''.join(', ' + k for k in options)}): {error}"
        ) from None
    register_dataset(name, options)(_returning_raw_data(name, loader))


def _returning_raw_data(name: str, loader: DatasetLoader) -> DatasetLoader:
    """``loader`` that fails clearly when it returns anything but :class:`RawData`."""

    @functools.wraps(loader)
    def load(root: Path, **kwargs: object) -> RawData:
        raw = loader(root, **kwargs)
        if not isinstance(raw, RawData):
            raise ValueError(
                f"dataset loader {name!r} returned a {type(raw).__name__}; it must return "
                "bench.data.RawData (train/test images NCHW, labels, num_classes, source)"
            )
        return raw

    return load


def _entry(name: str) -> _Entry:
    ensure_dataset_name(name)
    return _DATASETS[name]


def dataset_description(name: str) -> str:
    """The first line of the loader's docstring (``bench list``)."""
    doc = (_entry(name).loader.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def loader_options(name: str) -> dict[str, object]:
    """The options dataset ``name``'s loader accepts, with their defaults."""
    return {key: option.default for key, option in _entry(name).options.items()}


def check_loader_options(name: str, options: Mapping[str, object]) -> dict[str, object]:
    """``options`` checked and completed with defaults; ValueError names the bad key."""
    specs = _entry(name).options
    for key in options:
        if key not in specs:
            allowed = ", ".join(sorted(specs)) or "(none)"
            raise ValueError(
                f"unknown option {key!r} for dataset {name!r}; allowed options: {allowed}"
            )
    checked = {key: spec.default for key, spec in specs.items()}
    for key, value in options.items():
        checked[key] = specs[key].check(name, key, value)
    return checked


def get_loader(name: str) -> Callable[..., RawData]:
    """The loader of ``name`` wrapped so that its options are checked first."""
    entry = _entry(name)

    def load(root: Path, *, allow_download: bool, **options: object) -> RawData:
        return entry.loader(
            root, allow_download=allow_download, **check_loader_options(name, options)
        )

    return load
