"""CUDA graphs for any method's step: capture once per step kind and batch shape, replay.

A small network trained on a GPU is bound by kernel-launch overhead, not arithmetic:
capturing a whole step (forward, backward, update, prox, statistics) as one
``torch.cuda.CUDAGraph`` and replaying it removes that overhead. This module holds the
capture machinery (:class:`GraphCache`) and a mixin (:class:`GraphedStep`) that gives
any registered method a graphed variant with one call, :func:`graphed_variant`.

A method is capturable when its step reads and writes only tensors that persist between
steps (parameters, optimizer state, its own buffers) and never reads a tensor's value on
the host. On the CPU, with ``cuda_graph=False``, or when a capture fails (the reason is
warned once), the same step runs eagerly.

Every graphed method has ``prepare(x, y)``: it captures the graphs for batches shaped like
(x, y) outside the timed region and leaves parameters and state as they were (warm-up
iterations run on a side stream and are rolled back). Without it, the first ``step`` on a
new shape pays the capture.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .passes import split_batch
from .registry import register, registered
from .stats import StepStats

#: Warm-up iterations before a capture (PyTorch's whole-network capture recipe uses 3).
WARMUP_ITERATIONS = 3
#: Most graphs one method keeps (batch shapes times step kinds); beyond, it runs eagerly.
MAX_GRAPHS = 12
#: StepStats fields that may be device tensors: packed into one output vector per graph.
_TENSOR_FIELDS = ("loss", "objective", "accepted", "eps", "tau", "retries")

StepFn = Callable[[Tensor, Tensor], tuple[Tensor, Any]]


def shape_key(x: Tensor, y: Tensor) -> tuple[Any, ...]:
    """What a graph is specialised to: shapes, dtypes and device of the batch."""
    return (tuple(x.shape), x.dtype, tuple(y.shape), y.dtype, x.device)


class BatchIdentity:
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
class Captured:
    """One captured graph, its static inputs and its (static) packed output."""

    graph: Any  # torch.cuda.CUDAGraph
    inputs: tuple[Tensor, Tensor]
    output: Tensor
    meta: Any


class GraphCache:
    """CUDA graphs of one method's step: capture with roll-back, replay, eager fallback.

    The owner supplies ``fn(x, y) -> (packed output tensor, meta)`` that reads and writes
    only persistent tensors (allocated outside the capture) besides its inputs, and
    ``save()``/``restore(saved)`` of its mutable state, so that warm-up and capture leave
    the parameters and state untouched.
    """

    def __init__(self, owner: str, enabled: bool) -> None:
        self.owner = owner
        self.enabled = enabled
        self.failure: str | None = None
        self.graphs: dict[Hashable, Captured] = {}
        self.statics: dict[Hashable, tuple[Tensor, Tensor]] = {}
        self.loaded: dict[Hashable, BatchIdentity] = {}
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
                stacklevel=5,
            )

    def clear(self) -> None:
        """Forget every graph (the parameters' storage moved; they must be captured again)."""
        self.graphs.clear()
        self.statics.clear()
        self.loaded.clear()

    def get(
        self,
        key: Hashable,
        x: Tensor,
        y: Tensor,
        fn: StepFn,
        save: Callable[[], Any],
        restore: Callable[[Any], None],
    ) -> Captured | None:
        """The graph for ``key``, captured now if needed; None when capture is impossible."""
        if key in self.graphs:
            return self.graphs[key]
        if len(self.graphs) >= MAX_GRAPHS:
            self.disable(f"more than {MAX_GRAPHS} graphs (too many distinct batch shapes)")
            return None
        shape = shape_key(x, y)
        if shape not in self.statics:  # allocated outside any graph pool: they persist
            self.statics[shape] = (
                torch.empty_like(x, memory_format=torch.contiguous_format),
                torch.empty_like(y, memory_format=torch.contiguous_format),
            )
        static = self.statics[shape]
        static[0].copy_(x)
        static[1].copy_(y)
        self.loaded[shape] = BatchIdentity(x, y)
        saved = save()
        try:
            graph, output, meta = self._capture(fn, static)
        except Exception as error:  # any failure: fall back to eager, never crash training
            restore(saved)
            self.disable(f"capture failed with {type(error).__name__}: {error}")
            return None
        restore(saved)
        captured = Captured(graph=graph, inputs=static, output=output, meta=meta)
        self.graphs[key] = captured
        return captured

    @staticmethod
    def _capture(fn: StepFn, static: tuple[Tensor, Tensor]) -> tuple[Any, Tensor, Any]:
        """Warm up on a side stream, then capture ``fn`` on the static inputs.

        This is PyTorch's whole-network recipe: the warm-up initialises lazily created
        state (cuBLAS/cuDNN handles, optimizer buffers, bsqh-fast's carried adjoints)
        outside the graph's private memory pool, so the capture finds it allocated.
        """
        device = static[0].device
        side = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_ITERATIONS):
                fn(*static)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output, meta = fn(*static)
        return graph, output, meta

    def replay(self, captured: Captured, x: Tensor, y: Tensor) -> Tensor:
        """Copy (x, y) into the static inputs unless they hold them already; replay."""
        shape = shape_key(x, y)
        loaded = self.loaded.get(shape)
        if loaded is None or not loaded.same(x, y):
            captured.inputs[0].copy_(x)
            captured.inputs[1].copy_(y)
            self.loaded[shape] = BatchIdentity(x, y)
        captured.graph.replay()
        self.last_replayed = True
        # The output buffer is overwritten by the next replay: hand out a copy (one kernel).
        return captured.output.clone()


def pack(stats: StepStats) -> tuple[Tensor, tuple[StepStats, tuple[str, ...]]]:
    """The tensor fields of ``stats`` stacked into one vector (one kernel), and how to unpack."""
    names = tuple(n for n in _TENSOR_FIELDS if isinstance(getattr(stats, n), Tensor))
    values: list[Tensor] = [getattr(stats, n) for n in names]
    if not values:
        return torch.zeros(0), (stats, names)
    dtype = values[0].dtype
    return torch.stack([v if v.dtype == dtype else v.to(dtype) for v in values]), (stats, names)


def unpack(packed: Tensor, meta: tuple[StepStats, tuple[str, ...]]) -> StepStats:
    """``pack``'s inverse: the captured stats with their tensor fields read from ``packed``."""
    stats, names = meta
    fields: dict[str, Any] = {n: packed[i] for i, n in enumerate(names)}
    return replace(stats, **fields)


class GraphedStep:
    """Mixin placed before a method class: the method's step replayed as a CUDA graph.

    The defaults suit a method whose whole ``step`` is capturable (the gradient
    baselines). A method with host-side decisions overrides the hooks:

    * ``_graph_kind(x, y)``: which kind of step comes next (host state, e.g. "same batch
      as last time"); one graph per kind and batch shape.
    * ``_graph_body(x, y, kind)``: the step's device work; no host reads, no host state.
    * ``_graph_after(x, y, kind)``: host bookkeeping after the step, replayed or eager.
    * ``_graph_kinds(x, y)``: the kinds ``prepare`` captures; ``eager_kinds`` are never
      captured.
    * ``_graph_tensors()``: persistent tensors the body writes besides the parameters and
      the torch optimizer's state (rolled back after warm-up and capture);
      ``_graph_restored()`` runs after a roll-back.
    """

    method_name: ClassVar[str]
    params: list[Tensor]
    chunk_size: int | None
    #: Step kinds that always run eagerly (e.g. a step whose shapes depend on the host).
    eager_kinds: ClassVar[frozenset[Hashable]] = frozenset()

    def __init__(
        self, model: nn.Module, hp: Any = None, *, cuda_graph: bool = True, **runtime: Any
    ) -> None:
        self.cuda_graph = bool(cuda_graph)
        self._graphs = GraphCache(self.method_name, self.cuda_graph)
        super().__init__(model, hp, **runtime)  # type: ignore[call-arg]
        self._pointers = [p.data_ptr() for p in self.params]
        self._capturable_counts()

    def _capturable_counts(self) -> None:
        optimizer = self._torch_optimizer()
        if optimizer is not None and self.cuda_graph and self.params[0].is_cuda:
            for group in optimizer.param_groups:  # step counts live on the device
                if "capturable" in group:
                    group["capturable"] = True

    # ---------------------------------------------------------------- public API
    @property
    def uses_cuda_graph(self) -> bool:
        """Whether the last step replayed a CUDA graph (for the perf harness's table)."""
        return self._graphs.last_replayed

    def prepare(self, x: Tensor, y: Tensor) -> None:
        """Capture the step for batches shaped like (x, y); parameters and state unchanged."""
        split_batch(x, y, self.chunk_size)
        if not self._graphs.active(x):
            return
        self._check_pointers()
        for kind in self._graph_kinds(x, y):
            if self._captured(kind, x, y) is None:
                break

    def step(self, x: Tensor, y: Tensor) -> StepStats:
        split_batch(x, y, self.chunk_size)  # validates the batch on the host
        self._graphs.last_replayed = False
        kind = self._graph_kind(x, y)
        stats: StepStats | None = None
        if self._graphs.active(x) and kind not in self.eager_kinds:
            self._check_pointers()
            captured = self._captured(kind, x, y)
            if captured is not None:
                stats = unpack(self._graphs.replay(captured, x, y), captured.meta)
        if stats is None:
            stats = self._graph_body(x, y, kind)
        self._graph_after(x, y, kind)
        return stats

    # ---------------------------------------------------------------- hooks
    def _graph_kind(self, x: Tensor, y: Tensor) -> Hashable:
        return "step"

    def _graph_kinds(self, x: Tensor, y: Tensor) -> Sequence[Hashable]:
        return [self._graph_kind(x, y)]

    def _graph_body(self, x: Tensor, y: Tensor, kind: Hashable) -> StepStats:
        result: StepStats = super().step(x, y)  # type: ignore[misc]
        return result

    def _graph_after(self, x: Tensor, y: Tensor, kind: Hashable) -> None:
        return None

    def _graph_tensors(self) -> list[Tensor]:
        return []

    def _graph_restored(self) -> None:
        return None

    def _state_loaded(self) -> None:
        """After ``load_state_dict``: the optimizer's state tensors are new, so every graph
        is captured again, with step counts on the device as at construction."""
        super()._state_loaded()  # type: ignore[misc]
        self._graphs.clear()
        self._capturable_counts()

    # ---------------------------------------------------------------- internals
    def _torch_optimizer(self) -> torch.optim.Optimizer | None:
        optimizer = getattr(self, "optimizer", None)
        return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None

    def _check_pointers(self) -> None:
        pointers = [p.data_ptr() for p in self.params]
        if pointers != self._pointers:  # parameters were re-allocated: capture again
            self._graphs.clear()
            self._pointers = pointers

    def _captured(self, kind: Hashable, x: Tensor, y: Tensor) -> Captured | None:
        def body(sx: Tensor, sy: Tensor) -> tuple[Tensor, Any]:
            return pack(self._graph_body(sx, sy, kind))

        return self._graphs.get(
            (kind, shape_key(x, y)), x, y, body, self._graph_save, self._graph_restore
        )

    def _graph_save(self) -> Any:
        device = self.params[0].device
        # A step that samples (hard-concrete gates) draws from the generator in the
        # warm-up too: its state is rolled back with the rest, so the first replayed step
        # draws what the eager step would have drawn.
        rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()
        with torch.no_grad():
            params = [p.detach().clone() for p in self.params]
            extra = [(t, t.clone()) for t in self._graph_tensors()]
            optimizer = self._torch_optimizer()
            state = (
                {
                    p: {k: v.clone() if isinstance(v, Tensor) else v for k, v in s.items()}
                    for p, s in optimizer.state.items()
                }
                if optimizer is not None
                else {}
            )
        return params, extra, state, rng

    def _graph_restore(self, saved: Any) -> None:
        """Put parameters, state and the random generator back; optimizer state created
        by the warm-up is zeroed.

        Zero buffers and a zero step count are what a fresh torch optimizer starts from
        (SGD's first momentum step ``0 * m + g`` equals its ``clone(g)``).
        """
        params, extra, state, rng = saved
        device = self.params[0].device
        if device.type == "cuda":
            torch.cuda.set_rng_state(rng, device)
        else:
            torch.set_rng_state(rng)
        with torch.no_grad():
            torch._foreach_copy_(self.params, params)
            for tensor, value in extra:
                tensor.copy_(value)
            optimizer = self._torch_optimizer()
            for p, s in optimizer.state.items() if optimizer is not None else ():
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
        self._graph_restored()


def graphed_variant(
    base: type[Any], name: str | None = None, hooks: tuple[type[Any], ...] = ()
) -> type[Any]:
    """Register ``name`` (default ``<base name>-graph``): ``base`` with its step graphed.

    The variant takes the base's hyperparameters, pinned values, traits and runtime options
    plus ``cuda_graph`` (read from :class:`GraphedStep`'s constructor); it is an execution
    variant of ``base`` (``same_as``). ``hooks`` are mixins placed before
    :class:`GraphedStep` that override its hooks (for example a step kind that must always
    run eagerly).
    """
    found = registered(base.method_name)
    name = name or f"{found.name}-graph"
    cls = type(
        f"{base.__name__}Graph",
        (*hooks, GraphedStep, base),
        {
            "__module__": base.__module__,
            "__doc__": f"``{found.name}`` with its whole step captured as a CUDA graph.",
        },
    )
    return register(
        name,
        hparams=found.hparams,
        same_as=found.name,
        pinned=dict(found.pinned),
    )(cls)
