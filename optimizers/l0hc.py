"""L0 regularisation with hard-concrete gates (Louizos, Welling & Kingma 2018, arXiv 1712.01312).

Every prunable weight tensor gets gates ``z`` in [0, 1] with learned logits
``log_alpha``. With ``gates = "group"`` (default, the paper's and its reference code's,
AMLab-Amsterdam/L0_regularization) a convolution has one gate per OUTPUT feature map and
a dense layer one per INPUT neuron; ``gates = "weight"`` gives every weight its own gate.
During training a gate is a hard-concrete sample, drawn once per gate and step,

    s = sigmoid((log u - log(1 - u) + log_alpha) / temperature),   u ~ U(0, 1),
    z = min(1, max(0, s (zeta - gamma_) + gamma_)),   gamma_ = -0.1, zeta = 1.1,

so it has point masses at exactly 0 and 1, and the network runs with ``theta * z`` (a
gate multiplies its whole group). The training loss is the reference's: the expected L0
norm of the weights, with the L2 of each group weighted by the probability that its gate
is open,

    CE + sum_g P(z_g != 0) * (lam * |g| + gamma/2 |theta_g|^2),
    P(z != 0) = sigmoid(log_alpha - temperature * log(-gamma_ / zeta)),

so ``lam`` prices one expected nonzero weight in units of the mean cross-entropy, as
``beta`` does for bSQH (the reference divides its penalty by the training-set size, which
``lam`` absorbs). Adam trains ``theta``, ``log_alpha`` and the unpenalised parameters
(biases) together; after every step ``log_alpha`` is clamped to [log 1e-2, log 1e2], the
reference's ``constrain_parameters``. Differences from the reference: the logits start
at exactly ``log(1 - d) - log(d)`` (it adds N(0, 1e-2) noise); biases are neither gated
nor decayed (a closed feature-map gate zeroes the map's kernel, its bias stays), as for
every method here, so the sparsity figures count prunable weights alone.

The optimizer owns ``theta`` and ``log_alpha``; the model's prunable parameters hold the
deterministic test-time weights ``theta * z_hat``, ``z_hat = min(1, max(0,
sigmoid(log_alpha) (zeta - gamma_) + gamma_))``, rewritten after every step, so evaluation
and the sparsity figures see exact zeros wherever a gate is closed (a whole output map's
kernel, or a whole input column of a dense layer). The training forward uses
``torch.func.functional_call`` with the gated weights: the model keeps its structure and
its own parameter tensors.

Reported figures: ``objective(x, y)`` and, with ``post_step_loss=True``, the step's
``loss``/``objective`` are the cross-entropy of the model as evaluated (test-time gates)
plus the penalty above. With ``post_step_loss=False`` they are the sampled-gate training
loss of the iterate before the step plus the same penalty at that iterate (what the step
computed anyway).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from . import validation
from .checkpoint import indexed
from .common import GradientStyleMethod, trainable_named_parameters
from .graphs import graphed_variant
from .hparams import HParams, hparam
from .passes import LossFn, split_batch, weighted
from .registry import register
from .regularizers import is_prunable
from .search import GAMMA, LR_ADAM, log_uniform, uniform
from .stats import StepStats

#: Stretch interval (gamma_, zeta) of the hard-concrete distribution, as in the paper.
LIMIT_LOW = -0.1
LIMIT_HIGH = 1.1
#: The reference's clamp of the gate logits (its ``constrain_parameters``).
LOG_ALPHA_MIN = math.log(1e-2)
LOG_ALPHA_MAX = math.log(1e2)
GATES = ("group", "weight")


@dataclass(frozen=True)
class L0HCHParams(HParams):
    # Searched as in space version 2: the order a seeded sampler draws them in.
    search_order = ("lr", "lam", "droprate_init", "gamma")

    lam: float = hparam(
        1e-4,
        "price of one expected nonzero weight: lam * sum_g |g| P(z_g != 0)",
        low=0.0,
        search=log_uniform(1e-6, 1e-1, "weight of sum P(gate != 0)"),
    )
    lr: float = hparam(
        1e-3,
        "Adam learning rate (weights, gate logits, biases)",
        low=0.0,
        low_open=True,
        search=LR_ADAM,
    )
    droprate_init: float = hparam(
        0.2, "initial gate drop rate d: log_alpha = log(1 - d) - log(d)",
        low=0.0, high=1.0, low_open=True, high_open=True,
        search=uniform(0.05, 0.7, "initial gate drop rate"),
    )  # fmt: skip
    temperature: float = hparam(
        2.0 / 3.0, "temperature of the concrete sample", low=0.0, low_open=True
    )
    gamma: float = hparam(
        0.0,
        "L2 weight: gamma/2 |theta_g|^2 per group, weighted by P(z_g != 0)",
        low=0.0,
        search=GAMMA,
    )
    gates: str = hparam(
        "group",
        "group: a gate per conv output map and dense input neuron (the paper's); weight: "
        "a gate per weight",
        choices=GATES,
    )


def gate_shape(weight: Tensor, gates: str) -> tuple[int, ...]:
    """Shape of a prunable tensor's gates, broadcastable against it.

    ``group``: a dense weight ``(out, in)`` gets ``(1, in)`` (its input neurons), a
    convolution kernel ``(out, in, *k)`` gets ``(out, 1, ...)`` (its output maps);
    ``weight``: the tensor's own shape.
    """
    validation.one_of("gates", gates, GATES)
    if gates == "weight":
        return tuple(weight.shape)
    if weight.dim() == 2:
        return (1, weight.shape[1])
    return (weight.shape[0],) + (1,) * (weight.dim() - 1)


def hard_concrete_sample(log_alpha: Tensor, u: Tensor, temperature: float) -> Tensor:
    """Training gate ``z`` for uniform noise ``u`` in (0, 1) (differentiable in log_alpha)."""
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / temperature)
    return torch.clamp(s * (LIMIT_HIGH - LIMIT_LOW) + LIMIT_LOW, 0.0, 1.0)


def open_probability(log_alpha: Tensor, temperature: float) -> Tensor:
    """``P(z != 0) = sigmoid(log_alpha - temperature * log(-gamma_ / zeta))``, elementwise."""
    return torch.sigmoid(log_alpha - temperature * math.log(-LIMIT_LOW / LIMIT_HIGH))


def deterministic_gate(log_alpha: Tensor) -> Tensor:
    """Deterministic gate ``z_hat = min(1, max(0, sigmoid(log_alpha)(zeta - gamma_) + gamma_))``."""
    return torch.clamp(torch.sigmoid(log_alpha) * (LIMIT_HIGH - LIMIT_LOW) + LIMIT_LOW, 0.0, 1.0)


@register("l0-hc", hparams=L0HCHParams, penalty="l0-gates", colour="#e377c2")
class L0HardConcrete(GradientStyleMethod):
    """Hard-concrete L0 gates (the paper's group gates by default) trained with Adam."""

    #: Hyperparameters under which the method learns the tests' tiny problem.
    test_hparams: ClassVar[dict[str, Any]] = {"lr": 0.05}

    def __init__(
        self,
        model: nn.Module,
        hp: L0HCHParams | None = None,
        *,
        chunk_size: int | None = None,
        loss_fn: LossFn = F.cross_entropy,
        post_step_loss: bool = True,
    ) -> None:
        self.model = validation.torch_module(model)
        self.hp = hp = hp if hp is not None else L0HCHParams()
        self._set_runtime(chunk_size=chunk_size, loss_fn=loss_fn, post_step_loss=post_step_loss)
        named = trainable_named_parameters(model)
        self.gated_names = [n for n, p in named if is_prunable(p)]
        self.gated = [p for n, p in named if is_prunable(p)]  # hold theta * z_hat
        self.others = [p for n, p in named if not is_prunable(p)]  # trained as they are
        self.theta = [p.detach().clone().requires_grad_(True) for p in self.gated]
        initial = math.log(1.0 - hp.droprate_init) - math.log(hp.droprate_init)
        self.log_alpha = [
            torch.full(gate_shape(p, hp.gates), initial, dtype=p.dtype, device=p.device)
            .clamp_(LOG_ALPHA_MIN, LOG_ALPHA_MAX)
            .requires_grad_(True)
            for p in self.gated
        ]
        self.trained = [*self.theta, *self.log_alpha, *self.others]
        # Everything a step writes besides the optimizer's state (what a graphed step
        # rolls back after its warm-up).
        self.params = [*self.trained, *self.gated]
        self.optimizer = torch.optim.Adam(self.trained, lr=hp.lr)
        # tau measures the move of the weights the model evaluates with (theta * z_hat).
        self.visible: list[Tensor] = [*self.gated, *self.others]
        self._track(self.visible)
        self.write_test_weights()

    # ---------------------------------------------------------------- public API
    def penalty(self) -> Tensor:
        """``sum_g P(z_g != 0) (lam |g| + gamma/2 |theta_g|^2)`` (differentiable).

        The gate probabilities broadcast over their groups, so the sum runs over weights:
        ``sum_w P(z_g(w) != 0) (lam + gamma/2 theta_w^2)``.
        """
        if not (self.hp.lam or self.hp.gamma) or not self.theta:
            return self.trained[0].new_zeros(())
        terms = []
        for theta, alpha in zip(self.theta, self.log_alpha, strict=True):
            opened = open_probability(alpha, self.hp.temperature)
            price = theta * theta * (0.5 * self.hp.gamma) + self.hp.lam
            terms.append(torch.sum(opened * price))
        return torch.stack(terms).sum()

    def expected_l0(self) -> Tensor:
        """Expected number of nonzero weights, ``sum_g |g| P(z_g != 0)`` (no graph)."""
        with torch.no_grad():
            return sum(
                (
                    open_probability(a, self.hp.temperature).sum() * (t.numel() // a.numel())
                    for t, a in zip(self.theta, self.log_alpha, strict=True)
                ),
                start=self.trained[0].new_zeros(()),
            )

    def _penalty(self) -> Tensor:
        """The reported objective is the evaluated model's loss plus ``penalty()`` (no graph)."""
        with torch.no_grad():
            return self.penalty()

    def sample_gates(self) -> list[Tensor]:
        """Fresh training gates, one hard-concrete sample per gate."""
        return [
            hard_concrete_sample(a, _uniform_open(a), self.hp.temperature) for a in self.log_alpha
        ]

    @torch.no_grad()
    def clamp_log_alpha(self) -> None:
        """The reference's bound on the gate logits, applied after every step."""
        for a in self.log_alpha:
            a.clamp_(LOG_ALPHA_MIN, LOG_ALPHA_MAX)

    @torch.no_grad()
    def write_test_weights(self) -> None:
        """Store ``theta * z_hat`` in the model's prunable parameters."""
        for p, theta, alpha in zip(self.gated, self.theta, self.log_alpha, strict=True):
            p.copy_(theta * deterministic_gate(alpha))

    def step(self, x: Tensor, y: Tensor) -> StepStats:
        chunks = split_batch(x, y, self.chunk_size)
        for p in self.trained:
            p.grad = None
        noise = [_uniform_open(a) for a in self.log_alpha]  # one sample per gate and step
        loss: Tensor | None = None
        for xc, yc, weight in chunks:
            with torch.enable_grad():
                gates = [
                    hard_concrete_sample(a, u, self.hp.temperature)
                    for a, u in zip(self.log_alpha, noise, strict=True)
                ]
                chunk_loss = weighted(self.loss_fn(self._gated_forward(xc, gates), yc), weight)
            torch.autograd.backward(chunk_loss)
            loss = chunk_loss.detach() if loss is None else loss + chunk_loss.detach()
        assert loss is not None
        with torch.enable_grad():
            penalty = self.penalty()
        if penalty.requires_grad:
            torch.autograd.backward(penalty)
        objective = None if self.post_step_loss else loss + penalty.detach()
        self._remember()
        self.optimizer.step()
        self.clamp_log_alpha()
        self.write_test_weights()
        return self._report(chunks, loss, objective, self._moved())

    # ---------------------------------------------------------------- checkpoints
    def _state_tensors(self) -> dict[str, Tensor | None]:
        return {**indexed("theta", self.theta), **indexed("log_alpha", self.log_alpha)}

    def _samples(self) -> bool:
        return True  # the gates' noise: the generator's state is saved with the rest

    # ---------------------------------------------------------------- internals
    def _gated_forward(self, x: Tensor, gates: Sequence[Tensor]) -> Tensor:
        weights = {
            name: theta * z
            for name, theta, z in zip(self.gated_names, self.theta, gates, strict=True)
        }
        out: Tensor = functional_call(self.model, weights, (x,))
        return out


def _uniform_open(like: Tensor) -> Tensor:
    """U(0, 1) noise shaped like ``like``, kept off the endpoints where the logit is infinite."""
    tiny = torch.finfo(like.dtype).eps
    return torch.rand_like(like).clamp_(tiny, 1.0 - tiny)


# The whole step as one CUDA graph (the gates' noise is drawn inside it, from the device's
# generator, which graphs support): registered as ``l0-hc-graph``.
graphed_variant(L0HardConcrete)
