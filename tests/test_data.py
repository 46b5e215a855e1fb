"""Tests for bench.data: file formats, resolution order, splits and normalisation.

The IDX and CIFAR tests write small files in the real on-disk formats, because MNIST and
CIFAR-10 cannot be downloaded on these machines.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data import (
    CIFAR10_BATCHES,
    IDX_FILES,
    DataFileError,
    DatasetUnavailable,
    DataSplits,
    available_datasets,
    ensure_dataset,
    install,
    load_dataset,
    locate,
    read_cifar_batch,
    read_idx,
)

REAL_DEBIAN_DIR = locate.DEBIAN_FASHION_MNIST_DIR
N_TRAIN, N_TEST, SIZE = 30, 10, 28


# --------------------------------------------------------------------------- helpers


def _write_idx(path: Path, array: np.ndarray, magic: int, gz: bool) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def _unique_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images whose first two pixels encode their index (all distinct)."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, 0] = np.arange(n) % 256
    flat[:, 1] = np.arange(n) // 256
    return images


def _write_idx_dataset(directory: Path, *, gz: bool = True, seed: int = 0) -> dict:
    """Four IDX files with N_TRAIN / N_TEST images; returns the arrays written."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": _unique_images(N_TRAIN, (SIZE, SIZE), seed),
        "train_labels": np.arange(N_TRAIN, dtype=np.uint8) % 10,
        "test_images": _unique_images(N_TEST, (SIZE, SIZE), seed + 1),
        "test_labels": (np.arange(N_TEST, dtype=np.uint8) * 3) % 10,
    }
    for key, stem in IDX_FILES.items():
        magic = 0x803 if "images" in key else 0x801
        _write_idx(directory / stem, arrays[key], magic, gz)
    return arrays


def _write_cifar(directory: Path, per_batch: int = 4, n_test: int = 6) -> dict:
    """The six CIFAR-10 python batches, small, with the original's bytes keys."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, batch in enumerate(CIFAR10_BATCHES):
        n = n_test if batch == "test_batch" else per_batch
        images = _unique_images(n, (3, 32, 32), seed=10 + i)
        images[:, 1] //= 2  # channel means differ, so per-channel normalisation matters
        labels = [int(v) for v in (np.arange(n) + i) % 10]
        content = {
            b"batch_label": batch.encode(),
            b"labels": labels,
            b"data": images.reshape(n, 3072),
            b"filenames": [f"img{j}.png".encode() for j in range(n)],
        }
        with (directory / batch).open("wb") as fh:
            pickle.dump(content, fh, protocol=2)
        written[batch] = (images, np.asarray(labels))
    return written


def _recover(splits: DataSplits, x: torch.Tensor) -> np.ndarray:
    """Undo the normalisation to get the original uint8 pixels back."""
    mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
    std = torch.tensor(splits.std).view(1, -1, 1, 1)
    return (x.double() * std + mean).round().clamp(0, 255).to(torch.uint8).numpy()


def _index_of(images: np.ndarray) -> dict[bytes, int]:
    return {img.tobytes(): i for i, img in enumerate(images)}


@pytest.fixture
def no_debian(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hide the real Debian directory and make any download attempt fail loudly."""
    monkeypatch.setattr(locate, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-such-debian-dir")

    def offline(name: str, target: Path) -> None:
        raise OSError("offline in tests")

    monkeypatch.setattr(locate, "_download_with_torchvision", offline)
    return tmp_path / "no-such-debian-dir"


# --------------------------------------------------------------------------- IDX datasets


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset_round_trip(tmp_path: Path, no_debian: Path, name: str, gz: bool) -> None:
    written = _write_idx_dataset(tmp_path / name, gz=gz)
    splits = load_dataset(name, root=tmp_path, val_fraction=0.2, allow_download=False)

    assert splits.sizes() == {"train": 24, "val": 6, "test": N_TEST}
    assert (splits.name, splits.num_classes, splits.in_channels, splits.image_size) == (
        name,
        10,
        1,
        SIZE,
    )
    assert str(tmp_path / name) in splits.source
    assert splits.train_x.shape == (24, 1, SIZE, SIZE)
    for x, y in [(splits.train_x, splits.train_y), (splits.test_x, splits.test_y)]:
        assert x.dtype == torch.float32
        assert y.dtype == torch.int64

    # Every image comes back pixel-exact with its own label; train + val is the whole
    # training set, each sample exactly once; the test set keeps the file's order.
    index = _index_of(written["train_images"])
    seen = []
    for x, y in [(splits.train_x, splits.train_y), (splits.val_x, splits.val_y)]:
        for img, label in zip(_recover(splits, x)[:, 0], y.tolist(), strict=True):
            i = index[img.tobytes()]
            assert written["train_labels"][i] == label
            seen.append(i)
    assert sorted(seen) == list(range(N_TRAIN))
    np.testing.assert_array_equal(_recover(splits, splits.test_x)[:, 0], written["test_images"])
    np.testing.assert_array_equal(splits.test_y.numpy(), written["test_labels"])


def test_normalisation_uses_training_split_only(tmp_path: Path, no_debian: Path) -> None:
    written = _write_idx_dataset(tmp_path / "mnist")
    splits = load_dataset("mnist", root=tmp_path, allow_download=False)
    assert splits.train_x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert splits.train_x.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    # The statistics are those of the training split, not of train + val or the test set.
    train_pixels = _recover(splits, splits.train_x).astype(np.float64)
    assert splits.mean[0] == pytest.approx(train_pixels.mean())
    assert splits.std[0] == pytest.approx(train_pixels.std())
    assert splits.mean[0] != pytest.approx(written["train_images"].mean(), abs=1e-9)


def test_split_is_seeded_and_independent_of_global_rng(tmp_path: Path, no_debian: Path) -> None:
    _write_idx_dataset(tmp_path / "mnist")
    torch.manual_seed(1)
    a = load_dataset("mnist", root=tmp_path, split_seed=7, allow_download=False)
    torch.manual_seed(2)
    torch.rand(100)
    b = load_dataset("mnist", root=tmp_path, split_seed=7, allow_download=False)
    c = load_dataset("mnist", root=tmp_path, split_seed=8, allow_download=False)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.val_x, c.val_x)


def test_val_and_train_are_disjoint(tmp_path: Path, no_debian: Path) -> None:
    _write_idx_dataset(tmp_path / "fashion-mnist")
    splits = load_dataset("fashion-mnist", root=tmp_path, val_fraction=0.3, allow_download=False)
    train = {img.tobytes() for img in splits.train_x.numpy()}
    val = {img.tobytes() for img in splits.val_x.numpy()}
    assert len(train) == len(splits.train_x) and len(val) == len(splits.val_x)
    assert not train & val
    assert len(val) == 9


def test_subsets(tmp_path: Path, no_debian: Path) -> None:
    written = _write_idx_dataset(tmp_path / "mnist")
    kwargs = {"root": tmp_path, "allow_download": False, "val_fraction": 0.25}
    splits = load_dataset("mnist", train_subset=20, test_subset=4, **kwargs)
    # val is carved from the subset: train + val = train_subset.
    assert splits.sizes() == {"train": 15, "val": 5, "test": 4}
    test_index = _index_of(written["test_images"])
    picked = [test_index[img.tobytes()] for img in _recover(splits, splits.test_x)[:, 0]]
    assert len(set(picked)) == 4
    assert splits.test_y.tolist() == [written["test_labels"][i] for i in picked]
    again = load_dataset("mnist", train_subset=20, test_subset=4, **kwargs)
    assert torch.equal(splits.test_x, again.test_x) and torch.equal(splits.val_x, again.val_x)
    # The test subset does not depend on the train subset size.
    other = load_dataset("mnist", train_subset=12, test_subset=4, **kwargs)
    assert torch.equal(splits.test_y, other.test_y)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"val_fraction": 0.0}, r"val_fraction.*\(0, 1\)"),
        ({"val_fraction": 1.0}, r"val_fraction.*\(0, 1\)"),
        ({"val_fraction": -0.1}, r"val_fraction.*\(0, 1\)"),
        ({"val_fraction": 0.01}, r"val_fraction=0.01.*at least one"),
        ({"train_subset": 0}, r"train_subset.*\[1, 30\].*0"),
        ({"train_subset": 31}, r"train_subset.*\[1, 30\].*31"),
        ({"train_subset": 2.5}, r"train_subset.*\[1, 30\]"),
        ({"test_subset": 11}, r"test_subset.*\[1, 10\].*11"),
        ({"test_subset": -1}, r"test_subset.*\[1, 10\]"),
        ({"split_seed": "zero"}, r"split_seed"),
        ({"shuffle": True}, r"'shuffle'.*allowed options: \(none\)"),
    ],
)
def test_bad_arguments_raise_value_error(
    tmp_path: Path, no_debian: Path, kwargs: dict, pattern: str
) -> None:
    _write_idx_dataset(tmp_path / "mnist")
    with pytest.raises(ValueError, match=pattern):
        load_dataset("mnist", root=tmp_path, allow_download=False, **kwargs)


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(ValueError, match="imagenet") as info:
        load_dataset("imagenet")
    for name in ("cifar10", "digits", "fashion-mnist", "mnist", "synthetic"):
        assert name in str(info.value)
        assert name in available_datasets()


def test_malformed_idx_files(tmp_path: Path, no_debian: Path) -> None:
    directory = tmp_path / "mnist"
    written = _write_idx_dataset(directory, gz=False)
    # Labels written with the images' magic number.
    _write_idx(directory / IDX_FILES["train_labels"], written["train_images"], 0x803, gz=False)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*magic.*0x00000801"):
        load_dataset("mnist", root=tmp_path, allow_download=False)

    truncated = tmp_path / "truncated-idx3-ubyte"
    truncated.write_bytes((directory / IDX_FILES["test_images"]).read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"truncated-idx3-ubyte.*bytes"):
        read_idx(truncated)
    not_gzip = tmp_path / "broken.gz"
    not_gzip.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 10)[:12])
    with pytest.raises(ValueError, match=r"broken\.gz"):
        read_idx(not_gzip)
    text = tmp_path / "notes.txt"
    text.write_text("hello world")
    with pytest.raises(ValueError, match=r"notes.txt.*magic"):
        read_idx(text)


def test_image_and_label_counts_must_agree(tmp_path: Path, no_debian: Path) -> None:
    directory = tmp_path / "mnist"
    _write_idx_dataset(directory, gz=True)
    (directory / f"{IDX_FILES['test_labels']}.gz").unlink()
    _write_idx(directory / IDX_FILES["test_labels"], np.zeros(3, np.uint8), 0x801, gz=True)
    with pytest.raises(ValueError, match=r"10 images.*3 labels"):
        load_dataset("mnist", root=tmp_path, allow_download=False)


def _corrupt(path: Path, how: str) -> None:
    """Damage a gzip file the ways disks and interrupted copies do."""
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(raw[: len(raw) // 2]))
        return
    start = 12 if how == "flipped-header" else len(raw) // 2  # deflate header / payload
    for i in range(start, start + 4):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["flipped-header", "flipped-payload", "truncated"])
def test_corrupt_gzip_names_file_and_remedy(tmp_path: Path, no_debian: Path, how: str) -> None:
    _write_idx_dataset(tmp_path / "fashion-mnist", gz=True)
    damaged = tmp_path / "fashion-mnist" / f"{IDX_FILES['train_images']}.gz"
    _corrupt(damaged, how)
    with pytest.raises(DataFileError) as info:
        load_dataset("fashion-mnist", root=tmp_path, allow_download=False)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.path == damaged
    message = str(error)
    assert message.startswith(f"{damaged}: corrupt gzip data")
    assert f"delete {damaged}" in message
    assert "python -m bench data --dataset fashion-mnist" in message
    # The low-level error is kept as the cause, never raised bare.
    assert isinstance(error.__cause__, OSError | EOFError | zlib.error)
    with pytest.raises(DataFileError, match="corrupt gzip"):
        ensure_dataset("fashion-mnist", root=tmp_path, install_with_apt=False)


def test_corrupt_debian_file_advises_reinstall(tmp_path: Path, no_debian: Path) -> None:
    _write_idx_dataset(no_debian, gz=True)
    _corrupt(no_debian / f"{IDX_FILES['test_labels']}.gz", "flipped-header")
    with pytest.raises(DataFileError, match=r"t10k-labels.*apt-get install --reinstall"):
        load_dataset("fashion-mnist", root=tmp_path / "empty", allow_download=False)


def test_corrupt_cifar_batch_names_file_and_remedy(tmp_path: Path, no_debian: Path) -> None:
    directory = tmp_path / "cifar10" / "cifar-10-batches-py"
    _write_cifar(directory)
    (directory / "data_batch_3").write_bytes((directory / "data_batch_3").read_bytes()[:100])
    with pytest.raises(DataFileError, match=r"data_batch_3.*delete .*--dataset cifar10"):
        load_dataset("cifar10", root=tmp_path, allow_download=False)


def test_data_command_reports_corrupt_file_in_one_line(
    tmp_path: Path, no_debian: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.cli import main

    _write_idx_dataset(tmp_path / "mnist", gz=True)
    _corrupt(tmp_path / "mnist" / f"{IDX_FILES['test_images']}.gz", "truncated")
    assert main(["data", "--dataset", "mnist", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "t10k-images-idx3-ubyte.gz" in err
    assert "Traceback" not in err


def test_read_idx_gz_and_raw_agree(tmp_path: Path) -> None:
    array = _unique_images(5, (3, 4), seed=3)
    _write_idx(tmp_path / "a", array, 0x803, gz=False)
    _write_idx(tmp_path / "b", array, 0x803, gz=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "b.gz", expect_magic=0x803), array)


# --------------------------------------------------------------------------- resolution


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_unavailable_message_names_files_and_remedies(
    tmp_path: Path, no_debian: Path, name: str
) -> None:
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset(name, root=tmp_path, allow_download=False)
    message = str(info.value)
    for stem in IDX_FILES.values():
        assert f"{stem}.gz" in message
    assert str(tmp_path / name) in message
    assert "allow_download=False" in message
    assert "make data" in message
    assert ("apt-get install dataset-fashion-mnist" in message) == (name == "fashion-mnist")
    if name == "fashion-mnist":
        assert str(no_debian) in message


def test_cifar_unavailable_message(tmp_path: Path, no_debian: Path) -> None:
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset("cifar10", root=tmp_path, allow_download=False)
    message = str(info.value)
    for batch in CIFAR10_BATCHES:
        assert batch in message
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py") in message


def test_failed_download_is_reported(tmp_path: Path, no_debian: Path) -> None:
    with pytest.raises(DatasetUnavailable, match="offline in tests"):
        load_dataset("mnist", root=tmp_path, allow_download=True)


def test_download_lands_in_torchvision_layout(
    tmp_path: Path, no_debian: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_download(name: str, target: Path) -> None:
        calls.append((name, target))
        _write_idx_dataset(target / "FashionMNIST" / "raw", gz=True)

    monkeypatch.setattr(locate, "_download_with_torchvision", fake_download)
    splits = load_dataset("fashion-mnist", root=tmp_path)
    assert calls == [("fashion-mnist", tmp_path / "fashion-mnist")]
    assert "downloaded" in splits.source
    # Next time the files are found locally, without downloading again.
    again = load_dataset("fashion-mnist", root=tmp_path)
    assert len(calls) == 1 and "downloaded" not in again.source


@pytest.mark.parametrize(
    ("name", "subdir"),
    [("mnist", "MNIST/raw"), ("mnist", "mnist/MNIST/raw"), ("fashion-mnist", "FashionMNIST/raw")],
)
def test_torchvision_folders_are_found(
    tmp_path: Path, no_debian: Path, name: str, subdir: str
) -> None:
    _write_idx_dataset(tmp_path / subdir)
    splits = load_dataset(name, root=tmp_path, allow_download=False)
    assert str(tmp_path / subdir) in splits.source


def test_debian_dir_is_used_after_local_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    debian = tmp_path / "debian"
    monkeypatch.setattr(locate, "DEBIAN_FASHION_MNIST_DIR", debian)
    _write_idx_dataset(debian, seed=5)
    root = tmp_path / "root"
    from_debian = load_dataset("fashion-mnist", root=root, allow_download=False)
    assert "Debian package dataset-fashion-mnist" in from_debian.source
    assert str(debian) in from_debian.source

    _write_idx_dataset(root / "fashion-mnist", seed=6)
    local = load_dataset("fashion-mnist", root=root, allow_download=False)
    assert str(root / "fashion-mnist") in local.source
    assert not torch.equal(local.test_x, from_debian.test_x)


def test_incomplete_folder_is_skipped(tmp_path: Path, no_debian: Path) -> None:
    _write_idx_dataset(tmp_path / "mnist")
    (tmp_path / "mnist" / f"{IDX_FILES['train_labels']}.gz").unlink()
    with pytest.raises(DatasetUnavailable, match=r"train-labels-idx1-ubyte\.gz"):
        load_dataset("mnist", root=tmp_path, allow_download=False)


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar10_round_trip(tmp_path: Path, no_debian: Path) -> None:
    written = _write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    splits = load_dataset("cifar10", root=tmp_path, val_fraction=0.25, allow_download=False)
    assert splits.sizes() == {"train": 15, "val": 5, "test": 6}
    assert (splits.in_channels, splits.image_size, splits.num_classes) == (3, 32, 10)
    assert splits.train_x.shape == (15, 3, 32, 32) and splits.train_x.dtype == torch.float32
    assert splits.train_y.dtype == torch.int64

    # Per-channel normalisation on the training split.
    means = splits.train_x.mean(dim=(0, 2, 3))
    stds = splits.train_x.std(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(means, torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(stds, torch.ones(3), atol=1e-5, rtol=0)
    assert splits.mean[1] < splits.mean[0] - 20  # the green channel was darkened

    # Pixel-exact round trip, including the R/G/B plane order of the 3072-byte rows.
    train_images = np.concatenate([written[b][0] for b in CIFAR10_BATCHES[:5]])
    train_labels = np.concatenate([written[b][1] for b in CIFAR10_BATCHES[:5]])
    index = _index_of(train_images)
    seen = []
    for x, y in [(splits.train_x, splits.train_y), (splits.val_x, splits.val_y)]:
        for img, label in zip(_recover(splits, x), y.tolist(), strict=True):
            i = index[img.tobytes()]
            assert train_labels[i] == label
            seen.append(i)
    assert sorted(seen) == list(range(20))
    test_images, test_labels = written["test_batch"]
    np.testing.assert_array_equal(_recover(splits, splits.test_x), test_images)
    np.testing.assert_array_equal(splits.test_y.numpy(), test_labels)


def test_cifar_batch_with_str_keys_and_new_protocol(tmp_path: Path) -> None:
    images = _unique_images(3, (3, 32, 32), seed=1)
    path = tmp_path / "batch"
    with path.open("wb") as fh:
        pickle.dump({"data": images.reshape(3, -1), "labels": [1, 2, 3]}, fh, protocol=5)
    x, y = read_cifar_batch(path)
    np.testing.assert_array_equal(x, images)
    assert y.tolist() == [1, 2, 3] and y.dtype == np.int64


def _py2_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way Python 2 + NumPy 1 wrote the original CIFAR-10 files.

    Written opcode by opcode: Python 2 ``str`` values are BINSTRING opcodes and arrays
    are rebuilt through ``numpy.core.multiarray._reconstruct``, which Python 3 never
    produces by itself.
    """

    def text(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def integer(v: int) -> bytes:
        return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)

    shape = b"(" + b"".join(integer(d) for d in data.shape) + b"t"
    dtype = (
        b"cnumpy\ndtype\n" + text(b"u1") + integer(0) + integer(1) + b"\x87R("
        + integer(3) + text(b"|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + integer(0) + b"tb"
    )  # fmt: skip
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85"
        + text(b"b") + b"\x87R(" + integer(1) + shape + dtype + b"\x89"
        + text(data.tobytes()) + b"tb"
    )  # fmt: skip
    items = b"](" + b"".join(integer(v) for v in labels) + b"e"
    return b"\x80\x02}(" + text(b"data") + array + text(b"labels") + items + b"u."


def test_cifar_batch_written_by_python2(tmp_path: Path) -> None:
    images = _unique_images(3, (3, 32, 32), seed=2)
    path = tmp_path / "data_batch_1"
    path.write_bytes(_py2_pickle(images.reshape(3, -1), [7, 0, 9]))
    x, y = read_cifar_batch(path)
    np.testing.assert_array_equal(x, images)
    assert y.tolist() == [7, 0, 9]


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"\(N, 3072\)"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "'labels' must be 2"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, "outside 0..9"),
        ({b"labels": [0]}, "missing key"),
        ([1, 2, 3], "expected a pickled dict"),
        (OrderedDict(a=1), "refusing to load collections.OrderedDict"),
    ],
)
def test_malformed_cifar_batch(tmp_path: Path, content: object, pattern: str) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(ValueError, match=pattern) as info:
        read_cifar_batch(path)
    assert "data_batch_1" in str(info.value)


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(
    not REAL_DEBIAN_DIR.is_dir(),
    reason=f"{REAL_DEBIAN_DIR} missing (apt-get install dataset-fashion-mnist provides it)",
)
def test_real_fashion_mnist_from_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locate, "DEBIAN_FASHION_MNIST_DIR", REAL_DEBIAN_DIR)
    splits = load_dataset("fashion-mnist", root=tmp_path, allow_download=False)
    assert splits.sizes() == {"train": 54_000, "val": 6_000, "test": 10_000}
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 1, 28)
    assert "Debian" in splits.source
    for labels in (splits.train_y, splits.val_y, splits.test_y):
        assert labels.unique().tolist() == list(range(10))
    # Fashion-MNIST's test set is balanced: 1,000 images per class.
    assert torch.bincount(splits.test_y).tolist() == [1000] * 10
    assert abs(splits.train_x.mean().item()) < 1e-4
    assert splits.train_x.std().item() == pytest.approx(1.0, abs=1e-4)


def test_digits() -> None:
    splits = load_dataset("digits", split_seed=0)
    assert sum(splits.sizes().values()) == 1797
    assert splits.sizes()["test"] == 359
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 1, 8)
    assert splits.train_x.shape[1:] == (1, 8, 8)
    assert "load_digits" in splits.source
    assert 0.0 < splits.mean[0] < 16.0
    # The test hold-out is fixed: it does not move with split_seed, the validation does.
    other = load_dataset("digits", split_seed=1)
    assert torch.equal(splits.test_y, other.test_y)
    np.testing.assert_array_equal(_recover(splits, splits.test_x), _recover(other, other.test_x))
    assert not torch.equal(splits.val_y, other.val_y)


def test_synthetic_is_deterministic_per_seed() -> None:
    a = load_dataset("synthetic", seed=3)
    b = load_dataset("synthetic", seed=3)
    c = load_dataset("synthetic", seed=4)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)
    assert a.sizes() == {"train": 461, "val": 51, "test": 256}
    assert (a.num_classes, a.in_channels, a.image_size) == (4, 1, 8)
    # More training samples leave the test set unchanged.
    d = load_dataset("synthetic", seed=3, n_train=100)
    assert torch.equal(a.test_y, d.test_y)


def test_synthetic_options_and_learnability() -> None:
    splits = load_dataset(
        "synthetic", n_train=300, n_test=200, image_size=6, num_classes=5, channels=3, seed=1
    )
    assert splits.train_x.shape[1:] == (3, 6, 6)
    assert splits.num_classes == 5
    assert set(splits.train_y.tolist()) == set(range(5))
    # Class-dependent signal: a nearest-class-mean classifier beats chance (20%) clearly.
    centroids = torch.stack(
        [splits.train_x[splits.train_y == k].mean(0).flatten() for k in range(5)]
    )
    predicted = torch.cdist(splits.test_x.flatten(1), centroids).argmin(1)
    assert (predicted == splits.test_y).float().mean().item() > 0.6


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"noise": -1.0}, r"noise=-1.0.*>= 0"),
        ({"n_train": 0}, r"n_train=0.*>= 1"),
        ({"image_size": 2}, r"image_size=2.*>= 4"),
        ({"num_classes": 1}, r"num_classes=1.*>= 2"),
        ({"seed": -3}, r"seed=-3.*>= 0"),
        ({"size": 8}, r"'size'.*allowed options: channels, image_size"),
    ],
)
def test_synthetic_bad_options(options: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        load_dataset("synthetic", **options)


def test_datasplits_to_device_and_sizes() -> None:
    splits = load_dataset("synthetic", n_train=40, n_test=10, val_fraction=0.25)
    moved = splits.to("meta")
    assert moved.train_x.device.type == "meta" and moved.test_y.device.type == "meta"
    assert splits.train_x.device.type == "cpu"  # the original is untouched
    assert moved.sizes() == splits.sizes() == {"train": 30, "val": 10, "test": 10}
    assert (moved.name, moved.source, moved.mean) == (splits.name, splits.source, splits.mean)
    on_meta = load_dataset("synthetic", n_train=40, n_test=10, device="meta")
    assert on_meta.val_x.device.type == "meta"
    with pytest.raises(ValueError, match="30 samples but train_y has 3"):
        DataSplits(
            *(splits.train_x, splits.train_y[:3]),
            *(splits.val_x, splits.val_y, splits.test_x, splits.test_y),
            name="x",
            num_classes=4,
            in_channels=1,
            image_size=8,
            source="test",
        )


# --------------------------------------------------------------------------- ensure_dataset


def test_ensure_dataset_resolves_existing_files(tmp_path: Path, no_debian: Path) -> None:
    assert "load_digits" in ensure_dataset("digits", root=tmp_path)
    _write_idx_dataset(tmp_path / "mnist")
    assert str(tmp_path / "mnist") in ensure_dataset("mnist", root=tmp_path)
    with pytest.raises(DatasetUnavailable, match="offline in tests"):
        ensure_dataset("cifar10", root=tmp_path)


def test_ensure_dataset_installs_debian_package_as_root(
    tmp_path: Path, no_debian: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = []

    def fake_apt(package: str) -> None:
        installed.append(package)
        _write_idx_dataset(no_debian)

    monkeypatch.setattr(install, "_apt_install", fake_apt)
    monkeypatch.setattr(install, "_running_as_root", lambda: True)
    monkeypatch.setattr(install.shutil, "which", lambda cmd: f"/usr/bin/{cmd}")

    with pytest.raises(DatasetUnavailable, match="dataset-fashion-mnist"):
        ensure_dataset("fashion-mnist", root=tmp_path, install_with_apt=False)
    assert installed == []

    source = ensure_dataset("fashion-mnist", root=tmp_path)
    assert installed == ["dataset-fashion-mnist"]
    assert "Debian package" in source and str(no_debian) in source


def test_ensure_dataset_without_root_explains(
    tmp_path: Path, no_debian: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(install, "_running_as_root", lambda: False)
    monkeypatch.setattr(install, "_apt_install", lambda package: pytest.fail("apt must not run"))
    with pytest.raises(DatasetUnavailable, match="needs root"):
        ensure_dataset("fashion-mnist", root=tmp_path)
