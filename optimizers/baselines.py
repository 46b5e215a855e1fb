"""Gradient baselines: SGD, Adam and their proximal (sparsity-inducing) variants.

All of them share one step: forward and backward on the batch (chunked in full-batch
mode), a ``torch.optim`` update, then, for the proximal methods, ``w <- prox_{lr R}(w)`` on
the prunable weights with the same prox operators bSQH uses. SGD and Adam take ``beta``
and ``gamma`` only to report the same objective ``J = loss + R`` as everyone else; they do
not shrink R (Adam's own ``weight_decay`` is a separate knob).

``post_step_loss=True`` (the default) spends one extra forward pass per step so that
``StepStats.loss`` is the loss after the step, as for bSQH. Timed benchmarks pass False:
the stats then report the loss of the iterate before the step, which the step computes
anyway, and ``after_step`` is False.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import validation
from .passes import LossFn, batch_loss, loss_and_gradients, split_batch, squared_distance
from .registry import register
from .regularizers import Regularizer, make_regularizer
from .stats import StepStats


class GradientMethod:
    """Shared step of the torch.optim based methods; subclasses choose optimizer and prox."""

    #: Name of the regularizer whose prox runs after each step (None: no prox).
    prox_penalty: str | None = None

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float,
        beta: float,
        gamma: float,
        chunk_size: int | None,
        loss_fn: LossFn,
        post_step_loss: bool,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.lr = validation.positive("lr", lr)
        self.regularizer: Regularizer = make_regularizer(
            self.prox_penalty or "l0", beta=beta, gamma=gamma
        )
        if chunk_size is not None:
            validation.integer_at_least("chunk_size", chunk_size, 1)
        self.chunk_size = chunk_size
        self.loss_fn = loss_fn
        self.post_step_loss = bool(post_step_loss)
        self.params: list[nn.Parameter] = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("model has no trainable parameters")
        self.optimizer = self._make_optimizer(self.params)
        # Where each step keeps the parameters it started from (for tau), allocated once.
        self._previous = [torch.empty_like(p) for p in self.params]

    def _make_optimizer(self, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError

    @torch.no_grad()
    def _apply_prox(self) -> None:
        if self.prox_penalty is None:
            return
        for p in self.params:
            p.copy_(self.regularizer.prox_param(p, p, self.lr))

    def objective(self, x: Tensor, y: Tensor) -> Tensor:
        """J(w) = mean loss + R(w) on (x, y) at the current parameters (no graph)."""
        chunks = split_batch(x, y, self.chunk_size)
        return batch_loss(self.model, chunks, self.loss_fn) + self.regularizer.value(self.params)

    def step(self, x: Tensor, y: Tensor) -> StepStats:
        chunks = split_batch(x, y, self.chunk_size)
        loss = loss_and_gradients(self.model, self.params, chunks, self.loss_fn)
        if not self.post_step_loss:  # report the iterate the forward pass saw
            objective = loss + self.regularizer.value(self.params)
        with torch.no_grad():
            torch._foreach_copy_(self._previous, self.params)
        self.optimizer.step()
        self._apply_prox()
        tau = squared_distance(self.params, self._previous)
        if self.post_step_loss:
            loss = batch_loss(self.model, chunks, self.loss_fn)
            objective = loss + self.regularizer.value(self.params)
        forward = 2.0 if self.post_step_loss else 1.0
        return StepStats(
            loss=loss,
            objective=objective,
            accepted=True,
            eps=None,
            tau=tau,
            retries=0,
            forward_passes=forward,
            backward_passes=1.0,
            after_step=self.post_step_loss,
        )


@register("sgd")
class SGD(GradientMethod):
    """Plain SGD (optionally with heavy-ball or Nesterov momentum); R is reported only."""

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = 0.05,
        momentum: float = 0.0,
        nesterov: bool = False,
        beta: float = 0.0,
        gamma: float = 0.0,
        chunk_size: int | None = None,
        loss_fn: LossFn = F.cross_entropy,
        post_step_loss: bool = True,
    ) -> None:
        self.momentum = validation.half_open_interval("momentum", momentum, 0.0, 1.0)
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")
        self.nesterov = bool(nesterov)
        super().__init__(
            model,
            lr=lr,
            beta=beta,
            gamma=gamma,
            chunk_size=chunk_size,
            loss_fn=loss_fn,
            post_step_loss=post_step_loss,
        )

    def _make_optimizer(self, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov)


@register("adam")
class Adam(GradientMethod):
    """Adam (optionally with decoupled weight decay, AdamW); R is reported only."""

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        beta: float = 0.0,
        gamma: float = 0.0,
        chunk_size: int | None = None,
        loss_fn: LossFn = F.cross_entropy,
        post_step_loss: bool = True,
    ) -> None:
        self.weight_decay = validation.non_negative("weight_decay", weight_decay)
        self.betas = (
            validation.half_open_interval("beta1", beta1, 0.0, 1.0),
            validation.half_open_interval("beta2", beta2, 0.0, 1.0),
        )
        super().__init__(
            model,
            lr=lr,
            beta=beta,
            gamma=gamma,
            chunk_size=chunk_size,
            loss_fn=loss_fn,
            post_step_loss=post_step_loss,
        )

    def _make_optimizer(self, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay
        )


@register("prox-sgd-l0")
class ProxSGDL0(SGD):
    """Proximal SGD for L0 + L2: ``w <- prox_{lr R}(w - lr * d)``, d the (momentum) gradient."""

    prox_penalty = "l0"


@register("prox-sgd-l1")
class ProxSGDL1(SGD):
    """Proximal SGD for L1 + L2 (soft thresholding)."""

    prox_penalty = "l1"


@register("prox-adam-l0")
class ProxAdamL0(Adam):
    """An Adam step, then the L0 + L2 prox with the same learning rate."""

    prox_penalty = "l0"
