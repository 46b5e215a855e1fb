"""Registry of CNNs written as ``nn.Sequential`` of stages, plus MAC counting.

Why stages: the bSQH optimizer (arXiv 2504.11647) treats the network as a discrete
optimal-control system, ``x[l+1] = f_l(x[l], u_l)``. It sweeps over the children of the
top-level ``nn.Sequential`` one at a time, so every model here is
``nn.Sequential(stage0, stage1, ...)`` and every stage is itself a small ``nn.Sequential``
(``Conv2d -> act -> AvgPool2x2``, ``Flatten -> Linear -> act``, ``Linear -> act`` or a
final ``Linear``). Baselines (SGD, Adam, prox-SGD) train exactly the same modules.

Why no BatchNorm or Dropout: bSQH evaluates the full-batch objective in chunks and must
get the same number whichever way the batch is cut, and it compares the objective of two
parameter sets on the same batch. Batch statistics (BatchNorm) make a sample's output
depend on its chunk-mates, and Dropout makes the objective random; either breaks that
equivalence and the sufficient-decrease test. So no model here uses them.

Why tanh by default: the Pontryagin-maximum-principle view assumes smooth stage maps;
ReLU is offered (``act="relu"``) as an ablation.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.references import find

__all__ = [
    "ACTIVATIONS",
    "available_models",
    "build_model",
    "check_model_options",
    "dense_macs_per_sample",
    "nonzero_macs_per_sample",
    "register_model",
]

#: Activation names accepted by every builder's ``act`` option.
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}

_REQUIRED_ARGS = ("in_channels", "image_size", "num_classes")

# Layers whose weights are counted by the MAC helpers (transposed convolutions are not:
# their cost scales with input, not output, positions, and no model here uses them).
_COUNTED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

ModelBuilder = Callable[..., nn.Sequential]


@dataclass(frozen=True)
class _ModelSpec:
    """A registered builder and the options it accepts (read from its signature)."""

    name: str
    builder: ModelBuilder
    options: tuple[str, ...]
    defaults: dict[str, object]


_MODELS: dict[str, _ModelSpec] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a builder under ``name`` so suites can refer to models by string.

    The builder must accept the keyword arguments ``in_channels``, ``image_size`` and
    ``num_classes``; every other keyword parameter it declares becomes an allowed option
    of :func:`build_model`, so option checking never drifts from the builder's code.
    Options are checked without building anything (suites do it on load): by the
    shared check in :data:`OPTION_CHECKS` for its name, else by the type of the
    parameter's default.
    """

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        params = inspect.signature(builder).parameters
        missing = [arg for arg in _REQUIRED_ARGS if arg not in params]
        if missing:
            raise TypeError(f"model builder {name!r} lacks the parameters {missing}")
        options = tuple(p for p in params if p not in _REQUIRED_ARGS)
        defaults = {p: params[p].default for p in options}
        _MODELS[name] = _ModelSpec(name=name, builder=builder, options=options, defaults=defaults)
        return builder

    return decorator


#: Entry-point group where installed packages declare model builders by name.
MODEL_ENTRY_POINTS = "pmp_bench.models"


def ensure_model(name: str) -> None:
    """Make ``name`` buildable: registered, or a ``"package.module:function"`` builder
    or an entry point of :data:`MODEL_ENTRY_POINTS`, imported and registered now.

    Raises ValueError naming the model and the problem (unknown name, module not
    importable, attribute missing, not callable, a signature without ``in_channels``,
    ``image_size`` and ``num_classes``, a return annotation that is no ``nn.Sequential``).
    """
    if name in _MODELS:
        return
    builder = find(
        name, what="model builder", group=MODEL_ENTRY_POINTS, kind="model",
        known=available_models(),
    )  # fmt: skip
    returns = _return_annotation(builder)
    if isinstance(returns, type) and not issubclass(returns, nn.Sequential):
        raise ValueError(
            f"model builder {name!r} is annotated to return {returns.__name__}; it must "
            "return a torch.nn.Sequential whose children are the stages"
        )
    try:
        register_model(name)(_returning_sequential(name, builder))
    except TypeError as error:
        raise ValueError(f"{error} (it is called with them as keywords)") from None


def _return_annotation(function: Callable[..., object]) -> object:
    try:
        return inspect.get_annotations(function, eval_str=True).get("return")
    except Exception:  # an annotation that cannot be evaluated: checked when it builds
        return None


def _returning_sequential(name: str, builder: ModelBuilder) -> ModelBuilder:
    """``builder`` that fails clearly when it returns anything but an ``nn.Sequential``."""

    @functools.wraps(builder)
    def build(**kwargs: Any) -> nn.Sequential:
        model = builder(**kwargs)
        if not isinstance(model, nn.Sequential):
            raise ValueError(
                f"model builder {name!r} returned a {type(model).__name__}; it must return "
                "a torch.nn.Sequential whose children are the stages"
            )
        return model

    return build


def available_models() -> list[str]:
    """Names of all registered models, sorted, for CLIs, suites and error messages."""
    return sorted(_MODELS)


def model_description(name: str) -> str:
    """The first line of the builder's docstring (``bench list``)."""
    ensure_model(name)
    doc = (_MODELS[name].builder.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def build_model(
    name: str, *, in_channels: int, image_size: int, num_classes: int, **options: object
) -> nn.Sequential:
    """Build the registered model ``name`` for square ``image_size`` inputs.

    Raises ``ValueError`` (naming the offending item and listing the alternatives) for an
    unknown model, an unknown option or a bad option value, so that a typo in a suite file
    fails at once instead of silently training a different network.
    """
    spec = check_model_options(name, options)
    _check_int("in_channels", in_channels, minimum=1)
    _check_int("image_size", image_size, minimum=1)
    _check_int("num_classes", num_classes, minimum=2)
    return spec.builder(
        in_channels=in_channels, image_size=image_size, num_classes=num_classes, **options
    )


def check_model_options(name: str, options: Mapping[str, object]) -> _ModelSpec:
    """Check ``options`` of model ``name`` without building it (suites call this on load).

    Raises ``ValueError`` for an unknown model, an option the builder does not declare
    (listing the allowed ones) or a bad value (naming it and the allowed values).
    """
    ensure_model(name)
    spec = _MODELS[name]
    for option, value in options.items():
        if option not in spec.options:
            allowed = ", ".join(spec.options) or "(none)"
            raise ValueError(
                f"unknown option {option!r} for model {name!r}; allowed options: {allowed}"
            )
        check = OPTION_CHECKS.get(option)
        if check is not None:
            check(value)
        else:
            _check_like_default(name, option, value, spec.defaults[option])
    return spec


def _check_like_default(model: str, option: str, value: object, default: object) -> None:
    """An option without a shared check must have its default's type (ints pass as floats)."""
    if default is inspect.Parameter.empty or default is None:
        return
    kind = (int, float) if type(default) is float else type(default)
    if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, kind):
        raise ValueError(
            f"option {option}={value!r} of model {model!r} must be of type "
            f"{type(default).__name__} like its default {default!r}"
        )


def _check_int(what: str, value: object, *, minimum: int) -> None:
    """Reject non-integers (bools included) and values below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _activation(act: object) -> nn.Module:
    """Instantiate the activation called ``act`` or say which names exist."""
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation act={act!r}; allowed values: {', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[act]()


#: Value checks of the options builders may declare, by option name.
OPTION_CHECKS: dict[str, Callable[[object], object]] = {"act": _activation}


def _check_min_size(name: str, image_size: int, minimum: int) -> None:
    """Fail early with a clear message where the pooling would shrink maps to nothing."""
    if image_size < minimum:
        raise ValueError(
            f"model {name!r} needs image_size >= {minimum}, got image_size={image_size}"
        )


def _conv_stage(c_in: int, c_out: int, kernel: int, padding: int, act: str) -> nn.Sequential:
    """``Conv2d -> act -> AvgPool2x2``: the convolutional stage used by every model.

    Average (not max) pooling keeps the stage map smooth almost everywhere, in line with
    the PMP assumptions.
    """
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=kernel, padding=padding),
        _activation(act),
        AvgPool2x2(),
    )


class _AvgPool2x2Function(torch.autograd.Function):
    """``avg_pool2d(x, 2)`` forward; its backward a broadcast written in differentiable ops.

    Differentiable ops in the backward keep double backward working (E-MSA differentiates
    through a stage with ``create_graph=True``).
    """

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return nn.functional.avg_pool2d(x, 2)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        ctx.input_size = inputs[0].shape[-2:]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n, c, h2, w2 = grad.shape
        # Scaling the broadcast view writes a contiguous (n, c, h2, 2, w2, 2) result, so
        # the reshape is a view: one kernel (scaling first, then copying, was two).
        spread = grad[:, :, :, None, :, None].expand(n, c, h2, 2, w2, 2) * 0.25
        spread = spread.reshape(n, c, 2 * h2, 2 * w2)
        h, w = ctx.input_size
        if (h, w) != (2 * h2, 2 * w2):  # odd sizes: the dropped row/column gets no gradient
            spread = nn.functional.pad(spread, (0, w - 2 * w2, 0, h - 2 * h2))
        return spread


class AvgPool2x2(nn.Module):
    """2x2 average pooling with stride 2: ``nn.AvgPool2d(2)``'s values and gradients.

    Why not ``nn.AvgPool2d``: on CUDA its backward kernel took a fifth of a full-batch
    LeNet-5 step (3.4 ms per call over 60,000 Fashion-MNIST images on an H200). Here the
    forward is torch's own pooling kernel and the backward one broadcast at memory speed.
    Odd trailing rows and columns are dropped, as ``nn.AvgPool2d(2)`` drops them.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _AvgPool2x2Function.apply(x)
        return out


def _flat_features(stages: list[nn.Sequential], in_channels: int, image_size: int) -> int:
    """Feature count after ``stages`` for one image, found by a dummy forward pass.

    A dummy pass rather than arithmetic so the numbers cannot disagree with PyTorch's own
    rounding rules for padding and pooling.
    """
    with torch.no_grad():
        x = torch.zeros(1, in_channels, image_size, image_size)
        for stage in stages:
            x = stage(x)
    return int(x[0].numel())


def _head(
    convs: list[nn.Sequential],
    hidden: list[int],
    in_channels: int,
    image_size: int,
    num_classes: int,
    act: str,
) -> nn.Sequential:
    """Append ``Flatten -> Linear -> act`` / ``Linear -> act`` stages and the output layer.

    The first linear stage carries the ``Flatten`` so that every stage stays a single
    control step of the form state -> state.
    """
    stages = list(convs)
    features = _flat_features(convs, in_channels, image_size)
    for i, width in enumerate(hidden):
        layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
        layers += [nn.Linear(features, width), _activation(act)]
        stages.append(nn.Sequential(*layers))
        features = width
    final: list[nn.Module] = [] if hidden else [nn.Flatten()]
    final.append(nn.Linear(features, num_classes))
    stages.append(nn.Sequential(*final))
    return nn.Sequential(*stages)


@register_model("lenet5")
def lenet5(
    *, in_channels: int, image_size: int, num_classes: int, act: str = "tanh"
) -> nn.Sequential:
    """Classic LeNet-5 (LeCun et al. 1998): the reference small CNN for MNIST-like data.

    conv 6@5x5 pad 2, pool, conv 16@5x5, pool, linear 120, 84, ``num_classes``. The second
    convolution has no padding, so inputs below 12x12 would leave nothing to pool.
    """
    _activation(act)
    _check_min_size("lenet5", image_size, 12)
    convs = [
        _conv_stage(in_channels, 6, kernel=5, padding=2, act=act),
        _conv_stage(6, 16, kernel=5, padding=0, act=act),
    ]
    return _head(convs, [120, 84], in_channels, image_size, num_classes, act)


@register_model("cnn-small")
def cnn_small(
    *, in_channels: int, image_size: int, num_classes: int, act: str = "tanh"
) -> nn.Sequential:
    """Two conv stages (16, 32 channels) and a 64-unit hidden layer: quick MNIST-size runs.

    Padded 3x3 convolutions keep the spatial size, so any image_size >= 4 works.
    """
    _activation(act)
    _check_min_size("cnn-small", image_size, 4)
    convs = [
        _conv_stage(in_channels, 16, kernel=3, padding=1, act=act),
        _conv_stage(16, 32, kernel=3, padding=1, act=act),
    ]
    return _head(convs, [64], in_channels, image_size, num_classes, act)


@register_model("cnn-cifar")
def cnn_cifar(
    *, in_channels: int, image_size: int, num_classes: int, act: str = "tanh"
) -> nn.Sequential:
    """Three conv stages (32, 64, 128 channels) and a 256-unit hidden layer, for CIFAR-10.

    Deeper than ``cnn-small`` because 32x32 colour images need more capacity; three
    poolings need image_size >= 8.
    """
    _activation(act)
    _check_min_size("cnn-cifar", image_size, 8)
    convs = [
        _conv_stage(in_channels, 32, kernel=3, padding=1, act=act),
        _conv_stage(32, 64, kernel=3, padding=1, act=act),
        _conv_stage(64, 128, kernel=3, padding=1, act=act),
    ]
    return _head(convs, [256], in_channels, image_size, num_classes, act)


@register_model("cnn-tiny")
def cnn_tiny(
    *, in_channels: int, image_size: int, num_classes: int, act: str = "tanh"
) -> nn.Sequential:
    """Two small conv stages (8, 16 channels) and a linear classifier, for 8x8 digits.

    Small enough that full-batch bSQH runs on a CPU in seconds; any image_size >= 4.
    """
    _activation(act)
    _check_min_size("cnn-tiny", image_size, 4)
    convs = [
        _conv_stage(in_channels, 8, kernel=3, padding=1, act=act),
        _conv_stage(8, 16, kernel=3, padding=1, act=act),
    ]
    return _head(convs, [], in_channels, image_size, num_classes, act)


def nonzero_macs_per_sample(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates per sample in Conv and Linear layers, counting nonzero weights.

    This is the cost a sparse kernel would pay, the figure that makes L0 pruning worth
    having. A convolution costs ``nnz(weight) * (output positions)``, a linear layer
    ``nnz(weight)`` per input row. Biases, activations and pooling are not counted, and
    positions in the zero padding count like any other (the usual convention).
    """
    return _macs_per_sample(model, input_shape, nonzero_only=True)


def dense_macs_per_sample(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates per sample as for :func:`nonzero_macs_per_sample`, all weights.

    The dense figure is the denominator for reporting how much sparsity saves.
    """
    return _macs_per_sample(model, input_shape, nonzero_only=False)


def _macs_per_sample(
    model: nn.Module, input_shape: tuple[int, int, int], *, nonzero_only: bool
) -> int:
    """Run one dummy sample through ``model`` and sum each layer's MACs from hooks.

    Hooks give the true output sizes of every layer, whatever the padding, stride or
    pooling, without re-implementing shape arithmetic.
    """
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    total = 0

    def hook(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        weight = module.weight
        weights = int(torch.count_nonzero(weight)) if nonzero_only else weight.numel()
        if isinstance(module, nn.Linear):
            positions = output[0].numel() // module.out_features
        else:  # convolution: every output position of every output channel
            positions = output[0, 0].numel()
        total += weights * positions

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _COUNTED_LAYERS)
    ]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    return total
