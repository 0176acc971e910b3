"""Builds that can be trusted: stale builds rebuilt, concurrent builds serialised,
orphaned work folders removed, labels and numerics checked, unreadable builds named."""

import json
import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fuxictr.features import FeatureMap

from fuxictr_ext.data import build as zoo_data
from fuxictr_ext.data import DataError, TensorDataLoader, build_dataset, is_built

from test_data import _frame, _leftovers, _params, _write_splits


def _feature_map(params):
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    fmap = FeatureMap(params["dataset_id"], data_dir)
    fmap.load(os.path.join(data_dir, "feature_map.json"), {})
    return fmap


def _count_builds(monkeypatch):
    calls = []
    original = zoo_data._build

    def counting(params, final_dir, *args):
        calls.append(final_dir)
        return original(params, final_dir, *args)

    monkeypatch.setattr(zoo_data, "_build", counting)
    return calls


def test_unchanged_build_is_reused(tmp_path, monkeypatch):
    _write_splits(tmp_path)
    params = _params(tmp_path)
    builds = _count_builds(monkeypatch)
    build_dataset(params)
    build_dataset(dict(params))
    assert len(builds) == 1


def test_changed_config_rebuilds_and_says_why(tmp_path, monkeypatch, caplog):
    frame = _frame(200)
    frame.loc[:4, "C1"] = "rare"  # 5 rows: in the vocabulary at min_categr_count 1..5, not at 10
    _write_splits(tmp_path, frame=frame)
    params = _params(tmp_path)
    build_dataset(params)
    assert "rare" in open(os.path.join(params["data_root"], "small", "feature_vocab.json")).read()
    with caplog.at_level(logging.WARNING):
        build_dataset(dict(params, min_categr_count=10))
    assert "Rebuilding" in caplog.text and "min_categr_count" in caplog.text
    assert "rare" not in open(os.path.join(params["data_root"], "small", "feature_vocab.json")).read()


def test_changed_raw_file_rebuilds(tmp_path, caplog):
    _write_splits(tmp_path)
    params = _params(tmp_path)
    build_dataset(params)
    before = pd.read_parquet(os.path.join(params["data_root"], "small", "train.parquet"))
    changed = _frame(300, seed=9)
    changed.to_csv(tmp_path / "train.csv", index=False)
    with caplog.at_level(logging.WARNING):
        build_dataset(params)
    assert "raw train file(s) changed" in caplog.text
    after = pd.read_parquet(os.path.join(params["data_root"], "small", "train.parquet"))
    assert len(before) == 200 and len(after) == 300


def test_rebuild_dataset_true_rebuilds(tmp_path, monkeypatch):
    _write_splits(tmp_path)
    params = _params(tmp_path)
    builds = _count_builds(monkeypatch)
    build_dataset(params)
    build_dataset(dict(params, rebuild_dataset=True))
    assert len(builds) == 2


def test_build_without_record_is_rebuilt(tmp_path):
    _write_splits(tmp_path)
    params = _params(tmp_path)
    build_dataset(params)
    os.remove(os.path.join(params["data_root"], "small", zoo_data.BUILD_RECORD))
    assert not is_built(params)
    build_dataset(params)
    assert is_built(params)


def test_concurrent_build_waits_and_reuses_the_finished_one(tmp_path, monkeypatch, caplog):
    """A second build of the same id while the first is writing waits for it and reuses it:
    it neither builds again nor replaces the folder the first run is about to read."""
    _write_splits(tmp_path)
    params = _params(tmp_path)
    first_inside, release_first = threading.Event(), threading.Event()
    original = zoo_data._write_split
    writes = []

    def paused(processor, ddf, out_path):
        writes.append(out_path)
        if threading.current_thread().name == "first" and not first_inside.is_set():
            first_inside.set()
            release_first.wait(60)
        return original(processor, ddf, out_path)

    monkeypatch.setattr(zoo_data, "_write_split", paused)
    errors = []

    def run():
        try:
            build_dataset(dict(params))
        except BaseException as err:  # reported to the test thread
            errors.append(err)

    first = threading.Thread(target=run, name="first")
    second = threading.Thread(target=run, name="second")
    with caplog.at_level(logging.INFO):
        first.start()
        assert first_inside.wait(60)
        second.start()
        deadline = time.time() + 60
        while second.is_alive() and "Waiting for another process's build" not in caplog.text \
                and time.time() < deadline:
            time.sleep(0.01)
        waited = "Waiting for another process's build" in caplog.text
        release_first.set()
        first.join(60)
        second.join(60)
    assert not errors
    assert waited, "the second build did not wait for the first"
    assert len(writes) == 3  # one build: train, valid, test
    assert is_built(params)


def test_orphaned_work_folders_are_removed(tmp_path):
    _write_splits(tmp_path)
    params = _params(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    root = tmp_path / "data"
    orphans = [root / f".building-small-{dead}", root / f".replaced-other-{dead}", root / ".building-small-1"]
    alive = root / f".building-other-{os.getpid()}"
    for folder in orphans + [alive]:
        (folder / "small").mkdir(parents=True)
        (folder / "small" / "train.parquet").write_bytes(b"x" * 100)
    build_dataset(params)
    assert not any(folder.exists() for folder in orphans)
    assert alive.exists()  # another dataset's build whose process is running


@pytest.mark.parametrize("split, values, found", [
    ("test", [np.nan] * 12, "empty"),
    ("test", [2] * 7, "2.0"),
    ("valid", [2, 1, 2], "2.0"),
    ("train", [-1], "-1.0"),
])
def test_bad_labels_are_refused_with_file_count_and_values(tmp_path, split, values, found):
    _write_splits(tmp_path)
    frame = _frame(200, seed=4).astype({"label": float})
    frame.loc[:len(values) - 1, "label"] = values
    frame.to_csv(tmp_path / f"{split}.csv", index=False)
    bad_rows = sum(1 for v in values if v != 1)
    with pytest.raises(DataError, match=f"label column 'label' is not 0 or 1 on {bad_rows} of 200 rows") as info:
        build_dataset(_params(tmp_path))
    assert f"{split}.csv" in str(info.value) and found in str(info.value)
    assert not is_built(_params(tmp_path))


def test_empty_label_in_parquet_is_refused(tmp_path):
    _write_splits(tmp_path, fmt="parquet")
    frame = _frame(200).astype({"label": float})
    frame.loc[:2, "label"] = None
    frame.to_parquet(tmp_path / "valid.parquet", index=False)
    with pytest.raises(DataError, match=r"valid.parquet: label column 'label' is not 0 or 1 on 3 of 200 rows"):
        build_dataset(_params(tmp_path, "parquet"))


def test_regression_labels_are_not_checked_as_binary(tmp_path):
    frame = _frame(200).astype({"label": float})
    frame["label"] = np.linspace(0, 5, 200)
    _write_splits(tmp_path, frame=frame)
    build_dataset(dict(_params(tmp_path), task="regression"))


def test_infinite_numeric_feature_is_refused(tmp_path):
    _write_splits(tmp_path)
    frame = _frame(200)
    frame.loc[:1, "I2"] = np.inf
    frame.to_csv(tmp_path / "valid.csv", index=False)
    with pytest.raises(DataError, match=r"valid.csv: numeric column\(s\) hold infinite values .*'I2': 2"):
        build_dataset(_params(tmp_path))


def test_categorical_column_without_a_frequent_value_is_named(tmp_path):
    frame = _frame(200)
    frame["C2"] = [f"u{i}" for i in range(200)]
    _write_splits(tmp_path, frame=frame)
    with pytest.raises(DataError, match=r"train.csv: categorical column 'C2': no value occurs min_categr_count=2"):
        build_dataset(dict(_params(tmp_path), min_categr_count=2))


@pytest.mark.parametrize("victim", ["train.parquet", "feature_map.json"])
def test_truncated_build_file_is_rebuilt(tmp_path, victim, caplog):
    _write_splits(tmp_path)
    params = _params(tmp_path)
    build_dataset(params)
    path = os.path.join(params["data_root"], "small", victim)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    assert not is_built(params)
    with caplog.at_level(logging.WARNING):
        build_dataset(params)
    assert f"{victim} is unreadable" in caplog.text
    assert is_built(params)


def test_truncated_split_at_load_names_file_and_fix(tmp_path):
    _write_splits(tmp_path)
    params = _params(tmp_path)
    paths = build_dataset(params)
    fmap = _feature_map(params)
    data = open(paths["valid"], "rb").read()
    open(paths["valid"], "wb").write(data[:len(data) // 2])
    with pytest.raises(DataError, match=r"valid.parquet: the processed split cannot be read .*rebuild_dataset: true"):
        TensorDataLoader(fmap, paths["valid"], split="valid")


def test_build_record_names_raw_files(tmp_path):
    _write_splits(tmp_path)
    params = _params(tmp_path)
    build_dataset(params)
    with open(os.path.join(params["data_root"], "small", zoo_data.BUILD_RECORD)) as fd:
        record = json.load(fd)
    assert record["raw_files"]["train"][0]["path"] == str(tmp_path / "train.csv")
    assert record["raw_files"]["train"][0]["bytes"] == os.path.getsize(tmp_path / "train.csv")
    assert record["config"]["min_categr_count"] == 1


def test_chunked_encoding_equals_one_chunk(tmp_path, monkeypatch):
    _write_splits(tmp_path)
    params = _params(tmp_path)
    whole = pd.read_parquet(build_dataset(params)["train"])
    monkeypatch.setattr(zoo_data, "BUILD_CHUNK_ROWS", 37)
    chunked_path = build_dataset(dict(params, rebuild_dataset=True))["train"]
    assert pq.ParquetFile(chunked_path).num_row_groups == int(np.ceil(200 / 37))
    pd.testing.assert_frame_equal(pd.read_parquet(chunked_path), whole)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_same_size_label_flip_with_restored_mtime_rebuilds(tmp_path, fmt, caplog):
    """A raw file whose bytes change but whose size and modification time do not (what
    ``touch -r``, ``cp -p``, ``rsync -a`` or unpacking an archive leave) is rebuilt."""
    _write_splits(tmp_path, fmt)
    params = _params(tmp_path, fmt)
    paths = build_dataset(params)
    raw = tmp_path / f"test.{fmt}"
    stat = os.stat(raw)
    frame = _frame(200, seed=2)
    frame["label"] = 1 - frame["label"]
    frame.to_csv(raw, index=False) if fmt == "csv" else frame.to_parquet(raw, index=False)
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.path.getsize(raw) == stat.st_size
    with caplog.at_level(logging.WARNING):
        build_dataset(params)
    assert "raw test file(s) changed" in caplog.text
    assert (pd.read_parquet(paths["test"])["label"].to_numpy() == frame["label"].to_numpy()).all()


def test_build_record_of_the_size_and_time_version_is_rebuilt_once(tmp_path, monkeypatch, caplog):
    _write_splits(tmp_path)
    params = _params(tmp_path)
    build_dataset(params)
    record_path = os.path.join(params["data_root"], "small", zoo_data.BUILD_RECORD)
    with open(record_path) as fd:
        record = json.load(fd)
    record["version"] = 1
    for files in record["raw_files"].values():
        for entry in files:
            entry.pop(zoo_data.DIGEST_KEY)
            entry["mtime_ns"] = os.stat(entry["path"]).st_mtime_ns
    with open(record_path, "w") as fd:
        json.dump(record, fd)
    builds = _count_builds(monkeypatch)
    with caplog.at_level(logging.WARNING):
        build_dataset(params)
        build_dataset(params)
    assert len(builds) == 1
    assert "compared raw files by size and modification time" in caplog.text


def test_numeric_column_stored_as_text_in_one_split_is_refused_at_build(tmp_path):
    """Before: the build passed, kept a test split whose I1 column held text, and every
    run crashed in the loader."""
    _write_splits(tmp_path, "parquet")
    frame = _frame(200, seed=2)
    frame["I1"] = frame["I1"].astype(str)
    frame.to_parquet(tmp_path / "test.parquet", index=False)
    params = _params(tmp_path, "parquet")
    with pytest.raises(DataError, match=r"test.parquet: column 'I1' is stored as (large_)?string, but the dataset config "
                                        r"declares it numeric \(dtype: float\)"):
        build_dataset(params)
    assert _leftovers(params["data_root"]) == []


def test_categorical_column_stored_as_another_type_in_one_split_is_refused(tmp_path):
    """Tokens are the values' text: 7.0 in one split would never match '7' in another."""
    _write_splits(tmp_path, "parquet")
    frame = _frame(200, seed=1)
    frame["C1"] = np.arange(200, dtype=float)
    frame.to_parquet(tmp_path / "valid.parquet", index=False)
    with pytest.raises(DataError, match=r"valid.parquet: column 'C1' is stored as double, but as (large_)?string in "
                                        r".*train.parquet"):
        build_dataset(_params(tmp_path, "parquet"))


@pytest.mark.parametrize("split", ["valid", "test"])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_single_class_evaluation_split_is_refused_at_build(tmp_path, split, fmt):
    """Before: the build passed and sklearn failed on the split's AUC after the whole training."""
    _write_splits(tmp_path, fmt)
    frame = _frame(200, seed=3).assign(label=0)
    frame.to_csv(tmp_path / f"{split}.csv", index=False) if fmt == "csv" else \
        frame.to_parquet(tmp_path / f"{split}.parquet", index=False)
    params = _params(tmp_path, fmt)
    with pytest.raises(DataError, match=rf"{split}.{fmt}: label column 'label' is 0 on all 200 rows"):
        build_dataset(params)
    assert _leftovers(params["data_root"]) == []


def test_duplicate_csv_column_names_are_refused(tmp_path):
    """Before: polars renamed the second C2 to C2_duplicated_0 and the first one won silently."""
    _write_splits(tmp_path)
    frame = _frame(200).assign(extra="w")
    frame.columns = [*frame.columns[:-1], "C2"]
    frame.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train.csv: column name\(s\) \['C2'\] appear more than once"):
        build_dataset(_params(tmp_path))
