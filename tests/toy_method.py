"""A method from outside the repository's packages: sign descent with the L0 prox.

What adding a method takes: this module (its hyperparameters with their search space,
its traits at registration, its step) and an entry point naming it in the group
``pmp_bench.methods`` of the package that ships it (``tests/test_method_plugin.py``
writes that package's metadata). Nothing in ``optimizers`` or ``bench`` names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from optimizers import HParams, StepStats, hparam, log_uniform, register
from optimizers.regularizers import make_regularizer, prunable_parameters

NAME = "toy-sign-l0"


@dataclass(frozen=True)
class SignL0HParams(HParams):
    lr: float = hparam(
        0.01, "step size of the sign step and the prox", low=0.0, low_open=True,
        search=log_uniform(1e-3, 1e-1, "sign step"),
    )  # fmt: skip
    beta: float = hparam(
        1e-4, "L0 weight of R", low=0.0,
        search=log_uniform(1e-6, 1e-2, "L0 weight of R", penalty=True),
    )  # fmt: skip


@register(NAME, hparams=SignL0HParams, penalty="l0", colour="#0a0b0c")
class SignL0:
    """Sign descent, then the L0 prox (hard thresholding) with the same step."""

    def __init__(
        self, model: nn.Module, hp: SignL0HParams | None = None, *, loss_fn: Any = F.cross_entropy
    ) -> None:
        self.model = model
        self.hp = hp = hp if hp is not None else SignL0HParams()
        self.loss_fn = loss_fn
        self.regularizer = make_regularizer("l0", hp.beta)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.prunable = [p for _, p in prunable_parameters(model)]

    @torch.no_grad()
    def objective(self, x: Tensor, y: Tensor) -> Tensor:
        return self.loss_fn(self.model(x), y) + self.regularizer.value(self.prunable)

    def step(self, x: Tensor, y: Tensor) -> StepStats:
        loss = self.loss_fn(self.model(x), y)
        grads = torch.autograd.grad(loss, self.params)
        loss = loss.detach()
        with torch.no_grad():
            objective = loss + self.regularizer.value(self.prunable)
            before = [p.clone() for p in self.params]
            for p, g in zip(self.params, grads, strict=True):
                p.sub_(self.hp.lr * g.sign())
            for p in self.prunable:
                p.copy_(self.regularizer.prox(p, self.hp.lr))
            tau = sum(float((p - b).pow(2).sum()) for p, b in zip(self.params, before, strict=True))
        return StepStats(
            loss=float(loss),
            objective=float(objective),
            accepted=True,
            eps=None,
            tau=tau,
            retries=0,
            forward_passes=1.0,
            backward_passes=1.0,
            after_step=False,
        )

    def state_dict(self) -> dict[str, Any]:
        return {}  # stateless beyond the model's parameters

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
