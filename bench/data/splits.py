"""Train / validation / test splits and normalisation, the same for every dataset.

Why tensors and not DataLoaders: bSQH works on the full training batch (or large chunks
of it) many times per step, so the whole dataset lives as one tensor on the training
device; mini-batch methods index into the same tensors, which keeps every optimizer on
exactly the same data.

Splits (the same rules for every dataset, so ``val_fraction`` means the same everywhere):

1. One ``torch.Generator`` seeded with ``split_seed`` (never the global RNG, so model
   initialisation or other code cannot change the split) draws a permutation of the
   official training set.
2. If ``train_subset=n`` is given, the first ``n`` samples of that permutation form the
   pool; otherwise the pool is the whole training set.
3. The first ``round(val_fraction * len(pool))`` pool samples become the validation
   split, the rest the training split. So train + val = pool, and they are disjoint.
4. ``test_subset=m`` takes ``m`` test samples drawn by the same generator (after the
   training permutation), so it depends on ``split_seed`` and the dataset only.
5. Per-channel mean and standard deviation are computed on the final training split only
   (the validation and test images must not leak into preprocessing) and applied to all
   three splits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.data.registry import check_loader_options, get_loader, loader_options

__all__ = ["SPLIT_OPTIONS", "DataSplits", "check_data_option", "data_options", "load_dataset"]


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Train / validation / test tensors of one dataset, ready for training.

    Images are float32 NCHW, normalised per channel with the training split's statistics;
    labels are int64. ``source`` says where the files came from, for run records.
    ``mean`` and ``std`` are the per-channel statistics used, in the raw pixel scale, so
    images can be mapped back (``x * std + mean``).
    """

    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    val_x: torch.Tensor = field(repr=False)
    val_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    source: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if len(x) != len(y):
                raise ValueError(f"{split}_x has {len(x)} samples but {split}_y has {len(y)}")

    def to(self, device: str | torch.device) -> DataSplits:
        """A copy with all six tensors on ``device`` (the same object's tensors if there)."""
        moved = {
            f"{split}_{part}": getattr(self, f"{split}_{part}").to(device)
            for split in ("train", "val", "test")
            for part in ("x", "y")
        }
        return dataclasses.replace(self, **moved)

    def sizes(self) -> dict[str, int]:
        """Sample counts per split, for logs and run records."""
        return {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)}


def _fraction(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number in (0, 1), got {value!r}")
    if not 0.0 < value < 1.0:  # also rejects NaN
        raise ValueError(f"{key} must be in the open interval (0, 1), got {value}")
    return float(value)


def _seed(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be an integer >= 0, got {value!r}")
    return value


def _positive_int(key: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
    return value


def _folder(key: str, value: object) -> str | Path:
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError(f"{key} must be a folder path (a non-empty string), got {value!r}")
    return value


#: The options of :func:`load_dataset` every dataset accepts, with their value checks.
#: (The subset sizes are checked again against the dataset's size once it is loaded.)
SPLIT_OPTIONS: dict[str, Callable[[str, object], object]] = {
    "val_fraction": _fraction,
    "split_seed": _seed,
    "train_subset": _positive_int,
    "test_subset": _positive_int,
    "root": _folder,
}


def data_options(dataset: str) -> list[str]:
    """Every option :func:`load_dataset` accepts for ``dataset``, sorted."""
    return sorted({*SPLIT_OPTIONS, *loader_options(dataset)})


class DataOptionError(ValueError):
    """A data option that does not fit the dataset as loaded (``train_subset`` larger
    than its training split): a user's mistake, found when the files are read."""


def check_data_option(dataset: str, key: str, value: object) -> None:
    """Check one ``load_dataset`` option of ``dataset`` without loading anything.

    For suite files: an unknown key raises ``ValueError`` listing the allowed keys, a bad
    value one naming the value and what is allowed.
    """
    if key in SPLIT_OPTIONS:
        SPLIT_OPTIONS[key](key, value)
        return
    if key not in loader_options(dataset):
        raise ValueError(
            f"unknown option {key!r} for dataset {dataset!r}; allowed options: "
            f"{', '.join(data_options(dataset))}"
        )
    check_loader_options(dataset, {key: value})


def load_dataset(
    name: str,
    *,
    root: str | Path = "datasets",
    val_fraction: float = 0.1,
    split_seed: int = 0,
    train_subset: int | None = None,
    test_subset: int | None = None,
    device: str | torch.device = "cpu",
    allow_download: bool = True,
    **options: object,
) -> DataSplits:
    """Load dataset ``name`` and split it as described in the module docstring.

    ``train_subset`` is the size of the pool that validation is carved from (so
    train + val = ``train_subset``); ``test_subset`` the size of the test split.
    ``options`` go to the dataset's loader (e.g. ``seed`` or ``n_train`` for
    ``synthetic``); unknown ones raise ``ValueError``. Bad values raise ``ValueError``
    naming the value and the allowed range; missing files raise
    :class:`~bench.data.locate.DatasetUnavailable`, corrupt ones
    :class:`~bench.data.formats.DataFileError`.
    """
    loader = get_loader(name)
    val_fraction = _fraction("val_fraction", val_fraction)
    split_seed = _seed("split_seed", split_seed)

    raw = loader(Path(root), allow_download=allow_download, **options)
    n_train_all, n_test_all = len(raw.train_y), len(raw.test_y)
    pool_size = _check_subset("train_subset", train_subset, n_train_all)
    test_size = _check_subset("test_subset", test_subset, n_test_all)
    n_val = round(val_fraction * pool_size)
    if not 1 <= n_val <= pool_size - 1:
        raise DataOptionError(
            f"val_fraction={val_fraction} of {pool_size} training samples leaves {n_val} for "
            f"validation and {pool_size - n_val} for training; both need at least one sample"
        )

    generator = torch.Generator().manual_seed(split_seed)
    pool = torch.randperm(n_train_all, generator=generator)[:pool_size]
    val_idx, train_idx = pool[:n_val], pool[n_val:]
    if test_size < n_test_all:
        test_idx = torch.randperm(n_test_all, generator=generator)[:test_size]
        test_x, test_y = raw.test_x[test_idx], raw.test_y[test_idx]
    else:
        test_x, test_y = raw.test_x, raw.test_y

    train_x = raw.train_x[train_idx].to(torch.float32)
    # Float64 accumulators keep the statistics exact enough for 60k x 784 pixels; the
    # images themselves stay float32 (a float64 copy of them would cost 4x the memory).
    count = train_x.numel() // train_x.shape[1]
    mean = train_x.sum(dim=(0, 2, 3), dtype=torch.float64) / count
    mean_sq = train_x.square().sum(dim=(0, 2, 3), dtype=torch.float64) / count
    std = (mean_sq - mean.square()).clamp_min(0).sqrt()
    # A constant channel (std only rounding noise) is left unscaled instead of blown up.
    std = torch.where(std > 1e-6 * (1 + mean.abs()), std, torch.ones_like(std))
    shift = mean.to(torch.float32).view(1, -1, 1, 1)
    scale = std.to(torch.float32).view(1, -1, 1, 1)

    def normalise(x: torch.Tensor) -> torch.Tensor:
        return (x.to(torch.float32) - shift) / scale

    splits = DataSplits(
        train_x=normalise(train_x),
        train_y=raw.train_y[train_idx].to(torch.int64),
        val_x=normalise(raw.train_x[val_idx]),
        val_y=raw.train_y[val_idx].to(torch.int64),
        test_x=normalise(test_x),
        test_y=test_y.to(torch.int64),
        name=name,
        num_classes=raw.num_classes,
        in_channels=int(raw.train_x.shape[1]),
        image_size=int(raw.train_x.shape[2]),
        source=raw.source,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )
    return splits.to(device)


def _check_subset(what: str, value: int | None, available: int) -> int:
    """Validate a requested subset size and return the number of samples to use."""
    if value is None:
        return available
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= available:
        raise DataOptionError(f"{what} must be an integer in [1, {available}], got {value!r}")
    return value
