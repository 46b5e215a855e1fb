"""How many kernels fusing bsqh-fast's elementwise work removes, measurable on any machine.

Why: on a GPU, ``python -m bench perf --device cuda --kernels`` counts the device kernels of
``bsqh-fast`` and of its ``fuse=false`` row directly. Without a GPU this script gives the
same comparison from the operators themselves: it counts the operators an eager step
dispatches (each is one kernel launch on CUDA; views and allocations are not counted),
splits them into those inside the fusable functions (``_prelude``, ``_stage_update``,
``_decide`` in ``optimizers/bsqh.py``) and the rest, and counts the kernels the compiler
generates for one call of each fusable function (on this machine's backend: C++ on a CPU,
Triton on CUDA). Printed: per function, calls per step, operators per call eagerly and
kernels per call compiled; then the step's totals before and after.

    python scripts/fusion_kernels.py [--batch 128] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import collections
import sys
from typing import Any

import torch
from torch._inductor import config as inductor_config
from torch._inductor import metrics
from torch.utils._python_dispatch import TorchDispatchMode

import optimizers
from bench.training.models import build_model

FUSABLE = ("_prelude", "_stage_update", "_decide")
#: Operators that launch nothing: views, metadata, allocations, host scalars.
NOT_KERNELS = {
    "view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "detach",
    "alias", "slice", "select", "unsqueeze", "squeeze", "as_strided", "split",
    "split_with_sizes", "unbind", "_reshape_alias", "lift_fresh", "empty", "empty_like",
    "new_empty", "empty_strided", "new_empty_strided", "_local_scalar_dense", "scalar_tensor",
    "_record_function_enter_new", "_record_function_exit", "is_same_size", "view_as",
}  # fmt: skip


class OperatorCount(TorchDispatchMode):
    """Operators dispatched, by the fusable function they run in (or "rest")."""

    def __init__(self) -> None:
        super().__init__()
        self.operators: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.__name__.split(".")[0]
        if name not in NOT_KERNELS:
            self.operators[self._owner()] += 1
        return func(*args, **(kwargs or {}))

    @staticmethod
    def _owner() -> str:
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_name in FUSABLE and frame.f_code.co_filename.endswith("bsqh.py"):
                return frame.f_code.co_name
            frame = frame.f_back
        return "rest"


def make(fuse: bool, device: torch.device) -> Any:
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, image_size=28, num_classes=10).to(device)
    return optimizers.make("bsqh-fast", model, beta=1e-4, gamma=1e-4, fuse=fuse, cuda_graph=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.device)
    x = torch.randn(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    eager = make(False, device)
    for _ in range(2):
        eager.step(x.clone(), y.clone())
    calls: collections.Counter[str] = collections.Counter()
    for name in FUSABLE:  # count calls per step through the method's own attributes
        fusable = getattr(eager, name)
        original = fusable.fn

        def counted(*a: Any, _name: str = name, _fn: Any = original) -> Any:
            calls[_name] += 1
            return _fn(*a)

        counted.__name__ = original.__name__
        fusable.fn = counted
    with OperatorCount() as count:
        eager.step(x.clone(), y.clone())

    inductor_config.fx_graph_cache = False  # generate (and so count) every kernel
    fused = make(True, device)
    kernels: dict[str, int] = {}
    for name in FUSABLE:
        fusable = getattr(fused, name)
        compiled = fusable._compiled

        def first(*a: Any, _name: str = name, _compiled: Any = compiled) -> Any:
            before = metrics.generated_kernel_count
            out = _compiled(*a)
            kernels.setdefault(_name, metrics.generated_kernel_count - before)
            return out

        fusable._compiled = first
    fused.step(x.clone(), y.clone())
    if not fused.fused:
        sys.exit("compilation failed: see the warning above")

    print(f"bsqh-fast, LeNet-5, batch {args.batch}, {device.type} ({torch.__version__})")
    print(f"{'function':<15} {'calls/step':>10} {'eager ops/call':>15} {'kernels/call':>13}")
    before = after = count.operators["rest"]
    for name in FUSABLE:
        n = calls[name]
        per_call = count.operators[name] / n
        before += count.operators[name]
        after += n * kernels[name]
        print(f"{name:<15} {n:>10} {per_call:>15.1f} {kernels[name]:>13}")
    print(f"{'rest':<15} {'':>10} {count.operators['rest']:>15} {'(unchanged)':>13}")
    print(f"per step: {before} operators eagerly -> {after} with fusion ({before - after} fewer)")


if __name__ == "__main__":
    main()
