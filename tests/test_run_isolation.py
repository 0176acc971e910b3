"""Runs never share mutable state: each run's checkpoint lives in its own folder, its result
comes from its own weights, and the serving loader serves only completed runs."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fuxictr_ext.runner import run_experiment
from fuxictr_ext.serving.load import load_model, main as load_main

REPO = Path(__file__).resolve().parents[1]
real_replace = os.replace  # checkpoints are written to a temporary file and renamed (os.replace) onto their path


def _config(workspace, tmp_path, expid, base, overrides):
    """A config folder whose experiment ``expid`` is ``base`` with ``overrides`` (the workspace's data)."""
    config = tmp_path / f"cfg_{expid}"
    (config / "model_config").mkdir(parents=True)
    blocks = {}
    for path in glob.glob(str(workspace / "config" / "model_config" / "*.yaml")):
        with open(path) as fd:
            blocks.update(yaml.safe_load(fd) or {})
    block = dict(blocks[base])
    for key, value in blocks.get("Base", {}).items():
        block.setdefault(key, value)
    block.update(overrides)
    (config / "model_config" / "m.yaml").write_text(yaml.safe_dump({expid: block}))
    (config / "dataset_config.yaml").write_text((workspace / "config" / "dataset_config.yaml").read_text())
    return str(config)


def test_a_run_finishing_during_another_does_not_change_its_result(in_workspace, monkeypatch):
    """Run B (other settings, same experiment id) runs from start to end right after run A
    wrote its checkpoint and before A restores its best weights: A still reports its own result."""
    solo = run_experiment("config", "DNN_demo", overrides={"epochs": 1})
    other = {}

    def replace_then_run_other(source, target):
        real_replace(source, target)
        if str(target).endswith(".model") and not other:
            other["result"] = None
            other["result"] = run_experiment("config", "DNN_demo", overrides={"epochs": 1, "learning_rate": 1.0e-4})

    monkeypatch.setattr(os, "replace", replace_then_run_other)
    interleaved = run_experiment("config", "DNN_demo", overrides={"epochs": 1})
    assert other["result"]["test"] != solo["test"]
    assert interleaved["test"] == solo["test"]
    assert interleaved["checkpoint"] != other["result"]["checkpoint"]


def _zoo_run(workspace, overrides):
    command = [sys.executable, "-m", "fuxictr_ext.cli", "run", "--config", "config", "--expid", "DNN_demo"]
    for override in overrides:
        command += ["--override", override]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen(command, cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def _test_line(process):
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out[-3000:]
    return [line for line in out.splitlines() if line.startswith("[DNN_demo] test ")][-1]


def test_two_concurrent_runs_each_report_their_own_result(in_workspace):
    """Run A barely moves (learning rate 1e-12): its best is epoch 1 and it restores it after
    epoch 3; run B (learning rate 1e-3) writes better checkpoints meanwhile."""
    settings = (["epochs=3", "early_stop_patience=5", "learning_rate=1.0e-12"], ["epochs=3", "early_stop_patience=5"])
    solo = [_test_line(_zoo_run(in_workspace, overrides)) for overrides in settings]
    assert solo[0] != solo[1]
    processes = [_zoo_run(in_workspace, overrides) for overrides in settings]
    assert [_test_line(process) for process in processes] == solo


def test_serving_loads_the_newest_completed_run_with_its_settings(in_workspace, tmp_path):
    config = _config(in_workspace, tmp_path, "DLRM_runs", "DLRM_demo_request", {"epochs": 1})
    first = run_experiment(config, "DLRM_runs")
    second = run_experiment(config, "DLRM_runs", overrides={"hidden_units": [32]})
    model, params = load_model(config, "DLRM_runs")
    assert params["hidden_units"] == [32] and os.path.dirname(second["checkpoint"]) != os.path.dirname(first["checkpoint"])
    saved = torch.load(second["checkpoint"], weights_only=True)
    assert all(torch.equal(value, saved[name]) for name, value in model.state_dict().items())
    marker = json.loads(Path(os.path.dirname(second["checkpoint"]), "completed.json").read_text())
    assert marker["test"] == second["test"]
    explicit, _ = load_model(config, "DLRM_runs", checkpoint=first["checkpoint"])   # the config's settings
    assert explicit.state_dict().keys() == torch.load(first["checkpoint"], weights_only=True).keys()


def _requests(tmp_path):
    """One request of the demo_request schema (values the vocabulary may not know: OOV ids)."""
    context = ["user_id", "age_level", "gender", "city_level", "user_segment", "hour", "weekday", "device"]
    request = {"context": {name: "1" for name in context},
               "candidates": {name: ["1", "2"] for name in ("item_id", "category", "brand", "shop")}}
    path = tmp_path / "requests.json"
    path.write_text(json.dumps([request]))
    return str(path)


def _refused(config, expid, tmp_path, capsys):
    rc = load_main(["--config", config, "--expid", expid, "--requests", _requests(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    return err


def test_a_killed_run_is_not_served(in_workspace, tmp_path, monkeypatch, capsys):
    """The run is killed right after its first checkpoint: the loader names it and refuses."""
    config = _config(in_workspace, tmp_path, "DLRM_killed", "DLRM_demo_request", {"epochs": 3})

    def replace_then_die(source, target):
        real_replace(source, target)
        if str(target).endswith(".model"):
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, "DLRM_killed")
    monkeypatch.setattr(os, "replace", real_replace)
    (checkpoint,) = glob.glob(str(in_workspace / "checkpoints" / "demo_request" / "**" / "DLRM_killed.model"),
                              recursive=True)
    err = _refused(config, "DLRM_killed", tmp_path, capsys)
    assert "no completed run of DLRM_killed" in err and os.path.dirname(checkpoint) in err


def test_a_diverged_run_leaves_no_checkpoint_to_serve(in_workspace, tmp_path, monkeypatch, capsys):
    """Epoch 1 writes a checkpoint, epoch 2 diverges (an infinite loss term)."""
    from fuxictr_ext.base import TrainingDiverged
    from model_zoo.DLRM import DLRM

    config = _config(in_workspace, tmp_path, "DLRM_diverged", "DLRM_demo_request",
                     {"epochs": 3, "early_stop_patience": 5})
    real_forward = DLRM.forward
    saved = []

    def replace_and_note(source, target):
        real_replace(source, target)
        saved.append(str(target).endswith(".model"))

    def forward(self, inputs):
        out = real_forward(self, inputs)
        if self.training and any(saved):
            out = {**out, "aux_losses": {"blow_up": torch.tensor(float("inf"))}}
        return out

    monkeypatch.setattr(os, "replace", replace_and_note)
    monkeypatch.setattr(DLRM, "forward", forward)
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        run_experiment(config, "DLRM_diverged")
    monkeypatch.setattr(os, "replace", real_replace)
    monkeypatch.setattr(DLRM, "forward", real_forward)
    assert not glob.glob(str(in_workspace / "checkpoints" / "demo_request" / "**" / "DLRM_diverged.model*"),
                         recursive=True)
    err = _refused(config, "DLRM_diverged", tmp_path, capsys)
    assert "DLRM_diverged" in err
