"""What one optimizer step reports: the same record for every method.

The runner, the tuner and the performance harness read only ``StepStats``, so no caller
special-cases a method. Values may be 0-dim tensors still on the device (the CUDA fast
path avoids host synchronisation); ``resolved()`` turns them into Python numbers, and
callers do that off the timed path, at their evaluation cadence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

Scalar = float | torch.Tensor


def _number(value: Scalar | bool | int) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().item())
    return float(value)


def _to_float(value: Scalar | None) -> float | None:
    return None if value is None else _number(value)


@dataclass(frozen=True)
class StepStats:
    """Figures of one call to ``step(x, y)``.

    Attributes:
        loss: data loss (mean cross-entropy) on this batch after the step. For methods
            built with ``post_step_loss=False`` it is the loss of the iterate before the
            step (``after_step`` is then False); that saves a forward pass per step.
        objective: ``loss + R(w)`` for the same iterate as ``loss``.
        accepted: whether the step changed the parameters (always True for gradient
            methods; bSQH: whether an attempt passed the sufficient-decrease test).
        eps: bSQH's augmentation parameter after this step's updates; None elsewhere.
        tau: squared Euclidean distance the parameters moved in this step (0 when every
            attempt was rejected).
        retries: number of rejected attempts in this step.
        forward_passes / backward_passes: network-equivalent passes over this batch spent
            by the step (a pass that runs every stage once counts 1), so cost comparisons
            across methods are fair.
        after_step: whether ``loss``/``objective`` belong to the iterate after the step.
    """

    loss: Scalar
    objective: Scalar
    accepted: bool | torch.Tensor
    eps: Scalar | None
    tau: Scalar
    retries: int | torch.Tensor
    forward_passes: float
    backward_passes: float
    after_step: bool = True

    def resolved(self) -> StepStats:
        """The same record with every tensor turned into a Python number (syncs the host)."""
        return replace(
            self,
            loss=_number(self.loss),
            objective=_number(self.objective),
            accepted=bool(_number(self.accepted)),
            eps=_to_float(self.eps),
            tau=_number(self.tau),
            retries=int(_number(self.retries)),
        )

    @property
    def finite(self) -> bool:
        """False when the objective is NaN or infinite: the run has diverged."""
        value = _to_float(self.objective)
        return value is not None and math.isfinite(value)
