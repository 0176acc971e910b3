"""FuxiCTR data loaders that batch by gathering rows of row-major matrices.

:class:`TensorDataLoader` loads a processed parquet split into memory once, as
one row-major matrix per dtype (float64: numeric features and labels; int64:
categorical ids and sequences), and yields FuxiCTR batches (``dict[str, Tensor]``
of shape (B,) or (B, max_len)) by gathering B rows of each matrix. A row is one
contiguous run of memory, so a shuffled batch costs a cache miss or two a row
instead of one a field (one gather per column). :class:`MappedDataLoader` yields
the same batches from memory-mapped matrix files written once beside the split,
so the processes of a torchrun job on one machine share one copy of the data
(the page cache) instead of holding one each. Pass either through FuxiCTR's hook:
``RankDataLoader(feature_map, ..., data_loader=TensorDataLoader)``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .build import DataError, pid_alive, rebuild_hint, resolve_files

MATRIX_DTYPES = {"float64": np.float64, "int64": np.int64}
LAYOUT_FILE = "layout.json"


@dataclass(frozen=True)
class Slot:
    """Where a column lives: columns ``offset:offset + width`` of the ``dtype`` matrix.

    Args:
        name: the column.
        dtype: ``float64`` or ``int64``, the matrix that holds it.
        offset: its first matrix column.
        width: 1, or max_len for a sequence feature.
        sequence: batches of it are (B, width), not (B,).
    """

    name: str
    dtype: str
    offset: int
    width: int
    sequence: bool


def _layout(arrays: Dict[str, np.ndarray]) -> List[Slot]:
    """Slots of the columns in ``arrays`` (their first rows), in their order."""
    slots, used = [], dict.fromkeys(MATRIX_DTYPES, 0)
    for name, values in arrays.items():
        dtype = "float64" if np.issubdtype(values.dtype, np.floating) else "int64"
        width = values.shape[1] if values.ndim == 2 else 1
        slots.append(Slot(name, dtype, used[dtype], width, values.ndim == 2))
        used[dtype] += width
    return slots


def _matrix_widths(layout: List[Slot]) -> Dict[str, int]:
    widths = dict.fromkeys(MATRIX_DTYPES, 0)
    for slot in layout:
        widths[slot.dtype] = max(widths[slot.dtype], slot.offset + slot.width)
    return {dtype: width for dtype, width in widths.items() if width}


def _open_split(path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: the processed split cannot be read ({err}); "
                        f"{rebuild_hint(os.path.dirname(os.path.abspath(path)))}") from err


def _read_column(source: pq.ParquetFile, path: str, group: int, name: str) -> np.ndarray:
    try:
        table = source.read_row_group(group, columns=[name])
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: the processed split cannot be read ({err}); "
                        f"{rebuild_hint(os.path.dirname(os.path.abspath(path)))}") from err
    return _column_array(table.column(0))


def fill_matrices(path: str, columns: List[str] | None,
                  allocate: Callable[[str, Tuple[int, int]], np.ndarray]) -> Tuple[List[Slot], Dict[str, np.ndarray]]:
    """Copy ``columns`` of a processed split (all when None) into row-major matrices, one column
    of one row group at a time (peak memory: the matrices and one column chunk).
    ``allocate(dtype, shape)`` makes each matrix."""
    source = _open_split(path)
    names = source.schema_arrow.names if columns is None else list(columns)
    missing = [name for name in names if name not in source.schema_arrow.names]
    rows = source.metadata.num_rows
    if missing or rows == 0:
        problem = f"has no column(s) {missing}" if missing else "has no rows"
        raise DataError(f"{path}: the processed split {problem}; "
                        f"{rebuild_hint(os.path.dirname(os.path.abspath(path)))}")
    layout = _layout({name: _read_column(source, path, 0, name)[:1].copy() for name in names})
    matrices = {dtype: allocate(dtype, (rows, width)) for dtype, width in _matrix_widths(layout).items()}
    start = 0
    for group in range(source.num_row_groups):
        n = source.metadata.row_group(group).num_rows
        for slot in layout:
            matrices[slot.dtype][start:start + n, slot.offset:slot.offset + slot.width] = \
                _read_column(source, path, group, slot.name).reshape(n, slot.width)
        start += n
    return layout, matrices


class TensorDataLoader:
    """In-memory FuxiCTR data loader: the whole split as row-major tensors, batches by gathering rows.

    Accepted by FuxiCTR through ``RankDataLoader(..., data_loader=TensorDataLoader)``.
    Each pass over a training loader draws a new permutation from a generator seeded
    with ``seed`` and the pass number, so runs are reproducible and independent of
    any other random state. With ``world_size > 1`` each rank gets a disjoint,
    equal-length shard of every pass's permutation (the tail that does not divide
    evenly is dropped from training passes; evaluation loaders are never sharded
    here - distributed evaluation gathers instead). Batches hold float64 (numeric
    features, labels) and int64 (ids) tensors, each contiguous.

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
        self.columns = list(feature_map.features.keys()) + list(feature_map.labels)
        self.layout, self.matrices = self._load_files(files, self.columns)  # dtype -> (rows, width)
        self.num_samples = len(next(iter(self.matrices.values())))
        if self.world_size > 1 and self.split == "train" and self.num_samples < self.world_size:
            raise ValueError(f"world size {self.world_size} exceeds the {self.num_samples} training rows")

    def _load_files(self, files: List[str], columns: List[str]) -> Tuple[List[Slot], Dict[str, np.ndarray]]:
        """The layout of ``columns`` and the matrices of all ``files`` (concatenated)."""
        layouts, parts = zip(*(self._load(f, columns) for f in files))
        return layouts[0], {dtype: parts[0][dtype] if len(parts) == 1 else np.concatenate([p[dtype] for p in parts])
                            for dtype in parts[0]}

    def _load(self, path: str, columns: List[str]) -> Tuple[List[Slot], Dict[str, np.ndarray]]:
        return fill_matrices(path, columns, lambda dtype, shape: np.empty(shape, dtype=MATRIX_DTYPES[dtype]))

    def _rows_per_rank(self) -> int:
        if self.world_size > 1 and self.split == "train":
            return self.num_samples // self.world_size
        return self.num_samples

    def __len__(self) -> int:
        return int(np.ceil(self._rows_per_rank() / self.batch_size))

    def _batch(self, idx: np.ndarray) -> Dict[str, torch.Tensor]:
        """Numpy gathers one thread, whatever torch's thread count: on a 2-core machine shared
        with other jobs, torch's 2-thread index_select ran 2.5x slower than its 1-thread one."""
        rows = {dtype: np.take(matrix, idx, axis=0) for dtype, matrix in self.matrices.items()}  # (B, width)
        columns = {dtype: np.ascontiguousarray(block.T) for dtype, block in rows.items()}         # (width, B)
        return {slot.name: torch.from_numpy(
                    np.ascontiguousarray(rows[slot.dtype][:, slot.offset:slot.offset + slot.width]) if slot.sequence
                    else columns[slot.dtype][slot.offset])
                for slot in self.layout}

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
        order = order.numpy()
        for start in range(0, len(order), self.batch_size):
            yield self._batch(order[start:start + self.batch_size])


class MappedDataLoader(TensorDataLoader):
    """:class:`TensorDataLoader` over memory-mapped matrix files: the same batches, in the
    same order, and the processes on one machine share one copy of the split.

    On first use each split ``<name>.parquet`` gets a folder ``<name>.rows/`` beside it
    with one row-major ``<dtype>.npy`` matrix of all its columns per dtype and
    ``layout.json`` (which columns are where), written row group by row group (peak
    memory: one row group) into a temporary folder renamed into place; concurrent first
    uses each write their own and the first rename wins. A rebuild of the dataset
    replaces the folder with the build. Batches are gathered from the mapped files, so a
    process's private memory is its batches, not the split.
    """

    def _load_files(self, files: List[str], columns: List[str]) -> Tuple[List[Slot], Dict[str, np.ndarray]]:
        if len(files) > 1:
            logging.warning(f"MappedDataLoader: {len(files)} parquet files are concatenated into this "
                            "process's memory (one mapped copy is shared only for a split in one file, as "
                            "build_dataset writes)")
        return super()._load_files(files, columns)

    def _load(self, path: str, columns: List[str]) -> Tuple[List[Slot], Dict[str, np.ndarray]]:
        layout, matrices = mapped_matrices(path)
        slots = {slot.name: slot for slot in layout}
        missing = [name for name in columns if name not in slots]
        if missing:
            raise DataError(f"{path}: the processed split has no column(s) {missing}; "
                            f"{rebuild_hint(os.path.dirname(os.path.abspath(path)))}")
        return [slots[name] for name in columns], matrices


def mapped_matrices(parquet_path: str) -> Tuple[List[Slot], Dict[str, np.ndarray]]:
    """The layout and the memory-mapped row-major matrices of a processed split (every
    column), written on first use. Copy-on-write maps (``mmap_mode="c"``): reads share the
    page cache across processes, and a write (none is made) would stay private."""
    folder = os.path.splitext(parquet_path)[0] + ".rows"
    if not os.path.isfile(os.path.join(folder, LAYOUT_FILE)):
        _write_matrix_files(parquet_path, folder)
    with open(os.path.join(folder, LAYOUT_FILE)) as fd:
        layout = [Slot(**slot) for slot in json.load(fd)]
    return layout, {dtype: np.load(os.path.join(folder, f"{dtype}.npy"), mmap_mode="c")
                    for dtype in _matrix_widths(layout)}


def _write_matrix_files(parquet_path: str, folder: str) -> None:
    prefix = f".{os.path.basename(folder)}.tmp-"
    for entry in os.listdir(os.path.dirname(folder)):  # left by writers that died
        if entry.startswith(prefix) and entry[len(prefix):].isdigit() and not pid_alive(int(entry[len(prefix):])):
            shutil.rmtree(os.path.join(os.path.dirname(folder), entry), ignore_errors=True)
    tmp = os.path.join(os.path.dirname(folder), f"{prefix}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        layout, matrices = fill_matrices(parquet_path, None, lambda dtype, shape: np.lib.format.open_memmap(
            os.path.join(tmp, f"{dtype}.npy"), mode="w+", dtype=MATRIX_DTYPES[dtype], shape=shape))
        for matrix in matrices.values():
            matrix.flush()
        matrices.clear()
        with open(os.path.join(tmp, LAYOUT_FILE), "w") as fd:
            json.dump([asdict(slot) for slot in layout], fd)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not os.path.isdir(folder):  # not another process's complete folder: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _column_array(column: pa.ChunkedArray) -> np.ndarray:
    """A parquet column as numpy: (rows,) or, for sequence features, (rows, max_len)."""
    array = column.combine_chunks()
    if pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type):
        width = len(array[0]) if len(array) else 0
        return np.asarray(array.flatten().to_numpy(zero_copy_only=False)).reshape(len(array), width)
    return np.asarray(array.to_numpy(zero_copy_only=False))
