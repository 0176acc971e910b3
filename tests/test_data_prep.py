"""Preparers of the BARS releases on small files with the releases' schemas:
conversion to the config's files and dtypes, the build of every release's dataset
id, and clear errors that leave nothing half-written."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from fuxictr.features import FeatureMap

from data_prep.prepare import RELEASES, main, prepare
from fuxictr_ext.data import DataError, TensorDataLoader, build_dataset
from fuxictr_ext.testing import unit_model_kwargs
from model_zoo.DNN.DNN import DNN

REPO = Path(__file__).resolve().parents[1]
with open(REPO / "config" / "dataset_config.yaml") as fd:
    DATASETS = yaml.safe_load(fd)
RELEASE_IDS = sorted(RELEASES)
SPLIT_ROWS = {"train": 300, "valid": 60, "test": 60}


def _tokens(rng, n, vocab):
    return rng.integers(1, vocab + 1, n).astype(str)


def _sequences(rng, n, vocab, max_len):
    return ["^".join(_tokens(rng, int(k), vocab)) if k else "" for k in rng.integers(0, max_len + 1, n)]


def release_frame(release_id, rows, seed):
    """``rows`` rows in the release's CSV layout (small vocabularies so that
    min_categr_count = 10 keeps some values)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, rows)
    if release_id == "criteo_x1":
        data = {"label": label, **{f"I{i}": np.round(rng.random(rows), 5) for i in range(1, 14)},
                **{f"C{i}": rng.integers(0, 20, rows) for i in range(1, 27)}}
    elif release_id == "avazu_x4":
        hours = rng.integers(0, 24, rows)
        days = rng.integers(21, 31, rows)
        data = {"id": rng.integers(10 ** 17, 10 ** 18, rows).astype(str), "click": label,
                "hour": [f"1410{d:02d}{h:02d}" for d, h in zip(days, hours)]}
        data.update({c: _tokens(rng, rows, 8) for c in RELEASES["avazu_x4"].columns[3:]})
    elif release_id == "kuaivideo_x1":
        data = {"timestamp": np.sort(rng.integers(10 ** 6, 10 ** 7, rows)), "user_id": rng.integers(0, 12, rows),
                "item_id": rng.integers(0, 15, rows), "is_click": label, "is_like": rng.integers(0, 2, rows),
                "is_follow": rng.integers(0, 2, rows), "pos_items": _sequences(rng, rows, 39, 6),
                "neg_items": _sequences(rng, rows, 39, 6)}
    else:
        columns = RELEASES["taobaoad_x1"].columns
        data = {"clk": label, "btag_his": _sequences(rng, rows, 4, 8), "cate_his": _sequences(rng, rows, 6, 8),
                "brand_his": _sequences(rng, rows, 9, 8)}
        data.update({c: _tokens(rng, rows, 5) for c in columns[4:18]})
        data.update({"price": np.round(rng.lognormal(3, 1, rows), 2), "pid": rng.choice(["430548_1007", "430539_1007"], rows),
                     "btag": np.ones(rows, dtype=int)})
        data = {c: data[c] for c in columns}
    return pd.DataFrame(data)


def write_release(folder, release_id, seed=0):
    """A small copy of the release: its CSV files (and KuaiVideo's pretrained embeddings)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (split, name) in enumerate(RELEASES[release_id].files.items()):
        release_frame(release_id, SPLIT_ROWS[split], seed + i).to_csv(folder / name, index=False)
    if release_id == "kuaivideo_x1":
        with h5py.File(folder / "item_visual_emb_dim64.h5", "w") as hf:
            hf.create_dataset("key", data=np.arange(40))
            hf.create_dataset("value", data=np.random.default_rng(seed).normal(size=(40, 64)).astype(np.float32))
    return folder


def write_config(root, entries=None):
    """config/dataset_config.yaml under ``root`` with the project's release entries, data paths moved there."""
    entries = entries or {k: DATASETS[k] for k in RELEASE_IDS}
    text = yaml.safe_dump(entries, sort_keys=False).replace("./data/", f"{root}/data/")
    (root / "config").mkdir(exist_ok=True)
    (root / "config" / "dataset_config.yaml").write_text(text)
    return str(root / "config")


def params_of(config_dir, dataset_id):
    with open(os.path.join(config_dir, "dataset_config.yaml")) as fd:
        return {"dataset_id": dataset_id, **yaml.safe_load(fd)[dataset_id]}


def leftovers(folder):
    return [p for p in Path(folder).rglob("*") if ".tmp-" in p.name]


@pytest.mark.parametrize("release_id", RELEASE_IDS)
def test_prepare_writes_config_files_with_config_dtypes(tmp_path, release_id):
    src = write_release(tmp_path / "download", release_id)
    config = write_config(tmp_path)
    written = prepare(release_id, str(src), config)
    params = params_of(config, release_id)
    spec = RELEASES[release_id]
    expected = {params["train_data"]: 300, params["test_data"]: 60, params["valid_data"]: 60}
    expected.update({c["pretrained_emb"]: None for c in params["feature_cols"] if c.get("pretrained_emb")})
    assert written == expected
    table = pq.read_table(params["train_data"])
    source = pd.read_csv(src / "train.csv", dtype=str, keep_default_na=False)
    label = params["label_col"]["name"]
    assert str(table.schema.field(label).type) == "double"
    assert table.column(label).to_pylist() == source[label].astype(float).tolist()
    for name in table.column_names:
        assert name in spec.columns
        declared = [c for c in params["feature_cols"] if name in (c["name"] if isinstance(c["name"], list) else [c["name"]])]
        if declared:
            assert str(table.schema.field(name).type) == {"str": "large_string", "float": "double",
                                                          "int": "int64"}[declared[0]["dtype"]]
    assert not leftovers(tmp_path / "data")


@pytest.mark.parametrize("release_id", RELEASE_IDS)
def test_prepared_release_builds_and_feeds_a_dnn(tmp_path, release_id):
    src = write_release(tmp_path / "download", release_id, seed=3)
    config = write_config(tmp_path)
    prepare(release_id, str(src), config)
    params = params_of(config, release_id)
    paths = build_dataset(params)
    data_dir = os.path.dirname(paths["train"])
    feature_map = FeatureMap(release_id, data_dir)
    feature_map.load(os.path.join(data_dir, "feature_map.json"), params)
    batch = next(iter(TensorDataLoader(feature_map, paths["test"], split="test", batch_size=32)))
    assert len(batch[feature_map.labels[0]]) == 32
    model = DNN(feature_map, embedding_dim=64, hidden_units=[16], **unit_model_kwargs(tmp_path))
    model.eval()
    with torch.no_grad():
        y_pred = model(batch)["y_pred"]
    assert y_pred.shape == (32, 1) and torch.isfinite(y_pred).all()


def test_avazu_hour_is_expanded_by_fuxictr_preprocess(tmp_path):
    src = write_release(tmp_path / "download", "avazu_x4")
    config = write_config(tmp_path)
    prepare("avazu_x4", str(src), config)
    paths = build_dataset(params_of(config, "avazu_x4"))
    with open(os.path.join(os.path.dirname(paths["train"]), "feature_vocab.json")) as fd:
        vocab = json.load(fd)
    assert {k for k in vocab["hour"] if not k.startswith("__")} <= {str(h) for h in range(24)}
    assert {k for k in vocab["weekday"] if not k.startswith("__")} <= {str(d) for d in range(7)}
    assert {k for k in vocab["weekend"] if not k.startswith("__")} <= {"0", "1"}
    assert "id" not in vocab


def _prepared_targets(config, release_id):
    params = params_of(config, release_id)
    return {params[f"{s}_data"] for s in ("train", "valid", "test")}


@pytest.mark.parametrize("case, match", [
    ("missing_column", r"avazu_x4/valid\.csv: missing column\(s\) \['C21'\]"),
    ("empty_file", r"avazu_x4/valid\.csv: the file is empty"),
    ("header_only", r"avazu_x4/valid\.csv: the file has a header but no rows"),
    ("text_label", r"avazu_x4/valid\.csv: label column 'click' is not numeric \('yes' on data row 2\)"),
    ("late_text_label", r"avazu_x4/valid\.csv: label column 'click' is not numeric"),
    ("label_out_of_range", r"avazu_x4/valid\.csv: label column 'click' has values in \[0\.0, 2\.0\]"),
    ("empty_label", r"avazu_x4/valid\.csv: label column 'click' is empty on 1 row\(s\)"),
    ("missing_file", r"avazu_x4/valid\.csv: file not found"),
    ("cut_off", r"avazu_x4/valid\.csv: line 1502 has 9 fields, the header has 24 \(1 such line\(s\)\)"),
    ("short_row", r"avazu_x4/valid\.csv: line 11 has 23 fields, the header has 24 \(2 such line\(s\)\)"),
])
def test_bad_release_files_fail_clearly_and_write_nothing(tmp_path, case, match):
    src = write_release(tmp_path / "download" / "avazu_x4", "avazu_x4")
    config = write_config(tmp_path)
    frame = release_frame("avazu_x4", 1500, seed=7)
    valid = src / "valid.csv"
    if case == "missing_column":
        frame.drop(columns=["C21"]).to_csv(valid, index=False)
    elif case == "empty_file":
        valid.write_text("")
    elif case == "header_only":
        frame.head(0).to_csv(valid, index=False)
    elif case in ("text_label", "late_text_label"):
        frame["click"] = frame["click"].astype(str)
        frame.loc[1 if case == "text_label" else 1400, "click"] = "yes"
        frame.to_csv(valid, index=False)
    elif case == "label_out_of_range":
        frame.loc[1200, "click"] = 2
        frame.to_csv(valid, index=False)
    elif case == "empty_label":
        frame["click"] = frame["click"].astype("Int64")
        frame.loc[1300, "click"] = pd.NA
        frame.to_csv(valid, index=False)
    elif case == "cut_off":
        frame.to_csv(valid, index=False)
        text = valid.read_text()
        valid.write_text(text + text.splitlines()[1][:40])  # an extra data line cut off mid-way
    elif case == "short_row":
        frame.to_csv(valid, index=False)
        lines = valid.read_text().splitlines()
        for n in (10, 20):  # drop the last field of data lines 10 and 20 (file lines 11 and 21)
            lines[n] = lines[n].rsplit(",", 1)[0]
        valid.write_text("\n".join(lines) + "\n")
    else:
        valid.unlink()
    targets = _prepared_targets(config, "avazu_x4")
    train_target = params_of(config, "avazu_x4")["train_data"]
    os.makedirs(os.path.dirname(train_target))
    Path(train_target).write_bytes(b"earlier file")
    with pytest.raises(DataError, match=match):
        prepare("avazu_x4", str(src), config)
    assert Path(train_target).read_bytes() == b"earlier file"
    assert not any(os.path.exists(t) for t in targets - {train_target})
    assert not leftovers(tmp_path)


def test_orphaned_tmp_files_of_dead_preparers_are_removed(tmp_path):
    src = write_release(tmp_path / "download" / "criteo_x1", "criteo_x1")
    config = write_config(tmp_path)
    train_target = Path(params_of(config, "criteo_x1")["train_data"])
    train_target.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    orphan = train_target.parent / f".{train_target.name}.tmp-{dead}"
    running = train_target.parent / f".{train_target.name}.tmp-{os.getppid()}"
    orphan.write_bytes(b"x" * 1000)
    running.write_bytes(b"x" * 1000)
    prepare("criteo_x1", str(src), config)
    assert not orphan.exists()
    assert running.exists()  # its process is alive: maybe a preparer still writing


def test_bad_pretrained_embeddings_fail_before_writing(tmp_path):
    src = write_release(tmp_path / "download", "kuaivideo_x1")
    config = write_config(tmp_path)
    with h5py.File(src / "item_visual_emb_dim64.h5", "w") as hf:
        hf.create_dataset("key", data=np.arange(40))
        hf.create_dataset("value", data=np.zeros((40, 32)))
    with pytest.raises(DataError, match="item_visual_emb_dim64.h5: embeddings are 32-d, the config expects 64"):
        prepare("kuaivideo_x1", str(src), config)
    (src / "item_visual_emb_dim64.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="item_visual_emb_dim64.h5: cannot be read as HDF5"):
        prepare("kuaivideo_x1", str(src), config)
    assert not (tmp_path / "data").exists()


def test_config_and_argument_errors(tmp_path):
    src = write_release(tmp_path / "download", "taobaoad_x1")
    entries = {k: DATASETS[k] for k in RELEASE_IDS}
    entries["taobao_own_valid"] = dict(DATASETS["taobaoad_x1"], valid_data="./data/raw/taobao/valid.parquet")
    entries["taobao_wrong_label"] = dict(DATASETS["taobaoad_x1"], label_col={"name": "click", "dtype": "float"})
    entries["taobao_unknown_column"] = dict(DATASETS["taobaoad_x1"], feature_cols=[
        {"name": "dwell_time", "active": True, "dtype": "float", "type": "numeric"}])
    config = write_config(tmp_path, entries)
    with pytest.raises(ValueError, match="dataset_id='nope' is not in .*known ids: avazu_x4, criteo_x1"):
        prepare("nope", str(src), config, release="taobaoad_x1")
    with pytest.raises(ValueError, match="no preparer for 'demo'"):
        prepare("demo", str(src), config)
    with pytest.raises(ValueError, match="TaobaoAd_x1 has no valid file; set valid_data to test_data"):
        prepare("taobao_own_valid", str(src), config, release="taobaoad_x1")
    with pytest.raises(ValueError, match="label_col 'click' is not TaobaoAd_x1's label 'clk'"):
        prepare("taobao_wrong_label", str(src), config, release="taobaoad_x1")
    with pytest.raises(ValueError, match="column 'dwell_time' is neither in TaobaoAd_x1"):
        prepare("taobao_unknown_column", str(src), config, release="taobaoad_x1")
    with pytest.raises(DataError, match="not a folder"):
        prepare("taobaoad_x1", str(tmp_path / "absent"), config)
    assert not (tmp_path / "data").exists()


def test_another_dataset_id_and_csv_output_from_a_release(tmp_path):
    src = write_release(tmp_path / "download", "criteo_x1")
    csv_entry = dict(DATASETS["criteo_x1"], data_format="csv",
                     **{f"{s}_data": f"./data/raw/criteo_csv/{s}.csv" for s in ("train", "valid", "test")})
    config = write_config(tmp_path, {"criteo_csv": csv_entry})
    written = prepare("criteo_csv", str(src), config, release="criteo_x1")
    assert sorted(written.values()) == [60, 60, 300]
    out = pd.read_csv(tmp_path / "data" / "raw" / "criteo_csv" / "train.csv")
    source = pd.read_csv(src / "train.csv")
    assert list(out.columns) == list(source.columns)
    np.testing.assert_allclose(out.to_numpy(dtype=float), source.to_numpy(dtype=float))


def test_rerun_replaces_earlier_files(tmp_path):
    config = write_config(tmp_path)
    prepare("criteo_x1", str(write_release(tmp_path / "a", "criteo_x1", seed=1)), config)
    prepare("criteo_x1", str(write_release(tmp_path / "b", "criteo_x1", seed=2)), config)
    train = pq.read_table(params_of(config, "criteo_x1")["train_data"]).to_pandas()
    assert train["I1"].tolist() == pd.read_csv(tmp_path / "b" / "train.csv")["I1"].tolist()


def test_command_line(tmp_path, capsys):
    src = write_release(tmp_path / "download", "criteo_x1")
    config = write_config(tmp_path)
    assert main(["criteo_x1", "--src", str(src), "--config", config]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["dataset_id"] == "criteo_x1" and sorted(printed["written"].values()) == [60, 60, 300]
    shutil.rmtree(tmp_path / "data")
    (src / "test.csv").write_text("")
    assert main(["criteo_x1", "--src", str(src), "--config", config]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "test.csv: the file is empty" in err
    assert not (tmp_path / "data" / "raw" / "criteo_x1" / "train.parquet").exists()
