"""Every registered method: the shared contract, learning, proximal steps and bad input."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import optimizers
from optimizers import L0L2, L1L2, FastBSQHHParams, HParamSpec, StepStats
from optimizers.registry import entry
from tests.helpers import learnable_data, stage_model

REQUIRED = {"bsqh", "sgd", "adam", "prox-sgd-l0", "prox-sgd-l1", "prox-adam-l0"}
METHODS = optimizers.available()


def settings(name: str) -> dict[str, Any]:
    """The hyperparameters the method declares, beside itself, for the tests' tiny problem."""
    return dict(entry(name).cls.test_hparams)


def bad_value(spec: HParamSpec) -> Any:
    """A value the field's declared bounds, type or choices reject."""
    if spec.choices is not None:
        return "no-such-choice"
    if spec.kind is bool:
        return "yes"
    if spec.kind is str:
        return 3
    if spec.low is not None:
        return spec.low if spec.low_open else spec.low - 1
    if spec.high is not None:
        return spec.high if spec.high_open else spec.high + 1
    return 1.5 if spec.kind is int else float("nan")


FIELDS = [(name, field) for name in METHODS for field in optimizers.hparams_class(name).names()]


def test_registry_lists_the_required_methods_and_their_graphed_variants():
    names = set(optimizers.available())
    assert names >= REQUIRED | {"bsqh-fast"}
    assert names >= {f"{n}-graph" for n in REQUIRED - {"bsqh"}}


# --------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("name", METHODS)
def test_every_method_declares_its_test_settings_beside_itself(name):
    cls = entry(name).cls
    assert isinstance(getattr(cls, "test_hparams", None), dict), (
        f"{cls.__name__} ({name}) must declare test_hparams: hyperparameters under which it "
        "learns the tests' tiny problem"
    )
    optimizers.hparams_class(name).from_dict(settings(name))  # valid names and values


@pytest.mark.parametrize("name", METHODS)
def test_every_method_steps_and_lowers_its_objective_within_50_steps(name):
    model = stage_model(seed=7)
    x, y = learnable_data(n=128)
    method = optimizers.make(name, model, **settings(name))
    assert method.hp == optimizers.hparams_class(name).from_dict(settings(name))
    first = method.step(x, y)
    assert isinstance(first, StepStats)
    done = first.resolved()
    assert all(math.isfinite(v) for v in (done.loss, done.objective, done.tau))
    assert done.eps is None or done.eps > 0
    assert done.retries >= 0 and isinstance(done.accepted, bool)
    assert first.forward_passes >= 1 and first.backward_passes >= 1
    start = method.objective(x, y)
    for _ in range(50):
        stats = method.step(x, y)
    assert stats.finite
    end = float(method.objective(x, y))
    assert end < 0.8 * float(start)
    assert float(stats.resolved().objective) == pytest.approx(end, rel=1e-5)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_rejects_unknown_hyperparameters_naming_them(name):
    with pytest.raises(ValueError) as error:
        optimizers.make(name, stage_model(), no_such_knob=1)
    message = str(error.value)
    assert "no_such_knob" in message and repr(name) in message
    for field in optimizers.hparams_class(name).names():  # and what is allowed
        assert field in message
    with pytest.raises(ValueError, match=rf"\['no_such_knob'\] for optimizer '{name}'"):
        optimizers.effective_hparams(name, no_such_knob=1)


@pytest.mark.parametrize(("name", "field"), FIELDS)
def test_every_hyperparameter_rejects_a_bad_value_naming_field_and_value(name, field):
    _, spec = optimizers.hparams_class(name).specs()[field]
    bad = bad_value(spec)
    with pytest.raises(ValueError) as error:
        optimizers.make(name, stage_model(), **{field: bad})
    message = str(error.value)
    assert message.startswith(f"{field} must be {spec.allowed()}")
    assert message.endswith(f"got {bad!r}")


@pytest.mark.parametrize("name", METHODS)
def test_effective_hparams_list_every_field_with_its_value(name):
    fields = optimizers.hparams_class(name).names()
    defaults = optimizers.effective_hparams(name)
    assert list(defaults) == fields
    assert defaults == optimizers.hyperparameters(name)
    given = settings(name)
    effective = optimizers.effective_hparams(name, **given)
    assert list(effective) == fields
    assert effective == {**defaults, **given}
    method = optimizers.make(name, stage_model(), **given)
    assert method.hp.as_dict() == effective


@pytest.mark.parametrize("name", METHODS)
def test_runtime_options_are_kept_apart_from_hyperparameters(name):
    runtime = set(optimizers.runtime_options(name))
    assert {"chunk_size", "loss_fn"} <= runtime
    assert not runtime & set(optimizers.hparams_class(name).names())
    assert ("cuda_graph" in runtime) == (name.endswith("-graph") or name == "bsqh-fast")


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


BAD_HPARAMS = [
    ("bsqh", {"eps": 0.0}, "eps must be a finite number > 0, got 0.0"),
    ("bsqh", {"eps": float("nan")}, "eps must be a finite number > 0, got nan"),
    ("bsqh", {"sigma": 1.0}, "sigma must be a finite number > 1, got 1.0"),
    ("bsqh", {"zeta": 1.0}, "zeta must be a finite number > 0 and < 1, got 1.0"),
    ("bsqh", {"inner_steps": 1.5}, "inner_steps must be an integer >= 1, got 1.5"),
    ("bsqh", {"sweep": "diagonal"}, "sweep must be one of ['sequential', 'parallel']"),
    ("bsqh", {"penalty": "l3"}, "penalty must be one of ['l0', 'l1'], got 'l3'"),
    ("bsqh", {"eps_min": 2.0, "eps_max": 1.0}, "eps_min must be <= eps_max, got eps_min=2.0"),
    ("bsqh-fast", {"max_retries": 3}, "max_retries must be 0 for bsqh-fast"),
    ("sgd", {"nesterov": True}, "nesterov=True needs momentum > 0, got momentum=0"),
    ("prox-adam-l0", {"beta2": 1.0}, "beta2 must be a finite number >= 0 and < 1, got 1.0"),
]


@pytest.mark.parametrize(("name", "kwargs", "message"), BAD_HPARAMS)
def test_bad_hyperparameters_and_cross_field_rules_raise_value_error(name, kwargs, message):
    with pytest.raises(ValueError) as error:
        optimizers.make(name, stage_model(), **kwargs)
    assert message in str(error.value)


def test_hparams_are_frozen_and_the_fast_mode_applies_its_rules_to_any_bsqh_config():
    hp = optimizers.BSQHHParams(eps=0.3)
    with pytest.raises(AttributeError):
        hp.eps = 1.0
    assert optimizers.hyperparameters("bsqh")["max_retries"] > 0
    assert FastBSQHHParams().max_retries == 0
    fast = optimizers.FastBSQH(stage_model(), optimizers.BSQHHParams(eps=0.3, max_retries=0))
    assert isinstance(fast.hp, FastBSQHHParams) and fast.hp.eps == 0.3
    with pytest.raises(ValueError, match=r"max_retries must be 0 for bsqh-fast.*got 20"):
        optimizers.FastBSQH(stage_model(), optimizers.BSQHHParams())


def test_bad_runtime_options_raise():
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1, got 0"):
        optimizers.make("bsqh", stage_model(), chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1, got 0"):
        optimizers.make("sgd", stage_model(), chunk_size=0)


@pytest.mark.parametrize("name", ["sgd", "adam", "prox-sgd-l0", "prox-sgd-l1", "prox-adam-l0"])
@pytest.mark.parametrize("lr", [0.0, -0.5])
def test_non_positive_learning_rate_raises(name, lr):
    with pytest.raises(ValueError, match=rf"lr must be a finite number > 0, got {lr}"):
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
