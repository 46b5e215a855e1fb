"""The registered datasets: Fashion-MNIST, MNIST, CIFAR-10, scikit-learn digits, synthetic.

Each loader finds its files (:mod:`bench.data.locate`), parses them
(:mod:`bench.data.formats`) and returns the official train and test splits; splitting
and normalisation are shared (:mod:`bench.data.splits`). A corrupt file raises
:class:`~bench.data.formats.DataFileError` naming the file and how to repair it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.data.formats import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    DataFileError,
    read_cifar_batch,
    read_idx,
)
from bench.data.locate import CIFAR10_BATCHES, find_cifar, find_idx, repair_advice
from bench.data.registry import IntOption, NumberOption, RawData, register_dataset

DIGITS_TEST_SEED = 0  # fixed, so the digits test split never moves with split_seed
DIGITS_TEST_FRACTION = 0.2


def _load_idx_dataset(name: str, files: dict[str, Path], source: str) -> RawData:
    """Parse the four IDX files and check they agree with each other."""
    arrays = {}
    for key, path in files.items():
        try:
            arrays[key] = read_idx(
                path, expect_magic=IDX_IMAGES_MAGIC if "images" in key else IDX_LABELS_MAGIC
            )
        except DataFileError as error:
            raise error.with_remedy(repair_advice(name, source, path)) from error.__cause__
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        images_file, labels_file = files[f"{split}_images"], files[f"{split}_labels"]
        if len(images) != len(labels):
            raise DataFileError(
                images_file,
                f"has {len(images)} images but {labels_file} has {len(labels)} labels",
                repair_advice(name, source, labels_file),
            )
        if images.shape[1] != images.shape[2]:
            raise DataFileError(
                images_file,
                f"images must be square, got {images.shape[1:]}",
                repair_advice(name, source, images_file),
            )
        if len(labels) and labels.max() > 9:
            raise DataFileError(
                labels_file,
                f"label {labels.max()} outside 0..9",
                repair_advice(name, source, labels_file),
            )
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataFileError(
            files["test_images"],
            f"test images {arrays['test_images'].shape[1:]} differ in size from the train "
            f"images {arrays['train_images'].shape[1:]} of {files['train_images']}",
            repair_advice(name, source, files["test_images"]),
        )
    return RawData(
        train_x=torch.from_numpy(arrays["train_images"]).unsqueeze(1),
        train_y=torch.from_numpy(arrays["train_labels"]).to(torch.int64),
        test_x=torch.from_numpy(arrays["test_images"]).unsqueeze(1),
        test_y=torch.from_numpy(arrays["test_labels"]).to(torch.int64),
        num_classes=10,
        source=source,
    )


@register_dataset("fashion-mnist")
def _fashion_mnist(root: Path, *, allow_download: bool) -> RawData:
    """Fashion-MNIST (Zalando, MIT licence): 60,000 + 10,000 28x28 greyscale, 10 classes."""
    files, source = find_idx(
        "fashion-mnist", root, "fashion-mnist", "FashionMNIST", allow_download, debian=True
    )
    return _load_idx_dataset("fashion-mnist", files, source)


@register_dataset("mnist")
def _mnist(root: Path, *, allow_download: bool) -> RawData:
    """MNIST (LeCun, Cortes, Burges): 60,000 + 10,000 28x28 greyscale digits."""
    files, source = find_idx("mnist", root, "mnist", "MNIST", allow_download, debian=False)
    return _load_idx_dataset("mnist", files, source)


@register_dataset("cifar10")
def _cifar10(root: Path, *, allow_download: bool) -> RawData:
    """CIFAR-10 (Krizhevsky 2009): 50,000 + 10,000 32x32 colour images, 10 classes."""
    found, source = find_cifar(root, allow_download)
    batches = []
    for batch in CIFAR10_BATCHES:
        try:
            batches.append(read_cifar_batch(found / batch))
        except DataFileError as error:
            raise error.with_remedy(
                repair_advice("cifar10", source, found / batch)
            ) from error.__cause__
    train_x = np.concatenate([b[0] for b in batches[:5]])
    train_y = np.concatenate([b[1] for b in batches[:5]])
    test_x, test_y = batches[5]
    return RawData(
        train_x=torch.from_numpy(train_x),
        train_y=torch.from_numpy(train_y),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        num_classes=10,
        source=source,
    )


@register_dataset("digits")
def _digits(root: Path, *, allow_download: bool) -> RawData:
    """scikit-learn's 1,797 8x8 handwritten digits (values 0..16), bundled with the wheel.

    It has no official test split, so a fixed-seed 20% hold-out (seed ``DIGITS_TEST_SEED``,
    independent of ``split_seed``) plays that role and never moves between runs.
    """
    del root, allow_download  # always available, ships inside scikit-learn
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    n_test = round(DIGITS_TEST_FRACTION * len(labels))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_TEST_SEED))
    test_idx, train_idx = order[:n_test], order[n_test:]
    return RawData(
        train_x=images[train_idx],
        train_y=labels[train_idx],
        test_x=images[test_idx],
        test_y=labels[test_idx],
        num_classes=10,
        source=(
            "scikit-learn load_digits (UCI optical recognition of handwritten digits); "
            f"test = fixed {DIGITS_TEST_FRACTION:.0%} hold-out, seed {DIGITS_TEST_SEED}"
        ),
    )


@register_dataset(
    "synthetic",
    options={
        "n_train": IntOption(512, minimum=1),
        "n_test": IntOption(256, minimum=1),
        "image_size": IntOption(8, minimum=4),
        "num_classes": IntOption(4, minimum=2),
        "channels": IntOption(1, minimum=1),
        "noise": NumberOption(1.0, minimum=0.0),
        "seed": IntOption(0, minimum=0),
    },
)
def _synthetic(
    root: Path,
    *,
    allow_download: bool,
    n_train: int,
    n_test: int,
    image_size: int,
    num_classes: int,
    channels: int,
    noise: float,
    seed: int,
) -> RawData:
    """Generated data: one random prototype image per class, shifted and noised.

    For tests and smoke runs that must not depend on files. Each sample is its class
    prototype circularly shifted by up to one pixel plus Gaussian noise (std ``noise``),
    so a small CNN can learn it but it is not linearly trivial. Deterministic per
    ``seed`` (NumPy generators seeded with ``[seed, stream]``, never the global RNG);
    train and test come from separate streams, so ``n_train`` does not change the test
    samples.
    """
    del root, allow_download
    prototypes = np.random.default_rng([seed, 0]).standard_normal(
        (num_classes, channels, image_size, image_size)
    )

    def draw(n: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([seed, stream])
        labels = rng.permutation(np.arange(n) % num_classes)
        shifts = rng.integers(-1, 2, size=(n, 2))
        images = np.stack(
            [
                np.roll(prototypes[y], tuple(s), axis=(1, 2))
                for y, s in zip(labels, shifts, strict=True)
            ]
        )
        images = images + noise * rng.standard_normal(images.shape)
        return torch.from_numpy(images.astype(np.float32)), torch.from_numpy(labels)

    train_x, train_y = draw(n_train, 1)
    test_x, test_y = draw(n_test, 2)
    options = {
        "n_train": n_train,
        "n_test": n_test,
        "image_size": image_size,
        "num_classes": num_classes,
        "channels": channels,
        "noise": noise,
        "seed": seed,
    }
    return RawData(
        train_x=train_x,
        train_y=train_y.to(torch.int64),
        test_x=test_x,
        test_y=test_y.to(torch.int64),
        num_classes=num_classes,
        source=f"generated: synthetic class prototypes + noise ({options})",
    )
