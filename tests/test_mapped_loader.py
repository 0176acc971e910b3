"""MappedDataLoader: the same batches as TensorDataLoader from memory-mapped matrix files."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fuxictr.features import FeatureMap

from fuxictr_ext.data import MappedDataLoader, TensorDataLoader, build_dataset
from fuxictr_ext.data.loader import mapped_matrices
from fuxictr_ext.data.synthetic import write


@pytest.fixture(scope="module")
def built_taobao(tmp_path_factory):
    """A small TaobaoAd-like build: numeric, categorical, sequence and meta columns."""
    root = tmp_path_factory.mktemp("mapped")
    write("taobao", 1500, str(root / "raw"), seed=3)
    with open(Path(__file__).resolve().parents[1] / "config" / "dataset_config.yaml") as fd:
        params = dict(yaml.safe_load(fd)["demo_taobao"], dataset_id="mapped_taobao", data_root=str(root / "data"))
    for split in ("train", "valid", "test"):
        params[f"{split}_data"] = str(root / "raw" / f"{split}.parquet")
    paths = build_dataset(params)
    data_dir = os.path.dirname(paths["train"])
    fmap = FeatureMap("mapped_taobao", data_dir)
    fmap.load(os.path.join(data_dir, "feature_map.json"), {"group_id": "group_id"})
    return fmap, paths


def _batches(loader_cls, fmap, path, **kwargs):
    return list(loader_cls(fmap, path, **kwargs))


@pytest.mark.parametrize("kwargs", [
    {"split": "train", "batch_size": 128, "shuffle": True, "seed": 5},
    {"split": "train", "batch_size": 100, "shuffle": True, "seed": 5, "rank": 1, "world_size": 3},
    {"split": "test", "batch_size": 64, "shuffle": True},
])
def test_mapped_batches_equal_in_memory_batches(built_taobao, kwargs):
    fmap, paths = built_taobao
    path = paths[kwargs["split"]]
    expected = _batches(TensorDataLoader, fmap, path, **kwargs)
    got = _batches(MappedDataLoader, fmap, path, **kwargs)
    assert len(got) == len(expected) > 1
    for a, b in zip(got, expected):
        assert list(a) == list(b)
        for name in a:
            assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
            assert torch.equal(a[name], b[name]), name
    assert any(b[name].dim() == 2 for b in got[:1] for name in b)  # a sequence feature was mapped


def test_matrix_files_are_written_once_and_mapped(built_taobao):
    fmap, paths = built_taobao
    first = MappedDataLoader(fmap, paths["valid"], split="valid", batch_size=256)
    folder = os.path.splitext(paths["valid"])[0] + ".rows"
    stamps = {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)}
    assert sorted(stamps) == ["float64.npy", "int64.npy", "layout.json"]
    second = MappedDataLoader(fmap, paths["valid"], split="valid", batch_size=256)
    assert {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)} == stamps
    layout, mapped = mapped_matrices(paths["valid"])
    assert all(isinstance(v, np.memmap) for v in mapped.values())
    assert {slot.name for slot in layout} >= set(second.columns)
    assert first.num_samples == second.num_samples
    assert not [e for e in os.listdir(os.path.dirname(folder)) if ".tmp-" in e]


def test_runner_offers_the_mapped_loader():
    from fuxictr_ext.runner import DATA_LOADERS
    assert DATA_LOADERS["mapped"] is MappedDataLoader
