"""Every registered method: the shared contract, learning, proximal steps and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import optimizers
from optimizers import BSQH, L0L2, L1L2, StepStats
from tests.helpers import learnable_data, stage_model

REQUIRED = {"bsqh", "sgd", "adam", "prox-sgd-l0", "prox-sgd-l1", "prox-adam-l0"}
LEARNING_RATES = {
    "sgd": 0.5,
    "prox-sgd-l0": 0.5,
    "prox-sgd-l1": 0.5,
    "adam": 0.02,
    "prox-adam-l0": 0.02,
}


def test_registry_lists_the_required_methods():
    assert set(optimizers.available()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_method_lowers_its_objective_within_50_steps(name):
    model = stage_model(seed=7)
    x, y = learnable_data(n=128)
    hparams = {"beta": 1e-4, "gamma": 1e-4}
    if name in LEARNING_RATES:
        hparams["lr"] = LEARNING_RATES[name]
    else:
        hparams["eps"] = 0.5
    method = optimizers.make(name, model, **hparams)
    first = method.step(x, y)
    assert isinstance(first, StepStats)
    assert first.forward_passes >= 1 and first.backward_passes >= 1
    start = method.objective(x, y)
    for _ in range(50):
        stats = method.step(x, y)
    assert stats.finite
    end = float(method.objective(x, y))
    assert end < 0.8 * float(start)
    assert float(stats.resolved().objective) == pytest.approx(end, rel=1e-5)


def test_prox_sgd_is_a_gradient_step_followed_by_the_shared_prox():
    x, y = learnable_data()
    for name, reg in [
        ("prox-sgd-l0", L0L2(beta=0.02, gamma=0.1)),
        ("prox-sgd-l1", L1L2(beta=0.02, gamma=0.1)),
    ]:
        model = stage_model(seed=1)
        lr = 0.3
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
        expected = [
            reg.prox_param(p, p.detach() - lr * g, lr)
            for p, g in zip(model.parameters(), grads, strict=True)
        ]
        optimizers.make(name, model, lr=lr, beta=reg.beta, gamma=reg.gamma).step(x, y)
        for p, e in zip(model.parameters(), expected, strict=True):
            assert torch.allclose(p, e, atol=1e-6)


def test_sgd_and_adam_report_r_but_do_not_shrink_it():
    x, y = learnable_data()
    for name in ["sgd", "adam"]:
        plain, penalised = stage_model(seed=1), stage_model(seed=1)
        optimizers.make(name, plain, lr=0.1).step(x, y)
        stats = optimizers.make(name, penalised, lr=0.1, beta=0.5, gamma=0.1).step(x, y)
        assert all(
            torch.equal(a, b)
            for a, b in zip(plain.parameters(), penalised.parameters(), strict=True)
        )
        reg = L0L2(beta=0.5, gamma=0.1).value(list(penalised.parameters()))
        assert float(stats.objective) == pytest.approx(float(stats.loss) + float(reg), rel=1e-6)


def test_pre_step_loss_mode_saves_a_forward_pass():
    x, y = learnable_data()
    model = stage_model()
    before = float(F.cross_entropy(model(x), y).detach())
    stats = optimizers.make("sgd", model, post_step_loss=False).step(x, y)
    assert not stats.after_step and stats.forward_passes == 1
    assert float(stats.loss) == pytest.approx(before, rel=1e-6)


def test_chunked_gradient_methods_equal_one_pass():
    x, y = learnable_data(n=100, dtype=torch.float64)
    results = []
    for chunk_size in [None, 30]:
        model = stage_model(seed=2, dtype=torch.float64)
        method = optimizers.make("prox-adam-l0", model, lr=0.01, beta=1e-3, chunk_size=chunk_size)
        for _ in range(5):
            method.step(x, y)
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(*results, strict=True))


BAD_BSQH = [
    ({"eps": 0.0}, "eps must be > 0, got 0.0"),
    ({"eps": -1.0}, "eps must be > 0"),
    ({"sigma": 1.0}, "sigma must be > 1.0, got 1.0"),
    ({"zeta": 1.0}, "zeta must lie in the open interval (0.0, 1.0), got 1.0"),
    ({"zeta": 0.0}, "zeta must lie in the open interval"),
    ({"eta": -0.1}, "eta must be >= 0, got -0.1"),
    ({"beta": -1.0}, "beta must be >= 0, got -1.0"),
    ({"gamma": -1e-3}, "gamma must be >= 0"),
    ({"inner_steps": 0}, "inner_steps must be an integer >= 1, got 0"),
    ({"inner_steps": 1.5}, "inner_steps must be an integer >= 1, got 1.5"),
    ({"sweep": "diagonal"}, "sweep must be one of ['sequential', 'parallel'], got 'diagonal'"),
    ({"penalty": "l3"}, "penalty must be one of ['l0', 'l1'], got 'l3'"),
    ({"max_retries": -1}, "max_retries must be an integer >= 0"),
    ({"eps_min": 2.0, "eps_max": 1.0}, "eps_min must be <= eps_max"),
    ({"eps": float("nan")}, "eps must be finite"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_BSQH)
def test_bad_bsqh_hyperparameters_raise_value_error(kwargs, message):
    with pytest.raises(ValueError) as error:
        BSQH(stage_model(), **kwargs)
    assert message in str(error.value)


@pytest.mark.parametrize("name", ["sgd", "adam", "prox-sgd-l0", "prox-sgd-l1", "prox-adam-l0"])
@pytest.mark.parametrize("lr", [0.0, -0.5])
def test_non_positive_learning_rate_raises(name, lr):
    with pytest.raises(ValueError, match=rf"lr must be > 0, got {lr}"):
        optimizers.make(name, stage_model(), lr=lr)


def test_model_that_is_not_sequential_raises():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(ValueError, match=r"model must be a torch\.nn\.Sequential.*got Net"):
        optimizers.make("bsqh", Net())


def test_unknown_method_and_hyperparameter_name_the_alternatives():
    with pytest.raises(ValueError, match=r"unknown optimizer 'lbfgs'; available: adam, .*bsqh"):
        optimizers.make("lbfgs", stage_model())
    with pytest.raises(
        ValueError,
        match=r"unknown hyperparameter\(s\) \['momentum'\] for optimizer 'bsqh'; allowed: .*eps",
    ):
        optimizers.make("bsqh", stage_model(), momentum=0.9)


def test_bad_batches_raise():
    method = optimizers.make("bsqh", stage_model())
    x, y = learnable_data()
    with pytest.raises(ValueError, match="same number of samples, got 96 and 95"):
        method.step(x, y[:-1])
    with pytest.raises(ValueError, match="batch is empty"):
        method.step(x[:0], y[:0])
