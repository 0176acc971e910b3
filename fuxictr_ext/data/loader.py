"""FuxiCTR data loaders that batch by indexing whole columns.

:class:`TensorDataLoader` loads a processed parquet split into memory once and
yields FuxiCTR batches (``dict[str, Tensor]`` of shape (B,) or (B, max_len)) by
tensor indexing. :class:`MappedDataLoader` yields the same batches from
memory-mapped column files written once beside the split, so the processes of a
torchrun job on one machine share one copy of the data (the page cache) instead
of holding one each. Pass either through FuxiCTR's hook:
``RankDataLoader(feature_map, ..., data_loader=TensorDataLoader)``.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Dict, List

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .build import DataError, pid_alive, rebuild_hint, resolve_files


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
        self.columns = self._load_columns(files, columns)
        self.num_samples = len(next(iter(self.columns.values())))
        if self.world_size > 1 and self.split == "train" and self.num_samples < self.world_size:
            raise ValueError(f"world size {self.world_size} exceeds the {self.num_samples} training rows")

    def _load_columns(self, files: List[str], columns: List[str]) -> Dict[str, torch.Tensor]:
        table = pa.concat_tables([_read_split(f, columns) for f in files])
        return {name: _column_tensor(table.column(name)) for name in columns}

    def _take(self, values, idx: torch.Tensor) -> torch.Tensor:
        return values[idx]

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
            yield {name: self._take(values, idx) for name, values in self.columns.items()}


class MappedDataLoader(TensorDataLoader):
    """:class:`TensorDataLoader` over memory-mapped column files: the same batches, in the
    same order, and the processes on one machine share one copy of the split.

    On first use each split ``<name>.parquet`` gets a folder ``<name>.columns/`` beside
    it with one ``.npy`` file per column, written row group by row group (peak memory:
    one row group) into a temporary folder renamed into place; concurrent first uses
    each write their own and the first rename wins. A rebuild of the dataset replaces
    the folder with the build. Batches are gathered from the mapped files, so a
    process's private memory is its batches, not the split.
    """

    def _load_columns(self, files: List[str], columns: List[str]) -> Dict[str, torch.Tensor]:
        parts = [mapped_columns(f, columns) for f in files]
        if len(parts) > 1:
            logging.warning(f"MappedDataLoader: {len(files)} parquet files are concatenated into this process's "
                            "memory (one mapped copy is shared only for a split in one file, as build_dataset "
                            "writes)")
        merged = parts[0] if len(parts) == 1 else {n: np.concatenate([p[n] for p in parts]) for n in columns}
        return {name: torch.from_numpy(values) for name, values in merged.items()}  # views of the mappings

    def _take(self, values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return values[idx].to(torch.float64 if values.is_floating_point() else torch.int64)


def mapped_columns(parquet_path: str, columns: List[str]) -> Dict[str, np.ndarray]:
    """Memory maps of ``columns`` of a processed split, written on first use. Copy-on-write
    maps (``mmap_mode="c"``): reads share the page cache across processes, and a write
    (none is made) would stay private to its process."""
    folder = os.path.splitext(parquet_path)[0] + ".columns"
    if not all(os.path.isfile(os.path.join(folder, f"{name}.npy")) for name in columns):
        _write_column_files(parquet_path, folder)
    return {name: np.load(os.path.join(folder, f"{name}.npy"), mmap_mode="c") for name in columns}


def _write_column_files(parquet_path: str, folder: str) -> None:
    source = pq.ParquetFile(parquet_path)
    rows = source.metadata.num_rows
    prefix = f".{os.path.basename(folder)}.tmp-"
    for entry in os.listdir(os.path.dirname(folder)):  # left by writers that died
        if entry.startswith(prefix) and entry[len(prefix):].isdigit() and not pid_alive(int(entry[len(prefix):])):
            shutil.rmtree(os.path.join(os.path.dirname(folder), entry), ignore_errors=True)
    tmp = os.path.join(os.path.dirname(folder), f"{prefix}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        outputs: Dict[str, np.ndarray] = {}
        start = 0
        for group in range(source.num_row_groups):
            table = source.read_row_group(group)
            for name in table.column_names:
                values = _column_array(table.column(name))
                if name not in outputs:
                    outputs[name] = np.lib.format.open_memmap(os.path.join(tmp, f"{name}.npy"), mode="w+",
                                                              dtype=values.dtype, shape=(rows,) + values.shape[1:])
                outputs[name][start:start + len(values)] = values
            start += table.num_rows
        for array in outputs.values():
            array.flush()
        outputs.clear()
        try:
            os.replace(tmp, folder)
        except OSError:
            if not os.path.isdir(folder):  # not another process's complete folder: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_split(path: str, columns: list) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: the processed split cannot be read ({err}); "
                        f"{rebuild_hint(os.path.dirname(os.path.abspath(path)))}") from err


def _column_array(column: pa.ChunkedArray) -> np.ndarray:
    """A parquet column as numpy: (rows,) or, for sequence features, (rows, max_len)."""
    array = column.combine_chunks()
    if pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type):
        width = len(array[0]) if len(array) else 0
        return np.asarray(array.flatten().to_numpy(zero_copy_only=False)).reshape(len(array), width)
    return np.asarray(array.to_numpy(zero_copy_only=False))


def _column_tensor(column: pa.ChunkedArray) -> torch.Tensor:
    values = _column_array(column)
    if np.issubdtype(values.dtype, np.floating):
        return torch.from_numpy(np.array(values, dtype=np.float64))
    return torch.from_numpy(np.array(values, dtype=np.int64))
