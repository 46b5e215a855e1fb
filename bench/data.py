"""Datasets as normalised tensors, split into train / validation / test.

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

Files come from, in order: ``<root>/<dataset>/`` (also where torchvision puts its
downloads), the Debian package's directory (Fashion-MNIST only), a torchvision download
(when ``allow_download`` and online), otherwise :class:`DatasetUnavailable` says how to
provide them. Debian files are read in place, never copied or linked. Formats are parsed
here (IDX, CIFAR pickles) so loading needs neither torchvision nor internet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import math
import os
import pickle
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CIFAR10_BATCHES",
    "DEBIAN_FASHION_MNIST_DIR",
    "DEBIAN_FASHION_MNIST_PACKAGE",
    "IDX_FILES",
    "DataSplits",
    "DatasetUnavailable",
    "available_datasets",
    "ensure_dataset",
    "load_dataset",
    "read_cifar_batch",
    "read_idx",
    "register_dataset",
]

#: Where the Debian package ``dataset-fashion-mnist`` installs the original gzipped IDX
#: files. A module constant so tests can point it elsewhere.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"

#: IDX file stems shared by MNIST and Fashion-MNIST; each may also end in ``.gz``.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: The CIFAR-10 python-version batch files inside ``cifar-10-batches-py/``.
CIFAR10_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_DOWNLOAD_TIMEOUT_S = 15.0
DIGITS_TEST_SEED = 0  # fixed, so the digits test split never moves with split_seed
DIGITS_TEST_FRACTION = 0.2


class DatasetUnavailable(RuntimeError):
    """The dataset's files are neither on disk nor downloadable; the message says how."""


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


@dataclass(frozen=True)
class _RawData:
    """What a dataset loader returns: official splits, unnormalised, NCHW."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    source: str


DatasetLoader = Callable[..., _RawData]
_DATASETS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader under ``name`` so suites can refer to datasets by string.

    A loader is called as ``loader(root: Path, *, allow_download: bool, **options)`` and
    returns the official train and test splits; :func:`load_dataset` does the rest, so
    every dataset is split and normalised by the same code.
    """

    def decorator(loader: DatasetLoader) -> DatasetLoader:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        _DATASETS[name] = loader
        return loader

    return decorator


def available_datasets() -> list[str]:
    """Names of all registered datasets, sorted, for CLIs, suites and error messages."""
    return sorted(_DATASETS)


def _get_loader(name: str) -> DatasetLoader:
    loader = _DATASETS.get(name)
    if loader is None:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(available_datasets())}"
        )
    return loader


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
    :class:`DatasetUnavailable`.
    """
    loader = _get_loader(name)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float):
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in the open interval (0, 1), got {val_fraction}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int):
        raise ValueError(f"split_seed must be an integer, got {split_seed!r}")

    raw = loader(Path(root), allow_download=allow_download, **options)
    n_train_all, n_test_all = len(raw.train_y), len(raw.test_y)
    pool_size = _check_subset("train_subset", train_subset, n_train_all)
    test_size = _check_subset("test_subset", test_subset, n_test_all)
    n_val = round(val_fraction * pool_size)
    if not 1 <= n_val <= pool_size - 1:
        raise ValueError(
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
        raise ValueError(f"{what} must be an integer in [1, {available}], got {value!r}")
    return value


def ensure_dataset(
    name: str, *, root: str | Path = "datasets", install_with_apt: bool = True
) -> str:
    """Make sure dataset ``name`` can be loaded and return where its files come from.

    Used by ``make data``. Resolves and parses the files in the same order as
    :func:`load_dataset` (downloading when online). For Fashion-MNIST, when that fails and
    this process runs as root with ``apt-get`` available, it installs the Debian package
    ``dataset-fashion-mnist`` and tries again; the package's files are then read in
    place, not linked into ``root``. Raises :class:`DatasetUnavailable` otherwise.
    """
    loader = _get_loader(name)
    root = Path(root)
    try:
        return loader(root, allow_download=True).source
    except DatasetUnavailable as first_error:
        if name != "fashion-mnist" or not install_with_apt:
            raise
        if not _running_as_root() or shutil.which("apt-get") is None:
            raise DatasetUnavailable(
                f"{first_error}\n(apt-get install was not attempted: it needs root and apt-get)"
            ) from first_error
        _apt_install(DEBIAN_FASHION_MNIST_PACKAGE)
        return loader(root, allow_download=False).source


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _apt_install(package: str) -> None:
    """``apt-get update && apt-get install -y package``; failure -> DatasetUnavailable."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise DatasetUnavailable(
                f"`{' '.join(command)}` failed with exit code {result.returncode}:\n"
                f"{result.stderr.strip()[-2000:]}"
            )


# --------------------------------------------------------------------------- options


def _take_options(dataset: str, options: dict[str, object], defaults: dict[str, object]) -> dict:
    """Merge ``options`` into ``defaults``, rejecting names the dataset does not know."""
    for key in options:
        if key not in defaults:
            allowed = ", ".join(sorted(defaults)) or "(none)"
            raise ValueError(
                f"unknown option {key!r} for dataset {dataset!r}; allowed options: {allowed}"
            )
    return {**defaults, **options}


def _int_option(dataset: str, key: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"option {key}={value!r} of dataset {dataset!r} must be an integer >= {minimum}"
        )
    return value


# --------------------------------------------------------------------------- file formats


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the file is gzip (by content, not by name)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from exc
    return data


def read_idx(path: str | Path, *, expect_magic: int | None = None) -> np.ndarray:
    """Parse an IDX file (the MNIST format), gzipped or raw, into a uint8 array.

    Our own parser, so MNIST-style data loads without torchvision and a truncated or
    mislabelled file fails loudly: any problem raises ``ValueError`` naming the file.
    The header is a big-endian magic ``0x0000 <type> <ndim>`` (type 0x08 = unsigned
    byte) followed by ``ndim`` big-endian uint32 sizes.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if expect_magic is not None and magic != expect_magic:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic:08x}, expected 0x{expect_magic:08x}"
        )
    if magic >> 16 != 0 or (magic >> 8) & 0xFF != 0x08:
        raise ValueError(f"{path}: bad IDX magic number 0x{magic:08x} (want unsigned bytes)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions, {len(data)} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)
    if len(data) != expected:
        raise ValueError(
            f"{path}: IDX header promises dimensions {dims} ({expected} bytes) "
            f"but the file has {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds plain containers and numpy arrays.

    CIFAR batches are pickles, and a plain ``pickle.load`` would run whatever code a
    tampered file names; allowing only the numpy array constructors closes that door.
    """

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol < 3
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch: images (N, 3, 32, 32) uint8 and labels (N,) int64.

    The file is a pickled dict with ``data`` (N, 3072) uint8 rows (1024 red, 1024 green,
    1024 blue values, row-major 32x32) and ``labels``; keys may be bytes or str. The
    original files are Python 2 pickles, read with ``encoding="latin1"`` as NumPy advises
    for Python 2 arrays. Problems raise ``ValueError`` naming the file.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            batch = _CifarUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as exc:
        raise ValueError(f"{path}: not a readable CIFAR batch pickle ({exc})") from exc
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path}: missing key 'data' or 'labels' (keys: {sorted(batch)})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: 'labels' must be {len(data)} integers, got {labels.dtype} {labels.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels outside 0..9 (min {labels.min()}, max {labels.max()})")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


# --------------------------------------------------------------------------- resolution


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    """``stem`` (raw, preferred as it reads faster) or ``stem.gz`` inside ``directory``."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_files_in(directory: Path) -> dict[str, Path] | None:
    """All four IDX files in ``directory``, or None if any is missing."""
    found = {key: _find_idx_file(directory, stem) for key, stem in IDX_FILES.items()}
    if any(path is None for path in found.values()):
        return None
    return found  # type: ignore[return-value]


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound every network wait, so an offline machine fails in seconds, not minutes."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download_with_torchvision(name: str, target: Path) -> None:
    """Download ``name`` with torchvision into ``target`` (its own sub-folder layout).

    Raises whatever torchvision or the network raises; the caller turns that into
    :class:`DatasetUnavailable`.
    """
    from torchvision import datasets as tv_datasets

    classes = {
        "mnist": tv_datasets.MNIST,
        "fashion-mnist": tv_datasets.FashionMNIST,
        "cifar10": tv_datasets.CIFAR10,
    }
    target.mkdir(parents=True, exist_ok=True)
    with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
        classes[name](root=str(target), train=True, download=True)


def _try_download(name: str, target: Path, allow_download: bool) -> str:
    """Attempt a download; return "" on success or a one-line reason why not."""
    if not allow_download:
        return "download not attempted (allow_download=False)"
    try:
        _download_with_torchvision(name, target)
    except Exception as exc:  # network, HTTP, checksum or missing torchvision: all "no"
        return f"download into {target} failed: {type(exc).__name__}: {exc}"
    return ""


def _idx_candidates(root: Path, folder: str, tv_class: str) -> list[Path]:
    """Local folders to search: ours first, then torchvision's layouts."""
    return [root / folder, root / folder / tv_class / "raw", root / tv_class / "raw"]


def _resolve_idx(
    name: str, root: Path, folder: str, tv_class: str, allow_download: bool, extra: list[Path]
) -> tuple[dict[str, Path], str]:
    """Find the four IDX files of ``name`` and describe where they came from."""
    local = _idx_candidates(root, folder, tv_class)
    for directory in local:
        files = _idx_files_in(directory)
        if files:
            return files, f"IDX files in {directory}"
    for directory in extra:
        files = _idx_files_in(directory)
        if files:
            return files, f"Debian package {DEBIAN_FASHION_MNIST_PACKAGE}: {directory}"
    reason = _try_download(name, root / folder, allow_download)
    if not reason:
        files = _idx_files_in(root / folder / tv_class / "raw")
        if files:
            return files, f"downloaded by torchvision into {root / folder / tv_class / 'raw'}"
        reason = "torchvision reported success but the IDX files are not where expected"
    raise DatasetUnavailable(_idx_help(name, root / folder, [*local, *extra], reason))


def _idx_help(name: str, target: Path, searched: list[Path], reason: str) -> str:
    """The DatasetUnavailable message: what is missing and every way to provide it."""
    expected = ", ".join(f"{stem}.gz" for stem in IDX_FILES.values())
    lines = [
        f"{name} is not available. Expected the four IDX files {expected} "
        "(gzipped or not) in one of:",
        *(f"  {d}" for d in searched),
        f"({reason}.) To provide them:",
        f"  - copy the four files into {target}/",
    ]
    if name == "fashion-mnist":
        lines.append(
            f"  - or `sudo apt-get install {DEBIAN_FASHION_MNIST_PACKAGE}` "
            f"(installs them into {DEBIAN_FASHION_MNIST_DIR}/)"
        )
    lines.append(f"  - or run `make data` (or `python -m bench data --dataset {name}`) online")
    return "\n".join(lines)


def _load_idx_dataset(files: dict[str, Path], source: str) -> _RawData:
    """Parse the four IDX files and check they agree with each other."""
    arrays = {
        key: read_idx(
            path, expect_magic=_IDX_IMAGES_MAGIC if "images" in key else _IDX_LABELS_MAGIC
        )
        for key, path in files.items()
    }
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise ValueError(
                f"{files[f'{split}_images']} has {len(images)} images but "
                f"{files[f'{split}_labels']} has {len(labels)} labels"
            )
        if images.shape[1] != images.shape[2]:
            raise ValueError(
                f"{files[f'{split}_images']}: images must be square, got {images.shape[1:]}"
            )
        if len(labels) and labels.max() > 9:
            raise ValueError(f"{files[f'{split}_labels']}: label {labels.max()} outside 0..9")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise ValueError(
            f"train images {arrays['train_images'].shape[1:]} and test images "
            f"{arrays['test_images'].shape[1:]} differ in size"
        )
    return _RawData(
        train_x=torch.from_numpy(arrays["train_images"]).unsqueeze(1),
        train_y=torch.from_numpy(arrays["train_labels"]).to(torch.int64),
        test_x=torch.from_numpy(arrays["test_images"]).unsqueeze(1),
        test_y=torch.from_numpy(arrays["test_labels"]).to(torch.int64),
        num_classes=10,
        source=source,
    )


# --------------------------------------------------------------------------- datasets


@register_dataset("fashion-mnist")
def _fashion_mnist(root: Path, *, allow_download: bool, **options: object) -> _RawData:
    """Fashion-MNIST (Zalando, MIT licence): 60,000 + 10,000 28x28 greyscale, 10 classes."""
    _take_options("fashion-mnist", options, {})
    files, source = _resolve_idx(
        "fashion-mnist",
        root,
        "fashion-mnist",
        "FashionMNIST",
        allow_download,
        [DEBIAN_FASHION_MNIST_DIR],
    )
    return _load_idx_dataset(files, source)


@register_dataset("mnist")
def _mnist(root: Path, *, allow_download: bool, **options: object) -> _RawData:
    """MNIST (LeCun, Cortes, Burges): 60,000 + 10,000 28x28 greyscale digits."""
    _take_options("mnist", options, {})
    files, source = _resolve_idx("mnist", root, "mnist", "MNIST", allow_download, [])
    return _load_idx_dataset(files, source)


@register_dataset("cifar10")
def _cifar10(root: Path, *, allow_download: bool, **options: object) -> _RawData:
    """CIFAR-10 (Krizhevsky 2009): 50,000 + 10,000 32x32 colour images, 10 classes."""
    _take_options("cifar10", options, {})
    searched = [root / "cifar10" / "cifar-10-batches-py", root / "cifar-10-batches-py"]

    def complete(directory: Path) -> bool:
        return all((directory / batch).is_file() for batch in CIFAR10_BATCHES)

    found = next((d for d in searched if complete(d)), None)
    source = f"CIFAR-10 python batches in {found}"
    if found is None:
        reason = _try_download("cifar10", root / "cifar10", allow_download)
        if not reason and complete(searched[0]):
            found, source = searched[0], f"downloaded by torchvision into {searched[0]}"
        else:
            reason = reason or "torchvision reported success but the batches are missing"
            raise DatasetUnavailable(
                "cifar10 is not available. Expected the CIFAR-10 python-version files "
                f"{', '.join(CIFAR10_BATCHES)} in one of:\n"
                + "".join(f"  {d}\n" for d in searched)
                + f"({reason}.) To provide them:\n"
                f"  - unpack cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html)"
                f" into {root / 'cifar10'}/ so that {searched[0]}/ holds the six files\n"
                "  - or run `python -m bench data --dataset cifar10` online"
            )
    batches = [read_cifar_batch(found / batch) for batch in CIFAR10_BATCHES]
    train_x = np.concatenate([b[0] for b in batches[:5]])
    train_y = np.concatenate([b[1] for b in batches[:5]])
    test_x, test_y = batches[5]
    return _RawData(
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        num_classes=10,
        source=source,
    )


@register_dataset("digits")
def _digits(root: Path, *, allow_download: bool, **options: object) -> _RawData:
    """scikit-learn's 1,797 8x8 handwritten digits (values 0..16), bundled with the wheel.

    It has no official test split, so a fixed-seed 20% hold-out (seed ``DIGITS_TEST_SEED``,
    independent of ``split_seed``) plays that role and never moves between runs.
    """
    del root, allow_download  # always available, ships inside scikit-learn
    _take_options("digits", options, {})
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    n_test = round(DIGITS_TEST_FRACTION * len(labels))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_TEST_SEED))
    test_idx, train_idx = order[:n_test], order[n_test:]
    return _RawData(
        train_x=images[train_idx],
        train_y=labels[train_idx],
        test_x=images[test_idx],
        test_y=labels[test_idx],
        num_classes=10,
        source=(
            "scikit-learn load_digits (UCI optical recognition of handwritten digits); "
            f"test = fixed {DIGITS_TEST_FRACTION:.0%} hold-out, seed {DIGITS_TEST_SEED}"
        ),
    )


_SYNTHETIC_DEFAULTS: dict[str, object] = {
    "n_train": 512,
    "n_test": 256,
    "image_size": 8,
    "num_classes": 4,
    "channels": 1,
    "noise": 1.0,
    "seed": 0,
}


@register_dataset("synthetic")
def _synthetic(root: Path, *, allow_download: bool, **options: object) -> _RawData:
    """Generated data: one random prototype image per class, shifted and noised.

    For tests and smoke runs that must not depend on files. Each sample is its class
    prototype circularly shifted by up to one pixel plus Gaussian noise (std ``noise``),
    so a small CNN can learn it but it is not linearly trivial. Deterministic per
    ``seed`` (NumPy generators seeded with ``[seed, stream]``, never the global RNG);
    train and test come from separate streams, so ``n_train`` does not change the test
    samples.
    """
    del root, allow_download
    opts = _take_options("synthetic", options, _SYNTHETIC_DEFAULTS)
    n_train = _int_option("synthetic", "n_train", opts["n_train"], 1)
    n_test = _int_option("synthetic", "n_test", opts["n_test"], 1)
    size = _int_option("synthetic", "image_size", opts["image_size"], 4)
    num_classes = _int_option("synthetic", "num_classes", opts["num_classes"], 2)
    channels = _int_option("synthetic", "channels", opts["channels"], 1)
    seed = _int_option("synthetic", "seed", opts["seed"], 0)
    noise = opts["noise"]
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not noise >= 0:
        raise ValueError(f"option noise={noise!r} of dataset 'synthetic' must be a number >= 0")

    prototypes = np.random.default_rng([seed, 0]).standard_normal(
        (num_classes, channels, size, size)
    )

    def draw(n: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([seed, stream])
        labels = rng.permutation(np.arange(n) % num_classes)
        shifts = rng.integers(-1, 2, size=(n, 2))
        images = np.stack(
            [
                np.roll(prototypes[y], tuple(s), axis=(1, 2))
                for y, s in zip(labels, shifts, strict=True)
            ]
        )
        images = images + float(noise) * rng.standard_normal(images.shape)
        return torch.from_numpy(images.astype(np.float32)), torch.from_numpy(labels)

    train_x, train_y = draw(n_train, 1)
    test_x, test_y = draw(n_test, 2)
    return _RawData(
        train_x=train_x,
        train_y=train_y.to(torch.int64),
        test_x=test_x,
        test_y=test_y.to(torch.int64),
        num_classes=num_classes,
        source=f"generated: synthetic class prototypes + noise ({opts})",
    )
