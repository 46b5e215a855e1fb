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

``fuse`` (unset: on for CUDA parameters) compiles the proximal methods' prox into one
kernel per prunable tensor (``optimizers.fusion``), as ``bsqh-fast`` compiles its own
elementwise work: both then apply the same operator at the same kernel cost. Eagerly the
prox is a few kernels per tensor and one multi-tensor write-back
(``optimizers.regularizers.prox_into``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import validation
from .common import GradientStyleMethod, trainable_parameters
from .fusion import Fusable, flat_alias, hyperparameters, resolve
from .graphs import graphed_variant
from .hparams import HParams, hparam
from .passes import LossFn, loss_and_gradients, split_batch
from .registry import register
from .regularizers import (
    Regularizer,
    beta_hparam,
    gamma_hparam,
    is_prunable,
    make_regularizer,
    prox_into,
)
from .search import LR_ADAM, LR_SGD, MOMENTUM
from .stats import StepStats


@dataclass(frozen=True)
class SGDHParams(HParams):
    """SGD and proximal SGD."""

    lr: float = hparam(
        0.05,
        "learning rate (also the prox step of the proximal variants)",
        low=0.0,
        low_open=True,
        search=LR_SGD,
    )
    momentum: float = hparam(
        0.0, "heavy-ball momentum", low=0.0, high=1.0, high_open=True, search=MOMENTUM
    )
    nesterov: bool = hparam(False, "Nesterov momentum (needs momentum > 0)")
    beta: float = beta_hparam()
    gamma: float = gamma_hparam()

    def check(self) -> None:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")


@dataclass(frozen=True)
class AdamHParams(HParams):
    """Adam (AdamW when weight_decay > 0) and proximal Adam."""

    lr: float = hparam(
        1e-3,
        "learning rate (also the prox step of the proximal variant)",
        low=0.0,
        low_open=True,
        search=LR_ADAM,
    )
    weight_decay: float = hparam(0.0, "decoupled weight decay (AdamW)", low=0.0)
    beta1: float = hparam(
        0.9, "decay of the first-moment average", low=0.0, high=1.0, high_open=True
    )
    beta2: float = hparam(
        0.999, "decay of the second-moment average", low=0.0, high=1.0, high_open=True
    )
    beta: float = beta_hparam()
    gamma: float = gamma_hparam()


class GradientMethod(GradientStyleMethod):
    """Shared step of the torch.optim based methods; subclasses choose optimizer and prox."""

    #: Name of the regularizer whose prox runs after each step (None: no prox).
    prox_penalty: ClassVar[str | None] = None
    #: Hyperparameters under which the method learns the tests' tiny problem.
    test_hparams: ClassVar[dict[str, Any]] = {}
    method_name: ClassVar[str]
    #: The hyperparameters used when the constructor is given none.
    default_hparams: ClassVar[type[SGDHParams] | type[AdamHParams]]
    hp: SGDHParams | AdamHParams

    def __init__(
        self,
        model: nn.Module,
        hp: SGDHParams | AdamHParams | None = None,
        *,
        chunk_size: int | None = None,
        loss_fn: LossFn = F.cross_entropy,
        post_step_loss: bool = True,
        fuse: bool | None = None,
    ) -> None:
        self.hp = hp = hp if hp is not None else self.default_hparams()
        self.model = validation.torch_module(model)
        self.lr = hp.lr
        self.regularizer: Regularizer = make_regularizer(
            self.prox_penalty or "l0", beta=hp.beta, gamma=hp.gamma
        )
        self._set_runtime(chunk_size=chunk_size, loss_fn=loss_fn, post_step_loss=post_step_loss)
        self.params: list[Tensor] = trainable_parameters(model)
        self.optimizer = self._make_optimizer(self.params)
        self._track(self.params)
        # The prox touches the prunable tensors only (the others would pass unchanged).
        self._prox_targets = [p for p in self.params if is_prunable(p)]
        fused = resolve(fuse, self.params) and self.prox_penalty is not None
        self._prox = Fusable(_prox_step, enabled=fused, owner=self.method_name)
        self._prox_args = hyperparameters(fused, self.params[0].device, self.regularizer, self.lr)

    @property
    def fused(self) -> bool:
        """Whether the prox runs compiled (``fuse``; false after a failed compile)."""
        return self._prox.compiled

    def _make_optimizer(self, params: Sequence[Tensor]) -> torch.optim.Optimizer:
        raise NotImplementedError

    @torch.no_grad()
    def _apply_prox(self) -> None:
        if self.prox_penalty is None or not self._prox_targets:
            return
        regularizer, (lr,) = self._prox_args
        assert lr is not None
        self._prox([flat_alias(p) for p in self._prox_targets], regularizer, lr)

    def step(self, x: Tensor, y: Tensor) -> StepStats:
        chunks = split_batch(x, y, self.chunk_size)
        loss = loss_and_gradients(self.model, self.params, chunks, self.loss_fn)
        objective = self._objective_before(loss)  # the iterate the forward pass saw
        self._remember()
        self.optimizer.step()
        self._apply_prox()
        return self._report(chunks, loss, objective, self._moved())


def _prox_step(params: list[Tensor], regularizer: Regularizer, lr: float | Tensor) -> None:
    """``w <- prox_{lr R}(w)`` on the prunable tensors, in place (compiled when fused)."""
    prox_into(params, params, [True] * len(params), regularizer.prox_factors(lr), regularizer)


# Plain SGD and Adam carry beta and gamma only to report J (their step never applies R).
@register("sgd", hparams=SGDHParams, applies_penalty=False, colour="#1f77b4")
class SGD(GradientMethod):
    """Plain SGD (optionally with heavy-ball or Nesterov momentum); R is reported only."""

    test_hparams: ClassVar[dict[str, Any]] = {"lr": 0.5}
    default_hparams = SGDHParams
    hp: SGDHParams

    def _make_optimizer(self, params: Sequence[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            params, lr=self.hp.lr, momentum=self.hp.momentum, nesterov=self.hp.nesterov
        )


@register("adam", hparams=AdamHParams, applies_penalty=False, colour="#ff7f0e")
class Adam(GradientMethod):
    """Adam (optionally with decoupled weight decay, AdamW); R is reported only."""

    test_hparams: ClassVar[dict[str, Any]] = {"lr": 0.02}
    default_hparams = AdamHParams
    hp: AdamHParams

    def _make_optimizer(self, params: Sequence[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            params,
            lr=self.hp.lr,
            betas=(self.hp.beta1, self.hp.beta2),
            weight_decay=self.hp.weight_decay,
        )


@register("prox-sgd-l0", hparams=SGDHParams, penalty="l0", colour="#2ca02c")
class ProxSGDL0(SGD):
    """Proximal SGD for L0 + L2: ``w <- prox_{lr R}(w - lr * d)``, d the (momentum) gradient."""

    prox_penalty = "l0"


@register("prox-sgd-l1", hparams=SGDHParams, penalty="l1", colour="#98df8a")
class ProxSGDL1(SGD):
    """Proximal SGD for L1 + L2 (soft thresholding)."""

    prox_penalty = "l1"


@register("prox-adam-l0", hparams=AdamHParams, penalty="l0", colour="#ffbb78")
class ProxAdamL0(Adam):
    """An Adam step, then the L0 + L2 prox with the same learning rate."""

    prox_penalty = "l0"


# Each baseline's whole step as one CUDA graph: registered as ``<name>-graph``.
for _base in (SGD, Adam, ProxSGDL0, ProxSGDL1, ProxAdamL0):
    graphed_variant(_base)
