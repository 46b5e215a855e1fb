"""Your own model and dataset by reference: the README's residual CNN with BatchNorm."""

from __future__ import annotations

import math
import re
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch
from torch import nn

import bench.references
import optimizers
from bench import docs
from bench.data import DataCache
from bench.suites import SuiteError, load_suite
from bench.training.loop import train_cell
from bench.training.models import build_model, dense_macs_per_sample, nonzero_macs_per_sample
from optimizers.registry import entry

CPU = torch.device("cpu")
MODEL = "my_nets:residual_cnn"
DATASET = "my_nets:digits"


def readme_example(marker: str) -> str:
    """The fenced Python block after ``<!-- example:<marker> -->`` in the README or a docs page."""
    pages = [docs.README, *sorted(docs.DOCS.glob("*.md"))]
    pattern = rf"<!-- example:{marker} -->\s*```python\n(.*?)```"
    found = [m.group(1) for page in pages for m in re.finditer(pattern, page.read_text(), re.S)]
    assert len(found) == 1, f"{len(found)} examples {marker!r} in README.md and docs/"
    return found[0]


@pytest.fixture(scope="module")
def my_nets(tmp_path_factory):
    """The README's module, written beside a suite file and importable as ``my_nets``."""
    folder = tmp_path_factory.mktemp("custom")
    (folder / "my_nets.py").write_text(readme_example("custom-model"))
    (folder / "broken.py").write_text(
        textwrap.dedent("""
            from torch import nn
            not_a_function = 3
            def no_sizes(*, width=4):
                return nn.Sequential()
            def a_module(*, in_channels, image_size, num_classes) -> nn.Module:
                return nn.Linear(1, 1)
            def unannotated(*, in_channels, image_size, num_classes):
                return nn.Linear(in_channels * image_size**2, num_classes)
            def no_download(root):
                return None
            def returns_none(root, *, allow_download):
                return None
        """)
    )
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


def suite_text(models: str = MODEL, datasets: str = DATASET, extra: str = "") -> str:
    return f"""
name = "custom"
datasets = ["{datasets}"]
models = ["{models}"]
seeds = [0]
[data]
val_fraction = 0.2
[budget]
epochs = 1
[eval]
every_epochs = 0.5
train_eval_size = 200
{extra}
[[methods]]
name = "bsqh"
batch_size = 64
hparams = {{ eps = 1.0, beta = 1e-4, max_retries = 3 }}
"""


def write(folder: Path, text: str) -> Path:
    path = folder / "custom.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", optimizers.available())
def test_every_method_trains_the_residual_batchnorm_model(my_nets, name):
    torch.manual_seed(0)
    model = build_model(MODEL, in_channels=1, image_size=8, num_classes=10)
    assert isinstance(model[1].body[1], nn.BatchNorm2d)
    x = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    method = entry(name).cls(model, **entry(name).cls.test_hparams)
    for _ in range(3):
        stats = method.step(x, y).resolved()
        assert math.isfinite(stats.objective), name
    kernels = [p for p in model.parameters() if p.dim() > 1]
    assert optimizers.prunable_count(model) == sum(p.numel() for p in kernels)
    assert len(optimizers.layer_sparsity(model)) == 4  # stem, two residual convs, head
    zeros = sum(int((p == 0).sum()) for p in kernels)
    assert optimizers.sparsity(model) == pytest.approx(zeros / sum(p.numel() for p in kernels))
    assert 0 <= nonzero_macs_per_sample(model, (1, 8, 8)) <= dense_macs_per_sample(model, (1, 8, 8))


def test_a_suite_names_its_own_model_and_dataset_and_a_cell_trains(my_nets):
    extra = f'[model_options."{MODEL}"]\nwidth = 4\n'
    suite = load_suite(write(my_nets, suite_text(extra=extra)))
    (cell,) = suite.cells()
    assert cell.model == MODEL and cell.dataset == DATASET and cell.model_options == {"width": 4}
    data = DataCache(CPU).get(cell.dataset, cell.data)
    assert data.num_classes == 10 and data.image_size == 8
    result = train_cell(cell, data, CPU, progress=False)
    assert result.status == "finished"
    assert result.summary["test_accuracy"] > 0.1
    assert 0.0 <= result.summary["sparsity"] <= 1.0


@pytest.mark.parametrize(
    ("models", "datasets", "message"),
    [
        ("no_such_module:f", DATASET, "module 'no_such_module' cannot be imported"),
        ("my_nets:nothing", DATASET, "module 'my_nets' has no attribute 'nothing'"),
        ("broken:not_a_function", DATASET, "is a int, not a function"),
        ("broken:no_sizes", DATASET, r"lacks the parameters \['in_channels'"),
        ("broken:a_module", DATASET, "annotated to return Module"),
        ("my_nets:", DATASET, "must look like 'package.module:function'"),
        ("no-such-model", DATASET, "unknown model 'no-such-model'; known models: "),
        (MODEL, "broken:no_download", "cannot be called as loader"),
        (MODEL, "no_such_module:load", "module 'no_such_module' cannot be imported"),
    ],
)
def test_bad_references_fail_when_the_suite_is_read_naming_the_problem(
    my_nets, models, datasets, message
):
    with pytest.raises(SuiteError, match=message):
        load_suite(write(my_nets, suite_text(models, datasets)))


def test_what_a_function_returns_is_checked_when_it_runs(my_nets):
    load_suite(write(my_nets, suite_text("broken:unannotated", "broken:returns_none")))
    with pytest.raises(ValueError, match=r"returned a Linear; it must return a torch\.nn\.Sequ"):
        build_model("broken:unannotated", in_channels=1, image_size=8, num_classes=10)
    with pytest.raises(ValueError, match=r"returned a NoneType; it must return bench\.data\.Raw"):
        DataCache(CPU).get("broken:returns_none", {"val_fraction": 0.2})


def test_an_installed_package_declares_a_model_by_entry_point(my_nets, monkeypatch):
    declared = EntryPoint(name="resnet-bn", value=MODEL, group="pmp_bench.models")

    def entry_points(*, group, name):
        return [declared] if (group, name) == (declared.group, declared.name) else []

    monkeypatch.setattr(bench.references, "entry_points", entry_points)
    suite = load_suite(write(my_nets, suite_text(models="resnet-bn")))
    (cell,) = suite.cells()
    model = build_model(cell.model, in_channels=1, image_size=8, num_classes=10)
    assert isinstance(model[1].body[1], nn.BatchNorm2d)
