"""The fuxictr-zoo command: config resolution, overrides, dispatch (in-process)."""

import pytest

from fuxictr_ext import cli
from fuxictr_ext.config import ConfigError, apply_overrides


def test_config_dir_is_explicit_then_local_then_packaged(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.resolve_config_dir("elsewhere") == "elsewhere"
    packaged = cli.resolve_config_dir(None)
    assert packaged == str(cli.packaged_config_dir())
    assert (cli.packaged_config_dir() / "model_config" / "DNN.yaml").is_file()
    assert "using the packaged configs" in capsys.readouterr().err
    (tmp_path / "config" / "model_config").mkdir(parents=True)
    assert cli.resolve_config_dir(None) == "config"


def test_overrides_parse_as_yaml_and_reach_nested_keys():
    overrides = cli.parse_overrides(["epochs=1", "synthetic.rows=3000", "hidden_units=[8, 8]", "eval_steps=null"])
    assert overrides == {"epochs": 1, "synthetic.rows": 3000, "hidden_units": [8, 8], "eval_steps": None}
    synthetic = {"schema": "criteo", "rows": 200000}
    params = {"epochs": 3, "synthetic": synthetic, "hidden_units": [400], "eval_steps": 10}
    apply_overrides(params, overrides)
    assert params == {"epochs": 1, "synthetic": {"schema": "criteo", "rows": 3000}, "hidden_units": [8, 8],
                      "eval_steps": None}
    assert synthetic["rows"] == 200000  # the loaded config's own mapping is not changed in place


@pytest.mark.parametrize("override, message", [
    ({"epoch": 1}, "no key 'epoch'.*epochs"),
    ({"epochs.rows": 1}, "epochs is not a mapping"),
    ({"synthetic.row": 1}, "no key 'row'.*rows"),
])
def test_an_override_of_a_key_the_experiment_lacks_is_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides({"epochs": 3, "synthetic": {"rows": 5}}, override)


def test_a_constructor_argument_the_experiment_leaves_out_can_be_overridden():
    params = apply_overrides({"epochs": 3}, {"net_dropout": 0.2}, settable=["net_dropout", "batch_norm"])
    assert params == {"epochs": 3, "net_dropout": 0.2}
    with pytest.raises(ConfigError, match="no key 'net_dropuot'.*net_dropout"):
        apply_overrides({"epochs": 3}, {"net_dropuot": 0.2}, settable=["net_dropout"])
    with pytest.raises(ConfigError, match="no key 'rows'"):
        apply_overrides({"synthetic": {"n": 1}}, {"synthetic.rows": 2}, settable=["rows"])   # top level only


def test_the_runner_lets_an_override_set_any_argument_of_the_model(tmp_path):
    from fuxictr_ext.runner import setup_run
    from fuxictr_ext.config import load_params
    config_dir = str(cli.packaged_config_dir())
    assert "fieldwise_dropout" not in load_params(config_dir, "RoBlock_demo")[0]
    params = setup_run(config_dir, "RoBlock_demo", -1, {"fieldwise_dropout": 0.1,
                                                        "model_root": str(tmp_path) + "/"})[0]
    assert params["fieldwise_dropout"] == 0.1
    with pytest.raises(ConfigError, match="no key 'fieldwise_dropuot'.*fieldwise_dropout"):
        setup_run(config_dir, "RoBlock_demo", -1, {"fieldwise_dropuot": 0.1})


def test_an_override_without_equals_sign_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["run", "--expid", "DNN_demo", "--override", "epochs"])
    assert stop.value.code == 2 and "expected KEY=VALUE" in capsys.readouterr().err


def test_unknown_command_suggests_the_near_one(capsys):
    assert cli.main(["rn"]) == 2
    assert "did you mean: run" in capsys.readouterr().err.lower()
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.SUBCOMMANDS)


def test_every_subcommand_target_imports():
    for sub in cli.SUBCOMMANDS.values():
        assert callable(sub.load())
    assert callable(cli.load_target(cli.PREPARE_TARGET))


def test_run_uses_the_local_config_and_prints_the_summary(in_workspace, capsys):
    assert cli.main(["run", "--expid", "DNN_demo", "--override", "epochs=1"]) == 0
    captured = capsys.readouterr()
    assert "[DNN_demo] test logloss:" in captured.out and "packaged" not in captured.err
    log = (in_workspace / "checkpoints" / "demo" / "DNN_demo.log").read_text()
    assert "Total number of parameters: " in log and "Model cost: params: total=" in log
    summary = captured.out.strip().splitlines()[-2:]
    assert all(line in log for line in summary)


def test_run_and_run_expid_share_one_handler_for_a_diverged_run(in_workspace, capsys):
    """`fuxictr-zoo run` reports TrainingDiverged as run_expid.py does: one line, exit 2."""
    import run_expid

    overrides = ["--override", "learning_rate=1000", "--override", "epochs=2"]
    assert cli.main(["run", "--expid", "DNN_demo", *overrides]) == 2
    err = capsys.readouterr().err  # the run's log, then the error
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("fuxictr-zoo run: error: training diverged") and "learning_rate (it is 1000" in last
    assert "Traceback" not in err
    assert run_expid.main(["--expid", "DNN_demo", *overrides]) == 2
    assert capsys.readouterr().err.rstrip("\n").splitlines()[-1].startswith("run_expid: error: training diverged")


@pytest.mark.parametrize("model_yaml, message", [
    ("DNN_x:\n  model: DNN\n  dataset_id: demo\n", "dataset_config.yaml: not valid YAML"),  # a multi-line YAML error
    ("DNN_x:\n  model: DNN\n", "experiment DNN_x: no `dataset_id:` key"),  # was fuxictr's AssertionError
])
def test_a_config_error_is_one_line_with_exit_2(tmp_path, capsys, model_yaml, message):
    (tmp_path / "model_config.yaml").write_text(model_yaml)
    (tmp_path / "dataset_config.yaml").write_text("demo: [unclosed\n")
    assert cli.main(["run", "--config", str(tmp_path), "--expid", "DNN_x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fuxictr-zoo run: error: ") and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("name", ["synthetic", "score", "serve", "reproduce", "report", "plot", "prepare"])
def test_the_tools_are_subcommands_of_one_command(name, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    assert stop.value.code == 0 and "usage:" in capsys.readouterr().out
