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
    runs = glob.glob(str(in_workspace / "checkpoints" / "demo" / "DNN_demo" / "*" / "completed.json"))
    assert runs and all(os.path.isfile(os.path.join(os.path.dirname(run), "DNN_demo.model")) for run in runs)


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


# run_expid.py whose synthetic generator, before its files move into place, waits for the
# file named by RELEASE, so that a second run can be started while the first generates.
_HELD_GENERATION_RUN = """
import os, sys, time
from fuxictr_ext.data import synthetic
report = synthetic._report
def held_report(*args, **kwargs):
    deadline = time.time() + 120
    while not os.path.exists(os.environ["RELEASE"]) and time.time() < deadline:
        time.sleep(0.05)
    return report(*args, **kwargs)
synthetic._report = held_report
import run_expid
sys.exit(run_expid.main(sys.argv[1:]))
"""


def _wait_for(condition, seconds=120):
    import time
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.05)


def _fresh_synthetic_config(workspace, tmp_path, expids, rows=2000):
    """A config whose synthetic dataset ``demo_fresh`` (the demo's schema, ``rows`` rows) is
    not generated yet, and one-epoch DNN experiments ``expids`` on it (the second and later
    with another learning rate). Returns the config folder and the raw data folder."""
    config = _custom_config(workspace, tmp_path, expids[0], {"epochs": 1, "hidden_units": [16],
                                                             "dataset_id": "demo_fresh"})
    with open(config / "model_config" / "m.yaml") as fd:
        blocks = yaml.safe_load(fd)
    for expid in expids[1:]:
        blocks[expid] = dict(blocks[expids[0]], learning_rate=1.0e-4)
    (config / "model_config" / "m.yaml").write_text(yaml.safe_dump(blocks))
    with open(config / "dataset_config.yaml") as fd:
        demo = yaml.safe_load(fd)["demo"]
    raw = tmp_path / "data" / "raw" / "demo_fresh"
    demo.update({"data_root": str(tmp_path / "data"), "synthetic": dict(demo["synthetic"], rows=rows)})
    demo.update({f"{split}_data": str(raw / f"{split}.parquet") for split in ("train", "valid", "test")})
    (config / "dataset_config.yaml").write_text(yaml.safe_dump({"demo_fresh": demo}))
    return config, raw


def test_ceiling_line_is_not_printed_for_test_labels_other_than_the_planted_ones(in_workspace, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from fuxictr_ext.runner import summary_lines
    config, raw = _fresh_synthetic_config(in_workspace, tmp_path, ["X_ceiling"])
    planted = run_experiment(str(config), "X_ceiling")
    assert "planted-model ceiling" in "\n".join(summary_lines(planted))
    test = pq.read_table(raw / "test.parquet")
    flipped = test.set_column(0, "label", pa.compute.subtract(1, test.column("label")))
    assert test.schema.names[0] == "label"
    pq.write_table(flipped, raw / "test.parquet")
    result = run_experiment(str(config), "X_ceiling")
    assert result["test"]["AUC"] == pytest.approx(1 - planted["test"]["AUC"], abs=1e-6)
    assert result["ceiling"] is None
    assert not [line for line in summary_lines(result) if "planted-model ceiling" in line]
    log = (in_workspace / "checkpoints" / "demo_fresh" / "X_ceiling.log").read_text()
    assert "planted.json does not describe the current test split" in log.split("Test evaluation")[-2]


@pytest.mark.parametrize("dataset_ids", [1, 2], ids=["one_dataset_id", "two_ids_one_raw_folder"])
def test_two_concurrent_first_runs_generate_and_build_the_data_once(in_workspace, tmp_path, dataset_ids):
    """The second of two first runs of a synthetic dataset waits for the first one's
    generation (and build) and uses them: neither replaces the data the other reads. With
    two dataset ids on one raw folder (the tuner's renamed ids) the data are generated once."""
    import subprocess
    import sys
    config, raw = _fresh_synthetic_config(in_workspace, tmp_path, ["X_first", "X_second"])
    if dataset_ids == 2:
        datasets = yaml.safe_load((config / "dataset_config.yaml").read_text())
        datasets["demo_fresh_b"] = datasets["demo_fresh"]
        (config / "dataset_config.yaml").write_text(yaml.safe_dump(datasets))
        blocks = yaml.safe_load((config / "model_config" / "m.yaml").read_text())
        blocks["X_second"]["dataset_id"] = "demo_fresh_b"
        (config / "model_config" / "m.yaml").write_text(yaml.safe_dump(blocks))
    env = dict(os.environ, PYTHONPATH=str(REPO), RELEASE=str(tmp_path / "release"))
    logs = [tmp_path / "first.log", tmp_path / "second.log"]

    def start(expid, log):
        return subprocess.Popen([sys.executable, "-c", _HELD_GENERATION_RUN, "--config", str(config),
                                 "--expid", expid], cwd=tmp_path, env=env, stdout=open(log, "w"),
                                stderr=subprocess.STDOUT)

    first = start("X_first", logs[0])
    _wait_for(lambda: glob.glob(f"{raw}.tmp-*") or first.poll() is not None)
    second = start("X_second", logs[1])
    # the second run either waits for the first one's lock or generates the data itself
    _wait_for(lambda: "Waiting for another process" in logs[1].read_text() or len(glob.glob(f"{raw}.tmp-*")) > 1
              or second.poll() is not None)
    (tmp_path / "release").touch()
    codes = [first.wait(timeout=300), second.wait(timeout=300)]
    output = "".join(log.read_text() for log in logs)
    assert codes == [0, 0], output
    assert output.count("generating synthetic") == 1, output
    assert output.count("Processed dataset written") == dataset_ids, output
    assert not glob.glob(f"{raw}.*-*")
