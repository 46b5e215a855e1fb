"""Device-resident bSQH and CUDA-graph steps: the fast path of issue 5.

The reference ``BSQH`` (``optimizers.bsqh``) reads the objective on the host once per
attempt, so on a GPU every iteration waits for the device and no two iterations queue.
This module computes the same iterates without that wait, and runs whole steps as CUDA
graphs so that a small network is not bound by kernel-launch overhead.

Registered methods:

* ``bsqh-fast`` (:class:`FastBSQH`): bSQH in mini-batch style with ``max_retries=0`` (a
  rejected attempt multiplies eps by sigma, leaves the parameters unchanged, and the next
  call goes on with the next batch). The acceptance test, the eps update and the choice
  between candidate and old parameters are device operations (``torch.where``); eps is a
  0-dim float64 device tensor and ``StepStats`` fields are 0-dim tensors. Same-batch
  retries would need either a host synchronisation or a fixed number of masked attempts,
  so they are not supported here: ``max_retries`` must be 0 (use ``bsqh`` for retries).
  Options beyond ``bsqh``'s:

  - ``cuda_graph=True``: on CUDA, each kind of iteration is captured once per batch shape
    as one ``torch.cuda.CUDAGraph`` (the adjoint pass, the sweep, acceptance, eps and the
    selection, all of it) and replayed; inputs are copied into static buffers. On the
    CPU, or if capture fails (the reason is warned once), it runs eagerly.
  - ``reuse_adjoints=True``: when ``step`` sees the same batch twice in a row (the same
    tensor objects, unmodified: full-batch training), the sweep's candidate forward is
    built with autograd, its backward gives the next iteration's adjoints and stage-0
    gradient, and the next iteration starts from them instead of a fresh forward and
    backward; a rejected attempt keeps the current linearisation, so it costs one sweep.
    The second consecutive call on a batch pays one extra backward to start this; it
    pays from the third on.

* ``<baseline>-graph`` for ``sgd``, ``adam``, ``prox-sgd-l0``, ``prox-sgd-l1`` and
  ``prox-adam-l0``: the baseline's whole step (forward, backward, optimizer update, prox)
  as one CUDA graph, with the same options plus ``cuda_graph=True`` and the same eager
  fallback. Adam variants use ``capturable=True`` on CUDA so their step count lives on
  the device.

Every graphed method has ``prepare(x, y)``: it captures the graphs for batches shaped
like (x, y) outside the timed region and leaves the parameters, eps and optimizer state
as they were (warm-up iterations run on a side stream and are rolled back). Without it
the first ``step`` on a new shape pays the capture.

Wasted passes avoided: stage 0's gradient comes from the adjoint pass (as in the
reference), no forward the sweep computed is recomputed, R of the current iterate is
carried from the previous step instead of recomputed (refreshed whenever the parameters
are changed from outside), and the elementwise tail (distance, R of the candidate, the
selection) runs on one flat copy of the parameters: a handful of kernels instead of a few
per tensor. The prox itself is ``optimizers.regularizers``' operator, unchanged.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import baselines
from .bsqh import BSQH, _Linearisation
from .passes import LossFn, split_batch, weighted
from .registry import register
from .regularizers import is_prunable
from .stats import StepStats

#: Warm-up iterations before a capture (PyTorch's whole-network capture recipe uses 3).
WARMUP_ITERATIONS = 3
#: Most graphs one method keeps (batch shapes times iteration kinds); beyond, it runs eagerly.
MAX_GRAPHS = 12

# Iteration kinds of FastBSQH: (start from the carried linearisation, produce the next one).
FRESH = "fresh"  # forward + backward at u_k, sweep
SEED = "seed"  # forward + backward at u_k, sweep with autograd, backward at the candidate
STEADY = "steady"  # sweep with autograd from the carried linearisation, backward
_KIND_FLAGS = {FRESH: (False, False), SEED: (False, True), STEADY: (True, True)}


# --------------------------------------------------------------------------- helpers
def _model_device(model: object) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def _shape_key(x: Tensor, y: Tensor) -> tuple[Any, ...]:
    return (tuple(x.shape), x.dtype, tuple(y.shape), y.dtype, x.device)


class _Batch:
    """Identity of a batch: the very tensors, unmodified since (autograd version counters).

    Holding the tensors keeps them alive, so a later batch cannot reuse their addresses or
    Python ids and pass for them. Writes that bypass the version counter (``x.data``,
    shared NumPy memory) are not seen; pass new tensors for new data.
    """

    __slots__ = ("versions", "x", "y")

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y
        self.versions = (x._version, y._version)

    def same(self, x: Tensor, y: Tensor) -> bool:
        return self.x is x and self.y is y and self.versions == (x._version, y._version)


@dataclass
class _Captured:
    """One captured graph, its static inputs and its (static) packed output."""

    graph: Any  # torch.cuda.CUDAGraph
    inputs: tuple[Tensor, Tensor]
    output: Tensor
    meta: Any


class _GraphCache:
    """CUDA graphs of one method's step: capture with roll-back, replay, eager fallback.

    The owner supplies ``fn(x, y) -> (packed output tensor, meta)`` that reads and writes
    only persistent tensors (allocated outside the capture) besides its inputs, and
    ``save()``/``restore(saved)`` of its mutable state, so that warm-up and capture leave
    the parameters, eps and optimizer state untouched.
    """

    def __init__(self, owner: str, enabled: bool) -> None:
        self.owner = owner
        self.enabled = enabled
        self.failure: str | None = None
        self.graphs: dict[Any, _Captured] = {}
        self.statics: dict[Any, tuple[Tensor, Tensor]] = {}
        self.loaded: dict[Any, _Batch] = {}
        self.last_replayed = False

    def active(self, x: Tensor) -> bool:
        """Whether steps on ``x`` should go through a graph (CUDA, enabled, not failed)."""
        return self.enabled and self.failure is None and x.is_cuda

    def disable(self, reason: str) -> None:
        """Fall back to eager steps for good and say why, once."""
        if self.failure is None:
            self.failure = reason
            warnings.warn(
                f"{self.owner}: CUDA graphs disabled, running eagerly: {reason}",
                RuntimeWarning,
                stacklevel=4,
            )

    def clear(self) -> None:
        """Forget every graph (the parameters' storage moved; they must be captured again)."""
        self.graphs.clear()
        self.statics.clear()
        self.loaded.clear()

    def get(
        self,
        key: Any,
        x: Tensor,
        y: Tensor,
        fn: Callable[[Tensor, Tensor], tuple[Tensor, Any]],
        save: Callable[[], Any],
        restore: Callable[[Any], None],
    ) -> _Captured | None:
        """The graph for ``key``, captured now if needed; None when capture is impossible."""
        if key in self.graphs:
            return self.graphs[key]
        if len(self.graphs) >= MAX_GRAPHS:
            self.disable(f"more than {MAX_GRAPHS} graphs (too many distinct batch shapes)")
            return None
        shape = _shape_key(x, y)
        if shape not in self.statics:  # allocated outside any graph pool: they persist
            self.statics[shape] = (
                torch.empty_like(x, memory_format=torch.contiguous_format),
                torch.empty_like(y, memory_format=torch.contiguous_format),
            )
        static = self.statics[shape]
        static[0].copy_(x)
        static[1].copy_(y)
        self.loaded[shape] = _Batch(x, y)
        saved = save()
        try:
            graph, output, meta = self._capture(fn, static)
        except Exception as error:  # any failure: fall back to eager, never crash training
            restore(saved)
            self.disable(f"capture failed with {type(error).__name__}: {error}")
            return None
        restore(saved)
        captured = _Captured(graph=graph, inputs=static, output=output, meta=meta)
        self.graphs[key] = captured
        return captured

    @staticmethod
    def _capture(
        fn: Callable[[Tensor, Tensor], tuple[Tensor, Any]], static: tuple[Tensor, Tensor]
    ) -> tuple[Any, Tensor, Any]:
        """Warm up on a side stream, then capture ``fn`` on the static inputs.

        This is PyTorch's whole-network recipe: the warm-up initialises lazily created
        state (cuBLAS/cuDNN handles, optimizer buffers, bsqh-fast's carried adjoints)
        outside the graph's private memory pool, so the capture finds it allocated.
        """
        device = static[0].device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_ITERATIONS):
                fn(*static)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output, meta = fn(*static)
        return graph, output, meta

    def replay(self, captured: _Captured, x: Tensor, y: Tensor) -> Tensor:
        """Copy (x, y) into the static inputs unless they hold them already; replay."""
        shape = _shape_key(x, y)
        loaded = self.loaded.get(shape)
        if loaded is None or not loaded.same(x, y):
            captured.inputs[0].copy_(x)
            captured.inputs[1].copy_(y)
            self.loaded[shape] = _Batch(x, y)
        captured.graph.replay()
        self.last_replayed = True
        # The output buffer is overwritten by the next replay: hand out a copy (one kernel).
        return captured.output.clone()


# --------------------------------------------------------------------------- bSQH
@dataclass
class _Carry:
    """A linearisation kept between iterations: loss, per-chunk adjoints/states, gradients."""

    loss: Tensor
    lins: list[_Linearisation]
    gradients: dict[int, list[Tensor]]

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


@register("bsqh-fast")
class FastBSQH(BSQH):
    """bSQH with every decision on the device, CUDA graphs and reused adjoints.

    Same iterates as ``BSQH(..., max_retries=0)`` (to float rounding: the distance and R
    are summed over one flat buffer instead of per tensor). See the module docstring for
    ``cuda_graph`` and ``reuse_adjoints``. ``eps`` reads the device value (a host
    synchronisation); read ``StepStats.eps`` at the evaluation cadence instead.
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
        max_retries: int = 0,
        eps_min: float | None = None,
        eps_max: float | None = None,
        chunk_size: int | None = None,
        loss_fn: LossFn = F.cross_entropy,
        cuda_graph: bool = True,
        reuse_adjoints: bool = True,
    ) -> None:
        self._device = _model_device(model)
        super().__init__(
            model,
            eps=eps,
            sigma=sigma,
            zeta=zeta,
            eta=eta,
            beta=beta,
            gamma=gamma,
            penalty=penalty,
            sweep=sweep,
            inner_steps=inner_steps,
            max_retries=max_retries,
            eps_min=eps_min,
            eps_max=eps_max,
            chunk_size=chunk_size,
            loss_fn=loss_fn,
        )
        if self.max_retries != 0:
            raise ValueError(
                f"max_retries must be 0 for bsqh-fast (a rejected attempt raises eps and the "
                f"next step goes on; same-batch retries need a host sync), got "
                f"{self.max_retries}; use method 'bsqh' for retries"
            )
        if len({(p.device, p.dtype) for p in self.params}) != 1:
            raise ValueError("bsqh-fast needs every parameter on one device with one dtype")
        self.cuda_graph = bool(cuda_graph)
        self.reuse_adjoints = bool(reuse_adjoints)

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
        self._vjps = sum(
            self.inner_steps - (1 if self._needs_gradient(l) else 0) for l in self.param_stages
        )

        self._reg = self._flat_penalty(self._flat_parameters()).clone()
        self._signature = self._param_signature()
        self._last: _Batch | None = None
        self._carry_valid = False
        self._carries: dict[Any, _Carry] = {}
        self._graphs = _GraphCache(self.method_name, self.cuda_graph)

    # ---------------------------------------------------------------- public API
    @property
    def eps(self) -> float:
        """Current eps as a float: reads the device (a host synchronisation on CUDA)."""
        return float(self._eps)

    @eps.setter
    def eps(self, value: float) -> None:
        value = float(value)
        if "_eps" in self.__dict__:
            self._eps.fill_(value)  # in place: captured graphs keep reading it
        else:
            self._eps = torch.tensor(value, dtype=torch.float64, device=self._device)

    @property
    def hparams(self) -> dict[str, object]:
        return {
            **super().hparams,
            "cuda_graph": self.cuda_graph,
            "reuse_adjoints": self.reuse_adjoints,
        }

    @property
    def uses_cuda_graph(self) -> bool:
        """Whether the last step replayed a CUDA graph (for the perf harness's table)."""
        return self._graphs.last_replayed

    def prepare(self, x: Tensor, y: Tensor) -> None:
        """Capture the graphs for batches shaped like (x, y); parameters and eps unchanged.

        Captures the mini-batch iteration and, with ``reuse_adjoints``, the two full-batch
        ones. Does nothing on the CPU or with ``cuda_graph=False``.
        """
        split_batch(x, y, self.chunk_size)
        self._sync_with_parameters()
        if not self._graphs.active(x):
            return
        kinds = [FRESH, SEED, STEADY] if self.reuse_adjoints else [FRESH]
        last, valid = self._last, self._carry_valid
        for kind in kinds:
            if self._captured(kind, x, y) is None:
                break
        self._last, self._carry_valid = last, valid

    def step(self, x: Tensor, y: Tensor) -> StepStats:
        split_batch(x, y, self.chunk_size)  # validates the batch on the host
        self._sync_with_parameters()
        same = self._last is not None and self._last.same(x, y)
        if not (self.reuse_adjoints and same):
            kind = FRESH
        else:
            kind = STEADY if self._carry_valid else SEED
        self._graphs.last_replayed = False
        packed: Tensor | None = None
        if self._graphs.active(x):
            captured = self._captured(kind, x, y)
            if captured is not None:
                packed = self._graphs.replay(captured, x, y)
        if packed is None:
            packed = self._iterate(x, y, kind)
        self._last = _Batch(x, y)
        self._carry_valid = kind != FRESH
        self._signature = self._param_signature()
        return self._stats(packed, kind)

    # ---------------------------------------------------------------- the iteration
    def _iterate(self, x: Tensor, y: Tensor, kind: str) -> Tensor:
        """One iteration, branch-free on tensor values (so it can be captured whole).

        Returns ``[loss, objective, accepted, eps, tau, retries]`` as a float64 vector.
        """
        carry_in, carry_out = _KIND_FLAGS[kind]
        chunks = split_batch(x, y, self.chunk_size)
        with torch.no_grad():
            old_flat = self._flat_parameters()
        old = self._views(old_flat, self._slots)
        carry = self._carries.get(_shape_key(x, y))
        if carry_in:
            if carry is None:
                raise RuntimeError("bsqh-fast: no carried linearisation for this batch shape")
            loss_k, lins, gradients = carry.loss, carry.lins, carry.gradients
        else:
            loss_k, lins, gradients = self._linearise(chunks)
        objective_k = loss_k + self._reg
        t = torch.reciprocal(2.0 * self._eps)  # 1 / (2 eps), as the reference computes it
        loss_new, states, chunk_losses = self._candidate(
            chunks, lins, gradients, old, t, track=carry_out
        )
        following: tuple[Tensor, list[_Linearisation], dict[int, list[Tensor]]] | None = None
        if carry_out:  # the candidate's backward: the linearisation at u_new
            following = self._combine_linearisations(
                [self._chunk_linearisation(s, c) for s, c in zip(states, chunk_losses, strict=True)]
            )
        with torch.no_grad():
            new_flat = self._flat_parameters()
            tau = torch.sum(torch.square(new_flat - old_flat))
            reg_new = self._flat_penalty(new_flat)
            objective_new = loss_new + reg_new
            accept = objective_new - objective_k <= -self.eta * tau
            loss_out = torch.where(accept, loss_new, loss_k).to(torch.float64)
            objective_out = torch.where(accept, objective_new, objective_k).to(torch.float64)
            tau_out = torch.where(accept, tau.to(torch.float64), 0.0)
            # Keep the candidate or go back to u_k, on the device.
            torch.where(accept, new_flat, old_flat, out=old_flat)
            torch._foreach_copy_(self._ordered, self._views(old_flat, self._ordered_slots))
            if following is not None:
                self._select_carry(x, y, accept, following, (loss_k, lins, gradients))
            torch.where(accept, reg_new, self._reg, out=self._reg)
            eps = torch.where(accept, self._eps * self.zeta, self._eps * self.sigma)
            if self.eps_min is not None or self.eps_max is not None:
                eps = torch.clamp(eps, min=self.eps_min, max=self.eps_max)
            self._eps.copy_(eps)
            accepted = accept.to(torch.float64)
            return torch.stack([loss_out, objective_out, accepted, eps, tau_out, 1.0 - accepted])

    def _candidate(
        self,
        chunks: Sequence[tuple[Tensor, Tensor, float]],
        lins: Sequence[_Linearisation],
        gradients: dict[int, list[Tensor]],
        old: Sequence[Tensor],
        t: Tensor,
        *,
        track: bool,
    ) -> tuple[Tensor, list[list[Tensor]], list[Tensor]]:
        """The sweep: parameters become u_new stage by stage (as in ``BSQH._sweep``).

        With ``track`` the candidate's forward is recorded by autograd and its states and
        per-chunk losses are returned for the next linearisation; otherwise it runs without
        a graph and only the loss is returned. Each stage's forward at u_new is computed
        once and feeds both the next stage and the loss.
        """
        old_by_stage = self._split_by_stage(old)
        sequential = self.sweep == "sequential"
        # Scalars of the step, once per iteration: ``t`` cast as ``t * g`` would cast it,
        # and the prox's factors (each a kernel when t lives on the device).
        step = (t.to(self.params[0].dtype), self.regularizer.prox_factors(t))
        inputs = [xc for xc, _, _ in chunks]
        states: list[list[Tensor]] = [[xc] for xc in inputs] if track else []
        for l, stage in enumerate(self.stages):
            if self.stage_params[l]:
                stage_inputs = (
                    [h.detach() for h in inputs]
                    if sequential
                    else [lin.states.get(l) for lin in lins]
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
        gradients: dict[int, list[Tensor]],
        step: tuple[Tensor, tuple[Tensor, ...]],
    ) -> None:
        """``BSQH._maximise_stage`` with the per-tensor arithmetic fused by ``_foreach`` ops.

        ``u_k + t g`` is one multi-tensor kernel pair per stage instead of two kernels per
        tensor, and the write-back one copy; the prox is the shared operator, unchanged.
        """
        params = self.stage_params[l]
        scale, factors = step
        for j in range(self.inner_steps):
            reuse = j == 0 and l in gradients  # stage 0's from the adjoint pass
            g = gradients[l] if reuse else self._stage_gradient(l, inputs, lins)
            with torch.no_grad():
                v = torch._foreach_add(list(u_k), torch._foreach_mul(list(g), scale))
                torch._foreach_copy_(
                    params,
                    [
                        self.regularizer.prox_param_with(p, vi, factors)
                        for p, vi in zip(params, v, strict=True)
                    ],
                )

    def _select_carry(
        self,
        x: Tensor,
        y: Tensor,
        accept: Tensor,
        following: tuple[Tensor, list[_Linearisation], dict[int, list[Tensor]]],
        current: tuple[Tensor, Sequence[_Linearisation], dict[int, list[Tensor]]],
    ) -> None:
        """Carry the candidate's linearisation if accepted, else the current one."""
        new = _Carry(following[0], following[1], following[2])
        now = _Carry(current[0], list(current[1]), current[2])
        key = _shape_key(x, y)
        carry = self._carries.get(key)
        if carry is None or not carry.matches(new):
            if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
                raise RuntimeError("bsqh-fast: carry buffers must exist before capture")
            carry = _Carry.empty_like(new)
            self._carries[key] = carry
        for buffer, a, b in zip(carry.tensors(), new.tensors(), now.tensors(), strict=True):
            torch.where(accept, a, b, out=buffer)

    # ---------------------------------------------------------------- bookkeeping
    def _flat_parameters(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self._ordered])

    @staticmethod
    def _views(flat: Tensor, slots: Sequence[tuple[int, int, torch.Size]]) -> list[Tensor]:
        return [flat[start : start + n].view(shape) for start, n, shape in slots]

    def _flat_penalty(self, flat: Tensor) -> Tensor:
        """R of the parameters in ``flat``: the shared regularizer on its prunable head."""
        if not self._prunable_numel:
            return flat.new_zeros(())
        return self.regularizer.penalty(flat[: self._prunable_numel])

    def _param_signature(self) -> tuple[tuple[int, int], ...]:
        return tuple((p.data_ptr(), p._version) for p in self.params)

    def _sync_with_parameters(self) -> None:
        """Notice parameters changed from outside: refresh R(u_k), drop stale carries/graphs."""
        signature = self._param_signature()
        if signature == self._signature:
            return
        moved = [a[0] for a in signature] != [b[0] for b in self._signature]
        with torch.no_grad():
            self._reg.copy_(self._flat_penalty(self._flat_parameters()))
        self._carry_valid = False
        if moved:
            self._graphs.clear()
        self._signature = signature

    def _captured(self, kind: str, x: Tensor, y: Tensor) -> _Captured | None:
        return self._graphs.get(
            (kind, _shape_key(x, y)),
            x,
            y,
            lambda sx, sy: (self._iterate(sx, sy, kind), None),
            self._save_state,
            self._restore_state,
        )

    def _save_state(self) -> Any:
        with torch.no_grad():
            return (
                [p.detach().clone() for p in self.params],
                self._eps.clone(),
                self._reg.clone(),
                {k: [t.clone() for t in c.tensors()] for k, c in self._carries.items()},
            )

    def _restore_state(self, saved: Any) -> None:
        params, eps, reg, carries = saved
        with torch.no_grad():
            torch._foreach_copy_(self.params, params)
            self._eps.copy_(eps)
            self._reg.copy_(reg)
            for key, tensors in carries.items():
                for buffer, value in zip(self._carries[key].tensors(), tensors, strict=True):
                    buffer.copy_(value)
        self._signature = self._param_signature()

    def _stats(self, packed: Tensor, kind: str) -> StepStats:
        share = self._vjps / len(self.param_stages)
        fresh = 0.0 if kind == STEADY else 1.0  # the forward + backward at u_k
        extra = 1.0 if kind != FRESH else 0.0  # the backward at the candidate
        return StepStats(
            loss=packed[0],
            objective=packed[1],
            accepted=packed[2],
            eps=packed[3],
            tau=packed[4],
            retries=packed[5],
            forward_passes=fresh + 1.0 + share,
            backward_passes=fresh + share + extra,
        )


# --------------------------------------------------------------------------- baselines
class _GraphedGradientStep:
    """Mixin: a ``GradientMethod`` whose whole step is one CUDA graph per batch shape."""

    method_name: str
    cuda_graph: bool
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer

    def __init__(self, model: nn.Module, *, cuda_graph: bool = True, **hparams: Any) -> None:
        self.cuda_graph = bool(cuda_graph)
        self._graphs = _GraphCache(self.method_name, self.cuda_graph)
        super().__init__(model, **hparams)  # type: ignore[call-arg]
        self._pointers = [p.data_ptr() for p in self.params]

    def _make_optimizer(self, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
        optimizer = super()._make_optimizer(params)  # type: ignore[misc]
        if self.cuda_graph and params[0].is_cuda and "capturable" in optimizer.defaults:
            for group in optimizer.param_groups:  # step counts on the device
                group["capturable"] = True
        return optimizer

    @property
    def uses_cuda_graph(self) -> bool:
        """Whether the last step replayed a CUDA graph (for the perf harness's table)."""
        return self._graphs.last_replayed

    def prepare(self, x: Tensor, y: Tensor) -> None:
        """Capture the step for batches shaped like (x, y); parameters and state unchanged."""
        split_batch(x, y, None)
        if self._graphs.active(x):
            self._captured(x, y)

    def step(self, x: Tensor, y: Tensor) -> StepStats:
        self._graphs.last_replayed = False
        if self._graphs.active(x):
            split_batch(x, y, None)
            pointers = [p.data_ptr() for p in self.params]
            if pointers != self._pointers:  # parameters were re-allocated: recapture
                self._graphs.clear()
                self._pointers = pointers
            captured = self._captured(x, y)
            if captured is not None:
                out = self._graphs.replay(captured, x, y)
                return replace(captured.meta, loss=out[0], objective=out[1], tau=out[2])
        return super().step(x, y)  # type: ignore[misc]

    def _captured(self, x: Tensor, y: Tensor) -> _Captured | None:
        return self._graphs.get(
            ("step", _shape_key(x, y)),
            x,
            y,
            self._packed_step,
            self._save_state,
            self._restore_state,
        )

    def _packed_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, StepStats]:
        stats = super().step(x, y)  # type: ignore[misc]
        values = [torch.as_tensor(v) for v in (stats.loss, stats.objective, stats.tau)]
        return torch.stack([v.to(values[0].device, values[0].dtype) for v in values]), stats

    def _save_state(self) -> Any:
        with torch.no_grad():
            params = [p.detach().clone() for p in self.params]
            state = {
                p: {k: v.clone() if isinstance(v, Tensor) else v for k, v in s.items()}
                for p, s in self.optimizer.state.items()
            }
        return params, state

    def _restore_state(self, saved: Any) -> None:
        """Put parameters and optimizer state back; state created by the warm-up is zeroed.

        Zero buffers and a zero step count are what a fresh torch optimizer starts from
        (SGD's first momentum step ``0 * m + g`` equals its ``clone(g)``).
        """
        params, state = saved
        with torch.no_grad():
            torch._foreach_copy_(self.params, params)
            for p, s in self.optimizer.state.items():
                before = state.get(p)
                for k, v in s.items():
                    if before is not None and k in before:
                        if isinstance(v, Tensor):
                            v.copy_(before[k])
                        else:
                            s[k] = before[k]
                    elif isinstance(v, Tensor):
                        v.zero_()
                    elif isinstance(v, int | float):
                        s[k] = type(v)(0)


def _graphed_variant(base: type, name: str) -> type:
    """Register ``name``: ``base`` with ``cuda_graph`` added to its keyword hyperparameters."""

    def __init__(self: Any, model: nn.Module, *, cuda_graph: bool = True, **hparams: Any) -> None:
        _GraphedGradientStep.__init__(self, model, cuda_graph=cuda_graph, **hparams)

    signature = inspect.signature(base.__init__)
    extra = inspect.Parameter(
        "cuda_graph", inspect.Parameter.KEYWORD_ONLY, default=True, annotation="bool"
    )
    # registry.hyperparameters reads this signature: the base's options plus cuda_graph.
    __init__.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), extra]
    )
    cls = type(
        f"{base.__name__}Graph",
        (_GraphedGradientStep, base),
        {
            "__init__": __init__,
            "__module__": __name__,
            "__doc__": f"``{base.method_name}`` with its whole step captured as a CUDA graph.",
        },
    )
    return register(name)(cls)


GRAPHED_BASELINES: dict[str, type] = {
    f"{base.method_name}-graph": _graphed_variant(base, f"{base.method_name}-graph")
    for base in (
        baselines.SGD,
        baselines.Adam,
        baselines.ProxSGDL0,
        baselines.ProxSGDL1,
        baselines.ProxAdamL0,
    )
}
