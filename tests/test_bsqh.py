"""bSQH's math: adjoints, stage gradients, the sweep, acceptance and eps, chunking."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import optimizers
from optimizers import nonzeros, sparsity
from optimizers.passes import split_batch
from tests.helpers import learnable_data, linear_model, stage_model


def bsqh(model, **kwargs):
    """The reference bSQH, hyperparameters and runtime options given flat.

    ``sweep="parallel"`` is the ablation, registered as ``bsqh-parallel``.
    """
    name = "bsqh-parallel" if kwargs.get("sweep") == "parallel" else "bsqh"
    return optimizers.make(name, model, **kwargs)


def snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def independent_objective(model, x, y, beta, gamma):
    """J recomputed from scratch: mean CE + gamma/2 |W|^2 + beta |W|_0 on 2+-dim weights."""
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y)
        reg = sum(
            0.5 * gamma * torch.sum(p * p) + beta * torch.count_nonzero(p)
            for p in model.parameters()
            if p.dim() >= 2
        )
    return float(loss + reg)


def test_adjoints_equal_minus_loss_gradient_wrt_states():
    model = stage_model(dtype=torch.float64)
    x, y = learnable_data(dtype=torch.float64)
    opt = bsqh(model)
    _, (lin,), _ = opt._linearise(split_batch(x, y, None))
    states, h = [], x
    for stage in model:
        h = stage(h)
        h.retain_grad()
        states.append(h)
    F.cross_entropy(h, y).backward()
    assert set(lin.adjoints) == {1, 2}  # stage 0's gradient comes from the adjoint pass
    for l, adjoint in lin.adjoints.items():
        assert torch.allclose(adjoint, -states[l].grad, atol=1e-14)


def test_stage_gradient_equals_finite_differences():
    model = stage_model(dtype=torch.float64)
    x, y = learnable_data(dtype=torch.float64)
    opt = bsqh(model)
    _, lins, _ = opt._linearise(split_batch(x, y, None))
    l = 1
    stage_input = model[0](x).detach()
    (g_weight, g_bias) = opt._stage_gradient(l, [stage_input], lins)
    adjoint = lins[0].adjoints[l]

    def hamiltonian_term() -> float:
        with torch.no_grad():
            return float(torch.sum(adjoint * model[l](stage_input)))

    weight = model[l][1].weight
    h = 1e-6
    for index in [(0, 0), (3, 7), (11, 26)]:
        with torch.no_grad():
            weight[index] += h
            plus = hamiltonian_term()
            weight[index] -= 2 * h
            minus = hamiltonian_term()
            weight[index] += h
        assert g_weight[index].item() == pytest.approx(
            (plus - minus) / (2 * h), rel=1e-6, abs=1e-10
        )
    assert g_bias.shape == model[l][1].bias.shape


def gradient_descent(model, x, y, step):
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return [p.detach() - step * g for p, g in zip(model.parameters(), grads, strict=True)]


@pytest.mark.parametrize("build", [linear_model, stage_model])
def test_parallel_step_is_gradient_descent_with_step_one_over_two_eps(build):
    model = build(dtype=torch.float64)
    x, y = learnable_data(dtype=torch.float64)
    eps = 2.5
    expected = gradient_descent(model, x, y, 1 / (2 * eps))
    stats = bsqh(model, eps=eps, eta=0.0, sweep="parallel").step(x, y)
    assert stats.accepted and stats.retries == 0
    for p, e in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p, e, atol=1e-13)


def test_sequential_step_on_one_stage_is_gradient_descent():
    model = linear_model(dtype=torch.float64)
    x, y = learnable_data(dtype=torch.float64)
    expected = gradient_descent(model, x, y, 0.2)
    assert bsqh(model, eps=2.5, eta=0.0).step(x, y).accepted
    for p, e in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p, e, atol=1e-13)


def test_sequential_sweep_uses_updated_states_and_old_adjoints():
    """Stage l's update is u_k + t * d/du <p_k[l+1], f_l(x_new[l], u)>, computed by hand."""
    model = stage_model(dtype=torch.float64)
    x, y = learnable_data(dtype=torch.float64)
    eps = 1.0
    t = 1 / (2 * eps)
    old = [stage for stage in model]
    # Adjoints at the old iterate.
    states, h = [x], x
    for stage in model:
        h = stage(h)
        h.retain_grad()
        states.append(h)
    F.cross_entropy(h, y).backward()
    adjoints = [None] + [-s.grad.detach() for s in states[1:]]
    expected, x_new = [], x
    for l, stage in enumerate(old):
        params = list(stage.parameters())
        term = torch.sum(adjoints[l + 1] * stage(x_new))
        g = torch.autograd.grad(term, params)
        new = [p.detach() + t * gi for p, gi in zip(params, g, strict=True)]
        expected.extend(new)
        with torch.no_grad():
            backup = [p.detach().clone() for p in params]
            for p, n in zip(params, new, strict=True):
                p.copy_(n)
            x_new = stage(x_new)
            for p, b in zip(params, backup, strict=True):
                p.copy_(b)
    gd = gradient_descent(model, x, y, t)
    model.zero_grad()
    stats = bsqh(model, eps=eps, eta=0.0).step(x, y)
    assert stats.accepted
    got = list(model.parameters())
    for p, e in zip(got, expected, strict=True):
        assert torch.allclose(p, e, atol=1e-12)
    # Stage 0 sees the unchanged input: it equals gradient descent. Later stages do not.
    assert torch.allclose(got[0], gd[0], atol=1e-12)
    assert not torch.allclose(got[2], gd[2], atol=1e-6)
    assert not torch.allclose(got[4], gd[4], atol=1e-6)


@pytest.mark.slow
def test_full_batch_descent_eps_rules_and_objective():
    model = stage_model(seed=3)
    x, y = learnable_data(n=128)
    beta, gamma, eta, sigma, zeta = 1e-3, 1e-3, 1e-4, 2.0, 0.9
    opt = bsqh(model, eps=0.05, sigma=sigma, zeta=zeta, eta=eta, beta=beta, gamma=gamma)
    previous = independent_objective(model, x, y, beta, gamma)
    rejections = 0
    for _ in range(100):
        before = snapshot(model)
        eps_before = opt.eps
        stats = opt.step(x, y)
        expected_eps = eps_before
        for _ in range(stats.retries):
            expected_eps *= sigma
        if stats.accepted:
            expected_eps *= zeta
        assert opt.eps == expected_eps == stats.eps
        rejections += stats.retries
        recomputed = independent_objective(model, x, y, beta, gamma)
        assert stats.objective == pytest.approx(recomputed, rel=1e-5, abs=1e-6)
        if stats.accepted:
            moved = sum(
                float(torch.sum((p.detach() - b) ** 2))
                for p, b in zip(model.parameters(), before, strict=True)
            )
            assert stats.tau == pytest.approx(moved, rel=1e-4)
            assert recomputed <= previous - eta * stats.tau + 1e-6
        else:
            assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
        assert recomputed <= previous + 1e-6  # J never increases
        previous = recomputed
    assert rejections > 0  # eps = 0.05 is too bold at first: the rejection branch was exercised
    assert previous < independent_objective(stage_model(seed=3), x, y, beta, gamma) - 0.1


def test_all_attempts_rejected_keeps_parameters_and_reports_current_objective():
    model = stage_model()
    x, y = learnable_data()
    before = snapshot(model)
    opt = bsqh(model, eps=1e-6, eta=1e6, max_retries=3)  # eta this large rejects every attempt
    stats = opt.step(x, y)
    assert not stats.accepted and stats.retries == 4 and stats.tau == 0.0
    assert opt.eps == pytest.approx(1e-6 * 2.0**4)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert stats.objective == pytest.approx(independent_objective(model, x, y, 0, 0), rel=1e-6)


@pytest.mark.slow
def test_sparsity_rises_with_beta_and_beta_zero_keeps_every_weight():
    x, y = learnable_data(n=128)
    results = []
    for beta in [0.0, 1e-4, 1e-3, 1e-2]:
        model = stage_model(seed=5)
        opt = bsqh(model, eps=0.5, beta=beta)
        for _ in range(30):
            opt.step(x, y)
        results.append(sparsity(model))
        if beta == 0.0:
            assert nonzeros(model) == sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    assert results[0] == 0.0
    assert all(a <= b for a, b in itertools.pairwise(results))
    assert results[-1] > results[1]


@pytest.mark.parametrize("sweep", ["sequential", "parallel"])
def test_same_seed_gives_bitwise_identical_parameters(sweep):
    x, y = learnable_data()
    runs = []
    for _ in range(2):
        model = stage_model(seed=11)
        opt = bsqh(model, eps=0.3, beta=1e-3, sweep=sweep)
        for i in range(20):
            opt.step(x[(i * 16) % 96 :][:32], y[(i * 16) % 96 :][:32])
        runs.append(snapshot(model))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


@pytest.mark.parametrize(
    ("sweep", "inner_steps"),
    [("sequential", 1), ("sequential", 3), ("parallel", 1), ("parallel", 2)],
)
def test_chunked_full_batch_equals_one_pass(sweep, inner_steps):
    x, y = learnable_data(n=100, dtype=torch.float64)
    runs = []
    for chunk_size in [None, 17]:
        model = stage_model(seed=2, dtype=torch.float64)
        opt = bsqh(
            model,
            eps=0.2,
            beta=1e-3,
            gamma=1e-3,
            sweep=sweep,
            inner_steps=inner_steps,
            chunk_size=chunk_size,
        )
        stats = [opt.step(x, y) for _ in range(8)]
        runs.append((snapshot(model), stats))
    (p1, s1), (p2, s2) = runs
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(p1, p2, strict=True))
    for a, b in zip(s1, s2, strict=True):
        assert a.accepted == b.accepted and a.retries == b.retries
        assert a.objective == pytest.approx(b.objective, rel=1e-12)


def test_inner_steps_move_towards_the_exact_stage_maximiser():
    """More proximal ascent steps raise the exact augmented stage Hamiltonian (last stage)."""
    x, y = learnable_data(dtype=torch.float64)
    values = []
    for k in [1, 4]:
        model = stage_model(seed=4, dtype=torch.float64)
        u_k = [p.detach().clone() for p in model[2].parameters()]
        with torch.no_grad():
            x2 = model[1](model[0](x))
        x2.requires_grad_(False)
        logits = model[2](x2)
        adjoint = -torch.autograd.grad(F.cross_entropy(logits, y), logits)[0]
        eps = 0.05
        opt = bsqh(model, eps=eps, eta=0.0, sweep="parallel", inner_steps=k)
        opt.step(x, y)
        with torch.no_grad():
            u = list(model[2].parameters())
            h = torch.sum(adjoint * model[2](x2)) - eps * sum(
                torch.sum((a - b) ** 2) for a, b in zip(u, u_k, strict=True)
            )
        values.append(float(h))
    assert values[1] > values[0]


def test_nan_objective_is_reported_not_hidden():
    model = stage_model()
    with torch.no_grad():
        model[2].weight.fill_(float("nan"))
    x, y = learnable_data()
    stats = bsqh(model, max_retries=2).step(x, y)
    assert not stats.finite and math.isnan(stats.objective) and not stats.accepted


def test_eps_bounds_clamp_the_schedule():
    model = stage_model()
    x, y = learnable_data()
    opt = bsqh(model, eps=1.0, zeta=0.5, eps_min=0.8)
    opt.step(x, y)
    assert opt.eps == 0.8
    opt = bsqh(model, eps=1.0, eta=1e9, eps_max=3.0, max_retries=5)
    opt.step(x, y)
    assert opt.eps == 3.0
