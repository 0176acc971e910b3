"""Real downloads: release archives as --src, the raw Criteo format, no empty folder
left by a failed run, and a dataset config pointed straight at release CSVs."""

import math
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from test_data_prep import DATASETS, params_of, write_config, write_release

from data_prep.prepare import RAW_CRITEO_COLUMNS, RAW_CRITEO_ID, main, prepare
from fuxictr_ext.data import DataError, build_dataset
from fuxictr_ext.runner import run_experiment


def _zip(folder: Path, archive: Path, top: str) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, f"{top}/{path.relative_to(folder)}")
    return archive


def _tar(folder: Path, archive: Path, top: str) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=top)
    return archive


@pytest.mark.parametrize("pack, name", [(_zip, "Criteo_x1.zip"), (_tar, "Criteo_x1.tar.gz")])
def test_a_release_archive_is_prepared_like_its_folder(tmp_path, pack, name):
    src = write_release(tmp_path / "download" / "Criteo_x1", "criteo_x1")
    archive = pack(src, tmp_path / name, "Criteo_x1")
    config = write_config(tmp_path)
    written = prepare("criteo_x1", str(archive), config)
    assert sorted(written.values()) == [60, 60, 300]
    train = pq.read_table(params_of(config, "criteo_x1")["train_data"]).to_pandas()
    np.testing.assert_allclose(train.to_numpy(dtype=float), pd.read_csv(src / "train.csv").to_numpy(dtype=float))
    raw_dir = tmp_path / "data" / "raw" / "criteo_x1"
    assert sorted(p.name for p in raw_dir.iterdir()) == ["test.parquet", "train.parquet", "valid.parquet"]
    assert not [p for p in (tmp_path / "data").rglob(".extract-*")]


def test_bad_archives_are_refused_and_leave_nothing(tmp_path):
    config = write_config(tmp_path)
    (tmp_path / "broken.zip").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="broken.zip: not a readable zip or tar archive"):
        prepare("criteo_x1", str(tmp_path / "broken.zip"), config)
    with zipfile.ZipFile(tmp_path / "escape.zip", "w") as zf:
        zf.writestr("../outside.csv", "label\n1\n")
    with pytest.raises(DataError, match="outside the extraction folder"):
        prepare("criteo_x1", str(tmp_path / "escape.zip"), config)
    (tmp_path / "train.csv").write_text("label\n1\n")
    with pytest.raises(DataError, match="not a release archive"):
        prepare("criteo_x1", str(tmp_path / "train.csv"), config)
    assert not (tmp_path / "outside.csv").exists()
    assert not [p for p in tmp_path.rglob(".extract-*")]


def test_a_failed_prepare_leaves_no_empty_target_folder(tmp_path):
    src = write_release(tmp_path / "download", "criteo_x1")
    frame = pd.read_csv(src / "valid.csv")
    frame["C3"] = frame["C3"].astype(str)
    frame.loc[5, "C3"] = "not-a-number"  # the config reads C1-C26 as float
    frame.to_csv(src / "valid.csv", index=False)
    config = write_config(tmp_path)
    with pytest.raises(DataError, match="valid.csv"):
        prepare("criteo_x1", str(src), config)
    assert not (tmp_path / "data").exists()


def raw_criteo_lines(rows: int, seed: int) -> list:
    """Rows in the raw Criteo format: label, 13 counts (some blank, some -1), 26 hashed tokens (some blank)."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(rows):
        ints = ["" if rng.random() < 0.2 else str(int(rng.integers(-1, 400) if rng.random() < 0.5 else
                                                       rng.integers(0, 4))) for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else f"{int(rng.integers(0, 12)):08x}" for _ in range(26)]
        lines.append("\t".join([str(int(rng.random() < 0.25)), *ints, *cats]))
    return lines


def write_raw_criteo(path: Path, rows: int = 2000, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(raw_criteo_lines(rows, seed)) + "\n")
    return path


def _raw_config(tmp_path):
    return write_config(tmp_path, {**{k: DATASETS[k] for k in ("criteo_x1",)}, RAW_CRITEO_ID: DATASETS[RAW_CRITEO_ID]})


def test_raw_criteo_given_to_criteo_x1_names_the_bars_release_and_the_raw_preparer(tmp_path):
    config = _raw_config(tmp_path)
    dac = tmp_path / "dac"
    write_raw_criteo(dac / "train.txt", rows=50)
    with pytest.raises(DataError, match=r"raw Criteo display-advertising format.*criteo_x1 expects the "
                                        r"BARS-encoded Criteo_x1 release.*data_prep.prepare criteo_raw"):
        prepare("criteo_x1", str(dac), config)
    renamed = tmp_path / "renamed"
    for split in ("train", "valid", "test"):
        write_raw_criteo(renamed / f"{split}.csv", rows=50)
    with pytest.raises(DataError, match="criteo_x1 expects the BARS-encoded"):
        prepare("criteo_x1", str(renamed), config)
    assert not (tmp_path / "data").exists()


def _bucket(value: float) -> int:
    """FuxiCTR's convert_to_bucket, written out: floor(ln(x)^2) above 2, else the integer."""
    return int(math.floor(math.log(value) ** 2)) if value > 2 else int(value)


def test_raw_criteo_preparer_splits_8_1_1_and_builds_fuxictr_criteo_features(tmp_path):
    raw = write_raw_criteo(tmp_path / "dac" / "train.txt", rows=3000)
    config = _raw_config(tmp_path)
    written = prepare(RAW_CRITEO_ID, str(raw), config, split_seed=7)
    params = params_of(config, RAW_CRITEO_ID)
    counts = [written[params[f"{s}_data"]] for s in ("train", "valid", "test")]
    assert sum(counts) == 3000 and 2250 < counts[0] < 2550 and all(200 < c < 400 for c in counts[1:])

    source = pd.read_csv(raw, sep="\t", header=None, names=list(RAW_CRITEO_COLUMNS), keep_default_na=False,
                         dtype=str)
    parts = [pq.read_table(params[f"{s}_data"]).to_pandas() for s in ("train", "valid", "test")]
    assert all(list(p.columns) == list(RAW_CRITEO_COLUMNS) for p in parts)
    joined = pd.concat(parts)
    assert len(joined) == 3000 and joined["label"].isin([0.0, 1.0]).all()
    assert joined["I1"].isna().sum() == (source["I1"] == "").sum()
    assert sorted(joined["C1"].dropna()) == sorted(source.loc[source["C1"] != "", "C1"])

    again = prepare(RAW_CRITEO_ID, str(raw), config, split_seed=7)
    assert again == written
    other = prepare(RAW_CRITEO_ID, str(raw), config, split_seed=8)
    assert other != written

    build_dataset(params)
    feature_map = yaml.safe_load((tmp_path / "data" / RAW_CRITEO_ID / "feature_map.json").read_text())
    spec = {name: value for item in feature_map["features"] for name, value in item.items()}
    assert all(spec[f"I{i}"]["type"] == "categorical" for i in range(1, 14))
    train = pq.read_table(params["train_data"]).to_pandas()
    buckets = train["I2"].fillna(0).map(_bucket).value_counts()
    kept = int((buckets.drop(0) >= params["min_categr_count"]).sum())
    # FuxiCTR's tokenizer keeps tokens seen min_categr_count times except the fill value
    # (fill_na: 0 is its missing value, id 0), and adds __PAD__ and __OOV__.
    assert spec["I2"]["vocab_size"] == kept + 2


def test_raw_criteo_from_the_kaggle_archive_and_bad_rows(tmp_path):
    dac = tmp_path / "dac"
    write_raw_criteo(dac / "train.txt", rows=400)
    (dac / "readme.txt").write_text("Criteo display advertising challenge\n")
    archive = _tar(dac, tmp_path / "dac.tar.gz", "dac")
    config = _raw_config(tmp_path)
    assert sum(prepare(RAW_CRITEO_ID, str(archive), config).values()) == 400

    shutil.rmtree(tmp_path / "data")
    lines = raw_criteo_lines(300, seed=1)
    fields = lines[200].split("\t")
    fields[3] = "12.5"
    lines[200] = "\t".join(fields)
    (dac / "train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="train.txt: not readable as raw Criteo rows"):
        prepare(RAW_CRITEO_ID, str(dac / "train.txt"), config)
    lines = raw_criteo_lines(300, seed=1)
    lines[120] = "2" + lines[120][1:]
    (dac / "train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="label on line 121 is 2, not 0 or 1"):
        prepare(RAW_CRITEO_ID, str(dac / "train.txt"), config)
    write_release(tmp_path / "bars", "criteo_x1")
    assert main([RAW_CRITEO_ID, "--src", str(tmp_path / "bars" / "train.csv"), "--config", config]) == 2
    assert not (tmp_path / "data").exists()


def test_a_dataset_config_pointed_at_release_csvs_trains_directly(in_workspace, tmp_path):
    src = write_release(tmp_path / "Criteo_x1", "criteo_x1")
    config = tmp_path / "config"
    shutil.copytree(in_workspace / "config" / "model_config", config / "model_config")
    entry = dict(DATASETS["criteo_x1"], data_format="csv", data_root=str(tmp_path / "data"),
                 **{f"{s}_data": str(src / f"{s}.csv") for s in ("train", "valid", "test")})
    (config / "dataset_config.yaml").write_text(yaml.safe_dump({"criteo_csv": entry}))
    result = run_experiment(str(config), "DNN_demo", overrides={"dataset_id": "criteo_csv", "epochs": 1})
    assert 0.0 <= result["test"]["AUC"] <= 1.0
    assert (tmp_path / "data" / "criteo_csv" / "feature_map.json").is_file()
