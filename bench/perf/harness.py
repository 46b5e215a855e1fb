"""Step-time harness: every registered method against SGD on Fashion-MNIST-shaped data.

Why: bSQH spends several passes per iteration, so its cost per step relative to an SGD
step decides whether its convergence per step is worth having. This harness
measures that ratio the same way for every method, reference and fast paths alike, so
the speed-up of the fast path is visible next to the eager code it replaces.

What one cell measures (method x batch size): the method is built on a freshly
initialised model (the same seed for every method), ``prepare(x, y)`` runs if the method
has one (CUDA-graph capture; timed separately as ``prepare_s``), then ``warmup`` steps,
then ``steps`` timed steps. The step time is the median device time per step: CUDA
events around each step on a GPU (the host is synchronised once, after the last step),
``time.perf_counter`` on the CPU. Data are synthetic (normal pixels, uniform labels), 60,000
samples of 1x28x28: the timing does not depend on the values. Mini-batch cells hand each
step a different slice (a new tensor), as a data loader would; the ``full`` cell hands
every step the same full batch, as full-batch training does.

``epoch_s`` is computed, not measured: ``step_ms * ceil(samples / batch_size) / 1000``
(one full-batch step is one epoch). Passes per step are the methods' own
``StepStats.forward_passes``/``backward_passes``, averaged over the timed steps.

Method hyperparameters are chosen for timing, not accuracy: ``beta = gamma = 1e-4`` where
a method takes them (so the prox runs), ``max_retries=0`` for bSQH (one attempt per step,
the fast path's mode) and ``post_step_loss=False`` for the gradient methods (no extra
forward). A spec ``name:key=value:key=value`` overrides or adds options.

This module imports only torch, tqdm, ``optimizers`` and ``bench.training.models``,
``bench.environment``, ``bench.training.timing``, ``bench.training.numerics`` and
``bench.perf.kernels`` (no MLflow, Optuna or plotting), so it runs on a bare GPU
machine. Step times come from the runner's own ``StepTimer`` and the precision from the
suites' ``bench.training.numerics``, so the harness and the suite measure a step the
same way. ``--kernels`` adds the device kernels
per step, counted with the torch profiler after the timed steps (never during them).
"""

from __future__ import annotations

import gc
import json
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

import optimizers
from bench.environment import device_name, resolve_device
from bench.perf.kernels import kernels_per_step
from bench.training.models import build_model
from bench.training.numerics import DEFAULT_PRECISION, check_precision, numerics
from bench.training.timing import StepTimer

#: Fashion-MNIST's training set: 60,000 grey 28x28 images in 10 classes.
FASHION_SAMPLES = 60_000
IMAGE_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
FULL = "full"
REFERENCE = "sgd"

#: Defaults per device: the CPU run should finish in a minute or two on two cores.
DEFAULTS = {
    "cpu": {"batch_sizes": [128, 1024], "steps": 10, "warmup": 2, "chunk_size": 10_000},
    "cuda": {"batch_sizes": [128, 1024, FULL], "steps": 50, "warmup": 5, "chunk_size": None},
}
#: Extra rows on CUDA that show what each fast-path feature buys.
CUDA_VARIANTS = (
    "bsqh-fast:cuda_graph=false",
    "bsqh-fast:fuse=false",
    "prox-sgd-l0-graph:fuse=false",
)
FULL_VARIANTS = ("bsqh-fast:reuse_adjoints=false",)
#: Options set for timing wherever the method accepts them (see the module docstring).
TIMING_OPTIONS: dict[str, Any] = {
    "beta": 1e-4,
    "gamma": 1e-4,
    "max_retries": 0,
    "post_step_loss": False,
}

EPOCH_NOTE = "epoch_s = step_ms * ceil(samples / batch_size) / 1000 (computed, not measured)"


@dataclass(frozen=True)
class TimedMethod:
    """A registered method plus option overrides; ``label`` names its row."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        extra = "".join(f":{k}={_show(v)}" for k, v in self.options.items())
        return f"{self.name}{extra}"


@dataclass
class PerfConfig:
    """Everything one harness run needs; None fields take the device's defaults."""

    device: str = "auto"
    model: str = "lenet5"
    batch_sizes: list[int | str] | None = None
    steps: int | None = None
    warmup: int | None = None
    methods: list[TimedMethod] | None = None
    chunk_size: int | None = None  # full-batch chunks; None: device default, 0: none
    samples: int = FASHION_SAMPLES
    seed: int = 0
    progress: bool = True  # a tqdm bar on stderr when it is a terminal
    kernels: bool = False  # also count device kernels per step (CUDA only)
    precision: str = DEFAULT_PRECISION  # bench.training.numerics, as in a suite


@dataclass
class PerfRow:
    """One method at one batch size (the JSON ``rows`` entries)."""

    method: str
    batch_size: int
    step_ms: float
    ratio_to_sgd: float | None
    forward_passes: float
    backward_passes: float
    epoch_s: float
    full_batch: bool
    cuda_graph: bool
    prepare_s: float
    accept_rate: float | None
    kernels_per_step: float | None = None


# --------------------------------------------------------------------------- parsing
def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def _parse_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_timed_method(text: str) -> TimedMethod:
    """``name`` or ``name:key=value:key=value`` (values: ints, floats, true/false, none)."""
    name, *pairs = text.strip().split(":")
    if name not in optimizers.available():
        raise ValueError(
            f"unknown method {name!r} in --methods; available: {', '.join(optimizers.available())}"
        )
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"method option {pair!r} in {text!r} must look like key=value")
        options[key.strip()] = _parse_value(value)
    allowed = [*optimizers.hyperparameters(name), *optimizers.runtime_options(name)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for method {name!r}; allowed: {', '.join(allowed)}"
        )
    return TimedMethod(name, options)


def parse_methods(text: str) -> list[TimedMethod]:
    """Comma-separated method specs."""
    specs = [parse_timed_method(part) for part in text.split(",") if part.strip()]
    if not specs:
        raise ValueError("--methods names no method")
    return specs


def parse_batch_sizes(text: str) -> list[int | str]:
    """Comma-separated positive integers and/or ``full``."""
    sizes: list[int | str] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == FULL:
            sizes.append(FULL)
            continue
        try:
            size = int(part)
        except ValueError:
            size = 0
        if size < 1:
            raise ValueError(f"batch size {part!r} must be a positive integer or 'full'")
        sizes.append(size)
    return sizes


def default_methods(device: torch.device, batch_sizes: Sequence[int | str]) -> list[TimedMethod]:
    """Every registered method, SGD first, plus the feature-ablation rows."""
    names = [REFERENCE] + [n for n in optimizers.available() if n != REFERENCE]
    specs = [TimedMethod(n) for n in names]
    extras = list(CUDA_VARIANTS) if device.type == "cuda" else []
    if FULL in batch_sizes:
        extras += FULL_VARIANTS
    known = set(optimizers.available())
    specs += [parse_timed_method(e) for e in extras if e.split(":")[0] in known]
    return specs


def method_options(spec: TimedMethod, chunk_size: int | None) -> dict[str, Any]:
    """Timing options the method accepts, the chunk size for full-batch cells, overrides."""
    allowed = {*optimizers.hyperparameters(spec.name), *optimizers.runtime_options(spec.name)}
    options = {k: v for k, v in TIMING_OPTIONS.items() if k in allowed}
    if chunk_size is not None and "chunk_size" in allowed:
        options["chunk_size"] = chunk_size
    options.update(spec.options)
    return options


# --------------------------------------------------------------------------- timing
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _sliced_batches(x: Tensor, y: Tensor, batch: int | str) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless batches: slices in order (new tensors), or the same full batch each time.

    Not :func:`bench.training.loop.batches`: a step's time needs no seeded order over a
    cell's data splits, only inputs of the right shape.
    """
    if batch == FULL:
        while True:
            yield x, y
    assert isinstance(batch, int)
    count = max(1, x.shape[0] // batch)
    index = 0
    while True:
        start = (index % count) * batch
        yield x[start : start + batch], y[start : start + batch]
        index += 1


def measure_cell(
    spec: TimedMethod,
    batch: int | str,
    data: tuple[Tensor, Tensor],
    config: PerfConfig,
    device: torch.device,
    steps: int,
    warmup: int,
    chunk_size: int | None,
) -> PerfRow:
    """Time one method at one batch size (see the module docstring for the protocol)."""
    x_all, y_all = data
    samples = x_all.shape[0]
    size = samples if batch == FULL else int(batch)
    torch.manual_seed(config.seed)
    model = build_model(
        config.model,
        in_channels=IMAGE_SHAPE[0],
        image_size=IMAGE_SHAPE[1],
        num_classes=NUM_CLASSES,
    ).to(device)
    method = optimizers.make(
        spec.name, model, **method_options(spec, chunk_size if batch == FULL else None)
    )
    stream = _sliced_batches(x_all, y_all, batch)
    prepare_s = 0.0
    prepare = getattr(method, "prepare", None)
    if callable(prepare):
        xb, yb = next(stream)
        _synchronize(device)
        began = time.perf_counter()
        prepare(xb, yb)
        _synchronize(device)
        prepare_s = time.perf_counter() - began
    for _ in range(warmup):
        method.step(*next(stream))
    _synchronize(device)
    timer = StepTimer(device, keep_steps=True)
    records = []
    for _ in range(steps):
        xb, yb = next(stream)
        with timer.step():
            records.append(method.step(xb, yb))
    step_ms = statistics.median(timer.step_milliseconds())
    kernels = (
        kernels_per_step(lambda: method.step(*next(stream)))
        if config.kernels and device.type == "cuda"
        else None
    )
    resolved = [r.resolved() for r in records]
    accept_rate = (
        sum(bool(r.accepted) for r in resolved) / len(resolved)
        if resolved[0].eps is not None
        else None
    )
    return PerfRow(
        method=spec.label,
        batch_size=size,
        step_ms=step_ms,
        ratio_to_sgd=None,
        forward_passes=statistics.fmean(r.forward_passes for r in resolved),
        backward_passes=statistics.fmean(r.backward_passes for r in resolved),
        epoch_s=step_ms * math.ceil(samples / size) / 1000.0,
        full_batch=batch == FULL,
        cuda_graph=bool(getattr(method, "uses_cuda_graph", False)),
        prepare_s=prepare_s,
        accept_rate=accept_rate,
        kernels_per_step=kernels,
    )


def synthetic_data(samples: int, device: torch.device, seed: int) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST-shaped synthetic images and labels, made on the CPU, moved once."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, *IMAGE_SHAPE, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (samples,), generator=generator)
    return x.to(device), y.to(device)


def run_perf(config: PerfConfig) -> dict[str, Any]:
    """Measure every (method, batch size) cell; return the report (the JSON document)."""
    device = resolve_device(config.device)
    defaults = DEFAULTS[device.type]
    batch_sizes = config.batch_sizes or list(defaults["batch_sizes"])
    steps = config.steps if config.steps is not None else defaults["steps"]
    warmup = config.warmup if config.warmup is not None else defaults["warmup"]
    if steps < 1 or warmup < 0:
        raise ValueError(f"--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}")
    # None: the device's default; 0: no chunking.
    chunk_size = defaults["chunk_size"] if config.chunk_size is None else config.chunk_size or None
    check_precision(config.precision)
    if config.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {config.samples}")
    for batch in batch_sizes:
        if batch != FULL and int(batch) > config.samples:
            raise ValueError(f"batch size {batch} exceeds the {config.samples} samples")
    specs = list(config.methods) if config.methods else default_methods(device, batch_sizes)
    if not any(s.name == REFERENCE and not s.options for s in specs):
        specs.insert(0, TimedMethod(REFERENCE))  # the ratio's denominator
    data = synthetic_data(config.samples, device, config.seed)

    rows: list[PerfRow] = []
    cells = [(batch, spec) for batch in batch_sizes for spec in specs]
    with tqdm(
        total=len(cells), desc="perf", unit="cell", disable=None if config.progress else True
    ) as bar:
        for batch, spec in cells:
            bar.set_postfix_str(f"{spec.label} @ {batch}")
            with numerics(config.precision):
                row = measure_cell(spec, batch, data, config, device, steps, warmup, chunk_size)
            rows.append(row)
            if device.type == "cuda":  # drop the cell's graphs and caches before the next
                gc.collect()
                torch.cuda.empty_cache()
            bar.update()
    for row in rows:
        reference = next(
            r for r in rows if r.method == REFERENCE and r.batch_size == row.batch_size
        )
        row.ratio_to_sgd = row.step_ms / reference.step_ms
    return {
        "device": device.type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "model": config.model,
        "samples": config.samples,
        "steps": steps,
        "warmup": warmup,
        "chunk_size": chunk_size,
        "precision": config.precision,
        "epoch_note": EPOCH_NOTE,
        "rows": [asdict(r) for r in rows],
    }


# --------------------------------------------------------------------------- output
def format_table(report: dict[str, Any]) -> str:
    """Aligned text table of the report, with a header naming the device."""
    header = (
        "method",
        "batch",
        "step_ms",
        "x_sgd",
        "fwd",
        "bwd",
        "epoch_s",
        "graph",
        "accept",
        "prepare_s",
    )
    counted = any(r.get("kernels_per_step") is not None for r in report["rows"])
    if counted:
        header = (*header, "kernels")
    lines = []
    for r in report["rows"]:
        batch = f"full={r['batch_size']}" if r["full_batch"] else str(r["batch_size"])
        ratio = r["ratio_to_sgd"]
        lines.append(
            (
                r["method"],
                batch,
                f"{r['step_ms']:.3f}",
                "-" if ratio is None else f"{ratio:.2f}",
                f"{r['forward_passes']:.2f}",
                f"{r['backward_passes']:.2f}",
                f"{r['epoch_s']:.3f}",
                "yes" if r["cuda_graph"] else "no",
                "-" if r["accept_rate"] is None else f"{r['accept_rate']:.2f}",
                f"{r['prepare_s']:.2f}",
            )
        )
        if counted:
            kernels = r.get("kernels_per_step")
            lines[-1] = (*lines[-1], "-" if kernels is None else f"{kernels:.0f}")
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines, strict=True)]

    def fmt(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    title = (
        f"bench perf: {report['model']} on {report['device_name']}, torch {report['torch']}; "
        f"median of {report['steps']} steps after {report['warmup']} warm-up, "
        f"precision {report.get('precision', DEFAULT_PRECISION)}"
    )
    notes = [
        f"x_sgd: step time / eager sgd's at the same batch size; {report['epoch_note']}",
        "graph: the timed steps replayed a CUDA graph; prepare_s: capture etc., not timed",
    ]
    if counted:
        notes.append("kernels: device kernels, copies and memsets per step (torch profiler)")
    rule = "-" * len(fmt(header))
    return "\n".join([title, rule, fmt(header), rule, *map(fmt, lines), rule, *notes])


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report as JSON (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
