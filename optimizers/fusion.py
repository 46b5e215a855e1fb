"""Elementwise stretches of a step, compiled into few kernels with ``torch.compile``.

Why: a small network's step on a large GPU is bound by how many kernels it launches, not
by their arithmetic (``bench perf --kernels`` counts them). bSQH's stage update
(``v = u_k + t g``, the prox, the write-back) and its acceptance test (distance, R of the
candidate, the test, the selections, eps) are chains of tiny elementwise kernels, one per
operation and tensor. Compiled (Triton on CUDA, C++ on the CPU), each chain becomes one
kernel per output tensor, and the scalar work rides along.

The compiled function is the very function the eager path runs, so there is one
implementation of the mathematics; the two differ only in float rounding (a compiled
kernel may order a reduction differently or contract ``a + t * b`` into one FMA), which is
why fused and reference iterates are compared to float64 tolerance, not bitwise.
Hyperparameter values must reach a compiled function as tensors
(``Regularizer.with_tensor_coefficients``, :func:`scalar`): a Python float is compiled in
as a constant, so each new value (each trial of a study) would compile again.

Compilation happens at the first call, which for a graphed step is the warm-up before the
CUDA-graph capture (outside the timed steps, in ``prepare_s``); the compiled code is
cached on disk by PyTorch for later processes. Shapes are compiled dynamically, so one
compilation serves every layer of the same kind. If compiling fails (no Triton on a GPU,
no C++ compiler on a CPU), a warning says why and the eager function runs from then on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import torch
from torch import Tensor

if TYPE_CHECKING:  # regularizers uses scalar(): import the type only
    from .regularizers import Regularizer

R = TypeVar("R")


def scalar(value: float, device: torch.device | str) -> Tensor:
    """A hyperparameter as a 0-dim float64 tensor: an input of compiled code, not a constant."""
    return torch.tensor(float(value), dtype=torch.float64, device=device)


def hyperparameters(
    fused: bool, device: torch.device, regularizer: Regularizer, *values: float | None
) -> tuple[Regularizer, list[float | Tensor | None]]:
    """The regularizer and hyperparameter values a (possibly compiled) step reads.

    Compiled: tensors (``Regularizer.with_tensor_coefficients``, :func:`scalar`), so one
    compilation serves every value; eager: as they are. None stays None (an unset bound).
    """
    if not fused:
        return regularizer, list(values)
    tensors: list[float | Tensor | None] = [
        None if v is None else scalar(v, device) for v in values
    ]
    return regularizer.with_tensor_coefficients(device), tensors


class Fusable(Generic[R]):
    """``fn`` run eagerly or, with ``enabled``, compiled; a failed compile falls back.

    Compiled with ``fullgraph=True`` (a graph break would split the kernels again) and
    ``dynamic=True``. Only compilation errors fall back (``TorchDynamoException``, which
    wraps backend failures); an error the eager function would raise as well propagates.
    """

    def __init__(self, fn: Callable[..., R], *, enabled: bool, owner: str) -> None:
        self.fn = fn
        self.owner = owner
        self.failure: str | None = None
        self._compiled: Callable[..., R] | None = (
            torch.compile(fn, fullgraph=True, dynamic=True) if enabled else None
        )

    @property
    def compiled(self) -> bool:
        """Whether calls go through the compiled function (enabled and not failed)."""
        return self._compiled is not None

    def __call__(self, *args: Any) -> R:
        if self._compiled is None:
            return self.fn(*args)
        try:
            return self._compiled(*args)
        except torch._dynamo.exc.TorchDynamoException as error:
            self._compiled = None
            self.failure = f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
            warnings.warn(
                f"{self.owner}: compiling {self.fn.__name__} failed, running it eagerly: "
                f"{self.failure}",
                RuntimeWarning,
                stacklevel=2,
            )
            return self.fn(*args)


def resolve(fuse: object, params: Sequence[Tensor]) -> bool:
    """The ``fuse`` runtime option of a method: true, false, or unset (None) for the default.

    Unset fuses on CUDA only: there the kernel count is the step time. On the CPU an
    elementwise kernel over a few thousand weights costs about what its dispatch does, so
    fusing saves little and would cost every CPU cell a compilation. Fused code writes
    through flat views (:func:`flat_alias`), so it needs contiguous parameters: unset
    then means off, and ``fuse=True`` is refused.
    """
    if fuse is not None and not isinstance(fuse, bool):
        raise ValueError(f"fuse must be true, false or unset (auto), got {fuse!r}")
    contiguous = all(p.is_contiguous() for p in params)
    if fuse and not contiguous:
        raise ValueError(
            "fuse=True needs contiguous parameters (the fused update writes through flat "
            "views); convert the model with .contiguous() or pass fuse=False"
        )
    if fuse is None:
        return bool(params) and params[0].device.type == "cuda" and contiguous
    return fuse


def flat_alias(t: Tensor) -> Tensor:
    """``t`` as a flat plain tensor sharing its storage (writes go through to ``t``).

    For compiled code: it treats a Parameter's shape, and a view's base, as fixed and
    would compile once per layer; a view's ``detach()`` has no base, so one compilation
    serves every layer. Needs a contiguous ``t``.
    """
    return t.detach().view(-1).detach()
