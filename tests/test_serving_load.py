"""From a trained checkpoint and raw feature values to scores: load_scorer, its command, the raw encoder."""

import json
import os

import numpy as np
import polars as pl
import pytest
import torch
from fuxictr.preprocess.tokenizer import Tokenizer
from fuxictr.utils import load_dataset_config

from fuxictr_ext.data import build_dataset
from fuxictr_ext.config import ConfigError
from fuxictr_ext.runner import ensure_raw_data, run_experiment
from fuxictr_ext.serving import (FieldPartition, RawFeatureEncoder, RequestError, load_feature_processor)
from fuxictr_ext.serving.encoding import FieldEncoder
from fuxictr_ext.serving.load import load_scorer, main

EXPID = "DLRM_demo_request"


def raw_requests(raw: pl.DataFrame, encoder: RawFeatureEncoder, request_ids):
    """Requests of the raw test rows grouped by request_id, and the rows in candidate order."""
    ids = raw["request_id"].to_numpy()
    requests, rows = [], []
    for request_id in request_ids:
        index = np.nonzero(ids == request_id)[0]
        part = raw[index]
        requests.append({"context": {c: part[c][0] for c in encoder.context_columns},
                         "candidates": {c: part[c].to_list() for c in encoder.target_columns}})
        rows.extend(index.tolist())
    return requests, np.array(rows)


@pytest.fixture(scope="module")
def trained(zoo_workspace):
    """A short run_expid training of DLRM on the context/target demo data; its checkpoint and data."""
    cwd = os.getcwd()
    os.chdir(zoo_workspace)
    try:
        result = run_experiment("config", EXPID)
    finally:
        os.chdir(cwd)
    params = load_dataset_config(str(zoo_workspace / "config"), "demo_request")
    return {"config": str(zoo_workspace / "config"), "checkpoint": result["checkpoint"],
            "raw": pl.read_parquet(params["test_data"]),
            "encoded": pl.read_parquet(os.path.join(params["data_root"], "demo_request", "test.parquet"))}


@pytest.fixture(scope="module")
def scorers(trained, zoo_workspace):
    cwd = os.getcwd()
    os.chdir(zoo_workspace)
    try:
        return {path: load_scorer(trained["config"], EXPID, trained["checkpoint"], path=path)
                for path in ("vanilla", "rank_aware")}
    finally:
        os.chdir(cwd)


def test_loaded_scores_equal_the_offline_evaluation(trained, scorers):
    rank_aware, vanilla = scorers["rank_aware"], scorers["vanilla"]
    request_ids = np.unique(trained["raw"]["request_id"].to_numpy())[:12]
    requests, rows = raw_requests(trained["raw"], rank_aware.encoder, request_ids)
    served = np.concatenate(rank_aware.score(requests))
    assert served.shape == (len(rows),) and served.std() > 0
    assert np.abs(served - np.concatenate(vanilla.score(requests))).max() <= 1e-6
    offline = {c: torch.as_tensor(trained["encoded"][c].to_numpy()[rows]) for c in trained["encoded"].columns}
    with torch.no_grad():
        expected = vanilla.model(offline)["y_pred"].view(-1).double().numpy()  # the evaluation's forward
    assert np.abs(served - expected).max() <= 1e-6


def test_command_prints_one_line_of_scores_per_request(trained, scorers, zoo_workspace, tmp_path, capsys,
                                                       monkeypatch):
    monkeypatch.chdir(zoo_workspace)
    requests, _ = raw_requests(trained["raw"], scorers["rank_aware"].encoder,
                               np.unique(trained["raw"]["request_id"].to_numpy())[:3])
    path = tmp_path / "requests.json"
    path.write_text(json.dumps(requests))
    assert main(["--config", trained["config"], "--expid", EXPID, "--requests", str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    printed = [json.loads(line) for line in lines]
    expected = scorers["rank_aware"].score(requests)
    assert [len(p) for p in printed] == [len(e) for e in expected]
    assert np.abs(np.concatenate(printed) - np.concatenate(expected)).max() <= 1e-7
    assert main(["--config", trained["config"], "--expid", "DLRM_demo_reqest", "--requests", str(path)]) == 2
    assert "no such experiment id" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        load_scorer(trained["config"], "DLRM_demo_reqest")


@pytest.mark.parametrize("case", ["empty", "truncated", "random", "wrong_shape"])
def test_command_names_a_bad_checkpoint(trained, scorers, zoo_workspace, tmp_path, capsys, monkeypatch, case):
    from test_serving_checkpoints import BAD_CHECKPOINT_MESSAGES, _bad_checkpoints
    monkeypatch.chdir(zoo_workspace)
    checkpoint = _bad_checkpoints(scorers["vanilla"].model, tmp_path)[case]
    requests = tmp_path / "requests.json"
    requests.write_text("[]")
    assert main(["--config", trained["config"], "--expid", EXPID, "--checkpoint", str(checkpoint),
                 "--requests", str(requests)]) == 2
    err = capsys.readouterr().err
    assert str(checkpoint) in err and BAD_CHECKPOINT_MESSAGES[case] in err and "Traceback" not in err


def test_a_lone_surrogate_is_a_request_error_naming_the_field(scorers):
    encoder = scorers["rank_aware"].encoder
    context = {c: "1" for c in encoder.context_columns}
    candidates = {c: ["1", "2"] for c in encoder.target_columns}
    with pytest.raises(RequestError, match=r"context\['user_id'\]"):
        encoder.request_batch([{"context": dict(context, user_id="\ud800"), "candidates": candidates}])
    with pytest.raises(RequestError, match=r"candidates\['item_id'\]"):
        encoder.request_batch([{"context": context, "candidates": dict(candidates, item_id=["1", "\udfff"])}])


def test_unknown_values_get_the_oov_id(scorers):
    encoder = scorers["rank_aware"].encoder
    context = {c: "never-seen" for c in encoder.context_columns}
    batch = encoder.request_batch([{"context": context, "candidates": {c: ["never-seen", None]
                                                                       for c in encoder.target_columns}}])
    for name, values in list(batch.context.items()) + list(batch.candidates.items()):
        assert (values == encoder.fields[name].oov_id).all(), name   # "" (a filled null) is not in the vocabulary


@pytest.mark.parametrize("dataset_id, roles", [
    ("demo_taobao", {}),                                               # numeric (StandardScaler), sequences
    ("demo_avazu", {"C14": "target", "app_id": "target"}),             # hour / weekday / weekend derived from hour
])
def test_raw_encoding_equals_the_dataset_build(dataset_id, roles, zoo_workspace):
    params = load_dataset_config(str(zoo_workspace / "config"), dataset_id)
    ensure_raw_data(params)
    build_dataset(params)
    data_dir = os.path.join(params["data_root"], dataset_id)
    processor = load_feature_processor(data_dir)
    options = dict(context_sources=[""], target_sources=[], field_roles=roles) if roles else {}
    encoder = RawFeatureEncoder(processor, FieldPartition.from_feature_map(processor.feature_map, **options))
    raw = pl.read_parquet(params["test_data"])
    built = pl.read_parquet(os.path.join(data_dir, "test.parquet"))
    requests = [{"context": {c: row[c] for c in encoder.context_columns},
                 "candidates": {c: [row[c]] for c in encoder.target_columns}} for row in raw.iter_rows(named=True)]
    batch = encoder.request_batch(requests)
    for name, values in list(batch.context.items()) + list(batch.candidates.items()):
        column = built[name].to_numpy()
        expected = torch.as_tensor(np.stack(column) if values.dim() == 2 else column)
        assert torch.equal(values, expected.to(values.dtype)), name
    if dataset_id == "demo_avazu":
        assert encoder.context_columns.count("hour") == 1 and "weekday" not in encoder.context_columns


@pytest.mark.parametrize("padding", ["pre", "post"])
def test_sequence_encoding_matches_fuxictrs_tokenizer(padding):
    tokenizer = Tokenizer(splitter="^", max_len=4, padding=padding)
    tokenizer.build_vocab({"a": 5, "b": 3, "c": 2})

    class Processor:
        processor_dict = {"seq::tokenizer": tokenizer}

    vocab = tokenizer.vocab
    field = FieldEncoder("seq", {"type": "sequence"}, {}, None, ("seq",), vocab, vocab["__OOV__"], Processor())
    texts = ["a^b", "", "c^x^a^b^b^a", "b", "a^^c"]
    encoded = field.encode(pl.Series(texts))
    assert torch.equal(encoded, torch.as_tensor(tokenizer.encode_sequence(texts), dtype=torch.long))


@pytest.mark.parametrize("change, message", [
    (lambda r: r["context"].pop("user_id"), "context lack field"),
    (lambda r: r["candidates"].update(colour=["red"] * 3), "unknown field"),
    (lambda r: r.update(user={}), "unknown key"),
    (lambda r: r.update(candidates={k: [] for k in r["candidates"]}), "zero candidates"),
    (lambda r: r.update(candidates={k: v * 400 for k, v in r["candidates"].items()}), "more than max_candidates"),
    (lambda r: r["context"].update(user_id=17), "expected strings"),
    (lambda r: r["context"].update(user_id=["17"]), "one scalar per request"),
    (lambda r: r["candidates"].update(item_id="3"), "must be a list"),
    (lambda r: r["candidates"]["item_id"].append("9"), "disagree on the number of candidates"),
])
def test_bad_requests_are_refused_naming_the_problem(scorers, change, message):
    encoder = scorers["rank_aware"].encoder
    request = {"context": {c: "1" for c in encoder.context_columns},
               "candidates": {c: ["1", "2", "3"] for c in encoder.target_columns}}
    encoder.request_batch([request])
    change(request)
    with pytest.raises(RequestError, match=message):
        encoder.request_batch([request])
    with pytest.raises(RequestError, match="at least one request"):
        encoder.request_batch([])


def test_float64_scorer_from_the_checkpoint(trained, scorers, zoo_workspace, monkeypatch):
    monkeypatch.chdir(zoo_workspace)
    exact = load_scorer(trained["config"], EXPID, trained["checkpoint"], dtype=torch.float64)
    requests, _ = raw_requests(trained["raw"], exact.encoder, np.unique(trained["raw"]["request_id"].to_numpy())[:4])
    batch = exact.encode(requests)
    assert exact.score_batch(batch).dtype == torch.float64
    with torch.no_grad():
        own_forward = exact.model(batch.broadcast())["y_pred"].view(-1)
    assert (exact.score_batch(batch) - own_forward).abs().max() <= 1e-10
    assert np.abs(np.concatenate(exact.score(requests)) - np.concatenate(scorers["rank_aware"].score(requests))).max() \
        <= 1e-6


def test_requests_without_target_fields_give_num_candidates(scorers):
    encoder = scorers["rank_aware"].encoder
    processor = encoder.fields["user_id"].processor
    all_context = FieldPartition.from_feature_map(processor.feature_map, context_sources=["user", "context", "item"],
                                                  target_sources=[])
    no_target = RawFeatureEncoder(processor, all_context)
    context = {c: "1" for c in no_target.context_columns}
    batch = no_target.request_batch([{"context": context, "num_candidates": 3}, {"context": context, "num_candidates": 1}])
    assert batch.candidates == {} and batch.request_index.tolist() == [0, 0, 0, 1]
    with pytest.raises(RequestError, match="give num_candidates"):
        no_target.request_batch([{"context": context}])
    with pytest.raises(RequestError, match="num_candidates=2.5 must be an integer"):
        no_target.request_batch([{"context": context, "num_candidates": 2.5}])
