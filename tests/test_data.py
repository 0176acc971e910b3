"""Atomic dataset build, raw-file validation and the in-memory loader."""

import os

import numpy as np
import pandas as pd
import pytest
import torch
from fuxictr.features import FeatureMap

from fuxictr_ext.data.synthetic import write
from fuxictr_ext.data import build as zoo_data
from fuxictr_ext.data import DataError, TensorDataLoader, build_dataset, is_built

FEATURES = [{"name": ["I1", "I2"], "active": True, "dtype": "float", "type": "numeric"},
            {"name": ["C1", "C2", "C3"], "active": True, "dtype": "str", "type": "categorical"}]


def _params(root, fmt="csv", dataset_id="small"):
    return {"dataset_id": dataset_id, "data_root": str(root / "data"), "data_format": fmt,
            "train_data": str(root / f"train.{fmt}"), "valid_data": str(root / f"valid.{fmt}"),
            "test_data": str(root / f"test.{fmt}"), "feature_cols": FEATURES,
            "label_col": {"name": "label", "dtype": "float"}, "min_categr_count": 1}


def _frame(rows, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"label": rng.integers(0, 2, rows), "I1": rng.random(rows), "I2": rng.random(rows),
                         "C1": rng.choice(list("abcd"), rows), "C2": rng.choice(list("xyz"), rows),
                         "C3": rng.choice(["p", "q"], rows)})


def _leftovers(data_root):
    """Entries of a data root other than the build lock files."""
    return [d for d in os.listdir(data_root) if not d.endswith(".lock")] if os.path.isdir(data_root) else []


def _write_splits(root, fmt="csv", frame=None):
    for i, split in enumerate(("train", "valid", "test")):
        f = _frame(200, seed=i) if frame is None else frame
        path = root / f"{split}.{fmt}"
        f.to_csv(path, index=False) if fmt == "csv" else f.to_parquet(path, index=False)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_build_reads_csv_and_parquet(tmp_path, fmt):
    _write_splits(tmp_path, fmt)
    params = _params(tmp_path, fmt)
    paths = build_dataset(params)
    assert is_built(params)
    assert all(os.path.isfile(p) for p in paths.values())
    assert not [d for d in os.listdir(tmp_path / "data") if d.startswith(".building")]


def test_interrupted_build_leaves_nothing_trusted(tmp_path, monkeypatch):
    _write_splits(tmp_path)
    params = _params(tmp_path)
    original = zoo_data._write_split
    calls = []

    def failing(processor, ddf, out_path):
        calls.append(out_path)
        if out_path.endswith("valid.parquet"):
            raise KeyboardInterrupt("simulated interruption")
        return original(processor, ddf, out_path)

    monkeypatch.setattr(zoo_data, "_write_split", failing)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(params)
    assert not is_built(params)
    assert _leftovers(tmp_path / "data") == []
    monkeypatch.setattr(zoo_data, "_write_split", original)
    build_dataset(params)
    assert is_built(params)


@pytest.mark.parametrize("problem, message", [
    ("missing_column", "missing column"),
    ("empty", "no rows"),
    ("text_label", "not numeric"),
])
def test_bad_raw_files_are_refused_by_name(tmp_path, problem, message):
    frame = _frame(50)
    if problem == "missing_column":
        frame = frame.drop(columns=["C2"])
    elif problem == "empty":
        frame = frame.iloc[:0]
    else:
        frame["label"] = "yes"
    _write_splits(tmp_path, frame=frame)
    params = _params(tmp_path)
    with pytest.raises(DataError, match=message) as info:
        build_dataset(params)
    assert "train.csv" in str(info.value)
    assert _leftovers(tmp_path / "data") == []


def test_missing_file_is_named(tmp_path):
    params = _params(tmp_path)
    with pytest.raises(DataError, match="train.csv"):
        build_dataset(params)


@pytest.fixture(scope="module")
def built_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    write("criteo", 1000, str(root / "raw"), seed=1)
    params = {"dataset_id": "demo_small", "data_root": str(root / "data"), "data_format": "parquet",
              "train_data": str(root / "raw" / "train.parquet"), "valid_data": str(root / "raw" / "valid.parquet"),
              "test_data": str(root / "raw" / "test.parquet"), "min_categr_count": 1,
              "feature_cols": [{"name": [f"I{i}" for i in range(1, 14)], "active": True, "dtype": "float", "type": "numeric"},
                               {"name": [f"C{i}" for i in range(1, 27)], "active": True, "dtype": "str", "type": "categorical"}],
              "label_col": {"name": "label", "dtype": "float"}}
    paths = build_dataset(params)
    fmap = FeatureMap("demo_small", os.path.dirname(paths["train"]))
    fmap.load(os.path.join(os.path.dirname(paths["train"]), "feature_map.json"), {})
    return fmap, paths


def test_loader_yields_fuxictr_batches(built_demo):
    fmap, paths = built_demo
    loader = TensorDataLoader(fmap, paths["train"], split="train", batch_size=128, shuffle=True, seed=3)
    batches = list(loader)
    assert len(batches) == len(loader) == int(np.ceil(loader.num_samples / 128))
    first = batches[0]
    assert list(first) == list(fmap.features) + fmap.labels
    assert first["I1"].dtype == torch.float64 and first["C1"].dtype == torch.int64
    assert first["label"].shape == (128,)


def test_loader_shuffle_is_seeded_and_changes_per_pass(built_demo):
    fmap, paths = built_demo
    a = TensorDataLoader(fmap, paths["train"], batch_size=10_000, shuffle=True, seed=3)
    b = TensorDataLoader(fmap, paths["train"], batch_size=10_000, shuffle=True, seed=3)
    a1, a2 = next(iter(a))["C1"], next(iter(a))["C1"]
    assert torch.equal(a1, next(iter(b))["C1"])
    assert not torch.equal(a1, a2)
    assert torch.equal(a1.sort().values, a2.sort().values)


def test_loader_shards_are_disjoint_and_equal(built_demo):
    fmap, paths = built_demo
    full = TensorDataLoader(fmap, paths["train"], batch_size=10_000, shuffle=True, seed=5)
    order = next(iter(full))["I1"]
    shards = [next(iter(TensorDataLoader(fmap, paths["train"], batch_size=10_000, shuffle=True, seed=5,
                                         rank=r, world_size=3)))["I1"] for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    assert torch.equal(torch.cat(shards), order[:3 * len(shards[0])])


def test_eval_loader_keeps_row_order(built_demo):
    fmap, paths = built_demo
    loader = TensorDataLoader(fmap, paths["test"], split="test", batch_size=64, shuffle=True)
    labels = torch.cat([b["label"] for b in loader]).numpy()
    expected = pd.read_parquet(paths["test"])["label"].to_numpy()
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("shuffle", [False, True])
def test_loader_batches_are_the_rows_of_the_split(built_demo, tmp_path, shuffle):
    """Rows gathered from the row-major matrices keep every row's values together, across
    row groups (the split rewritten with 300-row groups): unshuffled, the batches are the
    split in order; shuffled, a permutation of its rows."""
    import pyarrow.parquet as pq
    fmap, paths = built_demo
    path = str(tmp_path / "train.parquet")
    pq.write_table(pq.read_table(paths["train"]), path, row_group_size=300)
    assert pq.ParquetFile(path).num_row_groups == 3
    loader = TensorDataLoader(fmap, path, split="train", batch_size=128, shuffle=shuffle, seed=3)
    batches = list(loader)
    got = pd.DataFrame({name: torch.cat([b[name] for b in batches]).numpy() for name in batches[0]})
    expected = pd.read_parquet(path)[list(got.columns)].astype({c: got[c].dtype for c in got.columns})
    if shuffle:
        assert not got.equals(expected)
        got, expected = (f.sort_values(list(f.columns)).reset_index(drop=True) for f in (got, expected))
    pd.testing.assert_frame_equal(got, expected)



def test_statistics_one_column_at_a_time_equal_fuxictrs(tmp_path):
    """ZooFeatureProcessor collects FuxiCTR's statistics column by column (bounded memory):
    the same value counts, max lengths and numeric statistics as FuxiCTR's all-at-once pass,
    on TaobaoAd-like data (categorical, sequence and meta columns)."""
    import yaml
    from fuxictr.preprocess import FeatureProcessor
    from pathlib import Path
    write("taobao", 1500, str(tmp_path / "raw"), seed=3)
    with open(Path(__file__).resolve().parents[1] / "config" / "dataset_config.yaml") as fd:
        spec = yaml.safe_load(fd)["demo_taobao"]
    processor = zoo_data.ZooFeatureProcessor(feature_cols=spec["feature_cols"], label_col=spec["label_col"],
                                             dataset_id="stats", data_root=str(tmp_path / "data"))
    train = processor.preprocess(processor.read_data(str(tmp_path / "raw" / "train.parquet"), data_format="parquet"))
    meta = train.select([c["name"] for c in processor.feature_cols if c["type"] == "meta"])
    feature_cols = list(processor.feature_cols)
    ours = processor._collect_statistics(train, meta)
    assert processor.feature_cols == feature_cols
    assert ours == FeatureProcessor._collect_statistics(processor, train, meta)
    kinds = {c["type"] for c in processor.feature_cols if c["name"] in ours}
    assert {"categorical", "sequence"} <= kinds
