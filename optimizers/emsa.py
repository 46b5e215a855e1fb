"""Extended method of successive approximations (E-MSA; Li, Chen, Tai & E, arXiv 1710.09513).

The first maximum-principle trainer, a peer of bSQH. With the stages of an
``nn.Sequential`` as the control system ``x[l+1] = f_l(x[l], theta_l)``, one step:

1. Forward at ``theta_k`` for the states ``x_l`` and one backward pass for the per-sample
   costates ``p_l = -d Phi_s / d x_l`` (``Phi_s`` the loss of sample s; the batch loss is
   their mean, so these are ``N`` times bSQH's batch adjoints; same sign convention).
2. Every parametrised stage, independently and with the OLD states and costates (all
   stages in parallel, as in MSA), approximately maximises the augmented Hamiltonian

       H~_l(theta) = mean_s [ <p_{l+1}, f_l(x_l, theta)>
                              - rho/2 |x_{l+1} - f_l(x_l, theta)|^2
                              - rho/2 |p_l - grad_x H_l(x_l, p_{l+1}, theta)|^2 ]
                     - gamma/2 |theta|^2          (L2 on the prunable weights)

   by ``inner_steps`` proximal gradient ascent steps with step ``inner_lr``:
   ``theta <- prox_{inner_lr * beta |.|_0}(theta + inner_lr * grad H~_l(theta))``, the L0
   prox of ``optimizers.regularizers``. So E-MSA maximises ``H~_l - beta |theta|_0`` and
   competes on bSQH's objective ``J = CE + gamma/2 |w|^2 + beta |w|_0``.

``rho = 0`` is plain MSA. The feasibility terms have zero gradient at ``theta_k`` (both
residuals vanish there), so the first inner step is a proximal gradient step on J for
every rho; it reuses the parameter gradients of the costate pass and costs no extra pass.
Later inner steps need ``grad_x H_l`` inside the objective: a double backward
(``create_graph=True``). The reference implementation (LiQianxiao/MaxPrinciple-DeepLearning)
maximises with L-BFGS; plain proximal ascent keeps the L0 prox exact and the step free of
host synchronisation.

Memory: the states and costates at both ends of every parametrised stage, for the whole
batch (about twice bSQH's adjoint memory when rho > 0); ``chunk_size`` bounds the graph.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import validation
from .common import GradientStyleMethod
from .graphs import graphed_variant
from .hparams import HParams, hparam
from .passes import LossFn, split_batch, weighted
from .registry import register
from .regularizers import is_prunable, make_regularizer, prox_into
from .stats import StepStats


@dataclass(frozen=True)
class EMSAHParams(HParams):
    rho: float = hparam(0.03, "feasibility penalty rho (0: plain MSA)", low=0.0)
    inner_steps: int = hparam(3, "proximal ascent steps on each stage's H~", low=1)
    inner_lr: float = hparam(
        0.1, "step of the inner ascent (and of the L0 prox)", low=0.0, low_open=True
    )
    beta: float = hparam(0.0, "L0 weight of R", low=0.0)
    gamma: float = hparam(0.0, "L2 weight of R", low=0.0)


@dataclass
class Linearisation:
    """One chunk's states and per-sample costates at ``theta_k`` (all detached)."""

    states: dict[int, Tensor]  # x_l, indexed by position in the Sequential (0: input)
    costates: dict[int, Tensor]  # p_l, same indexing
    weight: float  # the chunk's share of the batch mean


@register("emsa", hparams=EMSAHParams, runtime=("chunk_size", "loss_fn", "post_step_loss"))
class EMSA(GradientStyleMethod):
    """E-MSA with an L0 prox; ``step(x, y)`` is one outer iteration (see the module docstring)."""

    #: Hyperparameters under which the method learns the tests' tiny problem.
    test_hparams: ClassVar[dict[str, Any]] = {"inner_lr": 0.3}

    def __init__(
        self,
        model: nn.Sequential,
        hp: EMSAHParams | None = None,
        *,
        chunk_size: int | None = None,
        loss_fn: LossFn = F.cross_entropy,
        post_step_loss: bool = True,
    ) -> None:
        self.model = validation.sequential_model(model)
        self.hp = hp = hp if hp is not None else EMSAHParams()
        self._set_runtime(chunk_size=chunk_size, loss_fn=loss_fn, post_step_loss=post_step_loss)
        self.regularizer = make_regularizer("l0", beta=hp.beta, gamma=hp.gamma)  # J's R
        self.l0 = make_regularizer("l0", beta=hp.beta)  # the nonsmooth part, by prox
        self._prox_factors = self.l0.prox_factors(hp.inner_lr)
        self.stages: list[nn.Module] = list(model)
        self.stage_params: list[list[Tensor]] = [
            [p for p in s.parameters() if p.requires_grad] for s in self.stages
        ]
        self.param_stages = [l for l, group in enumerate(self.stage_params) if group]
        if not self.param_stages:
            raise ValueError("model has no trainable parameters: nothing for E-MSA to optimise")
        self.params = [p for l in self.param_stages for p in self.stage_params[l]]
        self._penalised = [is_prunable(p) for p in self.params]  # the prox's targets
        self._track(self.params)

    # ---------------------------------------------------------------- public API

    def linearise(
        self, x: Tensor, y: Tensor, *, keep: bool = True
    ) -> tuple[Tensor, list[Linearisation], list[Tensor]]:
        """Forward and costate pass at the current parameters.

        Returns the batch loss, each chunk's states and costates, and ``grad H~`` at the
        current parameters (``-dLoss/dtheta - gamma theta``), the first inner step's ascent
        direction. ``keep=False`` (one inner step: only that direction is needed) skips
        the states and costates and the memory they hold.
        """
        keep_inputs = keep and self.hp.rho > 0  # p_l, x_{l+1}: feasibility terms only
        total: Tensor | None = None
        records = []
        ascent: list[Tensor] | None = None
        for xc, yc, weight in split_batch(x, y, self.chunk_size):
            n = xc.shape[0]
            with torch.enable_grad():
                states = [xc.detach().requires_grad_(keep_inputs)]
                for stage in self.stages:
                    states.append(stage(states[-1]))
                loss = self.loss_fn(states[-1], yc)
            wanted = sorted(
                ({l + 1 for l in self.param_stages} if keep else set())
                | ({l for l in self.param_stages} if keep_inputs else set())
            )
            # -n * mean loss differentiates to the per-sample costates; its parameter
            # gradient is n * (-dLoss_chunk/dtheta), rescaled to the batch mean below.
            grads = torch.autograd.grad(-loss * n, [states[i] for i in wanted] + self.params)
            costates = {i: g.detach() for i, g in zip(wanted, grads, strict=False)}
            kept = {l for l in self.param_stages} | (
                {l + 1 for l in self.param_stages} if keep_inputs else set()
            )
            if keep:
                records.append(
                    Linearisation({i: states[i].detach() for i in kept}, costates, weight)
                )
            scaled = [g * (weight / n) for g in grads[len(wanted) :]]
            ascent = scaled if ascent is None else list(torch._foreach_add(ascent, scaled))
            part = weighted(loss.detach(), weight)
            total = part if total is None else total + part
        assert total is not None and ascent is not None
        return total, records, self._with_l2(ascent)

    def hamiltonian_gradients(self, records: Sequence[Linearisation]) -> list[Tensor]:
        """``grad_theta H~_l`` at the current parameters for every parameter (stage order)."""
        total: list[Tensor] | None = None
        for record in records:
            with torch.enable_grad():
                value = functools.reduce(
                    operator.add, (self._stage_terms(l, record) for l in self.param_stages)
                )
            grads = list(torch.autograd.grad(value, self.params))
            total = grads if total is None else list(torch._foreach_add(total, grads))
        assert total is not None
        return self._with_l2(total)

    def step(self, x: Tensor, y: Tensor) -> StepStats:
        loss, records, ascent = self.linearise(x, y, keep=self.hp.inner_steps > 1)
        objective = self._objective_before(loss)
        self._remember()
        for j in range(self.hp.inner_steps):
            direction = ascent if j == 0 else self.hamiltonian_gradients(records)
            self._prox_ascent(direction)
        later = self.hp.inner_steps - 1
        # Later inner steps run every parametrised stage once forward and, for rho > 0,
        # backward through the double-backward graph (about three backward passes).
        return self._report(
            split_batch(x, y, self.chunk_size),
            loss,
            objective,
            self._moved(),
            forward_passes=1.0 + later,
            backward_passes=1.0 + later * (3.0 if self.hp.rho > 0 else 1.0),
        )

    # ---------------------------------------------------------------- internals
    def _stage_terms(self, l: int, record: Linearisation) -> Tensor:
        """The chunk's share of ``H~_l`` without the L2 term (it is added in closed form)."""
        x_l = record.states[l]
        p_next = record.costates[l + 1]
        n = x_l.shape[0]
        rho = self.hp.rho
        if rho == 0:
            value = torch.sum(p_next * self.stages[l](x_l))
        else:
            x_l = x_l.detach().requires_grad_(True)
            out = self.stages[l](x_l)
            coupling = torch.sum(p_next * out)
            (grad_x,) = torch.autograd.grad(coupling, x_l, create_graph=True)
            x_gap = record.states[l + 1] - out
            p_gap = record.costates[l] - grad_x
            value = coupling - 0.5 * rho * (torch.sum(x_gap * x_gap) + torch.sum(p_gap * p_gap))
        return value * (record.weight / n)

    def _with_l2(self, grads: list[Tensor]) -> list[Tensor]:
        if not self.hp.gamma:
            return grads
        return [
            g - self.hp.gamma * p.detach() if is_prunable(p) else g
            for g, p in zip(grads, self.params, strict=True)
        ]

    @torch.no_grad()
    def _prox_ascent(self, direction: Sequence[Tensor]) -> None:
        # The shared write-back of bSQH's stage update and the proximal baselines.
        v = torch._foreach_add(self.params, torch._foreach_mul(list(direction), self.hp.inner_lr))
        prox_into(self.params, v, self._penalised, self._prox_factors, self.l0)


# The whole step as one CUDA graph (double backward included): ``emsa-graph``.
graphed_variant(EMSA)
