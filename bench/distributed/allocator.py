"""Undo, inside a Dask worker, the allocator setting that halves CPU training speed.

Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (its default
``distributed.nanny.pre-spawn-environ``), so that freed memory goes back to the OS at
once. Setting any glibc malloc tunable also switches off glibc's adaptive mmap
threshold: every buffer of 128 KiB or more then gets a fresh ``mmap`` and its release a
``munmap``, so each activation of each training step faults its pages in again. A
training step frees and reallocates the same sizes every time, so nothing accumulates
if they stay in the heap instead.

:func:`keep_freed_buffers` sets fixed thresholds with ``mallopt`` in the worker process
when that variable is set: buffers up to 32 MiB (glibc's largest mmap threshold) come
from the heap, and the heap is trimmed only above 64 MiB of free memory at its top. It
runs in the task, so it holds for every cluster, the ones ``--scheduler local:N`` and
``local-cuda`` start and the ones users start with ``dask worker``. Measured on the
2-core test machine (six SGD-family cells of ``quick`` on ``local:2``): 32.4 ms per step
under Dask's setting, 16.9 ms with it undone. Elsewhere (not glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: glibc's ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Buffers up to this size come from the heap (glibc's maximum for 64-bit processes).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the heap's top is returned to the OS only above this.
TRIM_THRESHOLD = 64 << 20
#: The variable whose presence switched glibc's adaptive thresholds off.
TRIM_VARIABLE = "MALLOC_TRIM_THRESHOLD_"

_applied: bool | None = None


def keep_freed_buffers() -> bool:
    """Set the thresholds once per process if ``MALLOC_TRIM_THRESHOLD_`` is set; returns
    whether this process now has them (False without glibc or without the variable)."""
    global _applied
    if _applied is None:
        _applied = bool(os.environ.get(TRIM_VARIABLE)) and _mallopt()
    return _applied


def state() -> tuple[str | None, bool | None]:
    """This process's ``MALLOC_TRIM_THRESHOLD_`` and whether the thresholds were set (None:
    not asked yet), for a look at the workers with ``client.run``."""
    return os.environ.get(TRIM_VARIABLE), _applied


def _mallopt() -> bool:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to undo
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
