"""Finding a dataset's files: local folders, the Debian package, a torchvision download.

Files come from, in order: ``<root>/<dataset>/`` (also where torchvision puts its
downloads), the Debian package's directory (Fashion-MNIST only), a torchvision download
(when ``allow_download`` and online), otherwise :class:`DatasetUnavailable` says how to
provide them. Debian files are read in place, never copied or linked.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "CIFAR10_BATCHES",
    "DEBIAN_FASHION_MNIST_DIR",
    "DEBIAN_FASHION_MNIST_PACKAGE",
    "IDX_FILES",
    "DatasetUnavailable",
    "find_cifar",
    "find_idx",
    "repair_advice",
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

_DOWNLOAD_TIMEOUT_S = 15.0
_DEBIAN_SOURCE = f"Debian package {DEBIAN_FASHION_MNIST_PACKAGE}"


class DatasetUnavailable(RuntimeError):
    """The dataset's files are neither on disk nor downloadable; the message says how."""


def repair_advice(dataset: str, source: str, path: Path) -> str:
    """What to do about a corrupt file ``path`` of ``dataset`` found as ``source`` says."""
    if source.startswith(_DEBIAN_SOURCE):
        return (
            f"reinstall the Debian package (`sudo apt-get install --reinstall "
            f"{DEBIAN_FASHION_MNIST_PACKAGE}`)"
        )
    return (
        f"delete {path} and rerun `python -m bench data --dataset {dataset}` "
        "(or copy an intact file there)"
    )


# --------------------------------------------------------------------------- IDX files


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


def find_idx(
    name: str, root: Path, folder: str, tv_class: str, allow_download: bool, *, debian: bool
) -> tuple[dict[str, Path], str]:
    """Find the four IDX files of ``name`` and describe where they came from.

    Searched: our folder, then torchvision's layouts, then (``debian``) the Debian
    package's directory, then a torchvision download.
    """
    local = [root / folder, root / folder / tv_class / "raw", root / tv_class / "raw"]
    extra = [DEBIAN_FASHION_MNIST_DIR] if debian else []
    for directory in local:
        files = _idx_files_in(directory)
        if files:
            return files, f"IDX files in {directory}"
    for directory in extra:
        files = _idx_files_in(directory)
        if files:
            return files, f"{_DEBIAN_SOURCE}: {directory}"
    reason = _try_download(name, root / folder, allow_download)
    if not reason:
        files = _idx_files_in(root / folder / tv_class / "raw")
        if files:
            return files, f"downloaded by torchvision into {root / folder / tv_class / 'raw'}"
        reason = "torchvision reported success but the IDX files are not where expected"
    raise DatasetUnavailable(_idx_help(name, root / folder, [*local, *extra], reason, debian))


def _idx_help(name: str, target: Path, searched: list[Path], reason: str, debian: bool) -> str:
    """The DatasetUnavailable message: what is missing and every way to provide it."""
    expected = ", ".join(f"{stem}.gz" for stem in IDX_FILES.values())
    lines = [
        f"{name} is not available. Expected the four IDX files {expected} "
        "(gzipped or not) in one of:",
        *(f"  {d}" for d in searched),
        f"({reason}.) To provide them:",
        f"  - copy the four files into {target}/",
    ]
    if debian:
        lines.append(
            f"  - or `sudo apt-get install {DEBIAN_FASHION_MNIST_PACKAGE}` "
            f"(installs them into {DEBIAN_FASHION_MNIST_DIR}/)"
        )
    lines.append(f"  - or run `make data` (or `python -m bench data --dataset {name}`) online")
    return "\n".join(lines)


# --------------------------------------------------------------------------- CIFAR-10


def find_cifar(root: Path, allow_download: bool) -> tuple[Path, str]:
    """The folder holding the six CIFAR-10 python batches, and where it came from."""
    searched = [root / "cifar10" / "cifar-10-batches-py", root / "cifar-10-batches-py"]

    def complete(directory: Path) -> bool:
        return all((directory / batch).is_file() for batch in CIFAR10_BATCHES)

    found = next((d for d in searched if complete(d)), None)
    if found is not None:
        return found, f"CIFAR-10 python batches in {found}"
    reason = _try_download("cifar10", root / "cifar10", allow_download)
    if not reason and complete(searched[0]):
        return searched[0], f"downloaded by torchvision into {searched[0]}"
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


# --------------------------------------------------------------------------- download


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
