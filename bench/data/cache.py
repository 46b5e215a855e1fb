"""Datasets loaded once per process: a suite's cells (and a sync's records) share them."""

from __future__ import annotations

import json
from typing import Any

import torch

from bench.data.splits import DataSplits, load_dataset


class DataCache:
    """Splits by (dataset, options), loaded on first use and kept on ``device``.

    A suite trains many cells on the same data; loading and normalising it once per
    cell would cost more than a smoke cell's training.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._cache: dict[str, DataSplits] = {}

    def get(self, dataset: str, options: dict[str, Any]) -> DataSplits:
        key = json.dumps([dataset, options], sort_keys=True)
        if key not in self._cache:
            self._cache[key] = load_dataset(dataset, device=self.device, **options)
        return self._cache[key]
