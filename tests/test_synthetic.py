"""Synthetic data: schemas as the dataset config expects them, planted models,
determinism, the request layout, gAUC, and every synthetic dataset id building and
feeding a DNN (sequence features included)."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from fuxictr.features import FeatureMap
from fuxictr.metrics import evaluate_metrics, gAUC
from sklearn.metrics import roc_auc_score

from data_prep import synthetic as synthetic_cli
from fuxictr_ext.data.synthetic import (PLANTED_TEST_FILE, SCHEMAS, DiscriminatingSchema, PlantedModel, criteo_schema,
                                        generate, group_auc, write)
from fuxictr_ext.data import TensorDataLoader, build_dataset
from fuxictr_ext.data.build import DIGEST_KEY, content_digest
from fuxictr_ext.testing import unit_model_kwargs
from model_zoo.DNN.DNN import DNN

REPO = Path(__file__).resolve().parents[1]
with open(REPO / "config" / "dataset_config.yaml") as fd:
    DATASETS = yaml.safe_load(fd)
SYNTHETIC_IDS = [k for k, v in DATASETS.items() if v.get("synthetic")]
TARGET_RATES = {"criteo": 0.25, "avazu": 0.17, "taobao": 0.05, "request": 0.10, "discriminating": 0.25}


def _expanded(cols):
    for col in cols:
        for name in (col["name"] if isinstance(col["name"], list) else [col["name"]]):
            yield {**col, "name": name}


def _raw_columns(dataset_id):
    """Columns the raw files must hold: config columns not derived by a preprocess, and the label."""
    spec = DATASETS[dataset_id]
    return {c["name"] for c in _expanded(spec["feature_cols"]) if not c.get("preprocess")} | {spec["label_col"]["name"]}


def _params(dataset_id, root):
    params = {**DATASETS[dataset_id], "dataset_id": dataset_id, "data_root": str(root / "data")}
    for split in ("train_data", "valid_data", "test_data"):
        params[split] = params[split].replace("./data", str(root / "data"), 1)
    return params


def test_every_synthetic_dataset_id_names_a_schema():
    assert SYNTHETIC_IDS == ["demo", "demo_avazu", "demo_taobao", "demo_request", "discriminating"]
    for dataset_id in SYNTHETIC_IDS:
        assert DATASETS[dataset_id]["synthetic"]["schema"] in SCHEMAS


@pytest.mark.parametrize("dataset_id", SYNTHETIC_IDS)
def test_written_files_have_the_configured_columns(tmp_path, dataset_id):
    spec = DATASETS[dataset_id]
    report = write(spec["synthetic"]["schema"], 400, str(tmp_path / "raw"), seed=3)
    assert sorted(os.listdir(tmp_path / "raw")) == ["planted.json", "test.parquet", "train.parquet", "valid.parquet"]
    frames = {s: pd.read_parquet(tmp_path / "raw" / f"{s}.parquet") for s in ("train", "valid", "test")}
    assert sum(len(f) for f in frames.values()) == report["rows"] == 400
    for frame in frames.values():
        assert _raw_columns(dataset_id) <= set(frame.columns)
        assert set(frame[spec["label_col"]["name"]].unique()) <= {0, 1}
    with open(tmp_path / "raw" / "planted.json") as fd:
        planted = json.load(fd)
    test_file = str(tmp_path / "raw" / "test.parquet")
    assert planted.pop(PLANTED_TEST_FILE) == {"name": "test.parquet", DIGEST_KEY: content_digest(test_file)}
    assert planted == report
    assert {"ceiling_test_AUC", "ceiling_test_logloss", "first_order_part_test_AUC", "planted"} <= set(report)


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_generation_is_seeded(schema):
    first, report = generate(SCHEMAS[schema](), 300, seed=5)
    second, again = generate(SCHEMAS[schema](), 300, seed=5)
    other, _ = generate(SCHEMAS[schema](), 300, seed=6)
    for split in first:
        pd.testing.assert_frame_equal(first[split], second[split])
    assert report == again
    assert not first["train"].equals(other["train"])


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_positive_rate_and_planted_interactions(schema):
    frames, report = generate(SCHEMAS[schema](), 6000, seed=11)
    label = SCHEMAS[schema]().label
    rate = pd.concat(frames.values())[label].mean()
    assert abs(rate - TARGET_RATES[schema]) < 0.03
    assert 0.5 < report["first_order_part_test_AUC"] < report["ceiling_test_AUC"] < 1.0
    assert report["planted"]["pairs"]
    assert report["planted"]["triples"] or schema == "discriminating"


def _criteo_drawn_at_once(rows, seed):
    """The criteo generator as it was before streaming: every column drawn for all rows at
    once, the intercept set on all rows, then the labels (the slow reference)."""
    schema = criteo_schema()
    rng = np.random.default_rng(seed)
    model = PlantedModel(schema, rng)
    data, ids = {}, {}
    for f in schema.numeric:
        data[f] = np.clip(rng.beta(0.8, 2.5, rows), 0.0, 0.999)
        ids[f] = np.minimum((data[f] * 10).astype(int), 9)
    for f, vocab in schema.categorical.items():
        probs = 1.0 / np.arange(1, vocab + 1) ** schema.zipf_exponent
        ids[f] = rng.choice(vocab, size=rows, p=probs / probs.sum())
        data[f] = np.char.add(f"{f.lower()}_", ids[f].astype(str))
    model.calibrate(ids, schema.positive_rate)
    prob = 1 / (1 + np.exp(-model.logit(ids)))
    frame = pd.DataFrame({"label": (rng.random(rows) < prob).astype(np.int64), **data})
    n_train, n_valid = int(rows * 0.8), int(rows * 0.1)
    return {"train": frame.iloc[:n_train], "valid": frame.iloc[n_train:n_train + n_valid],
            "test": frame.iloc[n_train + n_valid:]}, prob[n_train + n_valid:]


def test_criteo_in_one_block_is_the_data_drawn_at_once():
    """Data of at most BLOCK_ROWS rows (the 200k-row demo) are unchanged by streaming."""
    frames, report = generate(SCHEMAS["criteo"](), 500, seed=5)
    reference, test_prob = _criteo_drawn_at_once(500, seed=5)
    for split in frames:
        pd.testing.assert_frame_equal(frames[split], reference[split].reset_index(drop=True))
    assert report["ceiling_test_AUC"] == roc_auc_score(reference["test"]["label"], test_prob)


def test_criteo_written_block_by_block_equals_the_generated_frames(tmp_path):
    """Blocks of 64 rows: every split file (parquet and csv) holds the generated frames' rows,
    blocks straddle split boundaries, and the intercept is set on all blocks together."""
    frames, report = generate(SCHEMAS["criteo"](), 1000, seed=4, block_rows=64)
    for data_format in ("parquet", "csv"):
        written = write("criteo", 1000, str(tmp_path / data_format), seed=4, data_format=data_format, block_rows=64)
        assert written == report
        for split, frame in frames.items():
            path = tmp_path / data_format / f"{split}.{data_format}"
            on_disk = pd.read_parquet(path) if data_format == "parquet" else pd.read_csv(path)
            pd.testing.assert_frame_equal(on_disk, frame, check_dtype=data_format == "parquet")
    assert [len(f) for f in frames.values()] == [800, 100, 100]
    assert abs(pd.concat(frames.values())["label"].mean() - 0.25) < 0.04


def test_criteo_blocks_are_drawn_from_the_seed_and_the_block_index():
    """A block's features do not depend on how many rows follow it, and blocks differ."""
    features = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    short, _ = generate(SCHEMAS["criteo"](), 400, seed=4, block_rows=64)
    long, _ = generate(SCHEMAS["criteo"](), 1000, seed=4, block_rows=64)
    pd.testing.assert_frame_equal(short["train"][features].iloc[:320], long["train"][features].iloc[:320])
    first, second = long["train"][features].iloc[:64], long["train"][features].iloc[64:128]
    assert not np.array_equal(first[features[:13]].to_numpy(), second[features[:13]].to_numpy())
    with pytest.raises(ValueError, match="block_rows=0"):
        generate(SCHEMAS["criteo"](), 100, seed=4, block_rows=0)


def test_discriminating_schema_is_an_fm_over_every_field_pair():
    schema = DiscriminatingSchema()
    rng = np.random.default_rng(4)
    first, factors = schema.planted_parameters(rng)
    ids = rng.integers(0, schema.vocab_size, (schema.num_fields, 50))
    first_order, pairwise = schema.logit_parts(ids, first, factors)
    slow_first = [sum(first[f, ids[f, n]] for f in range(schema.num_fields)) for n in range(50)]
    slow_pairs = [sum(factors[f, ids[f, n]] @ factors[g, ids[g, n]]
                      for f in range(schema.num_fields) for g in range(f + 1, schema.num_fields))
                  for n in range(50)]
    np.testing.assert_allclose(first_order, slow_first)
    np.testing.assert_allclose(pairwise, schema.interaction_scale / np.sqrt(45) * np.array(slow_pairs))


def test_discriminating_schema_shape_scales_and_ceiling(tmp_path):
    report = write("discriminating", 20000, str(tmp_path / "raw"), seed=2026)
    train = pd.read_parquet(tmp_path / "raw" / "train.parquet")
    assert list(train.columns) == ["label"] + [f"C{i}" for i in range(1, 11)]
    assert all(train[f].nunique() == 100 for f in train.columns[1:])
    assert len(report["planted"]["pairs"]) == 45 and report["planted"]["triples"] == []
    assert abs(report["planted"]["pairwise_part_std"] - 2.0) < 0.1
    assert abs(report["planted"]["first_order_part_std"] - 0.5) < 0.05
    # the interactions carry most of the signal: the planted model's AUC (reported as the
    # ceiling) is far above that of its first-order part
    assert report["ceiling_test_AUC"] > 0.85 and report["first_order_part_test_AUC"] < 0.65


def test_avazu_hour_is_a_yymmddhh_timestamp_of_the_release_days():
    frames, _ = generate(SCHEMAS["avazu"](), 500, seed=2)
    hour = pd.concat(frames.values())["hour"]
    assert hour.str.fullmatch(r"\d{8}").all()
    assert set(hour.str[:6].astype(int)) <= set(range(141021, 141031))
    assert set(hour.str[6:].astype(int)) <= set(range(24))
    assert list(frames["train"].columns[:3]) == ["id", "click", "hour"]


def test_taobao_users_share_profile_and_history_and_sequences_use_the_target_vocabulary():
    frames, report = generate(SCHEMAS["taobao"](), 2000, seed=4)
    data = pd.concat(frames.values())
    assert report["group_column"] == "userid" and data["userid"].str.isdigit().all()
    per_user = data.groupby("userid")[["cate_his", "brand_his", "btag_his", "age_level", "cms_segid"]].nunique()
    assert (per_user == 1).all().all()
    cate_tokens = data["cate_his"].str.split("^").explode()
    assert cate_tokens.str.isdigit().all() and (cate_tokens.astype(int) >= 1).all()
    assert data["cate_his"].str.split("^").str.len().between(1, 50).all()
    assert set(data["cate_id"]) & set(cate_tokens), "cate_his and cate_id share one id space"
    assert set(data["btag_his"].str.split("^").explode()) <= {"1", "2", "3", "4"}


def test_request_candidates_share_context_and_splits_keep_requests_whole():
    schema = SCHEMAS["request"]()
    frames, report = generate(schema, 1234, seed=8)
    assert report["rows"] == 1230
    assert len(schema.context_fields) == 8 and len(schema.target_fields) == 4
    for frame in frames.values():
        sizes = frame.groupby("request_id").size()
        assert (sizes == schema.candidates).all()
        assert (frame.groupby("request_id")[schema.context_fields].nunique() == 1).all().all()
    ids = [set(f["request_id"]) for f in frames.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    context, target = set(schema.context_fields), set(schema.target_fields)
    cross = report["planted"]["context_target_pairs"]
    assert cross and all(len(set(p) & context) == 1 and len(set(p) & target) == 1 for p in cross)
    assert report["planted"]["context_target_triples"]
    assert report["group_column"] == "request_id" and report["ceiling_test_gAUC"] > 0.5


def test_request_schema_rejects_too_few_requests():
    with pytest.raises(ValueError, match="at least 10 requests"):
        generate(SCHEMAS["request"](), 95, seed=1)


def test_group_auc_matches_fuxictr_gauc():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, 600)
    labels = (rng.random(600) < 0.3).astype(int)
    scores = np.round(rng.random(600), 1)  # ties inside groups
    total, weight = 0.0, 0
    for g in np.unique(groups):
        value, n = gAUC(labels[groups == g], scores[groups == g])
        total, weight = total + value, weight + n
    assert group_auc(labels, scores, groups) == pytest.approx(total / weight, abs=1e-12)
    assert group_auc(np.zeros(4), np.arange(4.0), np.array([0, 0, 1, 1])) is None


def test_write_replaces_the_folder_atomically_and_rejects_bad_arguments(tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "stale.csv").write_text("old")
    write("criteo", 100, str(out), seed=1, data_format="csv")
    assert sorted(os.listdir(out)) == ["planted.json", "test.csv", "train.csv", "valid.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]
    with pytest.raises(ValueError, match="schema='nope'"):
        write("nope", 100, str(tmp_path / "x"))
    with pytest.raises(ValueError, match="at least 10 rows"):
        write("criteo", 5, str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def _dead_pid():
    """The id of a process that has exited."""
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_work_folders_of_dead_generators_are_removed(tmp_path):
    """``<out>.tmp-<pid>`` folders of a generator that was killed are removed by the next
    generation into ``<out>``; a living process's folder is left alone."""
    out = tmp_path / "raw"
    dead = tmp_path / f"raw.tmp-{_dead_pid()}"
    alive = tmp_path / f"raw.tmp-{os.getppid()}"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "train.parquet").write_bytes(b"partial")
    write("criteo", 100, str(out), seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["raw", alive.name])


def test_failed_generation_leaves_no_work_folder(tmp_path, monkeypatch):
    from fuxictr_ext.data import synthetic

    def failing(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(synthetic, "_report", failing)
    with pytest.raises(OSError, match="No space left"):
        write("criteo", 100, str(tmp_path / "raw"), seed=1)
    assert list(tmp_path.iterdir()) == []


def test_command_line_prints_the_ceiling(tmp_path, capsys):
    synthetic_cli.main(["--schema", "taobao", "--rows", "300", "--out", str(tmp_path / "t"), "--seed", "3"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["schema"] == "taobao" and "ceiling_test_gAUC" in printed and "ceiling_test_AUC" in printed


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """dataset id -> (FeatureMap, processed paths): the id generated (300 rows) and built
    with the project's build_dataset on first use."""
    root = tmp_path_factory.mktemp("synthetic_builds")
    cache = {}

    def get(dataset_id):
        if dataset_id not in cache:
            params = _params(dataset_id, root)
            write(params["synthetic"]["schema"], 300, os.path.dirname(params["train_data"]), seed=9)
            paths = build_dataset(params)
            data_dir = os.path.dirname(paths["train"])
            feature_map = FeatureMap(dataset_id, data_dir)
            feature_map.load(os.path.join(data_dir, "feature_map.json"), params)
            cache[dataset_id] = (feature_map, paths)
        return cache[dataset_id]
    return get


@pytest.mark.parametrize("dataset_id", SYNTHETIC_IDS)
def test_dnn_forward_on_every_synthetic_dataset(built, tmp_path, dataset_id):
    feature_map, paths = built(dataset_id)
    batch = next(iter(TensorDataLoader(feature_map, paths["train"], batch_size=16)))
    for name, spec in feature_map.features.items():
        if spec["type"] == "sequence":
            assert batch[name].shape == (16, spec["max_len"])
            assert spec["feature_encoder"] == "layers.MaskedAveragePooling()"
    model = DNN(feature_map, embedding_dim=8, hidden_units=[16], **unit_model_kwargs(tmp_path))
    model.eval()
    with torch.no_grad():
        y_pred = model(batch)["y_pred"]
    assert y_pred.shape == (16, 1) and torch.all((y_pred > 0) & (y_pred < 1))


def test_taobao_sequences_and_group_column_reach_the_model(built):
    feature_map, paths = built("demo_taobao")
    assert [n for n, s in feature_map.features.items() if s["type"] == "sequence"] == ["cate_his", "brand_his", "btag_his"]
    assert feature_map.features["cate_his"]["share_embedding"] == "cate_id"
    assert feature_map.features["group_id"] == {"type": "meta"}
    loader = TensorDataLoader(feature_map, paths["test"], split="test", batch_size=1000)
    batch = next(iter(loader))
    raw = pd.read_parquet(os.path.join(os.path.dirname(os.path.dirname(paths["train"])), "raw", "demo_taobao",
                                       "test.parquet"))
    assert batch["group_id"].tolist() == raw["userid"].astype(int).tolist()
    scores = np.random.default_rng(0).random(len(raw))
    result = evaluate_metrics(raw["clk"].to_numpy(), scores, ["gAUC", "AUC"], batch["group_id"].numpy())
    assert set(result) == {"gAUC", "AUC"}


def test_request_sources_split_context_and_target(built):
    feature_map, _ = built("demo_request")
    sources = {s.get("source") for s in feature_map.features.values() if s["type"] != "meta"}
    assert sources == {"user", "context", "item"}
    assert feature_map.get_num_fields(["user", "context"]) == 8
    assert feature_map.get_num_fields("item") == 4
    assert feature_map.features["request_id"] == {"type": "meta"}
