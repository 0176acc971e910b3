"""The `precision` run setting: bf16 autocast training of every registered model, float32
master weights / loss / predictions / checkpoints, the config check, and float32 unchanged."""

import os
import warnings

import numpy as np
import pytest
import torch

from fuxictr_ext import cli, get_model_class, list_models
from fuxictr_ext.config import ConfigError, apply_overrides, check_run_params
from fuxictr_ext.layers.hsic import hsic_loss
from fuxictr_ext.layers.rank1_norm import rank_one_update
from fuxictr_ext.layers.token_mixing import PerTokenRMSNorm, RMSNorm
from fuxictr_ext.precision import as_float32, autocast
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs
from fuxictr_ext.training import Trainer, TrainingConfig


@pytest.fixture(scope="module")
def feature_map():
    sources = ["user", "context", "user", "user", "context", "item", "item", "item", "user"]
    return make_feature_map(num_categorical=6, num_numeric=2, num_sequence=1, vocab_size=25, sources=sources)


def _model(name, feature_map, tmp_path, seed=0):
    torch.manual_seed(seed)
    return get_model_class(name)(feature_map, **unit_model_kwargs(tmp_path))


@pytest.mark.parametrize("name", list_models())
def test_bf16_train_step_every_model(name, feature_map, tmp_path):
    model = _model(name, feature_map, tmp_path)
    trainer = Trainer(model, TrainingConfig(precision="bf16", verbose=0))
    batch = random_batch(feature_map, batch_size=16, seed=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*[Mm]ismatch dtype.*")
        loss, parts = trainer.train_step(batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(v.dtype == torch.float32 for v in parts.values())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters()), "no parameter moved"
    y_true, y_pred, _ = trainer.predictions([batch])
    assert y_pred.dtype == np.float64 and np.isfinite(y_pred).all() and ((y_pred > 0) & (y_pred < 1)).all()
    path = os.path.join(str(tmp_path), "bf16.model")
    model.save_weights(path)
    assert all(t.dtype == torch.float32 for t in torch.load(path, weights_only=True).values() if t.is_floating_point())


@pytest.mark.parametrize("name", ["RankMixer", "RankElastor", "RoBlock", "MCMLCC"])
def test_float32_train_step_unchanged(name, feature_map, tmp_path):
    """The float32 setting runs the step exactly as a plain forward/loss/backward/clip/step
    (bit for bit: the float32 norms, HSIC and rank-1 update add no cast)."""
    batch = random_batch(feature_map, batch_size=16, seed=1)
    reference = _model(name, feature_map, tmp_path)
    reference.train()
    torch.manual_seed(0)
    reference.optimizer.zero_grad()
    out = reference(batch)
    reference.compute_loss(out, reference.get_labels(batch)).backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 10.0)
    reference.optimizer.step()
    model = _model(name, feature_map, tmp_path)
    model.train()
    torch.manual_seed(0)
    Trainer(model, TrainingConfig(precision="float32", verbose=0)).train_step(batch)
    for (n, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(p, q), n


def test_bf16_runs_matmuls_in_bf16_and_loss_in_float32(feature_map, tmp_path):
    model = _model("DNN", feature_map, tmp_path)
    with autocast("bf16", "cpu"):
        y = model(random_batch(feature_map, batch_size=4))["y_pred"]
    assert y.dtype == torch.bfloat16
    assert as_float32({"y_pred": y})["y_pred"].dtype == torch.float32


def test_float32_layers_under_autocast():
    x = torch.randn(3, 4, 8)
    with autocast("bf16", "cpu"), warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*[Mm]ismatch dtype.*")
        assert RMSNorm(8)(x.bfloat16()).dtype == torch.float32
        assert PerTokenRMSNorm(4, 8).batched(x.bfloat16()).dtype == torch.float32
        assert hsic_loss(torch.randn(2, 3, 5, 4).bfloat16()).dtype == torch.float32
        assert rank_one_update(x.bfloat16(), torch.randn(3, 8).bfloat16(), 2).dtype == torch.float32
    # float32 inputs: the same values as without the wrappers' casts
    torch.testing.assert_close(RMSNorm(8, eps=1e-6)(x), torch.nn.RMSNorm(8, eps=1e-6)(x), rtol=0, atol=0)


@pytest.mark.parametrize("value", ["fp16", "bfloat", 16, None])
def test_precision_key_checked(value):
    with pytest.raises(ConfigError, match="precision"):
        check_run_params({"precision": value}, "experiment X")
    check_run_params({"precision": "bf16"}, "experiment X")
    with pytest.raises(ConfigError, match="precision"):
        autocast(value, "cpu")


def test_precision_reaches_the_trainer_from_the_params(feature_map, tmp_path):
    """The runner passes the merged params to the model, whose TrainingConfig keeps the setting."""
    params = apply_overrides({"epochs": 1}, {"precision": "bf16"})  # a run setting with a default
    model = get_model_class("DNN")(feature_map, **unit_model_kwargs(tmp_path), **params)
    assert model.training_config.precision == "bf16"
    assert _model("DNN", feature_map, tmp_path).training_config.precision == "float32"


def test_a_bad_precision_override_is_one_line_naming_the_key(capsys):
    assert cli.main(["run", "--expid", "DNN_demo", "--override", "precision=fp16"]) == 2
    err = capsys.readouterr().err
    assert "precision='fp16'" in err and "Traceback" not in err
