"""The on-disk formats of the image datasets: IDX (MNIST, Fashion-MNIST) and CIFAR pickles.

Our own parsers, so the data loads without torchvision or internet, and a damaged file
fails loudly: every problem (a bad header, a truncated or bit-flipped gzip stream, a
pickle of the wrong shape) raises :class:`DataFileError` naming the file, never a bare
``zlib.error``, ``EOFError`` or ``struct.error``. The loaders add what to do about it
(delete and fetch again, or reinstall the Debian package), since only they know where
the file came from.
"""

from __future__ import annotations

import gzip
import math
import pickle
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "DataFileError",
    "read_cifar_batch",
    "read_idx",
]

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


class DataFileError(ValueError):
    """A data file exists but cannot be read: corrupt, truncated or of the wrong kind.

    ``path`` is the file, ``problem`` what is wrong with it and ``remedy`` (possibly
    empty) what the user can do; the message joins the three.
    """

    def __init__(self, path: Path, problem: str, remedy: str = "") -> None:
        self.path, self.problem, self.remedy = Path(path), problem, remedy
        super().__init__(f"{path}: {problem}" + (f". To repair it: {remedy}" if remedy else ""))

    def with_remedy(self, remedy: str) -> DataFileError:
        """The same error with ``remedy`` as the advice (used by the loaders)."""
        return DataFileError(self.path, self.problem, remedy)


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the file is gzip (by content, not by name)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataFileError(path, f"cannot be read ({exc.strerror or exc})") from exc
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        # A truncated stream raises EOFError, flipped bytes zlib.error or BadGzipFile
        # (an OSError, e.g. for a CRC mismatch).
        except (OSError, EOFError, zlib.error) as exc:
            raise DataFileError(path, f"corrupt gzip data ({exc})") from exc
    return data


def read_idx(path: str | Path, *, expect_magic: int | None = None) -> np.ndarray:
    """Parse an IDX file (the MNIST format), gzipped or raw, into a uint8 array.

    The header is a big-endian magic ``0x0000 <type> <ndim>`` (type 0x08 = unsigned
    byte) followed by ``ndim`` big-endian uint32 sizes; the payload must be exactly as
    long as the sizes promise. Any problem raises :class:`DataFileError`.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataFileError(path, f"too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if expect_magic is not None and magic != expect_magic:
        raise DataFileError(
            path, f"bad IDX magic number 0x{magic:08x}, expected 0x{expect_magic:08x}"
        )
    if magic >> 16 != 0 or (magic >> 8) & 0xFF != 0x08:
        raise DataFileError(path, f"bad IDX magic number 0x{magic:08x} (want unsigned bytes)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataFileError(path, f"truncated IDX header ({ndim} dimensions, {len(data)} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)
    if len(data) != expected:
        raise DataFileError(
            path,
            f"IDX header promises dimensions {dims} ({expected} bytes) "
            f"but the file has {len(data)} bytes",
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
    for Python 2 arrays. Problems raise :class:`DataFileError`.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            batch = _CifarUnpickler(fh, encoding="latin1").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        IndexError,
        ValueError,
        TypeError,
        KeyError,
        OSError,
    ) as exc:
        raise DataFileError(path, f"not a readable CIFAR batch pickle ({exc})") from exc
    if not isinstance(batch, dict):
        raise DataFileError(path, f"expected a pickled dict, got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataFileError(path, f"missing key 'data' or 'labels' (keys: {sorted(batch)})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFileError(
            path, f"'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataFileError(
            path, f"'labels' must be {len(data)} integers, got {labels.dtype} {labels.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataFileError(path, f"labels outside 0..9 (min {labels.min()}, max {labels.max()})")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)
