"""Floating-point settings of a cell on CUDA, one suite-level choice for every method.

Why a setting of its own: PyTorch lets cuDNN use TF32 tensor cores for convolutions by
default (``torch.backends.cudnn.allow_tf32`` is True), so a run that says "float32" may
not be. Here ``float32`` switches TF32 off for convolutions and matrix products alike,
and ``tf32`` switches it on for both; the choice is part of every cell's configuration
(its key, the ledger, MLflow's params), so methods are only ever compared at the same
precision. On the CPU both settings compute in float32.

cuDNN's autotuner (``cudnn.benchmark``) is on for every cell: a cell's shapes are fixed,
so the first steps (the untimed warm-up) choose the fastest algorithm that the precision
allows and the timed steps reuse it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

DEFAULT_PRECISION = "float32"
#: precision name -> whether TF32 tensor cores may be used.
PRECISIONS: dict[str, bool] = {"float32": False, "tf32": True}


def check_precision(name: object) -> str:
    """``name`` if it is a known precision; else a ValueError naming the allowed ones."""
    if not isinstance(name, str) or name not in PRECISIONS:
        raise ValueError(f"must be one of {sorted(PRECISIONS)}, got {name!r}")
    return name


@contextmanager
def numerics(precision: str) -> Iterator[None]:
    """Apply ``precision`` and the cuDNN autotuner inside the block; restore afterwards."""
    allow_tf32 = PRECISIONS[check_precision(precision)]
    saved = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.benchmark,
    )
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        (
            torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.benchmark,
        ) = saved
