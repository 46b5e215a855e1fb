"""What the methods have in common: runtime options, the objective J and the step report.

Every method holds a model, evaluates its batch in chunks of ``chunk_size`` with
``loss_fn``, reports ``J = loss + R`` and, for the gradient-style methods, moves all its
parameters once per step. Keeping that bookkeeping here means a fix to how a step is
reported (which iterate ``loss`` belongs to, how many passes it cost) reaches every method
at once, and the method modules keep only their own mathematics.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import validation
from .checkpoint import Checkpointable
from .passes import LossFn, batch_loss, split_batch, squared_distance
from .regularizers import Regularizer
from .stats import StepStats


def trainable_named_parameters(model: nn.Module) -> list[tuple[str, Tensor]]:
    """``(name, parameter)`` for every parameter that requires a gradient (at least one)."""
    named: list[tuple[str, Tensor]] = [
        (n, p) for n, p in model.named_parameters() if p.requires_grad
    ]
    if not named:
        raise ValueError("model has no trainable parameters")
    return named


def trainable_parameters(model: nn.Module) -> list[Tensor]:
    """Every parameter that requires a gradient, in ``model.parameters()`` order (at least one)."""
    return [p for _, p in trainable_named_parameters(model)]


class ChunkedMethod(Checkpointable):
    """Runtime options and the objective ``J = mean loss + R`` shared by every method.

    Subclasses set ``model``, ``regularizer`` and ``params`` and call ``_set_runtime``;
    a method whose penalty is not a ``Regularizer`` overrides ``_penalty``.
    """

    model: nn.Module
    regularizer: Regularizer
    params: list[Tensor]
    chunk_size: int | None
    loss_fn: LossFn
    post_step_loss: bool = True

    def _set_runtime(
        self, *, chunk_size: int | None, loss_fn: LossFn, post_step_loss: bool = True
    ) -> None:
        """Validate and store the runtime options (the registry's ``runtime`` keywords)."""
        self.chunk_size = validation.chunk_size(chunk_size)
        self.loss_fn = loss_fn
        self.post_step_loss = bool(post_step_loss)

    def _penalty(self) -> Tensor:
        """The ``R`` of the reported objective at the current parameters."""
        return self.regularizer.value(self.params)

    def objective(self, x: Tensor, y: Tensor) -> Tensor:
        """J(w) = mean loss + R(w) on (x, y) at the current parameters (no graph)."""
        chunks = split_batch(x, y, self.chunk_size)
        return batch_loss(self.model, chunks, self.loss_fn) + self._penalty()


class GradientStyleMethod(ChunkedMethod):
    """A method whose every step is accepted and moves the tensors in ``moving``.

    ``post_step_loss=True`` spends one extra forward pass so that the reported loss is
    that of the iterate after the step; with False the report reuses the loss the step
    computed before moving (``after_step`` is then False).
    """

    def _track(self, moving: list[Tensor]) -> None:
        """Measure tau over ``moving``; the snapshot buffers are allocated once, here."""
        self._moving = moving
        self._previous = [torch.empty_like(p) for p in moving]

    def _remember(self) -> None:
        """Keep the iterate the step starts from (for tau)."""
        with torch.no_grad():
            torch._foreach_copy_(self._previous, self._moving)

    def _moved(self) -> Tensor:
        """tau: squared distance moved since ``_remember``."""
        return squared_distance(self._moving, self._previous)

    def _objective_before(self, loss: Tensor) -> Tensor | None:
        """J of the iterate the forward pass saw, when that is what the step reports."""
        return None if self.post_step_loss else loss + self._penalty()

    def _report(
        self,
        chunks: list[tuple[Tensor, Tensor, float]],
        loss: Tensor,
        objective: Tensor | None,
        tau: Tensor,
        *,
        forward_passes: float = 1.0,
        backward_passes: float = 1.0,
    ) -> StepStats:
        """The step's StepStats; with ``post_step_loss`` re-evaluates loss and J after it.

        ``forward_passes`` counts the step's own passes; the extra post-step pass is added.
        """
        if self.post_step_loss:
            loss = batch_loss(self.model, chunks, self.loss_fn)
            objective = loss + self._penalty()
        assert objective is not None
        return StepStats(
            loss=loss,
            objective=objective,
            accepted=True,
            eps=None,
            tau=tau,
            retries=0,
            forward_passes=forward_passes + (1.0 if self.post_step_loss else 0.0),
            backward_passes=backward_passes,
            after_step=self.post_step_loss,
        )
