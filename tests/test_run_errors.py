"""run_expid.py on bad configs and bad data: a clear error naming the key or file, exit
status 2, no traceback and no results line."""

import glob
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

import run_expid

from test_data import _frame

REPO = Path(__file__).resolve().parents[1]


def _config(workspace, tmp_path, overrides, dataset_yaml=None, expid="X_bad"):
    config = tmp_path / "cfg"
    (config / "model_config").mkdir(parents=True)
    with open(workspace / "config" / "model_config" / "DNN.yaml") as fd:
        block = yaml.safe_load(fd)["DNN_demo"]
    block.update({"epochs": 1, "hidden_units": [16]})
    block.update(overrides)
    (config / "model_config" / "m.yaml").write_text(yaml.safe_dump({expid: block}))
    if dataset_yaml is None:
        dataset_yaml = (workspace / "config" / "dataset_config.yaml").read_text()
    if dataset_yaml is not False:
        (config / "dataset_config.yaml").write_text(dataset_yaml)
    return config


def _run(config, capsys, expid="X_bad"):
    rc = run_expid.main(["--config", str(config), "--expid", expid])
    return rc, capsys.readouterr().err


def _results_lines(workspace, expid="X_bad"):
    results = workspace / "cfg.csv"
    return [line for line in results.read_text().splitlines() if f"[exp_id] {expid}," in line] \
        if results.exists() else []


BAD_SETTINGS = [
    ({"embedding_dim": "abc"}, "embedding_dim='abc' must be a whole number >= 1"),
    ({"epochs": "abc"}, "epochs='abc' must be a whole number >= 1"),
    ({"hidden_units": 32}, "hidden_units=32 must be a list of layer widths"),
    ({"batch_size": -1}, "batch_size=-1 must be a whole number >= 1"),
    ({"batch_size": 0}, "batch_size=0 must be a whole number >= 1"),
    ({"net_dropout": 2}, r"net_dropout=2 must be a number in \[0, 1\)"),
    ({"learning_rate": "1e-3"}, "learning_rate='1e-3' must be a number > 0 .YAML reads 1e-3 as text"),
    ({"monitor_mode": "minimum"}, r"monitor_mode='minimum' must be one of \['max', 'min'\]"),
    ({"model": "DNNN"}, "model='DNNN' is not a registered model"),
]


@pytest.mark.parametrize("overrides, message", BAD_SETTINGS, ids=[next(iter(o)) + "=" + repr(next(iter(o.values())))
                                                                 for o, _ in BAD_SETTINGS])
def test_bad_setting_is_named_without_traceback(in_workspace, tmp_path, capsys, overrides, message):
    rc, err = _run(_config(in_workspace, tmp_path, overrides), capsys)
    assert rc == 2
    assert "run_expid: error: experiment X_bad:" in err
    assert re.search(message, err), err
    assert "Traceback" not in err
    assert not _results_lines(in_workspace)


def test_diverged_run_fails_names_learning_rate_and_writes_no_results(in_workspace, tmp_path, capsys):
    rc, err = _run(_config(in_workspace, tmp_path, {"learning_rate": 1000.0, "epochs": 2}), capsys)
    assert rc == 2
    assert "training diverged" in err and "learning_rate (it is 1000.0)" in err
    assert not _results_lines(in_workspace)


def test_dataset_config_yaml_error_names_file(in_workspace, tmp_path, capsys):
    rc, err = _run(_config(in_workspace, tmp_path, {}, dataset_yaml="demo:\n  data_root: [unclosed\n"), capsys)
    assert rc == 2 and "dataset_config.yaml: not valid YAML" in err and "Traceback" not in err


def test_missing_dataset_config_names_folder(in_workspace, tmp_path, capsys):
    rc, err = _run(_config(in_workspace, tmp_path, {}, dataset_yaml=False), capsys)
    assert rc == 2 and "no dataset_config.yaml or dataset_config/*.yaml there" in err
    assert "dataset_id='demo'" in err


def _csv_dataset(tmp_path, frame_by_split):
    for split, frame in frame_by_split.items():
        frame.to_csv(tmp_path / f"{split}.csv", index=False)
    entry = {"data_root": str(tmp_path / "data"), "data_format": "csv", "min_categr_count": 1,
             "feature_cols": [{"name": ["I1", "I2"], "active": True, "dtype": "float", "type": "numeric"},
                              {"name": ["C1", "C2", "C3"], "active": True, "dtype": "str", "type": "categorical"}],
             "label_col": {"name": "label", "dtype": "float"}}
    entry.update({f"{split}_data": str(tmp_path / f"{split}.csv") for split in frame_by_split})
    return entry


def _five_rows(split, column, value):
    def damage(frames):
        frames[split] = frames[split].astype({column: float})
        frames[split].loc[:4, column] = value
    return damage


def _single_class_valid(frames):
    frames["valid"]["label"] = 0


def _duplicate_train_column(frames):
    frames["train"]["C2_again"] = "w"
    frames["train"].columns = [*frames["train"].columns[:-1], "C2"]


@pytest.mark.parametrize("damage, message", [
    (_five_rows("test", "label", 2), r"test.csv: label column 'label' is not 0 or 1 on 5 of 300 rows \(found: 2.0\)"),
    (_five_rows("valid", "I1", np.inf), r"valid.csv: numeric column\(s\) hold infinite values .*'I1': 5"),
    (_single_class_valid, r"valid.csv: label column 'label' is 0 on all 300 rows; the validation split needs "
                          r"both classes"),
    (_duplicate_train_column, r"train.csv: column name\(s\) \['C2'\] appear more than once"),
], ids=["label_2", "infinite_numeric", "single_class_valid", "duplicate_column"])
def test_bad_data_is_named_before_training(in_workspace, tmp_path, capsys, damage, message):
    frames = {s: _frame(300, seed=i) for i, s in enumerate(("train", "valid", "test"))}
    damage(frames)
    entry = _csv_dataset(tmp_path, frames)
    config = _config(in_workspace, tmp_path, {"dataset_id": "tiny_csv"},
                     dataset_yaml=yaml.safe_dump({"tiny_csv": entry}))
    rc, err = _run(config, capsys)
    assert rc == 2 and "Traceback" not in err
    assert re.search(message, err), err
    assert not _results_lines(in_workspace)
    assert not (tmp_path / "data" / "tiny_csv").exists()


def test_typo_in_dataset_config_entry_is_warned(in_workspace, tmp_path, capsys):
    frames = {s: _frame(300, seed=i) for i, s in enumerate(("train", "valid", "test"))}
    entry = _csv_dataset(tmp_path, frames)
    entry["min_categr_cnt"] = 5
    entry["feature_cols"][1]["actve"] = False
    config = _config(in_workspace, tmp_path, {"dataset_id": "tiny_csv"},
                     dataset_yaml=yaml.safe_dump({"tiny_csv": entry}), expid="X_typo")
    rc, _ = _run(config, capsys, expid="X_typo")
    assert rc == 0
    log = (in_workspace / "checkpoints" / "tiny_csv" / "X_typo.log").read_text()
    assert "dataset config 'tiny_csv': key 'min_categr_cnt' is not read" in log
    assert "key \"feature_cols[['C1', 'C2', 'C3']].actve\" is not read" in log


def test_every_shipped_experiment_passes_the_setting_checks():
    from fuxictr_ext.config import check_run_params
    checked = 0
    for path in sorted(glob.glob(str(REPO / "config" / "model_config" / "*.yaml"))):
        with open(path) as fd:
            blocks = yaml.safe_load(fd) or {}
        for expid, block in blocks.items():
            if expid != "Base":
                check_run_params({**blocks.get("Base", {}), **block}, expid)
                checked += 1
    assert checked > 50


NAME_TYPOS = [
    ({"hidden_activations": "rellu"}, r"hidden_activations='rellu' must be an activation .*near matches: relu"),
    ({"hidden_activations": ["relu", "tanhh"]}, r"hidden_activations='tanhh' must be an activation .*near matches: tanh"),
    ({"optimizer": "adamw"}, r"optimizer='adamw' must be an optimizer class of torch.optim.*near matches: AdamW"),
    ({"loss": "binary_crossentropyy"}, r"loss='binary_crossentropyy' must be a loss .*near matches: binary_crossentropy"),
    ({"metrics": ["logloss", "AUCC"]}, r"metrics='AUCC' must be a metric .*near matches: AUC"),
    ({"metrics": ["logloss", "gAUC"]}, r"metrics='gAUC' .* needs a group_id"),
    ({"monitor": "AUCC"}, r"monitor='AUCC' must be a metric .*near matches: AUC"),
    ({"monitor": {"AUC": 1, "loglos": -1}}, r"monitor='loglos' must be a metric .*near matches: logloss"),
    ({"embedding_mode": "multiple"}, r"embedding_mode='multiple' must be one of \['single', 'multi'\].*near matches: multi"),
]


@pytest.mark.parametrize("overrides, message", NAME_TYPOS, ids=[f"{next(iter(o))}={next(iter(o.values()))!r}"
                                                                 for o, _ in NAME_TYPOS])
def test_a_misspelt_name_is_refused_before_the_data_is_built(in_workspace, tmp_path, capsys, overrides, message):
    rc, err = _run(_config(in_workspace, tmp_path, overrides), capsys)
    last = err.rstrip("\n").splitlines()[-1]
    assert rc == 2 and last.startswith("run_expid: error: experiment X_bad: "), err
    assert re.search(message, last, flags=re.IGNORECASE), last
    assert "Traceback" not in err and "Start training" not in err


@pytest.mark.parametrize("overrides", [{"embedding_dim": 0}, {"batch_size": 0}, {"epochs": -1}, {"net_dropout": 1.5}],
                         ids=["embedding_dim=0", "batch_size=0", "epochs=-1", "net_dropout=1.5"])
def test_the_yaml_text_hint_is_only_for_text(in_workspace, tmp_path, capsys, overrides):
    rc, err = _run(_config(in_workspace, tmp_path, overrides), capsys)
    key, value = next(iter(overrides.items()))
    assert rc == 2 and f"{key}={value!r} must be" in err
    assert "YAML reads" not in err


def test_duplicate_experiment_ids_name_both_places(in_workspace, tmp_path, capsys):
    config = _config(in_workspace, tmp_path, {})
    block = (config / "model_config" / "m.yaml").read_text()
    (config / "model_config" / "m.yaml").write_text(block + block.replace("X_bad:", "X_bad:  # again", 1))
    rc, err = _run(config, capsys)
    assert rc == 2 and re.search(r"'X_bad' is defined twice, at .*m\.yaml:1 and at .*m\.yaml:\d+", err), err
    (config / "model_config" / "m.yaml").write_text(block)
    (config / "model_config" / "n.yaml").write_text(block.replace("epochs: 1", "epochs: 2"))
    rc, err = _run(config, capsys)
    assert rc == 2 and re.search(r"'X_bad' is defined twice, at .*m\.yaml:1 and at .*n\.yaml:1", err), err


def test_the_shipped_configs_define_every_id_once():
    from fuxictr_ext.config import _blocks_in, _yaml_files

    model_blocks, bases = _blocks_in(_yaml_files(str(REPO / "config"), "model_config"))
    dataset_blocks, _ = _blocks_in(_yaml_files(str(REPO / "config"), "dataset_config"))
    assert len(model_blocks) > 50 and len(bases) > 1 and "demo" in dataset_blocks
