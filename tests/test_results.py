"""Results as data: FuxiCTR's CSV line parses, the JSON record, aggregation, the report."""

import json

import pandas as pd
import pytest
import torch

from fuxictr_ext import get_model_class, list_models
from fuxictr_ext import results
from fuxictr_ext.cost import model_cost
from fuxictr_ext.runner import append_results_line, run_experiment
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs


def _fake_result(expid, cost):
    return {"expid": expid, "valid": {"logloss": 0.45, "AUC": 0.78}, "test": {"logloss": 0.46, "AUC": 0.77},
            "cost": cost, "train_seconds": 12.34, "world_size": 1}


def test_csv_line_parses_with_pandas_for_every_model(tmp_path, monkeypatch):
    """Every registered model's real cost (vocabularies large enough for thousands of
    parameters) in FuxiCTR's line: pandas reads the file, 9 columns on every row, and
    column 2 is the experiment id as FuxiCTR's enumerate_param_list.py reads it."""
    monkeypatch.chdir(tmp_path)
    sources = ["user", "context", "user", "user", "context", "item", "item", "item", "user"]
    feature_map = make_feature_map(num_categorical=6, num_numeric=2, num_sequence=1, vocab_size=3000, sources=sources)
    (tmp_path / "cfg").mkdir()
    names = list_models()
    for name in names:
        torch.manual_seed(0)
        model = get_model_class(name)(feature_map, **unit_model_kwargs(tmp_path))
        cost = model_cost(model, random_batch(feature_map, batch_size=4, seed=1))
        assert cost.total_params >= 1000, "the check needs a count with a thousands separator"
        append_results_line(str(tmp_path / "cfg"), {"dataset_id": "unit", "model": name},
                            {"model": name, "dataset_id": "unit"}, _fake_result(f"{name}_x", cost))
    frame = pd.read_csv(tmp_path / "cfg.csv", header=None)
    assert frame.shape == (len(names), 9)
    assert frame.iloc[:, 2].map(lambda x: x.replace("[exp_id] ", "")).tolist() == [f"{n}_x" for n in names]
    assert frame.iloc[:, 7].str.startswith("[cost] params: total=").all()
    records = results.read_records(tmp_path / "cfg.jsonl")
    assert [r["expid"] for r in records] == [f"{n}_x" for n in names]


def test_csv_line_keeps_fuxictr_fields_and_order():
    line = results.fuxictr_csv_line("run_expid.py --expid A,B", "A", "demo", 3.0, {"logloss": 0.5, "AUC": 0.7},
                                    {"logloss": 0.51, "AUC": 0.69}, "params: total=10 | flops/sample=5", 2)
    fields = line.rstrip("\n").split(",")
    assert len(fields) == 9
    assert fields[1] == "[command] python run_expid.py --expid A;B"
    assert fields[2:5] == ["[exp_id] A", "[dataset_id] demo", "[train] 3.0s"]
    assert fields[5] == "[val] logloss: 0.500000 - AUC: 0.700000"
    assert fields[6] == "[test] logloss: 0.510000 - AUC: 0.690000"
    assert fields[8] == "[processes] 2"


def test_demo_run_writes_csv_and_record(in_workspace):
    result = run_experiment("config", "DNN_demo")
    frame = pd.read_csv(in_workspace / "config.csv", header=None)
    assert frame.shape[1] == 9 and frame.iloc[-1, 2] == "[exp_id] DNN_demo"
    record = results.read_records(in_workspace / "config.jsonl")[-1]
    assert record["status"] == "ok" and record["expid"] == "DNN_demo" and record["dataset_id"] == "demo"
    assert record["model"] == "DNN" and record["seed"] == 2019
    assert record["test"] == pytest.approx(result["test"]) and record["valid"] == pytest.approx(result["valid"])
    assert record["params"]["total"] == result["cost"].total_params
    assert record["flops_per_sample"] == result["cost"].flops_per_sample
    assert record["processes"] == 1 and record["train_seconds"] > 0
    # every value of DNN_demo's block that Base does not hold, and nothing of Base's
    assert record["config"]["hidden_units"] == [400, 400, 400] and record["config"]["dataset_id"] == "demo"
    assert "model_root" not in record["config"] and "model_id" not in record["config"]


def test_config_diff_against_base():
    base = {"model_root": "./c/", "verbose": 1, "seed": 1}
    params = {"model_root": "./c/", "verbose": 0, "seed": 1, "lr": 0.1, "model_id": "X"}
    assert results.config_diff(params, base) == {"verbose": 0, "lr": 0.1}


def test_summary_matches_hand_computation():
    # values 0.80, 0.81, 0.83: mean 0.81333..., deviations -0.01333, -0.00333, 0.01667,
    # squares 1.7778e-4 + 1.1111e-5 + 2.7778e-4 = 4.6667e-4, / (n - 1 = 2) = 2.3333e-4, sqrt = 0.0152753
    summary = results.summarize([0.80, 0.81, 0.83])
    assert summary.n == 3
    assert summary.mean == pytest.approx(0.8133333333)
    assert summary.std == pytest.approx(0.0152752523, rel=1e-8)
    assert summary.text(4) == "0.8133 +- 0.0153"
    single = results.summarize([0.5])
    assert single.std is None and single.text(3) == "0.500"
    assert results.summarize([]).text() == "-"


def _record(expid, seed, auc, status="ok", dataset="demo"):
    record = {"expid": expid, "dataset_id": dataset, "seed": seed, "status": status}
    if status == "ok":
        record.update(test={"AUC": auc}, params={"total": 100}, flops_per_sample=50.0)
    else:
        record["error"] = "RuntimeError: boom"
    return record


def test_report_groups_by_expid_and_lists_failures(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    for record in [_record("A", 1, 0.80), _record("B", 1, 0.70), _record("A", 2, 0.81), _record("A", 3, 0.83),
                   _record("B", 2, 0.0, status="failed")]:
        results.append_record(path, record)
    assert results.main([str(path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| A") or line.startswith("| B")}
    assert "| 3 (1, 2, 3) | 0.813333 +- 0.015275 |" in rows["A"]
    assert "| 1 (1) | 0.700000 |" in rows["B"]
    assert "* B (demo, seed 2): RuntimeError: boom" in out


def test_a_seed_recorded_twice_counts_once():
    groups = results.group_records([_record("A", 1, 0.5), _record("A", 1, 0.7), _record("A", 2, 0.9)])
    assert [r["test"]["AUC"] for r in groups[("A", "demo")]] == [0.7, 0.9]


def test_read_records_skips_a_torn_last_line_and_names_a_bad_one(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_record("A", 1, 0.5)) + "\n" + '{"expid": "A", "se')
    assert len(results.read_records(path)) == 1
    path.write_text('not json\n' + json.dumps(_record("A", 1, 0.5)) + "\n")
    with pytest.raises(ValueError, match="r.jsonl, line 1"):
        results.read_records(path)


def test_report_on_a_missing_record(tmp_path, capsys):
    assert results.main([str(tmp_path / "none.jsonl")]) == 2
    assert "no results record" in capsys.readouterr().err
