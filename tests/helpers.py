"""Small learnable problems and stage models shared by the optimizer tests."""

from __future__ import annotations

import torch
from torch import nn


def stage_model(
    seed: int = 0, *, channels: int = 3, dtype: torch.dtype = torch.float32
) -> nn.Sequential:
    """A 3-stage tanh CNN for 1x6x6 inputs: conv stage, linear stage, output stage."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2)),
        nn.Sequential(nn.Flatten(), nn.Linear(channels * 9, 12), nn.Tanh()),
        nn.Linear(12, 3),
    )
    return model.to(dtype)


def linear_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """A single stage: flatten + linear."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(36, 3))).to(dtype)


def learnable_data(
    n: int = 96, seed: int = 1, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class is a fixed linear function of the pixels: learnable by any CNN."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g, dtype=dtype)
    w = torch.randn(36, 3, generator=g, dtype=dtype)
    y = (x.flatten(1) @ w).argmax(dim=1)
    return x, y


def cpu_compiler_missing() -> str | None:
    """Why ``torch.compile`` cannot build CPU kernels here, or None when it can.

    The fused-kernel tests compile with it; ``.ci/run`` installs ``g++`` and the Python
    headers, and a machine without a C++ compiler skips those tests with this reason.
    """
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as error:  # any failure to find one: say which
        return f"torch.compile's CPU backend has no C++ compiler here ({error})"
    return None
