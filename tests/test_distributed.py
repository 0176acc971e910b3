"""Data-parallel training with 2 CPU processes (gloo)."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from fuxictr_ext import distributed as zoo_dist
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs
from fuxictr_ext.training import Trainer
from model_zoo.DNN import DNN

REPO = Path(__file__).resolve().parents[1]
WORLD = 2


def _dnn(tmp_dir):
    torch.manual_seed(0)
    return DNN(make_feature_map(), hidden_units=[16, 16], **unit_model_kwargs(tmp_dir))


def _join(rank, init_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    return zoo_dist.DistContext(rank=rank, world_size=WORLD, local_rank=rank, backend="gloo", gpu=-1)


def _ddp_step_worker(rank, init_file, out_dir):
    context = _join(rank, init_file)
    model = _dnn(out_dir)
    trainer = Trainer(model, context=context)
    batch = random_batch(model.feature_map, batch_size=16, seed=7)
    half = {k: v[rank * 8:(rank + 1) * 8] for k, v in batch.items()}
    model.train()
    trainer.train_step(half)
    torch.save(model.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _eval_worker(rank, init_file, out_dir):
    context = _join(rank, init_file)
    model = _dnn(out_dir)
    batches = [random_batch(model.feature_map, batch_size=n, seed=i) for i, n in enumerate([16, 16, 16, 5, 9])]
    logs = Trainer(model, context=context).evaluate(batches, metrics=["logloss", "AUC"])
    torch.save(logs, os.path.join(out_dir, f"eval{rank}.pt"))
    dist.destroy_process_group()


def test_one_ddp_step_equals_one_step_on_the_concatenated_batch(tmp_path):
    mp.spawn(_ddp_step_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    single = _dnn(tmp_path)
    single.train()
    Trainer(single).train_step(random_batch(single.feature_map, batch_size=16, seed=7))
    for rank in range(WORLD):
        state = torch.load(tmp_path / f"rank{rank}.pt")
        for name, value in single.state_dict().items():
            assert (state[name] - value).abs().max() <= 1e-5, name


def test_distributed_evaluation_is_exactly_single_process(tmp_path):
    mp.spawn(_eval_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    model = _dnn(tmp_path)
    batches = [random_batch(model.feature_map, batch_size=n, seed=i) for i, n in enumerate([16, 16, 16, 5, 9])]
    expected = model.evaluate(batches, metrics=["logloss", "AUC"])
    for rank in range(WORLD):
        assert torch.load(tmp_path / f"eval{rank}.pt") == expected


def _torchrun(args, cwd, **kwargs):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
                           *args], cwd=cwd, capture_output=True, text=True, **kwargs)


def _test_auc(csv_line):
    return float(re.search(r"\[test\] logloss: [0-9.]+ - AUC: ([0-9.]+)", csv_line).group(1))


def test_two_process_demo_matches_single_process(in_workspace):
    script = str(REPO / "run_expid.py")
    single = subprocess.run([sys.executable, script, "--config", "config", "--expid", "DNN_demo", "--gpu", "-1"],
                            cwd=in_workspace, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    run = _torchrun([script, "--config", "config", "--expid", "DNN_demo", "--gpu", "-1"], in_workspace, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("[DNN_demo] test logloss") == 1
    lines = (in_workspace / "config.csv").read_text().strip().splitlines()
    one, two = lines[-2], lines[-1]
    assert "[processes] 1" in one and "[processes] 2" in two
    assert abs(_test_auc(one) - _test_auc(two)) < 0.05


def _children(pid):
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_killed_worker_is_restarted_and_resumes_from_last_epoch(in_workspace, tmp_path):
    config = tmp_path / "cfg"
    (config / "model_config").mkdir(parents=True)
    with open(in_workspace / "config" / "model_config" / "DNN.yaml") as fd:
        block = yaml.safe_load(fd)["DNN_demo"]
    block.update({"batch_size": 16, "epochs": 4, "hidden_units": [32], "early_stop_patience": 10})
    (config / "model_config" / "m.yaml").write_text(yaml.safe_dump({"DNN_resume": block}))
    (config / "dataset_config.yaml").write_text((in_workspace / "config" / "dataset_config.yaml").read_text())
    resume_file = in_workspace / "checkpoints" / "demo" / "DNN_resume.model.resume"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
                             "--max-restarts", "1", str(REPO / "run_expid.py"), "--config", str(config),
                             "--expid", "DNN_resume", "--gpu", "-1"],
                            cwd=in_workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not resume_file.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert resume_file.exists(), "no resume state was written after the first epoch"
    workers = _children(proc.pid)
    assert len(workers) == WORLD
    os.kill(workers[-1], signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert re.search(r"Restart 1: resuming from .* at epoch [2-4]", out)
    # printed once (rank 0) at the start of a line; the log's copy carries a timestamp
    assert len(re.findall(r"^\[DNN_resume\] test logloss", out, flags=re.M)) == 1
    assert not resume_file.exists()


def test_gpu_request_without_gpus_under_torchrun_is_refused(in_workspace):
    run = _torchrun([str(REPO / "run_expid.py"), "--config", "config", "--expid", "DNN_demo", "--gpu", "0"],
                    in_workspace, timeout=300, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert run.returncode != 0
    assert "--gpu 0 under torchrun" in run.stderr + run.stdout


def test_backend_the_machine_lacks_is_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(zoo_dist.DistributedSetupError, match="dist_backend='no_such_backend'"):
        zoo_dist.init_from_env(-1, backend="no_such_backend")
