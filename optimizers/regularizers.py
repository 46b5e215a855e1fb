"""Regularizers R(w), their values, sparsity figures and proximal operators.

One module serves bSQH and the proximal baselines alike: bSQH's closed-form maximiser of
the linearised augmented Hamiltonian is ``prox_{tR}(u_k + t g)`` with ``t = 1/(2 eps)``,
and proximal SGD/Adam apply ``prox_{lr R}`` after their gradient step.

``prox_{tR}(v) = argmin_u  R(u) + |u - v|^2 / (2 t)``, elementwise. Derivations:

* L0 + L2, ``R(u) = gamma/2 u^2 + beta [u != 0]``: the best nonzero point is
  ``u* = v / (1 + t gamma)`` with value ``gamma v^2 / (2 (1 + t gamma)) + beta``; zero costs
  ``v^2 / (2 t)``. Keeping ``u*`` wins iff ``v^2 > 2 t beta (1 + t gamma)``; ties go to 0
  (the sparser point).
* L1 + L2, ``R(u) = gamma/2 u^2 + beta |u|``: soft-thresholding then shrinking,
  ``sign(v) max(|v| - t beta, 0) / (1 + t gamma)``.
* L2 alone is L0 + L2 with ``beta = 0``: ``v / (1 + t gamma)``.

Only prunable weights are penalised: kernels of Conv and Linear layers, i.e. parameters
with two or more dimensions. Biases pass through the prox unchanged (``u = v``).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import validation
from .fusion import scalar
from .hparams import hparam
from .search import BETA, GAMMA

TimeStep = float | Tensor


def is_prunable(param: Tensor) -> bool:
    """Conv and Linear kernels (2+ dims) are penalised and pruned; biases are not."""
    return param.dim() >= 2


def prunable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Named prunable parameters in registration order."""
    return [(name, p) for name, p in model.named_parameters() if is_prunable(p)]


def nonzeros(model: nn.Module) -> int:
    """Number of nonzero prunable weights."""
    return int(sum(int(torch.count_nonzero(p)) for _, p in prunable_parameters(model)))


def prunable_count(model: nn.Module) -> int:
    """Number of prunable weights (the denominator of sparsity)."""
    return int(sum(p.numel() for _, p in prunable_parameters(model)))


def sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros among all prunable weights (0 when the model has none)."""
    total = prunable_count(model)
    return 0.0 if total == 0 else 1.0 - nonzeros(model) / total


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of exact zeros per prunable parameter, keyed by parameter name."""
    return {
        name: 1.0 - int(torch.count_nonzero(p)) / p.numel()
        for name, p in prunable_parameters(model)
    }


class Regularizer(ABC):
    """``R(w) = gamma/2 |w|^2 + beta * P(w)`` on prunable weights, with its prox."""

    name: str = ""

    def __init__(self, beta: float = 0.0, gamma: float = 0.0) -> None:
        self.beta: float | Tensor = validation.non_negative("beta", beta)
        self.gamma: float | Tensor = validation.non_negative("gamma", gamma)
        # Which terms R has decides the code; the values only scale it. Branching on these
        # flags, never on the values, lets ``with_tensor_coefficients`` hold the values.
        self.has_beta = beta != 0
        self.has_gamma = gamma != 0

    def with_tensor_coefficients(self, device: torch.device | str) -> Regularizer:
        """The same R with ``beta`` and ``gamma`` as 0-dim float64 tensors on ``device``.

        For compiled code (``optimizers.fusion``): a Python float is baked into the
        compiled kernels as a constant, so every new value (every trial of a study) would
        compile again; a tensor is an input, and one compilation serves every value.
        """
        twin = copy.copy(self)
        twin.beta = scalar(float(self.beta), device)
        twin.gamma = scalar(float(self.gamma), device)
        return twin

    #: P(w) is this vector norm of w (0: the nonzero count, 1: the sum of magnitudes).
    sparse_order: float = 0.0

    def sparse_penalty(self, w: Tensor) -> Tensor:
        """P(w): the sparsity-inducing part, summed over the tensor (one kernel)."""
        norm: Tensor = torch.linalg.vector_norm(w, ord=self.sparse_order)
        return norm

    @abstractmethod
    def prox_factors(self, t: TimeStep) -> tuple[TimeStep, ...]:
        """The scalars the prox needs for step ``t``.

        Computed once per step and shared by every tensor: with ``t`` a device tensor
        (the CUDA fast path) each scalar costs a kernel, so per-tensor recomputation
        would multiply them.
        """

    @abstractmethod
    def prox_with(self, v: Tensor, factors: tuple[TimeStep, ...]) -> Tensor:
        """``prox_{tR}(v)`` elementwise, given ``prox_factors(t)`` (a new tensor).

        Reads beta and gamma only through ``factors`` and ``has_beta``/``has_gamma``.
        """

    def prox(self, v: Tensor, t: TimeStep) -> Tensor:
        """``prox_{tR}(v)`` elementwise (a new tensor)."""
        return self.prox_with(v, self.prox_factors(t))

    def penalty(self, w: Tensor) -> Tensor:
        """R(w) of one prunable tensor, as a 0-dim tensor on w's device."""
        terms = []
        if self.has_gamma:
            flat = w.reshape(-1)
            terms.append(torch.dot(flat, flat) * (0.5 * self.gamma))
        if self.has_beta:
            terms.append(self.sparse_penalty(w) * self.beta)
        if not terms:
            return w.new_zeros(())
        # In w's dtype whatever the coefficients' (tensor coefficients are float64).
        total = terms[0] if len(terms) == 1 else terms[0] + terms[1]
        return total.to(w.dtype)

    def value(self, params: Iterable[Tensor]) -> Tensor:
        """Sum of R over the prunable tensors among ``params``.

        Multi-tensor norms keep this to a handful of kernels whatever the number of
        layers: baselines report it every step, and that must not inflate their step time.
        """
        prunable = [p.detach() for p in params if is_prunable(p)]
        if not prunable:
            return torch.zeros(())
        terms = []
        if self.has_gamma:
            norms = torch.stack(torch._foreach_norm(prunable, 2))
            terms.append(torch.dot(norms, norms) * (0.5 * self.gamma))
        if self.has_beta:
            sparse = torch.stack(torch._foreach_norm(prunable, self.sparse_order))
            terms.append(sparse.sum() * self.beta)
        if not terms:
            return prunable[0].new_zeros(())
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]

    def prox_param(self, param: Tensor, v: Tensor, t: TimeStep) -> Tensor:
        """The prox for ``param``'s slot: penalised only if ``param`` is prunable."""
        return self.prox(v, t) if is_prunable(param) else v

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta={self.beta}, gamma={self.gamma})"


def prox_into(
    targets: list[Tensor],
    values: Sequence[Tensor],
    penalised: Sequence[bool],
    factors: tuple[TimeStep, ...],
    regularizer: Regularizer,
) -> None:
    """``targets <- prox_{tR}(values)`` for the ``penalised`` tensors, ``values`` for the others.

    One multi-tensor write-back; ``targets`` may be ``values`` (an in-place prox). bSQH's
    stage update and the proximal baselines both write through it, eagerly or compiled
    (``optimizers.fusion``).
    """
    torch._foreach_copy_(
        targets,
        [
            regularizer.prox_with(v, factors) if p else v
            for v, p in zip(values, penalised, strict=True)
        ],
    )


_REGULARIZERS: dict[str, type[Regularizer]] = {}


def register_regularizer(name: str) -> Callable[[type[Regularizer]], type[Regularizer]]:
    """Class decorator adding a regularizer under ``name``."""

    def add(cls: type[Regularizer]) -> type[Regularizer]:
        cls.name = name
        _REGULARIZERS[name] = cls
        return cls

    return add


def penalties() -> list[str]:
    """Registered regularizer names."""
    return sorted(_REGULARIZERS)


def make_regularizer(name: str, beta: float = 0.0, gamma: float = 0.0) -> Regularizer:
    """Regularizer by name: ``l0`` (L0 + L2), ``l1`` (L1 + L2)."""
    validation.one_of("penalty", name, penalties())
    return _REGULARIZERS[name](beta=beta, gamma=gamma)


@register_regularizer("l0")
class L0L2(Regularizer):
    """``gamma/2 |w|^2 + beta |w|_0``: hard thresholding with L2 shrinkage."""

    sparse_order = 0.0  # the nonzero count, exact below 2**24 per tensor in float32

    def prox_factors(self, t: TimeStep) -> tuple[TimeStep, ...]:
        shrink = 1.0 + t * self.gamma
        return shrink, 2.0 * t * self.beta * shrink  # keep v iff v^2 > threshold

    def prox_with(self, v: Tensor, factors: tuple[TimeStep, ...]) -> Tensor:
        shrink, threshold = factors
        kept = v / shrink if self.has_gamma else v  # dividing by exactly 1 would cost a kernel
        if not self.has_beta:
            return kept
        return torch.where(v * v > threshold, kept, 0.0)


@register_regularizer("l1")
class L1L2(Regularizer):
    """``gamma/2 |w|^2 + beta |w|_1``: soft thresholding with L2 shrinkage."""

    sparse_order = 1.0

    def prox_factors(self, t: TimeStep) -> tuple[TimeStep, ...]:
        return 1.0 + t * self.gamma, t * self.beta

    def prox_with(self, v: Tensor, factors: tuple[TimeStep, ...]) -> Tensor:
        shrink, cut = factors
        soft = torch.sign(v) * torch.clamp(torch.abs(v) - cut, min=0.0)
        return soft / shrink if self.has_gamma else soft


def l2(gamma: float) -> Regularizer:
    """Pure L2 regulariser: L0 + L2 with beta = 0 (prox ``v / (1 + t gamma)``)."""
    return L0L2(beta=0.0, gamma=gamma)


# Hyperparameter fields every penalised method declares the same way.
def beta_hparam() -> Any:
    """The ``beta`` field: weight of the sparsity-inducing part of R."""
    return hparam(
        0.0, "weight of the sparsity term of R (L0 count or L1 norm)", low=0.0, search=BETA
    )


def gamma_hparam() -> Any:
    """The ``gamma`` field: weight of the L2 part of R."""
    return hparam(
        0.0,
        "weight of the L2 term of R, gamma/2 times the sum of squared weights",
        low=0.0,
        search=GAMMA,
    )


def penalty_hparam() -> Any:
    """The ``penalty`` field: which sparsity term R uses."""
    return hparam("l0", "sparsity term of R: l0 (count) or l1 (norm)", choices=penalties())
