"""Every method as a library: keyword hyperparameters and state_dict round trips."""

from __future__ import annotations

import io
from dataclasses import asdict
from typing import Any

import pytest
import torch

import optimizers
from optimizers.registry import entry
from tests.helpers import learnable_data, stage_model

METHODS = optimizers.available()
BATCH = 16


def build(name: str, seed: int) -> tuple[torch.nn.Module, optimizers.Method]:
    model = stage_model(seed)
    hp = dict(entry(name).cls.test_hparams)
    if name.startswith("gmp"):  # prune inside the first leg, so the masks are saved
        hp.update(end_step=12, frequency=3)
    return model, entry(name).cls(model, **hp)


def batches(steps: int, offset: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Distinct mini-batch tensors per step, as a data loader hands them out."""
    x, y = learnable_data(96)
    out = []
    for t in range(offset, offset + steps):
        start = (t * BATCH) % 96
        out.append((x[start : start + BATCH].clone(), y[start : start + BATCH].clone()))
    return out


def run(method: optimizers.Method, steps: int, offset: int) -> list[dict[str, Any]]:
    return [asdict(method.step(x, y).resolved()) for x, y in batches(steps, offset)]


def saved(obj: Any) -> Any:
    """Through torch.save and torch.load, as a checkpoint file goes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("name", METHODS)
def test_state_dict_round_trip_continues_bit_identically(name):
    torch.manual_seed(5)
    model, method = build(name, seed=0)
    run(method, 7, 0)
    checkpoint = saved({"model": model.state_dict(), "method": method.state_dict()})
    straight = run(method, 6, 7)

    fresh_model, fresh = build(name, seed=3)  # another initialisation: all comes from the file
    torch.manual_seed(99)  # the global generator moved on: a sampling method restores its own
    fresh_model.load_state_dict(checkpoint["model"])
    fresh.load_state_dict(checkpoint["method"])
    resumed = run(fresh, 6, 7)

    assert resumed == straight
    for a, b in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_state_holds_what_each_method_carries():
    _, bsqh = build("bsqh", 0)
    assert set(bsqh.state_dict()["tensors"]) == {"eps", "reg"}
    _, adam = build("adam", 0)
    run(adam, 1, 0)
    assert adam.state_dict()["optimizer"]["state"][0]["exp_avg"].shape == (3, 1, 3, 3)
    _, l0 = build("l0-hc", 0)
    state = l0.state_dict()
    assert "rng" in state and "log_alpha.0" in state["tensors"]
    _, gmp = build("gmp", 0)
    run(gmp, 4, 0)
    assert gmp.state_dict()["counters"] == {"steps": 4}
    assert "masks.0" in gmp.state_dict()["tensors"]


def test_loading_another_method_or_other_settings_names_the_difference():
    model, bsqh = build("bsqh", 0)
    _, sgd = build("sgd", 0)
    with pytest.raises(ValueError, match="'sgd' cannot be loaded into 'bsqh'"):
        bsqh.load_state_dict(sgd.state_dict())
    other = optimizers.BSQH(model, eps=0.25, beta=1e-4, gamma=1e-4)
    with pytest.raises(ValueError, match=r"eps=0\.5 saved, 0\.25 here"):
        other.load_state_dict(bsqh.state_dict())
    with pytest.raises(ValueError, match="not a method state"):
        bsqh.load_state_dict({"eps": 1.0})


@pytest.mark.parametrize("name", METHODS)
def test_hyperparameters_are_keywords_of_every_constructor(name):
    found = entry(name)
    field, (default, spec) = next(iter(found.hparams.specs().items()))
    value = spec.check(field, default)
    method = found.cls(stage_model(0), **{field: value})
    assert getattr(method.hp, field) == value
    assert method.hp == found.hparams(**{field: value})


def test_keywords_work_like_torch_optim_and_errors_name_the_alternatives():
    model = stage_model(0)
    assert optimizers.BSQH(model, eps=1.0).hp.eps == 1.0
    assert optimizers.FastBSQH(model, eps=2.0, cuda_graph=False).hp.eps == 2.0
    with pytest.raises(ValueError, match=r"either as a BSQHHParams or as keywords.*eps"):
        optimizers.BSQH(model, optimizers.BSQHHParams(), eps=1.0)
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['epsilon'\].*allowed: "):
        optimizers.BSQH(model, epsilon=1.0)
    with pytest.raises(ValueError, match="eps must be"):
        optimizers.BSQH(model, eps=-1.0)
