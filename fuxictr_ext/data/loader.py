"""The in-memory FuxiCTR data loader.

:class:`TensorDataLoader` loads a processed parquet split into memory once and
yields FuxiCTR batches (``dict[str, Tensor]`` of shape (B,) or (B, max_len)) by
tensor indexing. Pass it through FuxiCTR's hook:
``RankDataLoader(feature_map, ..., data_loader=TensorDataLoader)``.
"""

from __future__ import annotations

import os
from typing import Dict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .build import DataError, rebuild_hint, resolve_files


class TensorDataLoader:
    """In-memory FuxiCTR data loader: the whole split as tensors, batches by indexing.

    Accepted by FuxiCTR through ``RankDataLoader(..., data_loader=TensorDataLoader)``.
    Each pass over a training loader draws a new permutation from a generator seeded
    with ``seed`` and the pass number, so runs are reproducible and independent of
    any other random state. With ``world_size > 1`` each rank gets a disjoint,
    equal-length shard of every pass's permutation (the tail that does not divide
    evenly is dropped from training passes; evaluation loaders are never sharded
    here - distributed evaluation gathers instead).

    Args:
        feature_map: FuxiCTR FeatureMap of the processed dataset.
        data_path: a processed ``.parquet`` file or a folder of them.
        split: ``train``, ``valid`` or ``test``.
        batch_size: rows per batch.
        shuffle: shuffle training passes (ignored for other splits).
        seed: base seed of the shuffle.
        rank, world_size: data-parallel shard of this process.
    """

    def __init__(self, feature_map, data_path: str, split: str = "train", batch_size: int = 32,
                 shuffle: bool = False, seed: int = 2019, rank: int = 0, world_size: int = 1, **kwargs):
        self.feature_map = feature_map
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle) and split == "train"
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0
        files = resolve_files(data_path, "parquet")
        self.num_blocks = len(files)
        columns = list(feature_map.features.keys()) + list(feature_map.labels)
        table = pa.concat_tables([_read_split(f, columns) for f in files])
        self.num_samples = table.num_rows
        self.columns: Dict[str, torch.Tensor] = {name: _column_tensor(table.column(name)) for name in columns}
        if self.world_size > 1 and self.split == "train" and self.num_samples < self.world_size:
            raise ValueError(f"world size {self.world_size} exceeds the {self.num_samples} training rows")

    def _rows_per_rank(self) -> int:
        if self.world_size > 1 and self.split == "train":
            return self.num_samples // self.world_size
        return self.num_samples

    def __len__(self) -> int:
        return int(np.ceil(self._rows_per_rank() / self.batch_size))

    def __iter__(self):
        n = self.num_samples
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        self.epoch += 1
        if self.world_size > 1 and self.split == "train":
            per_rank = self._rows_per_rank()
            order = order[self.rank * per_rank:(self.rank + 1) * per_rank]
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            yield {name: values[idx] for name, values in self.columns.items()}


def _read_split(path: str, columns: list) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: the processed split cannot be read ({err}); "
                        f"{rebuild_hint(os.path.dirname(os.path.abspath(path)))}") from err


def _column_tensor(column: pa.ChunkedArray) -> torch.Tensor:
    array = column.combine_chunks()
    if pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type):
        width = len(array[0]) if len(array) else 0
        values = np.asarray(array.flatten().to_numpy(zero_copy_only=False)).reshape(len(array), width)
    else:
        values = array.to_numpy(zero_copy_only=False)
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.floating):
        return torch.from_numpy(np.array(values, dtype=np.float64))
    return torch.from_numpy(np.array(values, dtype=np.int64))
