"""run_expid.py end to end on the tiny synthetic workspace, and its errors."""

import glob
import os
from pathlib import Path

import pytest
import yaml

import run_expid
from fuxictr_ext.config import ConfigError
from fuxictr_ext.runner import run_experiment

REPO = Path(__file__).resolve().parents[1]


def _demo_expids():
    ids = []
    for path in sorted(glob.glob(str(REPO / "config" / "model_config" / "*.yaml"))):
        with open(path) as fd:
            ids.extend(k for k in (yaml.safe_load(fd) or {}) if k.endswith("_demo"))
    return ids


def test_dnn_demo_trains_evaluates_and_writes_results(in_workspace, capsys):
    assert run_expid.main(["--config", "config", "--expid", "DNN_demo"]) == 0
    out = capsys.readouterr().out
    assert "[DNN_demo] test logloss:" in out and "AUC:" in out
    assert "planted-model ceiling" in out
    lines = (in_workspace / "config.csv").read_text().strip().splitlines()
    assert "[exp_id] DNN_demo" in lines[-1] and "[test] logloss" in lines[-1] and "flops/sample" in lines[-1]
    assert (in_workspace / "checkpoints" / "demo" / "DNN_demo.model").is_file()


def test_same_seed_gives_same_result(in_workspace):
    first = run_experiment("config", "DNN_demo")
    second = run_experiment("config", "DNN_demo")
    assert first["test"] == second["test"]


def test_dnn_learns_the_planted_signal(in_workspace, tmp_path):
    config = _custom_config(in_workspace, tmp_path, "DNN_small_batches",
                            {"batch_size": 256, "epochs": 2, "hidden_units": [64, 64], "dataset_id": "demo_30k"})
    with open(config / "dataset_config.yaml") as fd:
        datasets = yaml.safe_load(fd)
    bigger = dict(datasets["demo"], synthetic=dict(datasets["demo"]["synthetic"], rows=30000))
    for split in ("train_data", "valid_data", "test_data"):
        bigger[split] = str(tmp_path / "raw" / os.path.basename(bigger[split]))
    (config / "dataset_config.yaml").write_text(yaml.safe_dump({"demo_30k": bigger}))
    result = run_experiment(str(config), "DNN_small_batches")
    assert result["test"]["AUC"] > 0.6
    assert result["test"]["AUC"] < result["ceiling"]["ceiling_test_AUC"]


@pytest.mark.parametrize("expid", _demo_expids())
def test_every_demo_expid_runs(in_workspace, expid):
    result = run_experiment("config", expid)
    assert 0.0 <= result["test"]["AUC"] <= 1.0
    assert result["test"]["logloss"] > 0


def test_unknown_expid_lists_near_matches(in_workspace, capsys):
    assert run_expid.main(["--config", "config", "--expid", "DNN_dmo"]) == 2
    err = capsys.readouterr().err
    assert "DNN_dmo" in err and "DNN_demo" in err


def test_unknown_dataset_id(in_workspace, tmp_path):
    config = tmp_path / "cfg"
    (config / "model_config").mkdir(parents=True)
    (config / "model_config" / "m.yaml").write_text("X_bad:\n  model: DNN\n  dataset_id: no_such_data\n")
    (config / "dataset_config.yaml").write_text("demo: {data_root: ./data/}\n")
    with pytest.raises(ConfigError, match="no_such_data"):
        run_experiment(str(config), "X_bad")


def test_missing_real_data_names_file_and_prepare_command(in_workspace, capsys):
    assert run_expid.main(["--config", "config", "--expid", "DNN_criteo"]) == 2
    err = capsys.readouterr().err
    assert "data file not found" in err and "python -m data_prep.prepare criteo_x1" in err
    assert "Traceback" not in err


def _custom_config(workspace, tmp_path, expid, overrides):
    config = tmp_path / "cfg"
    (config / "model_config").mkdir(parents=True)
    with open(workspace / "config" / "model_config" / "DNN.yaml") as fd:
        block = yaml.safe_load(fd)["DNN_demo"]
    block.update(overrides)
    (config / "model_config" / "m.yaml").write_text(yaml.safe_dump({expid: block}))
    (config / "dataset_config.yaml").write_text((workspace / "config" / "dataset_config.yaml").read_text())
    return config


def test_unknown_model_key_is_warned(in_workspace, tmp_path):
    config = _custom_config(in_workspace, tmp_path, "DNN_typo",
                            {"epochs": 1, "hidden_units": [8], "hiden_units": [64]})
    run_experiment(str(config), "DNN_typo")
    log = (in_workspace / "checkpoints" / "demo" / "DNN_typo.log").read_text()
    assert "WARNING config key 'hiden_units' is not an argument of DNN" in log
    assert "'hidden_units'" not in log.split("WARNING")[1].splitlines()[0]


def test_gpu_request_without_cuda_falls_back_loudly(in_workspace, caplog, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from fuxictr_ext.runner import resolve_device
    with caplog.at_level("WARNING"):
        assert resolve_device(0) == -1
    assert "no CUDA device" in caplog.text
