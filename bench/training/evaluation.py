"""Figures of a model at one evaluation point (never inside the timed region)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import optimizers
from bench.training.models import nonzero_macs_per_sample

EVAL_BATCH = 4096


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Top-1 accuracy, in batches so large test sets fit in memory."""
    correct = 0
    for i in range(0, len(x), EVAL_BATCH):
        correct += int((model(x[i : i + EVAL_BATCH]).argmax(dim=1) == y[i : i + EVAL_BATCH]).sum())
    return correct / len(x)


@torch.no_grad()
def mean_loss(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Mean cross-entropy over (x, y), in batches."""
    total = 0.0
    for i in range(0, len(x), EVAL_BATCH):
        logits = model(x[i : i + EVAL_BATCH])
        total += float(F.cross_entropy(logits, y[i : i + EVAL_BATCH], reduction="sum"))
    return total / len(x)


def model_figures(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, float]:
    """Sparsity, nonzero count and nonzero MACs per sample of the current weights."""
    return {
        "sparsity": optimizers.sparsity(model),
        "nonzeros": optimizers.nonzeros(model),
        "nonzero_macs": nonzero_macs_per_sample(model, input_shape),
    }
