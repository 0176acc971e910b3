"""FuxiCTR's own tuner drives run_expid.py unchanged."""

import glob
from pathlib import Path

import yaml
from fuxictr.autotuner import enumerate_params, grid_search

REPO = Path(__file__).resolve().parents[1]


def test_two_point_grid_on_demo(in_workspace):
    with open(REPO / "config" / "tuner" / "DNN_demo_dropout.yaml") as fd:
        tuner = yaml.safe_load(fd)
    tuner["base_config"] = str(in_workspace / "config")
    tuner_file = in_workspace / "tuner_dnn.yaml"
    tuner_file.write_text(yaml.safe_dump(tuner))
    config_dir = enumerate_params(str(tuner_file))
    grid_search(config_dir, gpu_list=[-1], script=str(REPO / "run_expid.py"))
    lines = (in_workspace / "tuner_dnn.csv").read_text().strip().splitlines()
    assert len(lines) == 2
    assert all("[test] logloss" in line and "AUC" in line for line in lines)
    expids = {line.split("[exp_id] ")[1].split(",")[0] for line in lines}
    assert len(expids) == 2 and all(e.startswith("DNN_demo_") for e in expids)
