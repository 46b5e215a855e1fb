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

One algorithm, two execution modes (as torch.optim keeps one class per algorithm over
its single-tensor, multi-tensor and fused kernels). Steps 2 and 3 are one *attempt*
(:meth:`BSQH._attempt`) that runs entirely on the device: eps is a 0-dim float64 tensor,
acceptance is a device boolean, and keeping or undoing the candidate and updating eps
are ``torch.where`` selections.

* ``bsqh`` (:class:`BSQH`, the reference): a host loop around the attempt. It reads the
  acceptance once per attempt (one host synchronisation on CUDA) and retries on the
  same batch up to ``max_retries`` times; its ``StepStats`` hold Python numbers.
* ``bsqh-fast`` (:class:`FastBSQH`): the same attempt, once per call and without the host
  read (``max_retries=0``: a rejected attempt raises eps, leaves the parameters as they
  were, and the next call goes on with the next batch); the whole step is captured as a
  CUDA graph (``cuda_graph``, see ``optimizers.graphs``) and ``StepStats`` fields are
  0-dim device tensors. With ``reuse_adjoints`` (full-batch training: ``step`` sees the
  same batch tensors twice in a row, unmodified) the candidate's forward is built with
  autograd, its backward gives the next iteration's adjoints and stage-0 gradient, and the
  next iteration starts from them instead of a fresh forward and backward; a rejected
  attempt keeps the current linearisation. The second call on a batch pays one extra
  backward to start this; it pays from the third on.

Work neither mode wastes: the first parametrised stage's gradient comes from the adjoint
pass; every forward the sweep computes feeds both the next stage and the loss; R of the
current iterate is carried from the previous step (refreshed whenever the parameters are
changed from outside); the stage update uses multi-tensor (``_foreach``) kernels; and the
elementwise tail (distance, R of the candidate, the selection) runs on one flat copy of
the parameters, a handful of kernels whatever the layer count. The prox itself is
``optimizers.regularizers``' operator, unchanged.

``fuse`` (``bsqh-fast``; unset: on for CUDA parameters) compiles that elementwise work,
the attempt's scalars (:func:`_prelude`), each stage's update (:func:`_stage_update`) and
the test with its selections (:func:`_decide`), with ``torch.compile``: each becomes one
kernel per output tensor (``optimizers.fusion``). The compiled and eager paths run the
same functions and differ only in float rounding.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import validation
from .common import ChunkedMethod
from .fusion import Fusable, flat_alias, hyperparameters, resolve
from .graphs import BatchIdentity, GraphedStep, shape_key
from .hparams import HParams, hparam
from .passes import LossFn, split_batch, weighted
from .registry import register
from .regularizers import (
    Regularizer,
    beta_hparam,
    gamma_hparam,
    is_prunable,
    make_regularizer,
    penalty_hparam,
    prox_into,
)
from .search import choice, fixed, log_uniform, uniform
from .stats import StepStats

SWEEPS = ("sequential", "parallel")
#: Retries of a rejected mini-batch step in a study (fixed, not tuned).
MINIBATCH_MAX_RETRIES = 5

Chunks = Sequence[tuple[Tensor, Tensor, float]]
Gradients = dict[int, list[Tensor]]


@dataclass(frozen=True)
class BSQHHParams(HParams):
    """bSQH's hyperparameters (names as in arXiv 2504.11647)."""

    eps: float = hparam(
        1.0,
        "initial augmentation weight; the stage step is 1/(2 eps)",
        low=0.0,
        low_open=True,
        search=log_uniform(1e-1, 1e2, "initial eps (step 1/(2 eps))"),
    )
    sigma: float = hparam(
        2.0,
        "eps is multiplied by sigma after a rejected attempt",
        low=1.0,
        low_open=True,
        search=uniform(1.2, 5.0, "eps growth on reject"),
    )
    zeta: float = hparam(
        0.99,
        "eps is multiplied by zeta after an accepted attempt",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
        search=uniform(0.5, 0.999, "eps shrink on accept"),
    )
    eta: float = hparam(
        1e-4,
        "sufficient decrease: accept iff J_new - J_k <= -eta tau",
        low=0.0,
        search=log_uniform(1e-6, 1e-2, "sufficient-decrease constant"),
    )
    beta: float = beta_hparam()
    gamma: float = gamma_hparam()
    penalty: str = penalty_hparam()
    sweep: str = hparam(
        "sequential",
        "sequential (bsqh) or parallel (the ablation bsqh-parallel); fixed by the name",
        choices=SWEEPS,
    )
    inner_steps: int = hparam(
        1, "proximal ascent steps per stage on its exact Hamiltonian", low=1, search=choice(1, 2, 3)
    )
    # Mini-batch studies fix 5 retries, so that one step cannot eat the budget; full-batch
    # studies keep the default.
    max_retries: int = hparam(
        20,
        "rejected attempts on one batch before the step gives up",
        low=0,
        search=fixed(MINIBATCH_MAX_RETRIES, "minibatch"),
    )
    eps_min: float | None = hparam(
        None, "lower clamp of eps (unset: none)", kind=float, low=0.0, low_open=True, optional=True
    )
    eps_max: float | None = hparam(
        None, "upper clamp of eps (unset: none)", kind=float, low=0.0, low_open=True, optional=True
    )

    def check(self) -> None:
        if self.eps_min is not None and self.eps_max is not None and self.eps_min > self.eps_max:
            raise ValueError(
                f"eps_min must be <= eps_max, got eps_min={self.eps_min!r} > "
                f"eps_max={self.eps_max!r}"
            )


@dataclass(frozen=True)
class FastBSQHHParams(BSQHHParams):
    """bSQH's hyperparameters for the device-resident mode: no same-batch retries."""

    max_retries: int = hparam(
        0, "must be 0: a rejected attempt raises eps, the next step goes on", low=0, search=fixed(0)
    )

    def check(self) -> None:
        super().check()
        if self.max_retries != 0:
            raise ValueError(
                f"max_retries must be 0 for bsqh-fast (a rejected attempt raises eps and the "
                f"next step goes on; same-batch retries need a host sync), got "
                f"{self.max_retries}; use method 'bsqh' for retries"
            )


@dataclass
class _Linearisation:
    """What one chunk contributes to the sweep: old states and adjoints of the stages."""

    states: dict[int, Tensor]  # x_k[l] (input of stage l), only where the sweep needs it
    adjoints: dict[int, Tensor]  # p_k[l+1] (co-state at the output of stage l)


Linearised = tuple[Tensor, list[_Linearisation], Gradients]


@dataclass
class _Attempt:
    """The outcome of one attempt, as device tensors (nothing read on the host)."""

    accept: Tensor  # bool
    loss: Tensor  # float64: of the kept iterate (candidate if accepted, else u_k)
    objective: Tensor
    tau: Tensor  # 0 when rejected
    eps: Tensor  # eps after the update
    following: Linearised | None  # the candidate's linearisation (``track``)


@dataclass(frozen=True)
class _Coefficients:
    """The hyperparameters the elementwise work reads: floats, or tensors when compiled."""

    regularizer: Regularizer
    eta: float | Tensor
    zeta: float | Tensor
    sigma: float | Tensor
    eps_min: float | Tensor | None
    eps_max: float | Tensor | None


def _flat_penalty(flat: Tensor, prunable_numel: int, regularizer: Regularizer) -> Tensor:
    """R of the parameters in a flat copy (prunable tensors first, so R of its head)."""
    if not prunable_numel:
        return flat.new_zeros(())
    return regularizer.penalty(flat[:prunable_numel])


# The elementwise work of an attempt, as plain functions of tensors: the eager reference
# runs them as they are, the fused mode compiles them (``optimizers.fusion``).
def _prelude(
    eps: Tensor, loss_k: Tensor, reg_k: Tensor, regularizer: Regularizer, dtype: torch.dtype
) -> tuple[Tensor, Tensor, tuple[Any, ...]]:
    """J(u_k), and the attempt's scalars: t = 1/(2 eps) in the parameters' dtype (as
    ``t * g`` would cast it) and the prox's factors (each a kernel if not computed once)."""
    t = torch.reciprocal(2.0 * eps)
    return loss_k + reg_k, t.to(dtype), regularizer.prox_factors(t)


def _stage_update(
    params: list[Tensor],
    u_k: list[Tensor],
    g: list[Tensor],
    penalised: tuple[bool, ...],
    scale: Tensor,
    factors: tuple[Any, ...],
    regularizer: Regularizer,
) -> None:
    """``params <- prox_{tR}(u_k + t g)``: the maximiser of a stage's linearised H_eps.

    The prox shrinks the ``penalised`` tensors (the prunable ones) and passes the others.
    Eagerly, ``u_k + t g`` is one multi-tensor kernel pair per stage and the write-back
    one copy (:func:`optimizers.regularizers.prox_into`, shared with the baselines).
    """
    v = torch._foreach_add(u_k, torch._foreach_mul(g, scale))
    prox_into(params, v, penalised, factors, regularizer)


def _decide(
    new_flat: Tensor,
    old_flat: Tensor,
    prunable_numel: int,
    loss_new: Tensor,
    loss_k: Tensor,
    objective_k: Tensor,
    reg_k: Tensor,
    eps: Tensor,
    regularizer: Regularizer,
    eta: float | Tensor,
    zeta: float | Tensor,
    sigma: float | Tensor,
    eps_min: float | Tensor | None,
    eps_max: float | Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The sufficient-decrease test and its consequences, on the device.

    ``old_flat`` becomes the kept iterate (candidate if accepted, else u_k), ``reg_k`` its
    R and ``eps`` the updated eps, in place. Returns accept, and the kept iterate's loss
    and J, tau (0 when rejected) and eps, the figures in float64.
    """
    tau = torch.sum(torch.square(new_flat - old_flat))
    reg_new = _flat_penalty(new_flat, prunable_numel, regularizer)
    objective_new = loss_new + reg_new
    accept = objective_new - objective_k <= -eta * tau
    loss_out = torch.where(accept, loss_new, loss_k).to(torch.float64)
    objective_out = torch.where(accept, objective_new, objective_k).to(torch.float64)
    tau_out = torch.where(accept, tau.to(torch.float64), 0.0)
    torch.where(accept, new_flat, old_flat, out=old_flat)
    torch.where(accept, reg_new, reg_k, out=reg_k)
    eps_new = torch.where(accept, eps * zeta, eps * sigma)
    if eps_min is not None or eps_max is not None:
        # Both bounds are floats (eager) or both tensors (compiled); typing sees a mix.
        eps_new = torch.clamp(eps_new, min=eps_min, max=eps_max)  # type: ignore[arg-type]
    eps.copy_(eps_new)
    return accept, loss_out, objective_out, tau_out, eps_new


@register(
    "bsqh",
    hparams=BSQHHParams,
    pinned={"sweep": "sequential"},
    focus=True,  # the method this benchmark studies
    colour="#d62728",
)
class BSQH(ChunkedMethod):
    """bSQH optimizer; ``step(x, y)`` performs one iteration on the batch (x, y).

    Full-batch mode passes the whole training set to ``step``; ``chunk_size`` bounds the
    activation memory. Memory: the sweep keeps, for every sample of the batch, the adjoint
    at the output of every parametrised stage (and, for the parallel sweep with
    ``inner_steps > 1``, the old input states), i.e. about ``N * sum_l |x[l+1]|`` floats
    beyond the model, plus the graph of one chunk. For LeNet-5 on 60,000 Fashion-MNIST
    images that is about 0.4 GB in float32.
    """

    method_name: ClassVar[str]
    #: Hyperparameters under which the method learns the tests' tiny problem.
    test_hparams: ClassVar[dict[str, Any]] = {"eps": 0.5, "beta": 1e-4, "gamma": 1e-4}
    #: The ``fuse`` option (``bsqh-fast``'s; the reference always runs eagerly).
    _fuse: bool | None = False

    def __init__(
        self,
        model: nn.Module,
        hp: BSQHHParams | None = None,
        *,
        chunk_size: int | None = None,
        loss_fn: LossFn = F.cross_entropy,
    ) -> None:
        self.hp = hp if hp is not None else BSQHHParams()
        self.model = validation.sequential_model(model)
        self.regularizer = make_regularizer(self.hp.penalty, beta=self.hp.beta, gamma=self.hp.gamma)
        self._set_runtime(chunk_size=chunk_size, loss_fn=loss_fn)  # reports after the step

        self.stages: list[nn.Module] = list(self.model)
        self.stage_params: list[list[Tensor]] = [
            [p for p in stage.parameters() if p.requires_grad] for stage in self.stages
        ]
        self.params = [p for group in self.stage_params for p in group]
        # Which tensors of each stage the prox shrinks (the prunable ones).
        self._penalised = [tuple(is_prunable(p) for p in group) for group in self.stage_params]
        self.param_stages = [l for l, group in enumerate(self.stage_params) if group]
        if not self.param_stages:
            raise ValueError("model has no trainable parameters: nothing for bSQH to optimise")
        if len({(p.device, p.dtype) for p in self.params}) != 1:
            raise ValueError("bSQH needs every parameter on one device with one dtype")
        # The first parametrised stage sees the unchanged input in every attempt, so its
        # stage gradient at u_k comes from the adjoint pass and is reused across retries.
        self._fixed_input_stage = self.param_stages[0]
        self._vjps = sum(
            self.hp.inner_steps - (1 if self._needs_gradient(l) else 0) for l in self.param_stages
        )

        # Flat layout: prunable tensors first, so R of a flat copy is R of its head.
        self._ordered = [p for p in self.params if is_prunable(p)] + [
            p for p in self.params if not is_prunable(p)
        ]
        self._prunable_numel = sum(p.numel() for p in self._ordered if is_prunable(p))
        offsets, position = {}, 0
        for p in self._ordered:
            offsets[id(p)] = (position, p.numel(), p.shape)
            position += p.numel()
        self._slots = [offsets[id(p)] for p in self.params]
        self._ordered_slots = [offsets[id(p)] for p in self._ordered]

        device = self.params[0].device
        self._eps = torch.tensor(self._clamp(self.hp.eps), dtype=torch.float64, device=device)
        dtype = self.params[0].dtype
        self._minus_one = torch.full((), -1.0, dtype=dtype, device=device)  # adjoint seed
        self._reg = self._penalty_now().clone()
        self._signature = self._param_signature()
        self._use_fusion(resolve(self._fuse, self.params))

    def _use_fusion(self, enabled: bool) -> None:
        """Run the step's elementwise work eagerly or compiled (``optimizers.fusion``)."""
        hp = self.hp
        regularizer, values = hyperparameters(
            enabled, self.params[0].device, self.regularizer,
            hp.eta, hp.zeta, hp.sigma, hp.eps_min, hp.eps_max,
        )  # fmt: skip
        eta, zeta, sigma, eps_min, eps_max = values
        assert eta is not None and zeta is not None and sigma is not None
        self._coefficients = _Coefficients(regularizer, eta, zeta, sigma, eps_min, eps_max)
        owner = self.method_name
        self._prelude = Fusable(_prelude, enabled=enabled, owner=owner)
        self._stage_update = Fusable(_stage_update, enabled=enabled, owner=owner)
        self._decide = Fusable(_decide, enabled=enabled, owner=owner)

    @property
    def fused(self) -> bool:
        """Whether the elementwise work runs compiled (false after a failed compile)."""
        parts = (self._prelude, self._stage_update, self._decide)
        return all(part.compiled for part in parts)

    # ---------------------------------------------------------------- public API
    @property
    def eps(self) -> float:
        """Current eps as a float: reads the device (a host synchronisation on CUDA)."""
        return float(self._eps)

    @eps.setter
    def eps(self, value: float) -> None:
        self._eps.fill_(float(value))  # in place: captured graphs keep reading it

    def step(self, x: Tensor, y: Tensor) -> StepStats:
        """One iteration with same-batch retries: the reference mode (host loop)."""
        chunks = split_batch(x, y, self.chunk_size)
        self._sync_with_parameters()
        loss_k, lins, gradients = self._linearise(chunks)
        attempts = 0
        while True:
            attempt = self._attempt(chunks, loss_k, lins, gradients, track=False)
            attempts += 1
            accepted = bool(attempt.accept)  # the one host synchronisation per attempt
            if accepted or attempts > self.hp.max_retries:
                break
        self._signature = self._param_signature()
        forward, backward = self._passes(attempts, fresh=True, carried=False)
        figures = torch.stack([attempt.loss, attempt.objective, attempt.eps, attempt.tau])
        loss, objective, eps, tau = figures.tolist()  # one transfer to the host
        return StepStats(
            loss=loss,
            objective=objective,
            accepted=accepted,
            eps=eps,
            tau=tau,
            retries=attempts - int(accepted),
            forward_passes=forward,
            backward_passes=backward,
        )

    # ---------------------------------------------------------------- the attempt
    def _attempt(
        self,
        chunks: Chunks,
        loss_k: Tensor,
        lins: Sequence[_Linearisation],
        gradients: Gradients,
        *,
        track: bool,
    ) -> _Attempt:
        """Sweep with t = 1/(2 eps), test, keep the candidate or go back, update eps.

        Branch-free on tensor values, so it can be captured in a CUDA graph. With
        ``track`` the candidate's forward is recorded and its backward returns the
        linearisation at the candidate (for ``reuse_adjoints``). The elementwise work is
        :func:`_prelude`, :func:`_stage_update` and :func:`_decide`, run eagerly or
        compiled (``fuse``).
        """
        with torch.no_grad():
            old_flat = self._flat_parameters()
            objective_k, scale, factors = self._prelude(
                self._eps, loss_k, self._reg, self._coefficients.regularizer, old_flat.dtype
            )
        old = self._views(old_flat, self._slots)
        loss_new, states, chunk_losses = self._sweep(
            chunks, lins, gradients, old, (scale, factors), track=track
        )
        following = None
        if track:  # the candidate's backward: the linearisation at u_new
            following = self._combine_linearisations(
                [self._chunk_linearisation(s, c) for s, c in zip(states, chunk_losses, strict=True)]
            )
        with torch.no_grad():
            new_flat = self._flat_parameters()
            c = self._coefficients
            accept, loss_out, objective_out, tau_out, eps = self._decide(
                new_flat, old_flat, self._prunable_numel,
                loss_new, loss_k, objective_k, self._reg, self._eps,
                c.regularizer, c.eta, c.zeta, c.sigma, c.eps_min, c.eps_max,
            )  # fmt: skip
            # Keep the candidate or go back to u_k (``_decide`` selected into old_flat).
            torch._foreach_copy_(self._ordered, self._views(old_flat, self._ordered_slots))
        return _Attempt(accept, loss_out, objective_out, tau_out, eps, following)

    def _sweep(
        self,
        chunks: Chunks,
        lins: Sequence[_Linearisation],
        gradients: Gradients,
        old: Sequence[Tensor],
        step: tuple[Tensor, tuple[Any, ...]],
        *,
        track: bool,
    ) -> tuple[Tensor, list[list[Tensor]], list[Tensor]]:
        """The sweep: parameters become u_new stage by stage; returns the candidate's loss.

        With ``track`` the candidate's forward is recorded by autograd and its states and
        per-chunk losses are returned for the next linearisation; otherwise it runs without
        a graph and only the loss is returned. Each stage's forward at u_new is computed
        once and feeds both the next stage and the loss.
        """
        old_by_stage = self._split_by_stage(old)
        sequential = self.hp.sweep == "sequential"
        inputs = [xc for xc, _, _ in chunks]
        states: list[list[Tensor]] = [[xc] for xc in inputs] if track else []
        for l, stage in enumerate(self.stages):
            if self.stage_params[l]:
                stage_inputs = (
                    [h.detach() for h in inputs]
                    if sequential  # the parallel sweep keeps old states only where it needs them
                    else [lin.states[l] for lin in lins if l in lin.states]
                )
                self._update_stage(l, old_by_stage[l], stage_inputs, lins, gradients, step)
            if sequential:
                with torch.set_grad_enabled(track):
                    inputs = [stage(h) for h in inputs]
                for chunk_states, h in zip(states, inputs, strict=False):
                    chunk_states.append(h)
        if not sequential:  # parallel: every stage used the old states; now one forward
            outputs = []
            with torch.set_grad_enabled(track):
                for c, h in enumerate(inputs):
                    for stage in self.stages:
                        h = stage(h)
                        if track:
                            states[c].append(h)
                    outputs.append(h)
            inputs = outputs
        with torch.set_grad_enabled(track):
            chunk_losses = [
                weighted(self.loss_fn(h, yc), w)
                for h, (_, yc, w) in zip(inputs, chunks, strict=True)
            ]
        loss = chunk_losses[0].detach()
        for extra in chunk_losses[1:]:
            loss = loss + extra.detach()
        return loss, states, chunk_losses

    def _update_stage(
        self,
        l: int,
        u_k: Sequence[Tensor],
        inputs: Sequence[Tensor],
        lins: Sequence[_Linearisation],
        gradients: Gradients,
        step: tuple[Tensor, tuple[Any, ...]],
    ) -> None:
        """Set stage l's parameters to the (approximate) maximiser of its H_eps."""
        scale, factors = step
        for j in range(self.hp.inner_steps):
            reuse = j == 0 and l in gradients  # stage 0's from the adjoint pass
            g = gradients[l] if reuse else self._stage_gradient(l, inputs, lins)
            with torch.no_grad():
                self._stage_update(
                    [flat_alias(p) for p in self.stage_params[l]],
                    [flat_alias(u) for u in u_k],
                    [flat_alias(gi.contiguous()) for gi in g],
                    self._penalised[l],
                    scale,
                    factors,
                    self._coefficients.regularizer,
                )

    def _passes(self, attempts: int, *, fresh: bool, carried: bool) -> tuple[float, float]:
        """Network-equivalent (forward, backward) passes of a step.

        ``fresh``: the step linearised at u_k (one forward, one backward); each attempt is
        one forward plus the stage VJPs (a share of a pass); ``carried``: the candidate's
        backward for the next step's linearisation.
        """
        share = self._vjps / len(self.param_stages)
        start = 1.0 if fresh else 0.0
        forward = start + attempts * (1.0 + share)
        backward = start + attempts * share + (1.0 if carried else 0.0)
        return forward, backward

    # ---------------------------------------------------------------- linearisation
    def _needs_adjoint(self, l: int) -> bool:
        if self.hp.sweep == "sequential":
            return l != self._fixed_input_stage or self.hp.inner_steps > 1
        return self.hp.inner_steps > 1

    def _needs_gradient(self, l: int) -> bool:
        return self.hp.sweep == "parallel" or l == self._fixed_input_stage

    def _linearise(self, chunks: Chunks) -> Linearised:
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

        Returns the detached chunk loss, the chunk's linearisation and its ``-dLoss/du``
        for the gradient stages (in ``stage_params`` order). The states come from a fresh
        forward or, with ``reuse_adjoints``, from the sweep's candidate forward.
        """
        adjoint_stages = [l for l in self.param_stages if self._needs_adjoint(l)]
        gradient_stages = [l for l in self.param_stages if self._needs_gradient(l)]
        keep_states = self.hp.sweep == "parallel" and self.hp.inner_steps > 1
        grad_params = [p for l in gradient_stages for p in self.stage_params[l]]
        targets = [states[l + 1] for l in adjoint_stages]
        # Seeding the backward with -1 yields p = -dLoss/dx and g = -dLoss/du directly,
        # without a negation per tensor, nor one of the loss and its backward (exact:
        # negation commutes with every step of the chain).
        grads = torch.autograd.grad(loss, targets + grad_params, grad_outputs=self._minus_one)
        adjoints = {l: g.detach() for l, g in zip(adjoint_stages, grads, strict=False)}
        chunk_grads = list(grads[len(targets) :])
        kept = {l: states[l].detach() for l in self.param_stages} if keep_states else {}
        return loss.detach(), _Linearisation(states=kept, adjoints=adjoints), chunk_grads

    def _combine_linearisations(
        self, parts: Sequence[tuple[Tensor, _Linearisation, list[Tensor]]]
    ) -> Linearised:
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
        gradients: Gradients = {}
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

    # ---------------------------------------------------------------- checkpoints
    def _state_tensors(self) -> dict[str, Tensor | None]:
        return {"eps": self._eps, "reg": self._reg}

    def _state_loaded(self) -> None:
        # R(u_k) came with the state: the loaded parameters are no outside change.
        self._signature = self._param_signature()

    # ---------------------------------------------------------------- bookkeeping
    def _clamp(self, eps: float) -> float:
        if self.hp.eps_min is not None:
            eps = max(eps, self.hp.eps_min)
        if self.hp.eps_max is not None:
            eps = min(eps, self.hp.eps_max)
        return eps

    def _split_by_stage(self, flat: Sequence[Tensor]) -> list[list[Tensor]]:
        grouped, position = [], 0
        for group in self.stage_params:
            grouped.append(list(flat[position : position + len(group)]))
            position += len(group)
        return grouped

    def _flat_parameters(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self._ordered])

    @staticmethod
    def _views(flat: Tensor, slots: Sequence[tuple[int, int, torch.Size]]) -> list[Tensor]:
        return [flat[start : start + n].view(shape) for start, n, shape in slots]

    def _penalty_now(self) -> Tensor:
        """R of the current parameters (eagerly: outside the step, once)."""
        return _flat_penalty(self._flat_parameters(), self._prunable_numel, self.regularizer)

    def _param_signature(self) -> tuple[tuple[int, int], ...]:
        return tuple((p.data_ptr(), p._version) for p in self.params)

    def _sync_with_parameters(self) -> bool:
        """Notice parameters changed from outside (e.g. a checkpoint load): refresh R(u_k)."""
        signature = self._param_signature()
        if signature == self._signature:
            return False
        with torch.no_grad():
            self._reg.copy_(self._penalty_now())
        self._signature = signature
        return True


# Iteration kinds of the fast mode: (start from the carried linearisation, produce the next).
FRESH = "fresh"  # forward + backward at u_k, attempt
SEED = "seed"  # forward + backward at u_k, attempt with autograd, backward at the candidate
STEADY = "steady"  # attempt with autograd from the carried linearisation, backward
_KIND_FLAGS = {FRESH: (False, False), SEED: (False, True), STEADY: (True, True)}


@dataclass
class _Carry:
    """A linearisation kept between iterations: loss, per-chunk adjoints/states, gradients."""

    loss: Tensor
    lins: list[_Linearisation]
    gradients: Gradients

    def tensors(self) -> list[Tensor]:
        """Every tensor in a fixed order (for selection, copies and snapshots)."""
        out = [self.loss]
        for lin in self.lins:
            out += [lin.adjoints[l] for l in sorted(lin.adjoints)]
            out += [lin.states[l] for l in sorted(lin.states)]
        for l in sorted(self.gradients):
            out += self.gradients[l]
        return out

    def matches(self, other: _Carry) -> bool:
        mine, theirs = self.tensors(), other.tensors()
        return len(mine) == len(theirs) and all(
            a.shape == b.shape and a.dtype == b.dtype for a, b in zip(mine, theirs, strict=True)
        )

    @staticmethod
    def empty_like(other: _Carry) -> _Carry:
        return _Carry(
            loss=torch.empty_like(other.loss),
            lins=[
                _Linearisation(
                    states={l: torch.empty_like(t) for l, t in lin.states.items()},
                    adjoints={l: torch.empty_like(t) for l, t in lin.adjoints.items()},
                )
                for lin in other.lins
            ],
            gradients={l: [torch.empty_like(t) for t in g] for l, g in other.gradients.items()},
        )


#: What ``bsqh-parallel`` is, shown wherever it is listed or reported.
PARALLEL_LABEL = "ablation: proximal gradient with adaptive step"


@dataclass(frozen=True)
class BSQHParallelHParams(BSQHHParams):
    """``bsqh-parallel``: bSQH's hyperparameters with the parallel sweep."""

    sweep: str = hparam("parallel", "parallel (fixed by the name)", choices=SWEEPS)


@register(
    "bsqh-parallel",
    hparams=BSQHParallelHParams,
    variant_of="bsqh",
    label=PARALLEL_LABEL,
    pinned={"sweep": "parallel"},
    colour="#8c564b",
)
class BSQHParallel(BSQH):
    """bSQH's parallel sweep: every stage from the old states (proximal gradient, adaptive step).

    Not bSQH: without the sequential sweep the stage updates are a proximal gradient
    step of length ``1/(2 eps)`` with bSQH's acceptance test and eps rule. It is tuned,
    run and reported under this name only, so no table can call it bSQH.
    """


@register(
    "bsqh-fast",
    hparams=FastBSQHHParams,
    same_as="bsqh",
    colour="#ff9896",
)
class FastBSQH(GraphedStep, BSQH):
    """bSQH's device-resident mode: one attempt per call, no host read, graphed.

    Same iterates as ``bsqh`` with ``max_retries=0`` (to float rounding). ``eps`` reads the
    device value (a host synchronisation); read ``StepStats.eps`` at the evaluation
    cadence instead. See the module docstring for ``cuda_graph``, ``reuse_adjoints`` and
    ``fuse`` (unset: on for CUDA parameters, off on the CPU).
    """

    def __init__(
        self,
        model: nn.Module,
        hp: BSQHHParams | None = None,
        *,
        chunk_size: int | None = None,
        loss_fn: LossFn = F.cross_entropy,
        cuda_graph: bool = True,
        reuse_adjoints: bool = True,
        fuse: bool | None = None,
    ) -> None:
        if hp is None:
            hp = FastBSQHHParams()
        elif not isinstance(hp, FastBSQHHParams):  # its rules (max_retries == 0) apply
            hp = FastBSQHHParams.from_dict(hp.as_dict())
        self.reuse_adjoints = bool(reuse_adjoints)
        self._last: BatchIdentity | None = None
        self._carry_valid = False
        self._carries: dict[Hashable, _Carry] = {}
        self._fuse = fuse  # read by BSQH.__init__
        super().__init__(model, hp, cuda_graph=cuda_graph, chunk_size=chunk_size, loss_fn=loss_fn)

    def _state_loaded(self) -> None:
        super()._state_loaded()
        # The carried linearisation is not part of the state: the first step after a
        # load recomputes it (a fresh step, as on any new batch).
        self._carry_valid = False
        self._last = None

    def _sync_with_parameters(self) -> bool:
        changed = super()._sync_with_parameters()
        if changed:  # the carried linearisation belongs to other parameters
            self._carry_valid = False
        return changed

    # ---------------------------------------------------------------- graph hooks
    def _graph_kind(self, x: Tensor, y: Tensor) -> Hashable:
        self._sync_with_parameters()
        same = self._last is not None and self._last.same(x, y)
        if not (self.reuse_adjoints and same):
            return FRESH
        return STEADY if self._carry_valid else SEED

    def _graph_kinds(self, x: Tensor, y: Tensor) -> Sequence[Hashable]:
        self._sync_with_parameters()
        return [FRESH, SEED, STEADY] if self.reuse_adjoints else [FRESH]

    def _graph_body(self, x: Tensor, y: Tensor, kind: Hashable) -> StepStats:
        carry_in, carry_out = _KIND_FLAGS[str(kind)]
        chunks = split_batch(x, y, self.chunk_size)
        if carry_in:
            carry = self._carries.get(shape_key(x, y))
            if carry is None:
                raise RuntimeError("bsqh-fast: no carried linearisation for this batch shape")
            current: Linearised = (carry.loss, carry.lins, carry.gradients)
        else:
            current = self._linearise(chunks)
        attempt = self._attempt(chunks, *current, track=carry_out)
        if attempt.following is not None:
            self._select_carry(x, y, attempt.accept, attempt.following, current)
        accepted = attempt.accept.to(torch.float64)
        forward, backward = self._passes(1, fresh=not carry_in, carried=carry_out)
        return StepStats(
            loss=attempt.loss,
            objective=attempt.objective,
            accepted=accepted,
            eps=attempt.eps,
            tau=attempt.tau,
            retries=1.0 - accepted,
            forward_passes=forward,
            backward_passes=backward,
        )

    def _graph_after(self, x: Tensor, y: Tensor, kind: Hashable) -> None:
        self._last = BatchIdentity(x, y)
        self._carry_valid = kind != FRESH
        self._signature = self._param_signature()

    def _graph_tensors(self) -> list[Tensor]:
        carried = [t for carry in self._carries.values() for t in carry.tensors()]
        return [self._eps, self._reg, *carried]

    def _graph_restored(self) -> None:
        self._signature = self._param_signature()  # the roll-back is no outside change

    # ---------------------------------------------------------------- carry
    @torch.no_grad()
    def _select_carry(
        self, x: Tensor, y: Tensor, accept: Tensor, following: Linearised, current: Linearised
    ) -> None:
        """Carry the candidate's linearisation if accepted, else the current one."""
        new = _Carry(*following)
        now = _Carry(current[0], list(current[1]), current[2])
        key = shape_key(x, y)
        carry = self._carries.get(key)
        if carry is None or not carry.matches(new):
            if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
                raise RuntimeError("bsqh-fast: carry buffers must exist before capture")
            carry = _Carry.empty_like(new)
            self._carries[key] = carry
        for buffer, a, b in zip(carry.tensors(), new.tensors(), now.tensors(), strict=True):
            torch.where(accept, a, b, out=buffer)
