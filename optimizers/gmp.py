"""Gradual magnitude pruning (GMP; Zhu & Gupta 2017, arXiv 1710.01878).

A dense optimizer (SGD with momentum, or Adam with ``inner="adam"``) trains the network;
at every ``frequency``-th step ``t`` between ``begin_step`` (t0) and ``end_step`` the
prunable weights are masked by magnitude down to the target sparsity

    s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t_end - t0))^3,   t clipped into [t0, t_end],

the cubic schedule of the paper (``t_end = t0 + n dt``; TensorFlow Model Optimization's
``PolynomialDecay(power=3)`` computes the same). ``end_step`` itself is always a pruning
step, so ``s_f`` is reached even when ``end_step - begin_step`` is not a multiple of
``frequency``. Masks persist: weights pruned once are never revived. To guarantee that,
masked weights rank below every live weight when the next mask is chosen, their gradients
and optimizer state (momentum, Adam moments) are zeroed, and the mask is re-applied after
every optimizer step, so they stay exactly zero.

``scope="layer"`` prunes every prunable tensor to ``s_t``; ``scope="global"`` ranks all
prunable weights together, so layers end at different sparsities but the total is ``s_t``.

Step budgets. ``begin_fraction`` / ``end_fraction`` give t0 and t_end as fractions of the
runtime option ``total_steps`` (the cell's step budget, which the runner passes): the
schedule then scales with the budget, as a tuned schedule must. A device-seconds budget
has no step count; the runner passes an estimate (its epoch budget times the steps per
epoch) when it has one. Without ``total_steps`` the fractions cannot be resolved and the
absolute ``begin_step`` / ``end_step`` apply (``schedule_source`` says which did).

The step counter is a host integer and the number of weights to prune is computed on the
host from the schedule, so pruning (``torch.topk`` on the device) never synchronises the
host. Like SGD and Adam, GMP takes ``beta`` and ``gamma`` only to report the common
objective ``J = loss + R``; it does not shrink R.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import validation
from .checkpoint import indexed
from .common import GradientStyleMethod, trainable_parameters
from .graphs import GraphedStep
from .hparams import HParams, hparam
from .passes import LossFn, loss_and_gradients, split_batch
from .registry import register
from .regularizers import is_prunable, make_regularizer
from .search import LR_SGD, MOMENTUM, choice, uniform
from .stats import StepStats

INNER = ("sgd", "adam")
SCOPES = ("layer", "global")


@dataclass(frozen=True)
class GMPHParams(HParams):
    # Searched as in space version 2: the order a seeded sampler draws them in.
    search_order = (
        "lr",
        "momentum",
        "final_sparsity",
        "begin_fraction",
        "end_fraction",
        "frequency",
    )

    final_sparsity: float = hparam(
        0.9,
        "target sparsity s_f",
        low=0.0,
        high=1.0,
        high_open=True,
        search=uniform(0.5, 0.98, "the trade-off knob"),
    )
    initial_sparsity: float = hparam(
        0.0, "sparsity s_i at begin_step", low=0.0, high=1.0, high_open=True
    )
    begin_step: int = hparam(0, "first pruning step t0 (0-based step index)", low=0)
    end_step: int = hparam(1000, "last pruning step t_end; s_f holds from here on", low=0)
    frequency: int = hparam(
        100,
        "steps between mask updates (dt)",
        low=1,
        search=choice(20, 50, 100, note="steps between mask updates"),
    )
    begin_fraction: float | None = hparam(
        None, "t0 as a fraction of total_steps (overrides begin_step)",
        kind=float, low=0.0, high=1.0, optional=True,
        search=uniform(0.0, 0.3, "pruning window start, fraction of the budget"),
    )  # fmt: skip
    end_fraction: float | None = hparam(
        None, "t_end as a fraction of total_steps (overrides end_step)",
        kind=float, low=0.0, high=1.0, optional=True,
        search=uniform(0.5, 0.9, "pruning window end, fraction of the budget"),
    )  # fmt: skip
    lr: float = hparam(
        0.05, "learning rate of the dense optimizer", low=0.0, low_open=True, search=LR_SGD
    )
    momentum: float = hparam(
        0.9,
        "heavy-ball momentum (inner='sgd')",
        low=0.0,
        high=1.0,
        high_open=True,
        search=MOMENTUM,
    )
    inner: str = hparam("sgd", "dense optimizer underneath", choices=INNER)
    scope: str = hparam("layer", "rank weights per tensor or over all tensors", choices=SCOPES)
    beta: float = hparam(0.0, "L0 weight of the reported R (not optimised)", low=0.0)
    gamma: float = hparam(0.0, "L2 weight of the reported R (not optimised)", low=0.0)

    def check(self) -> None:
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(
                f"initial_sparsity must be <= final_sparsity, got initial_sparsity="
                f"{self.initial_sparsity!r} > final_sparsity={self.final_sparsity!r}"
            )
        if self.begin_step > self.end_step:
            raise ValueError(
                f"begin_step must be <= end_step, got begin_step={self.begin_step!r} > "
                f"end_step={self.end_step!r}"
            )
        if (
            self.begin_fraction is not None
            and self.end_fraction is not None
            and self.begin_fraction > self.end_fraction
        ):
            raise ValueError(
                f"begin_fraction must be <= end_fraction, got begin_fraction="
                f"{self.begin_fraction!r} > end_fraction={self.end_fraction!r}"
            )


@dataclass(frozen=True)
class CubicSchedule:
    """Zhu & Gupta's target sparsity over steps; pure host arithmetic."""

    initial: float
    final: float
    begin: int
    end: int
    frequency: int

    def sparsity(self, t: int) -> float:
        """``s_t`` with ``t`` clipped into [begin, end] (``s_f`` from ``end`` on)."""
        if self.end == self.begin:
            return self.initial if t < self.begin else self.final
        progress = min(max((t - self.begin) / (self.end - self.begin), 0.0), 1.0)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3

    def prunes_at(self, t: int) -> bool:
        """Whether step ``t`` (0-based) updates the masks."""
        if not self.begin <= t <= self.end:
            return False
        return (t - self.begin) % self.frequency == 0 or t == self.end


def pruned_count(sparsity: float, size: int) -> int:
    """The number of weights to zero: the count closest to ``sparsity * size``."""
    return min(size, int(sparsity * size + 0.5))


# Its beta and gamma only price the J it reports (the masks do the pruning).
@register("gmp", hparams=GMPHParams, applies_penalty=False, colour="#9467bd")
class GMP(GradientStyleMethod):
    """Gradual magnitude pruning on top of SGD-momentum or Adam; see the module docstring."""

    #: Hyperparameters under which the method learns the tests' tiny problem.
    test_hparams: ClassVar[dict[str, Any]] = {
        "lr": 0.2,
        "final_sparsity": 0.5,
        "end_step": 40,
        "frequency": 10,
    }

    def __init__(
        self,
        model: nn.Module,
        hp: GMPHParams | None = None,
        *,
        chunk_size: int | None = None,
        loss_fn: LossFn = F.cross_entropy,
        post_step_loss: bool = True,
        total_steps: int | None = None,
    ) -> None:
        self.model = validation.torch_module(model)
        self.hp = hp = hp if hp is not None else GMPHParams()
        self._set_runtime(chunk_size=chunk_size, loss_fn=loss_fn, post_step_loss=post_step_loss)
        if total_steps is not None:
            validation.integer_at_least("total_steps", total_steps, 1)
        self.regularizer = make_regularizer("l0", beta=hp.beta, gamma=hp.gamma)
        self.params: list[Tensor] = trainable_parameters(model)
        self.prunable: list[Tensor] = [p for p in self.params if is_prunable(p)]
        self.schedule = self._schedule(hp, total_steps)
        self.optimizer: torch.optim.Optimizer = (
            torch.optim.SGD(self.params, lr=hp.lr, momentum=hp.momentum)
            if hp.inner == "sgd"
            else torch.optim.Adam(self.params, lr=hp.lr)
        )
        self.masks: list[Tensor] | None = None  # none before the first pruning step
        self.steps = 0
        self._track(self.params)

    def _schedule(self, hp: GMPHParams, total_steps: int | None) -> CubicSchedule:
        begin, end = hp.begin_step, hp.end_step
        fractions = hp.begin_fraction is not None or hp.end_fraction is not None
        self.schedule_source = "absolute steps"
        if fractions and total_steps is not None:
            self.schedule_source = f"fractions of total_steps={total_steps}"
            if hp.begin_fraction is not None:
                begin = round(hp.begin_fraction * total_steps)
            if hp.end_fraction is not None:
                end = round(hp.end_fraction * total_steps)
            if begin > end:
                raise ValueError(
                    f"the pruning window is inverted: begin step {begin} > end step {end} "
                    f"(from begin_fraction={hp.begin_fraction!r}, "
                    f"end_fraction={hp.end_fraction!r}, begin_step={hp.begin_step!r}, "
                    f"end_step={hp.end_step!r}, total_steps={total_steps})"
                )
        return CubicSchedule(hp.initial_sparsity, hp.final_sparsity, begin, end, hp.frequency)

    def step(self, x: Tensor, y: Tensor) -> StepStats:
        stats = self._step_on_device(x, y, prune=self.schedule.prunes_at(self.steps))
        self.steps += 1
        return stats

    def _step_on_device(self, x: Tensor, y: Tensor, *, prune: bool) -> StepStats:
        """The step's device work; ``prune``: this is a pruning step (host-decided)."""
        chunks = split_batch(x, y, self.chunk_size)
        loss = loss_and_gradients(self.model, self.params, chunks, self.loss_fn)
        objective = self._objective_before(loss)
        self._remember()
        if self.masks is not None:
            with torch.no_grad():
                grads = [p.grad for p in self.prunable if p.grad is not None]
                torch._foreach_mul_(grads, self.masks)
        self.optimizer.step()
        if self.masks is not None:
            with torch.no_grad():
                torch._foreach_mul_(self.prunable, self.masks)
        if prune:
            self.prune(self.schedule.sparsity(self.steps))
        return self._report(chunks, loss, objective, self._moved())

    # ---------------------------------------------------------------- checkpoints
    def _state_tensors(self) -> dict[str, Tensor | None]:
        return indexed("masks", self.masks)

    def _state_counters(self) -> dict[str, int]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """As every method's; the masks exist here exactly when they do in ``state``."""
        saved = any(name.startswith("masks.") for name in state.get("tensors", {}))
        if not saved:
            self.masks = None
        elif self.masks is None:
            self.masks = [torch.ones_like(p) for p in self.prunable]
        super().load_state_dict(state)

    @torch.no_grad()
    def prune(self, target: float) -> None:
        """Mask the smallest weights so that ``target`` of them are zero (per scope).

        Weights masked earlier score -1, below every live magnitude, so they are chosen
        first: with a non-decreasing target the masks only grow.
        """
        if not self.prunable:
            return
        if self.masks is None:
            self.masks = [torch.ones_like(p) for p in self.prunable]
        scores = [
            torch.where(m.bool(), p.abs(), -1.0)
            for p, m in zip(self.prunable, self.masks, strict=True)
        ]
        if self.hp.scope == "layer":
            for mask, score in zip(self.masks, scores, strict=True):
                _mask_smallest(mask.view(-1), score.reshape(-1), pruned_count(target, mask.numel()))
        else:
            flat = torch.cat([s.reshape(-1) for s in scores])
            joint = torch.ones_like(flat)
            _mask_smallest(joint, flat, pruned_count(target, flat.numel()))
            torch._foreach_copy_(
                self.masks, [part.view_as(m) for part, m in zip(
                    torch.split(joint, [m.numel() for m in self.masks]), self.masks, strict=True
                )]
            )  # fmt: skip
        torch._foreach_mul_(self.prunable, self.masks)
        self._mask_optimizer_state()

    def _mask_optimizer_state(self) -> None:
        """Zero momentum and Adam moments of masked weights, so nothing pushes them back."""
        assert self.masks is not None
        for p, mask in zip(self.prunable, self.masks, strict=True):
            for value in self.optimizer.state.get(p, {}).values():
                if isinstance(value, Tensor) and value.shape == p.shape:
                    value.mul_(mask)


def _mask_smallest(mask: Tensor, score: Tensor, count: int) -> None:
    """Set ``mask`` (1-D, in place) to 1 except at the ``count`` smallest scores."""
    mask.fill_(1.0)
    if count > 0:
        mask.index_fill_(0, torch.topk(score, count, largest=False, sorted=False).indices, 0.0)


PRUNE = "prune"  # a pruning step: topk over a host-computed count, run eagerly


@register("gmp-graph", hparams=GMPHParams, same_as="gmp")
class GraphedGMP(GraphedStep, GMP):
    """``gmp`` with its training steps replayed as one CUDA graph; pruning steps eager.

    A pruning step ranks weights with ``topk`` over a count the schedule computes on the
    host, so it runs eagerly (every ``frequency`` steps inside the window, timed like any
    step). Every other step is the same device work, captured once. The masks exist from
    the start (all ones, so multiplying by them changes no value before the first pruning)
    and are updated in place, so the captured step always applies the current masks.
    Iterates equal ``gmp``'s exactly.
    """

    eager_kinds = frozenset({PRUNE})

    def __init__(self, model: nn.Module, hp: GMPHParams | None = None, **runtime: Any) -> None:
        super().__init__(model, hp, **runtime)
        self.masks = [torch.ones_like(p) for p in self.prunable]

    def _graph_kind(self, x: Tensor, y: Tensor) -> Hashable:
        return PRUNE if self.schedule.prunes_at(self.steps) else "train"

    def _graph_kinds(self, x: Tensor, y: Tensor) -> Sequence[Hashable]:
        return ["train"]

    def _graph_body(self, x: Tensor, y: Tensor, kind: Hashable) -> StepStats:
        return self._step_on_device(x, y, prune=kind == PRUNE)

    def _graph_after(self, x: Tensor, y: Tensor, kind: Hashable) -> None:
        self.steps += 1
