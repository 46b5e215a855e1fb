"""Extended method of successive approximations (E-MSA; Li, Chen, Tai & E, arXiv 1710.09513).

The first maximum-principle trainer, a peer of bSQH, at its reference settings. With the
stages of an ``nn.Sequential`` as the control system ``x[l+1] = f_l(x[l], theta_l)``,
one step:

1. Forward at ``theta_k`` for the states ``x_l`` and one backward pass for the costates
   ``p_l = -d Loss / d x_l`` of the MEAN batch loss (bSQH's adjoints; the reference
   derives ``p`` from its mean loss in the same way).
2. Every parametrised stage, independently and with the OLD states and costates (all
   stages in parallel, as in MSA), approximately maximises the augmented Hamiltonian,
   summed over the samples s of the batch as the reference sums it:

       H~_l(theta) = sum_s [ <p_{l+1,s}, f_l(x_{l,s}, theta)>
                             - rho/2 |x_{l+1,s} - f_l(x_{l,s}, theta)|^2
                             - rho/2 |p_{l,s} - grad_x H_l(x_{l,s}, p_{l+1,s}, theta)|^2 ]
                     - gamma/2 |theta|^2          (L2 on the prunable weights)

   with ``inner_solver``: ``lbfgs`` (default, the reference's: ``inner_steps`` = 10
   L-BFGS iterations per stage on ``-H~_l``) or ``ascent`` (``inner_steps`` gradient
   ascent steps of length ``inner_lr``).

What matches the reference (LiQianxiao/MaxPrinciple-DeepLearning, ``msalib``): the
costates from the mean loss, the batch-summed coupling and feasibility terms with
``rho/2`` (its ``rho * l2_loss``), so ``rho = 0.03`` is the reference's rho; the L2 as
``gamma/2 |theta|^2`` (its ``reg * l2_loss``, reg = 1e-3, our default gamma); L-BFGS with
10 iterations per stage, every stage from the old states, history 10 (scipy's L-BFGS-B
default). What does not: scipy's L-BFGS-B is replaced by ``torch.optim.LBFGS`` with a
strong-Wolfe line search (at most 25 evaluations per iteration, so the 10 iterations,
not the evaluation count, bind as in the reference's run), gradient tolerance 1e-5
(scipy's pgtol); the L2 covers the prunable weights only (the reference also decays
biases), as for every method here; the reference's random perturbation of the L-BFGS
start is 0 in its MNIST setting and absent here.

``rho = 0`` is plain MSA. The feasibility terms have zero gradient at ``theta_k`` (both
residuals vanish there), so the first ascent step is a gradient step on J for every rho;
it reuses the parameter gradients of the costate pass. Later steps and every L-BFGS
evaluation need ``grad_x H_l`` inside the objective: a double backward.

``emsa`` has no L0 term: it is the reference, and sparsifies nothing. ``emsa-l0`` is our
labelled hybrid: the ascent solver with the shared L0 prox of ``optimizers.regularizers``
after every step, ``theta <- prox_{inner_lr * beta |.|_0}(theta + inner_lr * grad H~_l)``,
so it maximises ``H~_l - beta |theta|_0`` and competes on bSQH's objective
``J = CE + gamma/2 |w|^2 + beta |w|_0``. L-BFGS has no proximal form, so ``emsa-l0``
runs the ascent solver only. ``rho`` keeps the reference's meaning there too: the
feasibility terms are sums over the batch, so their curvature grows with the batch size,
and a fixed ascent step that is stable for ``rho = 0.03`` at a few samples diverges at
hundreds (L-BFGS's line search adapts; the ascent does not). Tune ``inner_lr`` and
``rho`` together.

Memory: the states and costates at both ends of every parametrised stage, for the whole
batch (about twice bSQH's adjoint memory when rho > 0); ``chunk_size`` bounds the graph.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Hashable, Sequence
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
from .search import BETA, GAMMA, RHO, choice, log_uniform
from .stats import StepStats

INNER_SOLVERS = ("lbfgs", "ascent")
#: L-BFGS memory: scipy's L-BFGS-B default (maxcor), which the reference uses.
LBFGS_HISTORY = 10
#: Gradient tolerance of L-BFGS: scipy's L-BFGS-B default (pgtol).
LBFGS_GRADIENT_TOLERANCE = 1e-5
#: Most H~ evaluations per L-BFGS iteration (torch's strong-Wolfe line search cap).
LBFGS_EVALUATIONS_PER_ITERATION = 25
#: What ``emsa-l0`` is, shown wherever it is listed or reported.
HYBRID_LABEL = "our variant: E-MSA with the shared L0 prox"


@dataclass(frozen=True)
class EMSAHParams(HParams):
    rho: float = hparam(
        0.03, "feasibility penalty rho, the reference's scale (0: plain MSA)", low=0.0, search=RHO
    )
    inner_solver: str = hparam(
        "lbfgs", "each stage's maximiser: lbfgs (the reference's) or ascent", choices=INNER_SOLVERS
    )
    inner_steps: int = hparam(
        10, "inner iterations per stage and step (L-BFGS iterations or ascent steps)", low=1
    )
    inner_lr: float = hparam(
        0.1, "step of the ascent solver (and of emsa-l0's prox)", low=0.0, low_open=True
    )
    gamma: float = hparam(
        1e-3, "L2 weight gamma/2 |w|^2 of R (the reference's reg)", low=0.0, search=GAMMA
    )


@dataclass(frozen=True)
class EMSAL0HParams(EMSAHParams):
    """``emsa-l0``: E-MSA's hyperparameters plus the L0 weight; the ascent solver only."""

    # Searched as in space version 2: the order a seeded sampler draws them in.
    search_order = ("inner_lr", "inner_steps", "rho", "beta", "gamma")

    inner_solver: str = hparam(
        "ascent", "must be ascent: the L0 prox needs proximal steps", choices=INNER_SOLVERS
    )
    inner_steps: int = hparam(
        3, "proximal ascent steps per stage and step", low=1, search=choice(1, 2, 3, 5)
    )
    # The ascent solver's first step is a (proximal) gradient step: SGD's range.
    inner_lr: float = hparam(
        0.1,
        "step of the ascent solver (and of emsa-l0's prox)",
        low=0.0,
        low_open=True,
        search=log_uniform(1e-3, 0.5, "inner ascent and prox step"),
    )
    gamma: float = hparam(0.0, "L2 weight gamma/2 |w|^2 of R", low=0.0, search=GAMMA)
    beta: float = hparam(0.0, "L0 weight of R", low=0.0, search=BETA)

    def check(self) -> None:
        if self.inner_solver != "ascent":
            raise ValueError(
                f"inner_solver must be 'ascent' for emsa-l0 (the L0 prox needs proximal "
                f"steps; L-BFGS has none), got {self.inner_solver!r}; use method 'emsa' for "
                "the reference's L-BFGS"
            )


@dataclass
class Linearisation:
    """One chunk's states and costates at ``theta_k`` (all detached)."""

    states: dict[int, Tensor]  # x_l, indexed by position in the Sequential (0: input)
    costates: dict[int, Tensor]  # p_l = -dLoss/dx_l of the batch mean loss, same indexing


# R = gamma/2 |w|^2: the L0 family with beta = 0, so its J compares with emsa-l0's.
@register("emsa", hparams=EMSAHParams, penalty="l0", colour="#17becf")
class EMSA(GradientStyleMethod):
    """E-MSA at the reference's settings (L-BFGS per stage, rho = 0.03); see the module doc."""

    #: Hyperparameters under which the method learns the tests' tiny problem.
    test_hparams: ClassVar[dict[str, Any]] = {"inner_steps": 3}

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
        beta = float(getattr(hp, "beta", 0.0))  # emsa-l0 only
        self.regularizer = make_regularizer("l0", beta=beta, gamma=hp.gamma)  # J's R
        self.l0 = make_regularizer("l0", beta=beta)  # the nonsmooth part, by prox
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
        #: H~ evaluations of each stage in the last L-BFGS step (for the pass count).
        self.evaluations: dict[int, int] = {}

    # ---------------------------------------------------------------- public API

    def linearise(
        self, x: Tensor, y: Tensor, *, keep: bool = True
    ) -> tuple[Tensor, list[Linearisation], list[Tensor]]:
        """Forward and costate pass at the current parameters.

        Returns the batch loss, each chunk's states and costates, and ``grad H~`` at the
        current parameters (``-dLoss/dtheta - gamma theta``), the first ascent step's
        direction. ``keep=False`` (one ascent step: only that direction is needed) skips
        the states and costates and the memory they hold.
        """
        keep_inputs = keep and self.hp.rho > 0  # p_l, x_{l+1}: feasibility terms only
        total: Tensor | None = None
        records = []
        ascent: list[Tensor] | None = None
        for xc, yc, weight in split_batch(x, y, self.chunk_size):
            with torch.enable_grad():
                states = [xc.detach().requires_grad_(keep_inputs)]
                for stage in self.stages:
                    states.append(stage(states[-1]))
                loss = self.loss_fn(states[-1], yc)
            wanted = sorted(
                ({l + 1 for l in self.param_stages} if keep else set())
                | ({l for l in self.param_stages} if keep_inputs else set())
            )
            # The chunk's share of -mean loss: its gradients are the batch mean loss's
            # costates (reference scale) and the batch mean's -dLoss/dtheta.
            grads = torch.autograd.grad(
                weighted(-loss, weight), [states[i] for i in wanted] + self.params
            )
            costates = {i: g.detach() for i, g in zip(wanted, grads, strict=False)}
            kept = {l for l in self.param_stages} | (
                {l + 1 for l in self.param_stages} if keep_inputs else set()
            )
            if keep:
                records.append(Linearisation({i: states[i].detach() for i in kept}, costates))
            scaled = list(grads[len(wanted) :])
            ascent = scaled if ascent is None else list(torch._foreach_add(ascent, scaled))
            part = weighted(loss.detach(), weight)
            total = part if total is None else total + part
        assert total is not None and ascent is not None
        return total, records, self._with_l2(ascent)

    def augmented_hamiltonian(self, l: int, records: Sequence[Linearisation]) -> Tensor:
        """``H~_l`` at the current parameters of stage ``l`` (differentiable in them)."""
        value = functools.reduce(operator.add, (self._stage_terms(l, r) for r in records))
        if self.hp.gamma:
            weights = [p for p in self.stage_params[l] if is_prunable(p)]
            if weights:
                l2 = functools.reduce(operator.add, (torch.sum(w * w) for w in weights))
                value = value - 0.5 * self.hp.gamma * l2
        return value

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
        lbfgs = self.hp.inner_solver == "lbfgs"
        loss, records, ascent = self.linearise(x, y, keep=lbfgs or self.hp.inner_steps > 1)
        objective = self._objective_before(loss)
        self._remember()
        if lbfgs:
            for l in self.param_stages:
                self.evaluations[l] = self._lbfgs_stage(l, records)
            # A stage evaluation runs that stage forward (and backward) once: 1/L of a pass.
            later = sum(self.evaluations.values()) / len(self.param_stages)
        else:
            for j in range(self.hp.inner_steps):
                direction = ascent if j == 0 else self.hamiltonian_gradients(records)
                self._prox_ascent(direction)
            later = self.hp.inner_steps - 1
        # Later evaluations run every parametrised stage once forward and, for rho > 0,
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
        """The chunk's part of ``H~_l`` without the L2 term (summed over its samples)."""
        x_l = record.states[l]
        p_next = record.costates[l + 1]
        rho = self.hp.rho
        if rho == 0:
            return torch.sum(p_next * self.stages[l](x_l))
        x_l = x_l.detach().requires_grad_(True)
        out = self.stages[l](x_l)
        coupling = torch.sum(p_next * out)
        (grad_x,) = torch.autograd.grad(coupling, x_l, create_graph=True)
        x_gap = record.states[l + 1] - out
        p_gap = record.costates[l] - grad_x
        return coupling - 0.5 * rho * (torch.sum(x_gap * x_gap) + torch.sum(p_gap * p_gap))

    def _lbfgs_stage(self, l: int, records: Sequence[Linearisation]) -> int:
        """Minimise ``-H~_l`` over stage ``l``'s parameters; returns the evaluations spent."""
        params = self.stage_params[l]
        solver = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=self.hp.inner_steps,
            max_eval=self.hp.inner_steps * LBFGS_EVALUATIONS_PER_ITERATION,
            tolerance_grad=LBFGS_GRADIENT_TOLERANCE,
            history_size=LBFGS_HISTORY,
            line_search_fn="strong_wolfe",
        )
        calls = 0

        def closure() -> Tensor:
            nonlocal calls
            calls += 1
            solver.zero_grad()
            value = -self.augmented_hamiltonian(l, records)
            torch.autograd.backward(value)
            return value.detach()

        solver.step(closure)  # type: ignore[no-untyped-call]
        for p in params:
            p.grad = None
        return calls

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


@register(
    "emsa-l0",
    hparams=EMSAL0HParams,
    variant_of="emsa",
    label=HYBRID_LABEL,
    penalty="l0",
    colour="#bcbd22",
)
class EMSAL0(EMSA):
    """E-MSA's proximal ascent with the shared L0 prox, on bSQH's objective (not the reference)."""

    # rho at the reference's scale sums the feasibility terms over the batch: at 128
    # samples the ascent needs a smaller rho (or step) than the reference's 0.03.
    test_hparams: ClassVar[dict[str, Any]] = {"inner_lr": 0.3, "rho": 0.003}


class _LBFGSRunsEagerly:
    """Graph hook: an L-BFGS step reads its line search on the host, so it is never captured."""

    hp: EMSAHParams
    eager_kinds: ClassVar[frozenset[Hashable]] = frozenset({"lbfgs"})

    def _graph_kind(self, x: Tensor, y: Tensor) -> Hashable:
        return "lbfgs" if self.hp.inner_solver == "lbfgs" else "step"

    def _graph_kinds(self, x: Tensor, y: Tensor) -> Sequence[Hashable]:
        kind = self._graph_kind(x, y)
        return [] if kind in self.eager_kinds else [kind]


# The whole step as one CUDA graph (double backward included): ``emsa-graph`` (its
# default L-BFGS steps run eagerly) and ``emsa-l0-graph``.
graphed_variant(EMSA, hooks=(_LBFGSRunsEagerly,))
graphed_variant(EMSAL0)
