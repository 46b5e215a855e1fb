"""Datasets as normalised tensors, split into train / validation / test.

One job per module:

- :mod:`~bench.data.splits`: :class:`DataSplits` and :func:`load_dataset` (the split and
  normalisation rules, the same for every dataset) and the checks of its options;
- :mod:`~bench.data.registry`: name -> loader, with the options each loader accepts;
- :mod:`~bench.data.loaders`: the registered datasets;
- :mod:`~bench.data.formats`: the IDX and CIFAR file parsers (corrupt files raise
  :class:`DataFileError` naming the file);
- :mod:`~bench.data.locate`: where files are found (local folders, the Debian package,
  a torchvision download) and :class:`DatasetUnavailable` saying how to provide them;
- :mod:`~bench.data.install`: :func:`ensure_dataset` for ``make data`` (apt included);
- :mod:`~bench.data.cache`: :class:`DataCache`, each dataset loaded once per process.

The datasets folder itself (``datasets/`` by default) holds files only, no code.
"""

from bench.data import loaders as _loaders  # noqa: F401  (registers the datasets)
from bench.data.cache import DataCache
from bench.data.formats import DataFileError, read_cifar_batch, read_idx
from bench.data.install import ensure_dataset
from bench.data.locate import (
    CIFAR10_BATCHES,
    DEBIAN_FASHION_MNIST_PACKAGE,
    IDX_FILES,
    DatasetUnavailable,
)
from bench.data.registry import (
    IntOption,
    NumberOption,
    RawData,
    available_datasets,
    dataset_description,
    register_dataset,
)
from bench.data.splits import (
    SPLIT_OPTIONS,
    DataOptionError,
    DataSplits,
    check_data_option,
    data_options,
    load_dataset,
)

__all__ = [
    "CIFAR10_BATCHES",
    "DEBIAN_FASHION_MNIST_PACKAGE",
    "IDX_FILES",
    "SPLIT_OPTIONS",
    "DataCache",
    "DataFileError",
    "DataOptionError",
    "DataSplits",
    "DatasetUnavailable",
    "IntOption",
    "NumberOption",
    "RawData",
    "available_datasets",
    "check_data_option",
    "data_options",
    "dataset_description",
    "ensure_dataset",
    "load_dataset",
    "read_cifar_batch",
    "read_idx",
    "register_dataset",
]
