"""Tests for bench.training.models: the stage structure bSQH relies on, option checking, MACs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.training import models
from bench.training.models import (
    available_models,
    build_model,
    dense_macs_per_sample,
    nonzero_macs_per_sample,
    register_model,
)

# (model, in_channels, image_size) combinations each model is meant to handle.
INTENDED_SHAPES = [
    ("lenet5", 1, 28),
    ("lenet5", 3, 32),
    ("lenet5", 1, 12),
    ("cnn-small", 1, 28),
    ("cnn-small", 1, 8),
    ("cnn-small", 1, 4),
    ("cnn-cifar", 3, 32),
    ("cnn-cifar", 1, 8),
    ("cnn-tiny", 1, 8),
    ("cnn-tiny", 1, 4),
    ("cnn-tiny", 3, 28),
]

# Every stage must look like one of these (activation written as "act").
KNOWN_STAGE_PATTERNS = {
    ("Conv2d", "act", "AvgPool2x2"),
    ("Flatten", "Linear", "act"),
    ("Linear", "act"),
    ("Flatten", "Linear"),
    ("Linear",),
}


def _pattern(stage: nn.Module) -> tuple[str, ...]:
    return tuple(
        "act" if isinstance(m, nn.Tanh | nn.ReLU) else type(m).__name__ for m in stage.children()
    )


def test_registry_lists_the_four_models() -> None:
    assert {"lenet5", "cnn-small", "cnn-cifar", "cnn-tiny"} <= set(available_models())
    assert available_models() == sorted(available_models())


@pytest.mark.parametrize(("name", "channels", "size"), INTENDED_SHAPES)
@pytest.mark.parametrize("num_classes", [10, 3])
def test_forward_shape_and_stage_structure(
    name: str, channels: int, size: int, num_classes: int
) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels, image_size=size, num_classes=num_classes)
    out = model(torch.randn(5, channels, size, size))
    assert out.shape == (5, num_classes)
    assert torch.isfinite(out).all()

    assert type(model) is nn.Sequential
    stages = list(model.children())
    assert len(stages) >= 3
    for stage in stages:
        assert type(stage) is nn.Sequential
        assert _pattern(stage) in KNOWN_STAGE_PATTERNS, _pattern(stage)
    # Only the last stage is the bare classifier; it maps to the classes without activation.
    assert isinstance(stages[-1][-1], nn.Linear)
    assert stages[-1][-1].out_features == num_classes
    assert all(_pattern(s)[-1] != "Linear" for s in stages[:-1])


@pytest.mark.parametrize("name", ["lenet5", "cnn-small", "cnn-cifar", "cnn-tiny"])
def test_no_batch_statistics_or_randomness(name: str) -> None:
    """BatchNorm/Dropout would break bSQH's chunked full-batch objective."""
    size = 32 if name in ("lenet5", "cnn-cifar") else 8
    model = build_model(name, in_channels=3, image_size=size, num_classes=10)
    for module in model.modules():
        assert not isinstance(
            module, nn.modules.batchnorm._NormBase | nn.modules.dropout._DropoutNd
        )
    # Same output in train and eval mode, and chunked evaluation equals the full batch.
    x = torch.randn(6, 3, size, size)
    with torch.no_grad():
        full = model.train()(x)
        assert torch.allclose(full, model.eval()(x))
        assert torch.allclose(full, torch.cat([model(x[:2]), model(x[2:])]), atol=1e-6)


@pytest.mark.parametrize("name", ["lenet5", "cnn-small", "cnn-cifar", "cnn-tiny"])
def test_activation_option(name: str) -> None:
    size = 32
    default = build_model(name, in_channels=1, image_size=size, num_classes=10)
    relu = build_model(name, in_channels=1, image_size=size, num_classes=10, act="relu")
    assert any(isinstance(m, nn.Tanh) for m in default.modules())
    assert not any(isinstance(m, nn.ReLU) for m in default.modules())
    assert any(isinstance(m, nn.ReLU) for m in relu.modules())
    assert not any(isinstance(m, nn.Tanh) for m in relu.modules())


@pytest.mark.parametrize("shape", [(3, 2, 28, 28), (2, 3, 10, 10), (2, 1, 7, 6), (1, 4, 5, 9)])
def test_avg_pool_2x2_matches_torch_avg_pool_values_and_gradients(shape: tuple) -> None:
    """The reshape form must be nn.AvgPool2d(2) exactly: same values, same gradients,
    odd trailing rows and columns dropped."""
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, ref = models.AvgPool2x2()(x), nn.AvgPool2d(2)(x_ref)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-15)
    weights = torch.randn_like(ref)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-15)


def test_avg_pool_2x2_supports_double_backward() -> None:
    """E-MSA differentiates a gradient through each stage (create_graph=True)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    (grad_x,) = torch.autograd.grad((models.AvgPool2x2()(x) * weights).sum(), x, create_graph=True)
    (grad_w,) = torch.autograd.grad((grad_x**2).sum(), weights)
    x_ref = x.detach().requires_grad_(True)
    (ref_x,) = torch.autograd.grad(
        (nn.AvgPool2d(2)(x_ref) * weights).sum(), x_ref, create_graph=True
    )
    (ref_w,) = torch.autograd.grad((ref_x**2).sum(), weights)
    torch.testing.assert_close(grad_w, ref_w, rtol=0, atol=1e-14)


def test_lenet5_classic_layout_and_min_size() -> None:
    model = build_model("lenet5", in_channels=1, image_size=28, num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (6, (5, 5), (2, 2)),
        (16, (5, 5), (0, 0)),
    ]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [
        (16 * 5 * 5, 120),
        (120, 84),
        (84, 10),
    ]
    assert any(isinstance(m, models.AvgPool2x2) for m in model.modules())
    with pytest.raises(ValueError, match=r"image_size >= 12.*image_size=11"):
        build_model("lenet5", in_channels=1, image_size=11, num_classes=10)


@pytest.mark.parametrize(
    ("name", "too_small"), [("cnn-small", 3), ("cnn-tiny", 3), ("cnn-cifar", 7)]
)
def test_too_small_images_are_rejected(name: str, too_small: int) -> None:
    with pytest.raises(ValueError, match="image_size"):
        build_model(name, in_channels=1, image_size=too_small, num_classes=10)


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ValueError, match="resnet9") as info:
        build_model("resnet9", in_channels=1, image_size=28, num_classes=10)
    for known in available_models():
        assert known in str(info.value)


def test_unknown_option_lists_allowed_options() -> None:
    with pytest.raises(ValueError, match=r"'width'.*allowed options: act"):
        build_model("cnn-small", in_channels=1, image_size=28, num_classes=10, width=2)


def test_bad_activation_lists_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"'foo'.*relu, tanh"):
        build_model("cnn-tiny", in_channels=1, image_size=8, num_classes=10, act="foo")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 0, "image_size": 28, "num_classes": 10},
        {"in_channels": 1, "image_size": 28, "num_classes": 1},
        {"in_channels": 1, "image_size": 28.0, "num_classes": 10},
        {"in_channels": True, "image_size": 28, "num_classes": 10},
    ],
)
def test_bad_shape_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be an integer"):
        build_model("cnn-small", **kwargs)


def test_register_model_takes_options_from_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "_MODELS", dict(models._MODELS))

    @register_model("test-linear")
    def _linear(*, in_channels: int, image_size: int, num_classes: int, hidden: int = 4):
        return nn.Sequential(
            nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, hidden), nn.Tanh()),
            nn.Sequential(nn.Linear(hidden, num_classes)),
        )

    assert "test-linear" in available_models()
    model = build_model("test-linear", in_channels=1, image_size=4, num_classes=3, hidden=7)
    assert model[0][1].out_features == 7
    with pytest.raises(ValueError, match=r"'act'.*allowed options: hidden"):
        build_model("test-linear", in_channels=1, image_size=4, num_classes=3, act="tanh")
    with pytest.raises(ValueError, match="already registered"):
        register_model("test-linear")(_linear)


def _tiny_model() -> nn.Sequential:
    """conv 1->2 @3x3 (no pad) on 6x6 -> 4x4, pool -> 2x2, linear 8 -> 3."""
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 2, kernel_size=3), nn.Tanh(), nn.AvgPool2d(2)),
        nn.Sequential(nn.Flatten(), nn.Linear(8, 3)),
    )


def test_macs_hand_computed() -> None:
    model = _tiny_model()
    # conv: 2*1*3*3 = 18 weights at 4*4 = 16 output positions; linear: 8*3 = 24.
    dense = 18 * 16 + 24
    assert dense_macs_per_sample(model, (1, 6, 6)) == dense == 312
    assert nonzero_macs_per_sample(model, (1, 6, 6)) == dense

    with torch.no_grad():
        model[0][0].weight[0].zero_()  # 9 conv weights
    assert nonzero_macs_per_sample(model, (1, 6, 6)) == 9 * 16 + 24
    with torch.no_grad():
        model[1][1].weight[0, :5].zero_()  # 5 linear weights
    assert nonzero_macs_per_sample(model, (1, 6, 6)) == 9 * 16 + 19
    assert dense_macs_per_sample(model, (1, 6, 6)) == dense  # dense count ignores zeros
    # Biases are not weights: zeroing them changes nothing.
    with torch.no_grad():
        model[0][0].bias.zero_()
    assert nonzero_macs_per_sample(model, (1, 6, 6)) == 9 * 16 + 19


def test_lenet5_dense_macs_match_the_classic_count() -> None:
    model = build_model("lenet5", in_channels=1, image_size=28, num_classes=10)
    expected = 150 * 28 * 28 + 2400 * 10 * 10 + 400 * 120 + 120 * 84 + 84 * 10
    assert dense_macs_per_sample(model, (1, 28, 28)) == expected == 416_520
    # Dense weights from PyTorch's init are nonzero almost surely.
    assert nonzero_macs_per_sample(model, (1, 28, 28)) == expected


def test_macs_leave_no_hooks_behind() -> None:
    model = _tiny_model()
    nonzero_macs_per_sample(model, (1, 6, 6))
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="input_shape"):
        nonzero_macs_per_sample(model, (6, 6))  # type: ignore[arg-type]
