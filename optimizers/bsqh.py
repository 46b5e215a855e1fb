"""The batch sequential quadratic Hamiltonian method (bSQH), arXiv 2504.11647.

Training is treated as discrete optimal control: stage ``l`` of an ``nn.Sequential`` maps
its state ``x[l]`` to ``x[l+1] = f_l(x[l], u_l)`` with parameters ``u_l``. One iteration:

1. Forward at ``u_k`` and one backward pass for the adjoints ``p[l+1] = -dLoss/dx[l+1]``.
2. Sweep the stages in order. Stage ``l`` takes ``g = d/du <p_k[l+1], f_l(x_new[l], u)>``
   at ``u_k[l]``, where ``x_new[l]`` is the state produced by the already updated stages
   (sequential sweep), and sets ``u_new[l] = prox_{R/(2 eps)}(u_k[l] + g / (2 eps))``, the
   maximiser of the linearised augmented Hamiltonian; then ``x_new[l+1] = f_l(x_new[l],
   u_new[l])``. The ``parallel`` ablation uses the old states instead: that is proximal
   gradient descent with step ``1/(2 eps)``.
3. ``tau = |u_new - u_k|^2``. Accept iff ``J(u_new) - J(u_k) <= -eta tau`` on the same
   batch; accept multiplies eps by zeta, reject multiplies it by sigma and redoes step 2.

With ``inner_steps = K > 1`` each stage runs K proximal ascent steps on the exact (not
linearised) stage Hamiltonian with step ``1/(2 eps)``,
``u_{j+1} = prox_{R/(2 eps)}(u_k + g(u_j) / (2 eps))``; the first of them is the closed form.

This is the reference implementation: clear, exact and used by the tests. Its acceptance
test reads the objective on the host once per attempt (one synchronisation per attempt on
CUDA); the fast path in ``optimizers.fast`` keeps everything on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import validation
from .passes import LossFn, batch_loss, split_batch, squared_distance, weighted
from .registry import register
from .regularizers import make_regularizer
from .stats import StepStats

SWEEPS = ("sequential", "parallel")


@dataclass
class _Linearisation:
    """What one chunk contributes to the sweep: old states and adjoints of the stages."""

    states: dict[int, Tensor]  # x_k[l] (input of stage l), only where the sweep needs it
    adjoints: dict[int, Tensor]  # p_k[l+1] (co-state at the output of stage l)


@register("bsqh")
class BSQH:
    """bSQH optimizer; ``step(x, y)`` performs one iteration on the batch (x, y).

    Full-batch mode passes the whole training set to ``step``; ``chunk_size`` bounds the
    activation memory. Memory: the sweep keeps, for every sample of the batch, the adjoint
    at the output of every parametrised stage (and, for the parallel sweep with
    ``inner_steps > 1``, the old input states), i.e. about ``N * sum_l |x[l+1]|`` floats
    beyond the model, plus the graph of one chunk. For LeNet-5 on 60,000 Fashion-MNIST
    images that is about 0.4 GB in float32.
    """

    def __init__(
        self,
        model: nn.Sequential,
        *,
        eps: float = 1.0,
        sigma: float = 2.0,
        zeta: float = 0.99,
        eta: float = 1e-4,
        beta: float = 0.0,
        gamma: float = 0.0,
        penalty: str = "l0",
        sweep: str = "sequential",
        inner_steps: int = 1,
        max_retries: int = 20,
        eps_min: float | None = None,
        eps_max: float | None = None,
        chunk_size: int | None = None,
        loss_fn: LossFn = F.cross_entropy,
    ) -> None:
        self.model = validation.sequential_model(model)
        self.eps = validation.positive("eps", eps)
        self.sigma = validation.greater_than("sigma", sigma, 1.0)
        self.zeta = validation.open_interval("zeta", zeta, 0.0, 1.0)
        self.eta = validation.non_negative("eta", eta)
        self.regularizer = make_regularizer(penalty, beta=beta, gamma=gamma)
        self.sweep = validation.one_of("sweep", sweep, SWEEPS)
        self.inner_steps = validation.integer_at_least("inner_steps", inner_steps, 1)
        self.max_retries = validation.integer_at_least("max_retries", max_retries, 0)
        self.eps_min, self.eps_max = validation.optional_bounds(eps_min, eps_max)
        if chunk_size is not None:
            validation.integer_at_least("chunk_size", chunk_size, 1)
        self.chunk_size = chunk_size
        self.loss_fn = loss_fn
        self.eps = self._clamp(self.eps)

        self.stages: list[nn.Module] = list(model)
        self.stage_params: list[list[nn.Parameter]] = [
            [p for p in stage.parameters() if p.requires_grad] for stage in self.stages
        ]
        self.params = [p for group in self.stage_params for p in group]
        self.param_stages = [l for l, group in enumerate(self.stage_params) if group]
        if not self.param_stages:
            raise ValueError("model has no trainable parameters: nothing for bSQH to optimise")
        # The first parametrised stage sees the unchanged input in every attempt, so its
        # stage gradient at u_k comes from the adjoint pass and is reused across retries.
        self._fixed_input_stage = self.param_stages[0]

    # ---------------------------------------------------------------- public API
    @property
    def hparams(self) -> dict[str, object]:
        """Hyperparameters as given (for logs)."""
        return {
            "sigma": self.sigma,
            "zeta": self.zeta,
            "eta": self.eta,
            "beta": self.regularizer.beta,
            "gamma": self.regularizer.gamma,
            "penalty": self.regularizer.name,
            "sweep": self.sweep,
            "inner_steps": self.inner_steps,
            "max_retries": self.max_retries,
        }

    def objective(self, x: Tensor, y: Tensor) -> Tensor:
        """J(u) = mean loss + R(u) on (x, y) at the current parameters (no graph)."""
        chunks = split_batch(x, y, self.chunk_size)
        return batch_loss(self.model, chunks, self.loss_fn) + self.regularizer.value(self.params)

    def step(self, x: Tensor, y: Tensor) -> StepStats:
        chunks = split_batch(x, y, self.chunk_size)
        old = [p.detach().clone() for p in self.params]
        loss_k, linearisations, gradients = self._linearise(chunks)
        objective_k = loss_k + self.regularizer.value(self.params)
        forward, backward = 1.0, 1.0
        retries = 0
        while True:
            t = 1.0 / (2.0 * self.eps)
            loss_new, work_f, work_b = self._sweep(chunks, linearisations, gradients, old, t)
            forward += work_f
            backward += work_b
            objective_new = loss_new + self.regularizer.value(self.params)
            tau = self._distance(old)
            # One host synchronisation per attempt (see the module docstring).
            if bool(objective_new - objective_k <= -self.eta * tau):
                self.eps = self._clamp(self.eps * self.zeta)
                return StepStats(
                    loss=float(loss_new),
                    objective=float(objective_new),
                    accepted=True,
                    eps=self.eps,
                    tau=float(tau),
                    retries=retries,
                    forward_passes=forward,
                    backward_passes=backward,
                )
            self._restore(old)
            self.eps = self._clamp(self.eps * self.sigma)
            retries += 1
            if retries > self.max_retries:
                return StepStats(
                    loss=float(loss_k),
                    objective=float(objective_k),
                    accepted=False,
                    eps=self.eps,
                    tau=0.0,
                    retries=retries,
                    forward_passes=forward,
                    backward_passes=backward,
                )

    # ---------------------------------------------------------------- internals
    def _clamp(self, eps: float) -> float:
        if self.eps_min is not None:
            eps = max(eps, self.eps_min)
        if self.eps_max is not None:
            eps = min(eps, self.eps_max)
        return eps

    def _needs_adjoint(self, l: int) -> bool:
        if self.sweep == "sequential":
            return l != self._fixed_input_stage or self.inner_steps > 1
        return self.inner_steps > 1

    def _needs_gradient(self, l: int) -> bool:
        return self.sweep == "parallel" or l == self._fixed_input_stage

    def _linearise(
        self, chunks: Sequence[tuple[Tensor, Tensor, float]]
    ) -> tuple[Tensor, list[_Linearisation], dict[int, list[Tensor]]]:
        """Forward at u_k and one backward for adjoints and the reusable stage gradients.

        Returns the batch loss at u_k, per chunk the adjoints (and old states where the
        parallel sweep needs them), and ``g = -dLoss/du_l`` for the stages whose input the
        sweep does not change, summed over chunks. Each chunk's backward runs before the
        next chunk's forward, so only one chunk's graph is alive at a time.
        """
        parts = []
        for xc, yc, weight in chunks:
            states = [xc]
            with torch.enable_grad():
                h = xc
                for stage in self.stages:
                    h = stage(h)
                    states.append(h)
                loss = weighted(self.loss_fn(h, yc), weight)
            parts.append(self._chunk_linearisation(states, loss))
        return self._combine_linearisations(parts)

    def _chunk_linearisation(
        self, states: Sequence[Tensor], loss: Tensor
    ) -> tuple[Tensor, _Linearisation, list[Tensor]]:
        """The adjoint pass of one chunk, given its forward states ``x[0..L]`` and its loss.

        Shared with the fast path (``optimizers.fast``), whose full-batch mode obtains the
        states from the sweep's candidate forward instead of a fresh one. Returns the
        detached chunk loss, the chunk's linearisation and its ``-dLoss/du`` for the
        gradient stages (in ``stage_params`` order).
        """
        adjoint_stages = [l for l in self.param_stages if self._needs_adjoint(l)]
        gradient_stages = [l for l in self.param_stages if self._needs_gradient(l)]
        keep_states = self.sweep == "parallel" and self.inner_steps > 1
        grad_params = [p for l in gradient_stages for p in self.stage_params[l]]
        targets = [states[l + 1] for l in adjoint_stages]
        # Differentiating -loss yields p = -dLoss/dx and g = -dLoss/du directly: one
        # negation of a scalar instead of one per tensor (exact: negation commutes).
        grads = torch.autograd.grad(-loss, targets + grad_params)
        adjoints = {l: g.detach() for l, g in zip(adjoint_stages, grads, strict=False)}
        chunk_grads = list(grads[len(targets) :])
        kept = {l: states[l].detach() for l in self.param_stages} if keep_states else {}
        return loss.detach(), _Linearisation(states=kept, adjoints=adjoints), chunk_grads

    def _combine_linearisations(
        self, parts: Sequence[tuple[Tensor, _Linearisation, list[Tensor]]]
    ) -> tuple[Tensor, list[_Linearisation], dict[int, list[Tensor]]]:
        """Sum chunk losses and gradients (in chunk order) and group gradients by stage."""
        total_loss: Tensor | None = None
        gradient_sum: list[Tensor] | None = None
        linearisations = []
        for loss, linearisation, chunk_grads in parts:
            gradient_sum = (
                chunk_grads
                if gradient_sum is None
                else [a + b for a, b in zip(gradient_sum, chunk_grads, strict=True)]
            )
            linearisations.append(linearisation)
            total_loss = loss if total_loss is None else total_loss + loss
        assert total_loss is not None and gradient_sum is not None
        gradients: dict[int, list[Tensor]] = {}
        position = 0
        for l in self.param_stages:
            if self._needs_gradient(l):
                count = len(self.stage_params[l])
                gradients[l] = gradient_sum[position : position + count]
                position += count
        return total_loss, linearisations, gradients

    def _stage_gradient(
        self, l: int, inputs: Sequence[Tensor], linearisations: Sequence[_Linearisation]
    ) -> list[Tensor]:
        """``d/du <p_k[l+1], f_l(x, u)>`` at the current parameters, summed over chunks."""
        params = self.stage_params[l]
        total: list[Tensor] | None = None
        for x, lin in zip(inputs, linearisations, strict=True):
            with torch.enable_grad():
                out = self.stages[l](x)
            grads = torch.autograd.grad(out, params, grad_outputs=lin.adjoints[l])
            total = (
                list(grads) if total is None else [a + b for a, b in zip(total, grads, strict=True)]
            )
        assert total is not None
        return total

    def _maximise_stage(
        self,
        l: int,
        u_k: Sequence[Tensor],
        inputs: Sequence[Tensor],
        linearisations: Sequence[_Linearisation],
        gradients: dict[int, list[Tensor]],
        t: float,
    ) -> int:
        """Set stage l's parameters to the (approximate) maximiser of H_eps; return VJP count."""
        params = self.stage_params[l]
        vjps = 0
        for j in range(self.inner_steps):
            if j == 0 and l in gradients:
                g = gradients[l]
            else:
                g = self._stage_gradient(l, inputs, linearisations)
                vjps += 1
            with torch.no_grad():
                for p, uk, gi in zip(params, u_k, g, strict=True):
                    p.copy_(self.regularizer.prox_param(p, uk + t * gi, t))
        return vjps

    def _sweep(
        self,
        chunks: Sequence[tuple[Tensor, Tensor, float]],
        linearisations: Sequence[_Linearisation],
        gradients: dict[int, list[Tensor]],
        old: Sequence[Tensor],
        t: float,
    ) -> tuple[Tensor, float, float]:
        """One attempt: update every stage; return the new loss and the passes it spent."""
        old_by_stage = self._split_by_stage(old)
        inputs = [xc for xc, _, _ in chunks]
        vjps = 0
        for l, stage in enumerate(self.stages):
            if self.stage_params[l]:
                stage_inputs = (
                    inputs
                    if self.sweep == "sequential"
                    else [lin.states.get(l) for lin in linearisations]
                )
                vjps += self._maximise_stage(
                    l, old_by_stage[l], stage_inputs, linearisations, gradients, t
                )
            if self.sweep == "sequential":
                with torch.no_grad():
                    inputs = [stage(x) for x in inputs]
        if self.sweep == "sequential":
            loss = sum(
                (
                    weighted(self.loss_fn(h, yc), w)
                    for h, (_, yc, w) in zip(inputs, chunks, strict=True)
                ),
                start=torch.zeros((), device=inputs[0].device),
            )
        else:
            loss = batch_loss(self.model, chunks, self.loss_fn)
        share = vjps / len(self.param_stages)
        return loss, 1.0 + share, share

    def _split_by_stage(self, flat: Sequence[Tensor]) -> list[list[Tensor]]:
        grouped, position = [], 0
        for group in self.stage_params:
            grouped.append(list(flat[position : position + len(group)]))
            position += len(group)
        return grouped

    def _distance(self, old: Sequence[Tensor]) -> Tensor:
        return squared_distance(self.params, old)

    @torch.no_grad()
    def _restore(self, old: Sequence[Tensor]) -> None:
        for p, o in zip(self.params, old, strict=True):
            p.copy_(o)
