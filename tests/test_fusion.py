"""Compiled elementwise work (``optimizers.fusion``): one compilation per structure, a
clear fallback when compiling fails, and tensor coefficients that change no value."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import optimizers
from optimizers.bsqh import _prelude
from optimizers.fusion import Fusable
from optimizers.regularizers import make_regularizer, sparsity
from tests.helpers import cpu_compiler_missing, learnable_data, stage_model

VALUES = [(1e-3, 1e-4), (2e-2, 3e-3), (0.0, 5e-2)]
needs_cpu_compiler = pytest.mark.skipif(
    cpu_compiler_missing() is not None, reason=str(cpu_compiler_missing())
)


@pytest.mark.parametrize("penalty", ["l0", "l1"])
@pytest.mark.parametrize("beta, gamma", VALUES)
def test_tensor_coefficients_give_the_float_regularizers_values(penalty, beta, gamma):
    floats = make_regularizer(penalty, beta=beta, gamma=gamma)
    tensors = floats.with_tensor_coefficients("cpu")
    assert isinstance(tensors.beta, torch.Tensor) and tensors.has_beta == (beta != 0)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(500, dtype=torch.float64, generator=g) * 0.1
    t = torch.tensor(0.7, dtype=torch.float64)
    assert torch.equal(
        floats.prox_with(v, floats.prox_factors(t)), tensors.prox_with(v, tensors.prox_factors(t))
    )
    assert torch.allclose(floats.penalty(v), tensors.penalty(v), rtol=1e-15, atol=0)
    assert tensors.penalty(v.float()).dtype == torch.float32  # in w's dtype, always


@needs_cpu_compiler
def test_one_compilation_serves_every_hyperparameter_value():
    """A study's trials change beta and gamma: as tensors they must not recompile."""
    prelude = Fusable(_prelude, enabled=True, owner="test")
    eps = torch.tensor(0.4, dtype=torch.float64)
    loss, reg = torch.tensor(1.0), torch.tensor(0.5)
    graphs = []
    for beta, gamma in VALUES[:2]:
        floats = make_regularizer("l0", beta=beta, gamma=gamma)
        before = counters["stats"]["unique_graphs"]
        fused = prelude(eps, loss, reg, floats.with_tensor_coefficients("cpu"), torch.float32)
        graphs.append(counters["stats"]["unique_graphs"] - before)
        eager = _prelude(eps, loss, reg, floats, torch.float32)
        assert all(torch.equal(a, b) for a, b in zip(fused[:2], eager[:2], strict=True))
        assert all(torch.equal(a, b) for a, b in zip(fused[2], eager[2], strict=True))
    assert prelude.compiled
    assert graphs[1] == 0, graphs


def _needs_the_host(x: torch.Tensor) -> torch.Tensor:
    if x.sum().item() > 0:  # a host read: no single graph can hold this branch
        return x + 1
    return x - 1


def test_a_failed_compilation_warns_once_and_runs_the_eager_function():
    fn = Fusable(_needs_the_host, enabled=True, owner="bsqh-fast")
    with pytest.warns(RuntimeWarning, match="bsqh-fast: compiling _needs_the_host failed"):
        assert torch.equal(fn(torch.ones(3)), torch.full((3,), 2.0))
    assert not fn.compiled and fn.failure
    assert torch.equal(fn(-torch.ones(3)), torch.full((3,), -2.0))  # eager, no new warning


def test_disabled_fusion_calls_the_function_itself():
    fn = Fusable(_needs_the_host, enabled=False, owner="test")
    assert not fn.compiled
    assert torch.equal(fn(torch.ones(2)), torch.full((2,), 2.0))


@needs_cpu_compiler
@pytest.mark.parametrize(
    ("name", "lr"), [("prox-sgd-l0", 0.3), ("prox-sgd-l1", 0.3), ("prox-adam-l0-graph", 0.02)]
)
def test_fused_prox_of_the_baselines_gives_the_eager_iterates(name, lr):
    """The baselines' prox compiled (C++ here, Triton on CUDA) moves the weights exactly as
    the eager prox does: float64, where only rounding could differ, and it prunes."""
    x, y = learnable_data(dtype=torch.float64)
    methods = [
        optimizers.make(
            name, stage_model(5, dtype=torch.float64), lr=lr, beta=2e-3, gamma=1e-3, fuse=fuse
        )
        for fuse in (False, True)
    ]
    for method in methods:
        for xb, yb in zip(x.split(32), y.split(32), strict=True):
            method.step(xb, yb)
    eager, fused = methods
    assert fused.fused and not eager.fused
    for a, b in zip(eager.model.parameters(), fused.model.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert sparsity(fused.model) > 0


def test_fuse_is_refused_when_it_cannot_hold():
    with pytest.raises(ValueError, match=r"fuse must be true, false or unset.*'on'"):
        optimizers.make("prox-sgd-l0", stage_model(5), fuse="on")
    model = stage_model(5)
    model[0][0].weight.data = model[0][0].weight.data.transpose(2, 3).contiguous().transpose(2, 3)
    with pytest.raises(ValueError, match="fuse=True needs contiguous parameters"):
        optimizers.make("prox-sgd-l0", model, fuse=True)
    assert not optimizers.make("prox-sgd-l0", model).fused  # unset: off, not refused
