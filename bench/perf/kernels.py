"""Device kernels per step, counted with the PyTorch profiler.

Why: a small-batch step of LeNet-5 on a large GPU is bound by how many kernels it runs,
not by their arithmetic, so the count per step is the figure that says whether a change
removed work. CUPTI reports the kernels of a replayed CUDA graph one by one, so a graphed
method is counted as it runs. Memory copies and memsets count too: each is one more
launch on the device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def kernels_per_step(step: Callable[[], object], *, steps: int = 3) -> float:
    """Mean number of device activities (kernels, copies, memsets) per call of ``step``.

    Only CUDA has a device trace here; call it on CUDA only (the caller synchronises
    nothing: this function does, once before and once after the profiled steps).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as trace:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    on_device = [e for e in trace.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return len(on_device) / steps
