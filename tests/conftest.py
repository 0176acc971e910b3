"""Shared fixtures: one tiny synthetic workspace per test session.

``zoo_workspace`` holds a copy of the project's configs in which every synthetic
dataset id points at small generated files (the `demo` ids keep their schema but
get a few thousand rows), so run_expid-level tests train in seconds. Data is
generated and built once per session.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

# Small models on a shared 2-core machine: one intra-op thread avoids oversubscription.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
TINY_ROWS = 3000


@pytest.fixture(scope="session")
def zoo_workspace(tmp_path_factory):
    """A folder with config/ (tiny demo datasets) and data/; cwd-independent paths."""
    root = tmp_path_factory.mktemp("zoo")
    config = root / "config"
    shutil.copytree(REPO / "config" / "model_config", config / "model_config")
    with open(REPO / "config" / "dataset_config.yaml") as fd:
        datasets = yaml.safe_load(fd)
    for dataset_id, spec in datasets.items():
        spec["data_root"] = str(root / "data")
        for split in ("train_data", "valid_data", "test_data"):
            if spec.get(split):
                spec[split] = spec[split].replace("./data", str(root / "data"), 1)
        if spec.get("synthetic"):
            spec["synthetic"]["rows"] = TINY_ROWS
    with open(config / "dataset_config.yaml", "w") as fd:
        yaml.safe_dump(datasets, fd, sort_keys=False)
    return root


@pytest.fixture
def in_workspace(zoo_workspace, monkeypatch):
    """Run a test with the workspace as working directory (results CSV, checkpoints)."""
    monkeypatch.chdir(zoo_workspace)
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return zoo_workspace
