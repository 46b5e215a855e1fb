"""The field's peer methods: GMP, L0 hard-concrete gates and E-MSA, by their defining properties.

Each peer's convention is checked against a hand computation on a tiny network: E-MSA's
augmented Hamiltonian at the reference's scaling, the hard-concrete group gates, clamp,
P(z != 0) and gate-weighted L2.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

import optimizers
from optimizers import L0L2, StepStats
from optimizers.emsa import EMSA, EMSAL0, EMSAHParams, EMSAL0HParams
from optimizers.gmp import GMP, GMPHParams
from optimizers.l0hc import (
    LIMIT_HIGH,
    LIMIT_LOW,
    LOG_ALPHA_MAX,
    LOG_ALPHA_MIN,
    L0HardConcrete,
    L0HCHParams,
    deterministic_gate,
    hard_concrete_sample,
    open_probability,
)
from optimizers.regularizers import prunable_parameters
from tests.helpers import learnable_data, stage_model

PEERS = ["gmp", "l0-hc", "emsa", "emsa-l0"]
LEARNS = {
    "gmp": {"lr": 0.5, "momentum": 0.9, "final_sparsity": 0.5, "end_step": 20, "frequency": 5},
    "l0-hc": {"lr": 0.03, "lam": 1e-3},
    "emsa": {"inner_steps": 3},  # the reference's L-BFGS, three iterations per stage
    # rho at the reference's scale: the batch-summed feasibility terms need a small rho
    # for the ascent's fixed step at 128 samples.
    "emsa-l0": {"inner_lr": 0.5, "inner_steps": 2, "rho": 0.003, "beta": 1e-4, "gamma": 1e-4},
}
#: Peers whose step never reads a device value on the host (L-BFGS's line search does).
NO_HOST_READS = {
    **LEARNS,
    "emsa": {"inner_solver": "ascent", "inner_lr": 0.5, "inner_steps": 2, "rho": 0.003},
}


def zeros(model) -> list[torch.Tensor]:
    return [p.detach() == 0 for _, p in prunable_parameters(model)]


# --------------------------------------------------------------------------- all three
def test_the_peers_are_registered_with_typed_hyperparameters():
    assert set(PEERS) <= set(optimizers.available())
    assert optimizers.hparams_class("gmp") is GMPHParams
    assert optimizers.hparams_class("l0-hc") is L0HCHParams
    assert optimizers.hparams_class("emsa") is EMSAHParams
    assert optimizers.hparams_class("emsa-l0") is EMSAL0HParams
    assert "total_steps" in optimizers.runtime_options("gmp")
    for name in PEERS:
        assert {"chunk_size", "loss_fn", "post_step_loss"} <= set(optimizers.runtime_options(name))


@pytest.mark.parametrize("name", PEERS)
def test_every_peer_lowers_its_objective_and_reports_device_tensors(name):
    model = stage_model(seed=7)
    x, y = learnable_data(n=128)
    torch.manual_seed(0)
    method = optimizers.make(name, model, **LEARNS[name])
    start = float(method.objective(x, y))
    for _ in range(40):
        stats = method.step(x, y)
    assert isinstance(stats, StepStats) and stats.finite
    # No host synchronisation inside step: the figures stay tensors until resolved.
    assert all(isinstance(v, torch.Tensor) for v in (stats.loss, stats.objective, stats.tau))
    end = float(method.objective(x, y))
    assert end < 0.8 * start
    assert float(stats.objective) == pytest.approx(end, rel=1e-5)


@pytest.mark.parametrize("name", PEERS)
def test_every_peer_is_deterministic_under_a_seed(name):
    x, y = learnable_data(n=64)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = stage_model(seed=5)
        method = optimizers.make(name, model, **LEARNS[name])
        for _ in range(6):
            method.step(x, y)
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


@pytest.mark.parametrize("name", PEERS)
def test_pre_step_mode_reports_the_iterate_the_step_started_from(name):
    x, y = learnable_data()
    model = stage_model()
    kwargs = {k: v for k, v in LEARNS[name].items() if k != "lam"}  # l0-hc: sampled CE
    method = optimizers.make(name, model, post_step_loss=False, **kwargs)
    before = float(F.cross_entropy(model(x), y).detach())
    stats = method.step(x, y)
    assert not stats.after_step and stats.forward_passes >= 1
    if name != "l0-hc":  # l0-hc's pre-step loss uses sampled gates, not the evaluated model
        assert float(stats.loss) == pytest.approx(before, rel=1e-6)


@pytest.mark.parametrize("name", ["gmp", "l0-hc"])
def test_chunked_steps_equal_one_pass(name):
    x, y = learnable_data(n=50, dtype=torch.float64)
    results = []
    for chunk_size in [None, 20]:
        torch.manual_seed(4)
        model = stage_model(seed=2, dtype=torch.float64)
        method = optimizers.make(name, model, chunk_size=chunk_size, **LEARNS[name])
        for _ in range(6):
            method.step(x, y)
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(*results, strict=True))


BAD = [
    ("gmp", {"final_sparsity": 1.0}, "final_sparsity must be a finite number >= 0 and < 1"),
    ("gmp", {"initial_sparsity": 0.6, "final_sparsity": 0.5}, "initial_sparsity must be <= fin"),
    ("gmp", {"begin_step": 10, "end_step": 5}, "begin_step must be <= end_step"),
    ("gmp", {"frequency": 0}, "frequency must be an integer >= 1, got 0"),
    ("gmp", {"lr": 0.0}, "lr must be a finite number > 0, got 0.0"),
    ("gmp", {"momentum": 1.0}, "momentum must be a finite number >= 0 and < 1"),
    ("gmp", {"inner": "lion"}, "inner must be one of ['sgd', 'adam'], got 'lion'"),
    ("gmp", {"scope": "row"}, "scope must be one of ['layer', 'global'], got 'row'"),
    ("gmp", {"begin_fraction": 1.5}, "begin_fraction must be a finite number >= 0 and <= 1"),
    ("gmp", {"begin_fraction": 0.6, "end_fraction": 0.5}, "begin_fraction must be <= end_fraction"),
    ("gmp", {"begin_fraction": 0.5, "end_step": 9, "total_steps": 99}, "window is inverted"),
    ("gmp", {"total_steps": 0}, "total_steps must be an integer >= 1, got 0"),
    ("l0-hc", {"lam": -1.0}, "lam must be a finite number >= 0, got -1.0"),
    ("l0-hc", {"droprate_init": 1.0}, "droprate_init must be a finite number > 0 and < 1"),
    ("l0-hc", {"temperature": 0.0}, "temperature must be a finite number > 0"),
    ("l0-hc", {"lr": -1e-3}, "lr must be a finite number > 0"),
    ("emsa", {"rho": -0.1}, "rho must be a finite number >= 0, got -0.1"),
    ("emsa", {"inner_steps": 0}, "inner_steps must be an integer >= 1, got 0"),
    ("emsa", {"inner_lr": 0.0}, "inner_lr must be a finite number > 0"),
    ("emsa", {"inner_solver": "adam"}, "inner_solver must be one of ['lbfgs', 'ascent']"),
    ("emsa", {"beta": 1e-4}, "unknown hyperparameter(s) ['beta'] for optimizer 'emsa'"),
    ("emsa-l0", {"beta": float("nan")}, "beta must be a finite number >= 0"),
    ("emsa-l0", {"inner_solver": "lbfgs"}, "inner_solver must be 'ascent' for emsa-l0"),
    ("l0-hc", {"gates": "row"}, "gates must be one of ['group', 'weight'], got 'row'"),
    ("bsqh", {"sweep": "parallel"}, "sweep='parallel' is method 'bsqh-parallel'"),
    ("bsqh-parallel", {"sweep": "sequential"}, "sweep='sequential' is method 'bsqh'"),
    ("emsa", {"momentum": 0.9}, "unknown hyperparameter(s) ['momentum'] for optimizer 'emsa'"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "kwargs", "message"), BAD)
def test_bad_hyperparameters_are_refused_by_name(name, kwargs, message):
    with pytest.raises(ValueError) as error:
        optimizers.make(name, stage_model(), **kwargs)
    assert message in str(error.value)


# --------------------------------------------------------------------------- GMP
def cubic(t: int, s_i: float, s_f: float, t0: int, t_end: int) -> float:
    t = min(max(t, t0), t_end)
    return s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** 3


@pytest.mark.parametrize("inner", ["sgd", "adam"])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gmp_follows_the_cubic_schedule_and_masks_persist(scope, inner):
    x, y = learnable_data(n=64)
    model = stage_model(seed=2, channels=6)
    s_i, s_f, t0, t_end, dt = 0.1, 0.8, 3, 17, 4  # 17 - 3 is not a multiple of 4
    method = optimizers.make(
        "gmp", model, initial_sparsity=s_i, final_sparsity=s_f, begin_step=t0,
        end_step=t_end, frequency=dt, scope=scope, inner=inner, lr=0.1,
    )  # fmt: skip
    sizes = [p.numel() for _, p in prunable_parameters(model)]
    pruned_before: list[torch.Tensor] | None = None
    target = 0.0
    for t in range(t_end + 6):
        method.step(x, y)
        masks = zeros(model)
        if t in {3, 7, 11, 15, 17}:
            target = cubic(t, s_i, s_f, t0, t_end)
        counts = [int(m.sum()) for m in masks]
        if t < t0:
            assert sum(counts) == 0, "nothing is pruned before begin_step"
        elif scope == "layer":
            for count, size in zip(counts, sizes, strict=True):
                assert abs(count - target * size) <= 0.5
        else:
            assert abs(sum(counts) - target * sum(sizes)) <= 0.5
        if pruned_before is not None:  # a pruned weight stays exactly zero
            assert all(bool(m[b].all()) for m, b in zip(masks, pruned_before, strict=True))
        pruned_before = masks
    assert target == pytest.approx(s_f)
    if scope == "global":  # ranked together, the layers end at different sparsities
        assert len({round(c / s, 3) for c, s in zip(counts, sizes, strict=True)}) > 1


@pytest.mark.parametrize("inner", ["sgd", "adam"])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_graphed_gmp_gives_gmps_iterates_and_prunes_eagerly(fake_graphs, scope, inner):
    """``gmp-graph`` replays its training steps (here through the CPU stand-in for a CUDA
    graph) and runs its pruning steps eagerly: the iterates are gmp's, bit for bit."""
    x, y = learnable_data(n=64)
    options = dict(final_sparsity=0.7, begin_step=2, end_step=11, frequency=3)
    methods = [
        optimizers.make(name, stage_model(seed=2, channels=6), scope=scope, inner=inner,
                        lr=0.1, **options)
        for name in ("gmp", "gmp-graph")
    ]  # fmt: skip
    eager, graphed = methods
    graphed.prepare(x[:32], y[:32])
    replayed = []
    for t in range(16):
        xb, yb = x[(t % 2) * 32 :][:32], y[(t % 2) * 32 :][:32]
        expected, stats = eager.step(xb, yb), graphed.step(xb, yb)
        replayed.append(graphed.uses_cuda_graph)
        assert float(stats.loss) == float(expected.loss) and float(stats.tau) == float(expected.tau)
        for a, b in zip(eager.model.parameters(), graphed.model.parameters(), strict=True):
            assert torch.equal(a, b), t
    pruning = {2, 5, 8, 11}
    assert replayed == [t not in pruning for t in range(16)]
    assert all(bool(m.any()) for m in zeros(graphed.model))  # it did prune


@pytest.mark.parametrize(
    ("name", "hparams"),
    [
        ("l0-hc", {"lr": 0.03, "lam": 1e-3, "gamma": 1e-3}),
        ("emsa-l0", {"inner_lr": 0.5, "inner_steps": 2, "rho": 0.1, "beta": 1e-4, "gamma": 1e-4}),
        ("emsa", {"inner_solver": "ascent", "inner_lr": 0.5, "inner_steps": 2, "rho": 0.1}),
    ],
)
def test_graphed_peers_give_the_eager_iterates(fake_graphs, name, hparams):
    """``l0-hc-graph`` and ``emsa(-l0)-graph`` through the CPU stand-in for a CUDA graph: the
    same iterates bit for bit; for the gates' noise, the capture's warm-up draws are
    rolled back with the generator's state, so the replayed steps draw the eager noise."""
    x, y = learnable_data(n=64)
    runs = []
    for variant in (name, f"{name}-graph"):
        method = optimizers.make(variant, stage_model(seed=2), **hparams)
        torch.manual_seed(7)
        if variant.endswith("-graph"):
            method.prepare(x[:32], y[:32])
        batches = [*zip(x.split(32), y.split(32), strict=True), *[(x[:32], y[:32])] * 4]
        losses = [float(method.step(xb, yb).loss) for xb, yb in batches]
        runs.append((method, losses))
    (eager, eager_losses), (graphed, graph_losses) = runs
    assert graphed.uses_cuda_graph
    assert eager_losses == graph_losses
    for a, b in zip(eager.model.parameters(), graphed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_emsa_graph_runs_its_lbfgs_steps_eagerly(fake_graphs):
    """L-BFGS reads its line search on the host: ``emsa-graph`` never captures such a step
    (no failed capture, no warning) and gives ``emsa``'s iterates."""
    x, y = learnable_data(n=32)
    eager = optimizers.make("emsa", stage_model(seed=2), inner_steps=2)
    graphed = optimizers.make("emsa-graph", stage_model(seed=2), inner_steps=2)
    graphed.prepare(x, y)
    for _ in range(2):
        expected, stats = eager.step(x, y), graphed.step(x, y)
        assert not graphed.uses_cuda_graph
        assert float(stats.loss) == float(expected.loss)
    assert graphed._graphs.graphs == {} and graphed._graphs.failure is None
    for a, b in zip(eager.model.parameters(), graphed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_gmp_zeroes_the_momentum_of_pruned_weights():
    x, y = learnable_data(n=64)
    model = stage_model(seed=2)
    method = optimizers.make("gmp", model, final_sparsity=0.6, begin_step=1, end_step=1, lr=0.1)
    for _ in range(3):
        method.step(x, y)
    for _, p in prunable_parameters(model):
        buffer = method.optimizer.state[p]["momentum_buffer"]
        assert bool((buffer[p == 0] == 0).all()) and bool((buffer[p != 0] != 0).any())


def test_gmp_never_revives_a_pruned_weight_when_live_weights_tie_at_zero():
    for scope in ["layer", "global"]:
        model = stage_model(seed=2, channels=6)
        method = GMP(model, GMPHParams(scope=scope))
        method.prune(0.3)
        before = [m == 0 for m in method.masks]
        with torch.no_grad():  # live weights that happen to be exactly zero tie with pruned ones
            for _, p in prunable_parameters(model):
                p[(p != 0) & (torch.rand_like(p) < 0.5)] = 0.0
        method.prune(0.3)
        assert all(
            bool(m.flatten()[b.flatten()].eq(0).all())
            for m, b in zip(method.masks, before, strict=True)
        )


def test_gmp_window_from_fractions_of_the_step_budget():
    model = stage_model()
    given = {"begin_fraction": 0.2, "end_fraction": 0.75, "begin_step": 1, "end_step": 2}
    method = optimizers.make("gmp", model, total_steps=40, **given)
    assert (method.schedule.begin, method.schedule.end) == (8, 30)
    assert "total_steps=40" in method.schedule_source
    fallback = optimizers.make("gmp", model, **given)  # no step budget: absolute steps
    assert (fallback.schedule.begin, fallback.schedule.end) == (1, 2)
    assert fallback.schedule_source == "absolute steps"


def test_gmp_reports_r_like_sgd_without_shrinking_it():
    x, y = learnable_data()
    plain, penalised = stage_model(seed=1), stage_model(seed=1)
    GMP(plain, GMPHParams(lr=0.1)).step(x, y)
    stats = GMP(penalised, GMPHParams(lr=0.1, beta=0.5, gamma=0.1)).step(x, y)
    assert all(
        torch.equal(a, b) for a, b in zip(plain.parameters(), penalised.parameters(), strict=True)
    )
    r = L0L2(beta=0.5, gamma=0.1).value(list(penalised.parameters()))
    assert float(stats.objective) == pytest.approx(float(stats.loss) + float(r), rel=1e-6)


# --------------------------------------------------------------------------- L0-HC
def test_hard_concrete_samples_lie_in_the_unit_interval_with_point_masses():
    torch.manual_seed(0)
    u = torch.rand(200_000, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    for log_alpha, temperature in [(0.0, 2 / 3), (1.0, 2 / 3), (-1.0, 0.5)]:
        z = hard_concrete_sample(torch.full_like(u, log_alpha), u, temperature)
        assert bool(((z >= 0) & (z <= 1)).all())
        closed, opened = float((z == 0).double().mean()), float((z == 1).double().mean())
        assert closed > 0.01 and opened > 0.01  # atoms at exactly 0 and 1
        assert float(((z > 0) & (z < 1)).double().mean()) > 0.1  # and a continuous part


@pytest.mark.parametrize("log_alpha", [-3.0, -0.5, 0.0, 1.5, 4.0])
@pytest.mark.parametrize("temperature", [2 / 3, 0.3])
def test_expected_l0_formula_matches_monte_carlo(log_alpha, temperature):
    generator = torch.Generator().manual_seed(11)
    n = 200_000
    u = torch.rand(n, dtype=torch.float64, generator=generator).clamp(1e-12, 1 - 1e-12)
    z = hard_concrete_sample(torch.full_like(u, log_alpha), u, temperature)
    estimate = float((z != 0).double().mean())
    exact = float(open_probability(torch.tensor(log_alpha, dtype=torch.float64), temperature))
    by_hand = 1 / (1 + math.exp(-(log_alpha - temperature * math.log(-LIMIT_LOW / LIMIT_HIGH))))
    assert exact == pytest.approx(by_hand, rel=1e-12)
    assert abs(estimate - exact) <= 4 * math.sqrt(exact * (1 - exact) / n) + 1e-9


def test_the_training_forward_runs_theta_times_sampled_gates():
    x, y = learnable_data()
    model = stage_model(seed=4)
    method = L0HardConcrete(model, L0HCHParams(lam=1e-3), post_step_loss=False)
    names = [n for n, _ in prunable_parameters(model)]
    torch.manual_seed(21)
    gates = [
        hard_concrete_sample(a.detach(), torch.rand_like(a).clamp(1.2e-7, 1 - 1.2e-7), 2 / 3)
        for a in method.log_alpha
    ]
    assert any(bool(((z > 0) & (z < 1)).any()) for z in gates)
    weights = {n: t.detach() * z for n, t, z in zip(names, method.theta, gates, strict=True)}
    expected = F.cross_entropy(functional_call(model, weights, (x,)), y)
    torch.manual_seed(21)
    assert float(method.step(x, y).loss) == pytest.approx(float(expected.detach()), rel=1e-6)


def test_test_time_weights_are_theta_times_the_deterministic_gate():
    x, y = learnable_data()
    model = stage_model(seed=4)
    method = L0HardConcrete(model, L0HCHParams(lr=0.01, lam=1e-3, gates="weight"))
    with torch.no_grad():
        for a in method.log_alpha:  # closed (z_hat = 0), half open, fully open gates
            a.copy_(
                torch.tensor([-4.0, 0.0, 4.0]).repeat(a.numel() // 3 + 1)[: a.numel()].view_as(a)
            )
    method.write_test_weights()
    for p, theta, a in zip(method.gated, method.theta, method.log_alpha, strict=True):
        gate = (torch.sigmoid(a) * (LIMIT_HIGH - LIMIT_LOW) + LIMIT_LOW).clamp(0, 1)
        assert torch.equal(p, theta.detach() * gate)
        assert bool((p[a < -3] == 0).all()) and bool((p[a > 3] == theta[a > 3]).all())
    method.step(x, y)  # after a step the model holds the updated theta * z_hat
    for p, theta, a in zip(method.gated, method.theta, method.log_alpha, strict=True):
        assert torch.equal(p, (theta * deterministic_gate(a)).detach())
        assert bool((p[deterministic_gate(a) == 0] == 0).all())
    assert optimizers.sparsity(model) > 0.3


def test_group_gates_are_output_maps_of_convs_and_input_neurons_of_dense_layers():
    model = stage_model(seed=4, channels=3)  # conv 3x1x3x3, dense 12x27, dense 3x12
    method = L0HardConcrete(model, L0HCHParams())
    shapes = [tuple(a.shape) for a in method.log_alpha]
    assert shapes == [(3, 1, 1, 1), (1, 27), (1, 12)]
    per_weight = L0HardConcrete(stage_model(seed=4), L0HCHParams(gates="weight"))
    assert [a.shape for a in per_weight.log_alpha] == [t.shape for t in per_weight.theta]
    # Closing one gate zeroes its whole group in the model the runner measures: a conv's
    # output map (a kernel row) and a dense layer's input column.
    with torch.no_grad():
        method.log_alpha[0][1] = LOG_ALPHA_MIN
        method.log_alpha[1][0, 5] = LOG_ALPHA_MIN
    method.write_test_weights()
    conv, dense = method.gated[0], method.gated[1]
    assert bool((conv[1] == 0).all()) and bool((conv[0] != 0).all())
    assert bool((dense[:, 5] == 0).all()) and int((dense == 0).sum()) == dense.shape[0]
    assert optimizers.sparsity(model) == pytest.approx((9 + 12) / (27 + 324 + 36))


def test_gate_logits_start_inside_and_stay_inside_the_reference_clamp():
    assert math.exp(LOG_ALPHA_MIN) == pytest.approx(1e-2)
    assert math.exp(LOG_ALPHA_MAX) == pytest.approx(1e2)
    x, y = learnable_data()
    tiny = L0HardConcrete(stage_model(seed=4), L0HCHParams(droprate_init=1e-4))
    assert all(bool((a == LOG_ALPHA_MAX).all()) for a in tiny.log_alpha)  # log(9999) clamped
    torch.manual_seed(0)
    method = L0HardConcrete(stage_model(seed=4), L0HCHParams(lr=5.0, lam=1.0))  # huge steps
    for _ in range(3):
        method.step(x, y)
    values = torch.cat([a.detach().flatten() for a in method.log_alpha])
    assert float(values.min()) == pytest.approx(LOG_ALPHA_MIN)  # pushed to the bound, held
    assert float(values.max()) <= LOG_ALPHA_MAX


def test_penalty_is_the_gate_weighted_l2_plus_lam_per_expected_nonzero_weight():
    """By hand on a net with one 2x3 dense layer: group gates on its 3 input neurons."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 2)).double()
    lam, gamma, temperature = 0.3, 0.7, 2 / 3
    method = L0HardConcrete(model, L0HCHParams(lam=lam, gamma=gamma, temperature=temperature))
    logits = [-1.0, 0.5, 2.0]
    with torch.no_grad():
        method.log_alpha[0].copy_(torch.tensor([logits], dtype=torch.float64))
    theta = method.theta[0].detach()
    shift = temperature * math.log(0.1 / 1.1)
    total, expected_l0 = 0.0, 0.0
    for j, log_alpha in enumerate(logits):  # input neuron j gates column j (2 weights)
        opened = 1 / (1 + math.exp(-(log_alpha - shift)))
        column = [float(theta[i, j]) for i in range(2)]
        total += opened * (lam * 2 + gamma / 2 * sum(w * w for w in column))
        expected_l0 += 2 * opened
    assert float(method.penalty().detach()) == pytest.approx(total, rel=1e-12)
    assert float(method.expected_l0()) == pytest.approx(expected_l0, rel=1e-12)
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    ce = F.cross_entropy(model(x), y).detach()  # the model holds theta * z_hat
    assert float(method.objective(x, y)) == pytest.approx(float(ce) + total, rel=1e-12)


def test_l0_penalty_closes_gates_and_keeps_the_model_structure():
    x, y = learnable_data()
    model = stage_model(seed=4)
    ids = [id(p) for p in model.parameters()]
    torch.manual_seed(0)
    method = optimizers.make("l0-hc", model, lr=0.1, lam=0.01, droprate_init=0.3)
    opened = float(method.expected_l0())
    initial = 1 / (1 + math.exp(-(math.log(0.7 / 0.3) + 2 / 3 * math.log(11))))
    assert opened == pytest.approx(initial * optimizers.prunable_count(model), rel=1e-5)
    for _ in range(40):
        method.step(x, y)
    assert [id(p) for p in model.parameters()] == ids
    assert optimizers.sparsity(model) > 0.3
    assert float(method.expected_l0()) < 0.5 * opened


# --------------------------------------------------------------------------- E-MSA
def reference_costates(model, x, y, theta_k):
    """States and costates at theta_k: p_l = -d(mean loss)/dx_l, as the reference derives them."""
    stages = list(model)
    states = [x.detach().requires_grad_(True)]
    for stage, old in zip(stages, theta_k, strict=True):
        params = {**dict(stage.named_parameters()), **old}
        states.append(functional_call(stage, params, (states[-1],)))
    costates = torch.autograd.grad(-F.cross_entropy(states[-1], y), states)
    return [s.detach() for s in states], list(costates)


def reference_hamiltonian_gradients(model, x, y, theta_k, rho, gamma):
    """grad_theta H~_l written from the definition with torch.func, stage by stage."""
    states, costates = reference_costates(model, x, y, theta_k)
    gradients = []
    for l, stage in enumerate(model):
        current = {k: v.detach() for k, v in stage.named_parameters()}
        if not current:
            gradients.append({})
            continue
        x_l, x_next = states[l], states[l + 1]
        p_l, p_next = costates[l], costates[l + 1]

        def h_tilde(theta, x_l=x_l, x_next=x_next, p_l=p_l, p_next=p_next, stage=stage):
            def coupling(state):
                return (p_next * functional_call(stage, theta, (state,))).sum()

            out = functional_call(stage, theta, (x_l,))
            grad_x = grad(coupling)(x_l)
            per_sample = (
                (p_next * out).flatten(1).sum(1)
                - rho / 2 * ((x_next - out) ** 2).flatten(1).sum(1)
                - rho / 2 * ((p_l - grad_x) ** 2).flatten(1).sum(1)
            )
            l2 = sum((w**2).sum() for k, w in theta.items() if w.dim() >= 2)
            return per_sample.sum() - gamma / 2 * l2

        gradients.append(grad(h_tilde)(current))
    return gradients


def test_emsa_augmented_hamiltonian_at_the_reference_scaling_by_hand():
    """A 2-layer tanh net and a batch of 3, every term written out with explicit tensors.

    The reference (msalib) takes p from the MEAN loss and sums H, rho * l2_loss(x gap) and
    rho * l2_loss(p gap) over the batch, with l2_loss(t) = |t|^2 / 2 and reg * l2_loss(w).
    """
    torch.manual_seed(0)
    w1, b1 = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    w2, b2 = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    x = torch.randn(3, 2, dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    rho, gamma = 0.03, 1e-3
    model = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh()), torch.nn.Linear(4, 3)
    ).double()
    with torch.no_grad():
        model[0][0].weight.copy_(w1), model[0][0].bias.copy_(b1)
        model[1].weight.copy_(w2), model[1].bias.copy_(b2)
    method = EMSA(model, EMSAHParams(rho=rho, gamma=gamma))
    _, records, _ = method.linearise(x, y)

    # By hand at theta_k: states, the mean loss's costates, p_l = W^T-chains.
    x1 = torch.tanh(x @ w1.T + b1)
    logits = x1 @ w2.T + b2
    p2 = -(torch.softmax(logits, dim=1) - F.one_hot(y, 3)) / 3  # -d(mean CE)/d logits
    p1 = p2 @ w2
    p0 = (p1 * (1 - x1**2)) @ w1
    # Move stage 0 to theta = theta_k + delta and evaluate H~_0 there by hand.
    v1, c1 = w1 + 0.3 * torch.randn_like(w1), b1 - 0.2
    with torch.no_grad():
        model[0][0].weight.copy_(v1), model[0][0].bias.copy_(c1)
    out = torch.tanh(x @ v1.T + c1)
    grad_x = (p1 * (1 - out**2)) @ v1  # d/dx <p1, f_0(x, theta)>, per sample
    by_hand = (
        (p1 * out).sum()
        - rho * 0.5 * ((x1 - out) ** 2).sum()
        - rho * 0.5 * ((p0 - grad_x) ** 2).sum()
        - gamma * 0.5 * (v1**2).sum()
    )
    assert torch.allclose(records[0].costates[1], p1, atol=1e-14)
    assert torch.allclose(records[0].costates[0], p0, atol=1e-14)
    assert float(method.augmented_hamiltonian(0, records).detach()) == pytest.approx(
        float(by_hand), rel=1e-12
    )
    # Stage 1 (no activation) at theta_k: the feasibility terms vanish there.
    plain = (p2 * logits).sum() - gamma * 0.5 * (w2**2).sum()
    assert float(method.augmented_hamiltonian(1, records).detach()) == pytest.approx(
        float(plain), rel=1e-12
    )


def test_emsa_hamiltonian_gradients_equal_autograd_of_its_definition():
    x, y = learnable_data(n=40, dtype=torch.float64)
    model = stage_model(seed=6, dtype=torch.float64)
    rho, gamma = 0.7, 0.05
    method = EMSA(model, EMSAHParams(rho=rho, gamma=gamma), chunk_size=15)
    theta_k = [{k: v.detach().clone() for k, v in s.named_parameters()} for s in model]
    _, records, first = method.linearise(x, y)
    with torch.no_grad():  # move away from theta_k: the feasibility terms come alive
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    mine = method.hamiltonian_gradients(records)
    expected = reference_hamiltonian_gradients(model, x, y, theta_k, rho, gamma)
    flat = [g for stage in expected for g in stage.values()]
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(mine, flat, strict=True))
    plain = reference_hamiltonian_gradients(model, x, y, theta_k, 0.0, gamma)
    assert not all(
        torch.allclose(a, b, atol=1e-6)
        for a, b in zip(mine, [g for s in plain for g in s.values()], strict=True)
    ), "the feasibility terms must change the gradient away from theta_k"
    # At theta_k the first ascent direction is -dLoss/dtheta - gamma theta.
    with torch.no_grad():
        for p, old in zip(
            model.parameters(), [v for s in theta_k for v in s.values()], strict=True
        ):
            p.copy_(old)
    loss = F.cross_entropy(model(x), y)
    descent = torch.autograd.grad(loss, list(model.parameters()))
    for a, g, p in zip(first, descent, model.parameters(), strict=True):
        assert torch.allclose(a, -g - (gamma * p.detach() if p.dim() >= 2 else 0), atol=1e-12)


def test_emsa_defaults_are_the_references_and_lbfgs_raises_every_stages_hamiltonian():
    hp = EMSAHParams()
    assert (hp.rho, hp.inner_solver, hp.inner_steps, hp.gamma) == (0.03, "lbfgs", 10, 1e-3)
    x, y = learnable_data(n=30, dtype=torch.float64)
    model = stage_model(seed=6, dtype=torch.float64)
    method = EMSA(model, EMSAHParams(rho=0.5))
    _, records, _ = method.linearise(x, y)
    before = [float(method.augmented_hamiltonian(l, records)) for l in method.param_stages]
    stats = method.step(x, y)
    after = [float(method.augmented_hamiltonian(l, records)) for l in method.param_stages]
    assert all(b > a for a, b in zip(before, after, strict=True))
    assert all(method.evaluations[l] >= 1 for l in method.param_stages)
    assert stats.forward_passes > 2  # the evaluations are counted


def hand_written_msa(model, x, y, lr, beta, gamma, inner_steps):
    """Plain MSA: states and costates at theta_k, proximal ascent on <p, f> - gamma/2|theta|^2."""
    reg = L0L2(beta=beta)
    stages = list(model)
    states = [x]
    for stage in stages:
        states.append(stage(states[-1]))
    costates = torch.autograd.grad(-F.cross_entropy(states[-1], y), states[1:])
    states = [s.detach() for s in states]
    for _ in range(inner_steps):
        for l, stage in enumerate(stages):
            params = list(stage.parameters())
            if not params:
                continue
            h = (costates[l] * stage(states[l])).sum()
            grads = torch.autograd.grad(h, params)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    ascent = g - gamma * p if p.dim() >= 2 else g
                    p.copy_(reg.prox_param(p, p + lr * ascent, lr))


def test_emsa_with_rho_zero_is_plain_msa_and_rho_matters_only_after_the_first_inner_step():
    x, y = learnable_data(n=48, dtype=torch.float64)
    hp = {"inner_lr": 0.4, "beta": 2e-3, "gamma": 0.01}

    def run(rho, inner_steps):
        model = stage_model(seed=8, dtype=torch.float64)
        EMSAL0(model, EMSAL0HParams(rho=rho, inner_steps=inner_steps, **hp)).step(x, y)
        return list(model.parameters())

    expected = stage_model(seed=8, dtype=torch.float64)
    hand_written_msa(expected, x, y, hp["inner_lr"], hp["beta"], hp["gamma"], inner_steps=3)
    same = lambda a, b: all(torch.allclose(p, q, atol=1e-12) for p, q in zip(a, b, strict=True))  # noqa: E731
    assert same(run(0.0, 3), expected.parameters())
    one_step = stage_model(seed=8, dtype=torch.float64)
    hand_written_msa(one_step, x, y, hp["inner_lr"], hp["beta"], hp["gamma"], inner_steps=1)
    assert same(run(5.0, 1), one_step.parameters())  # feasibility gradients vanish at theta_k
    assert not same(run(0.0, 3), run(5.0, 3))
    assert any(bool((p == 0).any()) for p in run(0.0, 3) if p.dim() >= 2)  # the L0 prox acts


def test_emsa_has_no_l0_term_and_the_hybrid_is_a_labelled_variant():
    x, y = learnable_data(n=48)
    method = optimizers.make("emsa", stage_model(seed=8), inner_steps=2)
    for _ in range(5):
        method.step(x, y)
    assert optimizers.sparsity(method.model) == 0.0
    assert optimizers.registry.algorithm("emsa-l0-graph") == "emsa-l0"
    assert optimizers.registry.algorithm("emsa-graph") == "emsa"
    assert "our variant" in optimizers.registry.variant_label("emsa-l0")
    assert optimizers.registry.variant_label("emsa") == ""
    assert optimizers.registry.description("emsa-l0").startswith("[our variant")


def test_the_reports_methods_table_names_labelled_variants_with_their_label():
    import pandas as pd

    from bench.report.markdown import methods_section

    runs = pd.DataFrame(
        {
            "method": ["bsqh-par", "emsa-l0", "bsqh-mb"],
            "optimizer": ["bsqh-parallel", "emsa-l0-graph", "bsqh-fast"],
            "mode": ["minibatch"] * 3,
            "batch_size": [128] * 3,
        }
    )
    text = "\n".join(methods_section(runs))
    assert "| bsqh-par | bsqh-parallel (ablation: proximal gradient with adaptive step) |" in text
    assert "| emsa-l0 | emsa-l0-graph (our variant: E-MSA with the shared L0 prox) |" in text
    assert "| bsqh-mb | bsqh-fast |" in text  # an execution variant is the method itself


def test_emsa_full_batch_objective_decreases_and_chunks_equal_one_pass():
    x, y = learnable_data(n=60, dtype=torch.float64)
    results, curves = [], []
    for chunk_size in [None, 25]:
        model = stage_model(seed=9, dtype=torch.float64)
        method = optimizers.make(
            "emsa-l0", model, rho=0.03, inner_steps=3, inner_lr=0.4, beta=1e-4, gamma=1e-3,
            chunk_size=chunk_size,
        )  # fmt: skip
        curve = [float(method.objective(x, y))]
        for _ in range(20):
            curve.append(float(method.step(x, y).objective))
        curves.append(curve)
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(*results, strict=True))
    curve = curves[0]
    assert curve[-1] < 0.7 * curve[0]
    assert sum(b > a for a, b in itertools.pairwise(curve)) <= 2  # mostly monotone at this step


# --------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peer_steps_never_synchronise_the_host():
    x, y = (t.cuda() for t in learnable_data(n=96))
    for name in PEERS:
        method = optimizers.make(
            name, stage_model(seed=3).cuda(), post_step_loss=False, **NO_HOST_READS[name]
        )
        for _ in range(3):  # warm: lazy initialisation may synchronise
            method.step(x, y)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(5):
                method.step(x, y)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
