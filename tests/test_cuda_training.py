"""The training loop on CUDA: event timing without per-step syncs, same figures as on CPU.

Skipped without a GPU (``make gpu-check`` runs it on one). Imports nothing of MLflow or
Optuna, so it runs on a bare PyTorch image.
"""

from __future__ import annotations

import pytest
import torch

from bench.data import load_dataset
from bench.suites import Cell, MethodSpec
from bench.training.loop import train_cell
from bench.training.timing import StepTimer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def cell(name: str, mode: str = "minibatch", **hparams) -> Cell:
    return Cell(
        suite="cuda",
        method=MethodSpec(
            label=name,
            name=name,
            mode=mode,
            batch_size=32 if mode == "minibatch" else None,
            chunk_size=None,
            hparams=hparams,
        ),
        model="cnn-tiny",
        model_options={},
        dataset="synthetic",
        data={"val_fraction": 0.2},
        seed=0,
        budget={"epochs": 2},
        eval_every_epochs=1.0,
        train_eval_size=128,
    )


@pytest.mark.parametrize(
    ("name", "mode", "hparams"),
    [
        ("sgd", "minibatch", {"lr": 0.1}),
        ("bsqh", "minibatch", {"eps": 1.0, "beta": 1e-3, "max_retries": 3}),
        ("bsqh", "fullbatch", {"eps": 1.0, "beta": 1e-3}),
    ],
)
def test_train_cell_on_cuda_times_steps_with_events(name, mode, hparams):
    device = torch.device("cuda")
    data = load_dataset("synthetic", val_fraction=0.2, device=device)
    result = train_cell(cell(name, mode, **hparams), data, device, progress=False)
    assert result.status == "finished"
    assert result.summary["device_time_s"] > 0
    assert result.curve[-1]["objective"] < result.curve[0]["objective"]
    if mode == "fullbatch":
        assert result.summary["accepted_increases"] == 0


def test_step_timer_accumulates_without_synchronising_each_step():
    device = torch.device("cuda")
    timer = StepTimer(device)
    a = torch.randn(2048, 2048, device=device)
    for _ in range(5):
        with timer.step():
            a = torch.tanh(a @ a)
    assert len(timer._pending) == 5  # events queued, nothing read back yet
    seconds = timer.seconds()
    assert seconds > 0 and not timer._pending
