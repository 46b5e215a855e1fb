"""Prox closed forms against brute force, and the sparsity figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from optimizers import L0L2, L1L2, layer_sparsity, nonzeros, prunable_count, sparsity
from optimizers.regularizers import l2

GRID = np.linspace(-12.0, 12.0, 480_001)  # spacing 5e-5, contains 0 exactly
SPACING = GRID[1] - GRID[0]


def brute_force(reg_value, v: float, t: float) -> tuple[float, float]:
    """Minimiser and minimum of R(u) + (u - v)^2 / (2 t) over the grid."""
    values = reg_value(GRID) + (GRID - v) ** 2 / (2 * t)
    i = int(np.argmin(values))
    return float(GRID[i]), float(values[i])


def l0_value(beta: float, gamma: float):
    return lambda u: 0.5 * gamma * u**2 + beta * (u != 0)


def l1_value(beta: float, gamma: float):
    return lambda u: 0.5 * gamma * u**2 + beta * np.abs(u)


prox_cases = st.tuples(
    st.floats(-8, 8),  # v
    st.floats(0.05, 3.0),  # t
    st.floats(0.0, 4.0),  # beta
    st.floats(0.0, 2.0),  # gamma
)


@settings(max_examples=150, deadline=None)
@given(prox_cases)
def test_l0_prox_equals_brute_force(case):
    v, t, beta, gamma = case
    reg = L0L2(beta=beta, gamma=gamma)
    closed = float(reg.prox(torch.tensor([v], dtype=torch.float64), t)[0])
    objective = l0_value(beta, gamma)
    u_grid, best = brute_force(objective, v, t)
    closed_value = float(objective(np.array(closed)) + (closed - v) ** 2 / (2 * t))
    # The closed form is never worse than the grid's best point (up to grid resolution) ...
    assert closed_value <= best + 1e-6
    # ... and it is the same point unless the two candidates (0 and v/(1+t gamma)) nearly tie.
    gap = abs(v * v - 2 * t * beta * (1 + t * gamma))
    if gap > 1e-3:
        assert abs(u_grid - closed) <= SPACING


@settings(max_examples=150, deadline=None)
@given(prox_cases)
def test_l1_prox_equals_brute_force(case):
    v, t, beta, gamma = case
    reg = L1L2(beta=beta, gamma=gamma)
    closed = float(reg.prox(torch.tensor([v], dtype=torch.float64), t)[0])
    u_grid, _ = brute_force(l1_value(beta, gamma), v, t)
    assert abs(u_grid - closed) <= SPACING


@pytest.mark.parametrize(
    ("v", "t", "beta", "gamma"),
    [(2.0, 0.5, 4.0, 0.0), (-2.0, 0.5, 4.0, 0.0), (3.0, 1.0, 3.0, 0.5), (1.0, 0.25, 1.6, 1.0)],
)
def test_l0_exact_ties_go_to_zero(v, t, beta, gamma):
    threshold = 2 * t * beta * (1 + t * gamma)
    assert v * v == threshold  # an exact tie in floating point
    objective = l0_value(beta, gamma)
    kept = v / (1 + t * gamma)
    value_zero = v * v / (2 * t)
    value_kept = float(objective(np.array(kept))) + (kept - v) ** 2 / (2 * t)
    assert math.isclose(value_zero, value_kept, rel_tol=1e-12)
    out = L0L2(beta=beta, gamma=gamma).prox(torch.tensor([v], dtype=torch.float64), t)
    assert float(out[0]) == 0.0


def test_l0_prox_just_above_the_tie_keeps_the_weight():
    out = L0L2(beta=4.0, gamma=0.0).prox(torch.tensor([2.0 + 1e-9], dtype=torch.float64), 0.5)
    assert float(out[0]) == pytest.approx(2.0 + 1e-9)


def test_l2_prox_is_shrinkage_and_tensor_time_step_matches_float():
    v = torch.linspace(-3, 3, 13, dtype=torch.float64)
    assert torch.allclose(l2(0.5).prox(v, 0.4), v / (1 + 0.4 * 0.5))
    reg = L0L2(beta=0.3, gamma=0.2)
    assert torch.equal(reg.prox(v, 0.7), reg.prox(v, torch.tensor(0.7, dtype=torch.float64)))


def test_regularizer_value_counts_only_prunable_weights():
    reg = L0L2(beta=2.0, gamma=0.5)
    w = torch.tensor([[1.0, 0.0], [-2.0, 0.0]])
    b = torch.tensor([5.0, 0.0])
    assert float(reg.value([w, b])) == pytest.approx(0.25 * 5.0 + 2.0 * 2)
    assert float(L1L2(beta=2.0).value([w, b])) == pytest.approx(2.0 * 3.0)


def test_bias_passes_through_the_prox_unchanged():
    reg = L0L2(beta=100.0, gamma=1.0)
    bias = torch.tensor([0.01, -0.02])
    assert torch.equal(reg.prox_param(bias, bias, 1.0), bias)


def test_sparsity_figures():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0, 0, 2], [0, 0, 0, 0], [3, 0, 0, 0]]))
        model[1].weight.fill_(1.0)
        model[0].bias.zero_()  # biases never count
    assert prunable_count(model) == 18
    assert nonzeros(model) == 3 + 6
    assert sparsity(model) == pytest.approx(9 / 18)
    assert layer_sparsity(model) == {"0.weight": pytest.approx(9 / 12), "1.weight": 0.0}
