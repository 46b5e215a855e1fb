"""``make data``: make sure a dataset's files are present, installing them with apt if needed.

Only Fashion-MNIST has a Debian package (``dataset-fashion-mnist``); it is installed
only when this process runs as root and ``apt-get`` exists, and its files are then read
in place, not linked into the datasets folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from bench.data.locate import DEBIAN_FASHION_MNIST_PACKAGE, DatasetUnavailable
from bench.data.registry import get_loader

__all__ = ["ensure_dataset"]


def ensure_dataset(
    name: str, *, root: str | Path = "datasets", install_with_apt: bool = True
) -> str:
    """Make sure dataset ``name`` can be loaded and return where its files come from.

    Resolves and parses the files in the same order as :func:`bench.data.load_dataset`
    (downloading when online). For Fashion-MNIST, when that fails and this process runs
    as root with ``apt-get`` available, it installs the Debian package and tries again.
    Raises :class:`DatasetUnavailable` otherwise, and
    :class:`~bench.data.formats.DataFileError` for a file that is present but corrupt.
    """
    loader = get_loader(name)
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
