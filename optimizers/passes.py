"""Forward and backward passes over a batch, optionally in chunks.

Full-batch training hands ``step`` the whole training set. With ``chunk_size`` the set is
processed in slices whose contributions are weighted by ``len(slice) / len(batch)``, so
that sums over chunks equal one big pass (to float tolerance) while peak activation
memory is that of one chunk. ``loss_fn`` must return the mean over its batch, as
``torch.nn.functional.cross_entropy`` does by default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]


def split_batch(x: Tensor, y: Tensor, chunk_size: int | None) -> list[tuple[Tensor, Tensor, float]]:
    """Slices of (x, y) with the weight of each slice in a batch mean."""
    n = x.shape[0]
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same number of samples, got {n} and {y.shape[0]}")
    if n == 0:
        raise ValueError("the batch is empty: step(x, y) needs at least one sample")
    if chunk_size is None or chunk_size >= n:
        return [(x, y, 1.0)]
    return [
        (x[i : i + chunk_size], y[i : i + chunk_size], min(chunk_size, n - i) / n)
        for i in range(0, n, chunk_size)
    ]


def weighted(loss: Tensor, weight: float) -> Tensor:
    """A chunk's share of the batch mean; the whole batch (weight 1) costs no kernel."""
    return loss if weight == 1.0 else loss * weight


@torch.no_grad()
def batch_loss(
    model: nn.Module, chunks: Sequence[tuple[Tensor, Tensor, float]], loss_fn: LossFn
) -> Tensor:
    """Mean data loss over the chunks of one batch, without building a graph."""
    total: Tensor | None = None
    for xc, yc, weight in chunks:
        term = weighted(loss_fn(model(xc), yc), weight)
        total = term if total is None else total + term
    assert total is not None
    return total


def loss_and_gradients(
    model: nn.Module,
    params: Sequence[Tensor],
    chunks: Sequence[tuple[Tensor, Tensor, float]],
    loss_fn: LossFn,
) -> Tensor:
    """Mean data loss and its gradient, accumulated into ``param.grad`` over the chunks.

    Returns the detached loss. Gradients are overwritten, not added to earlier ones.
    """
    for p in params:
        p.grad = None
    total: Tensor | None = None
    for xc, yc, weight in chunks:
        with torch.enable_grad():
            loss = weighted(loss_fn(model(xc), yc), weight)
        torch.autograd.backward(loss)
        total = loss.detach() if total is None else total + loss.detach()
    assert total is not None
    return total


def squared_distance(new: Sequence[Tensor], old: Sequence[Tensor]) -> Tensor:
    """``sum_i |new_i - old_i|^2`` in a few multi-tensor kernels, whatever the layer count."""
    with torch.no_grad():
        norms = torch.stack(torch._foreach_norm(torch._foreach_sub(list(new), list(old)), 2))
        return torch.dot(norms, norms)
