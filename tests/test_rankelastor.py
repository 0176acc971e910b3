"""RankMixer and RankElastor models, their configs and tuner grids."""

from pathlib import Path

import pytest
import torch
import yaml

from fuxictr_ext.config import unknown_model_keys
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs
from fuxictr_ext.layers.token_mixing import BlockTransposeMixing, FullMixing, PerTokenGLU
from model_zoo.RankElastor import RankElastor
from model_zoo.RankMixer import RankMixer

REPO = Path(__file__).resolve().parents[1]
SMALL = {"embedding_dim": 4, "num_tokens": 4, "token_dim": 8, "tokenizer_hidden_units": [16],
         "ffn_hidden_units": [8], "head_hidden_units": [16]}


def _build(cls, tmp_path, feature_map=None, seed=0, **overrides):
    torch.manual_seed(seed)
    fmap = feature_map or make_feature_map(num_categorical=6, num_numeric=2)
    kwargs = {**SMALL, **overrides}
    return cls(fmap, **kwargs, **unit_model_kwargs(tmp_path))


def _load_yaml(name):
    with open(REPO / "config" / "model_config" / name) as fd:
        return yaml.safe_load(fd)


@pytest.mark.parametrize("cls", [RankMixer, RankElastor])
def test_defaults_are_the_papers_modules(cls, tmp_path):
    model = _build(cls, tmp_path, num_blocks=2)
    block = model.blocks[0]
    if cls is RankMixer:
        assert isinstance(block.mixing, BlockTransposeMixing)
        assert isinstance(block.mixing_norm, torch.nn.LayerNorm)
        assert isinstance(block.ffn_norm, torch.nn.LayerNorm)
        assert isinstance(block.ffn.net[1], torch.nn.GELU)
    else:
        assert isinstance(block.mixing, FullMixing)
        assert isinstance(block.mixing_norm, torch.nn.RMSNorm)
        assert isinstance(block.ffn_norm, torch.nn.Identity)
        assert any(isinstance(m, PerTokenGLU) for m in block.ffn.net)
    assert len(model.blocks) == 2


@pytest.mark.parametrize("cls", [RankMixer, RankElastor])
@pytest.mark.parametrize("batch_size", [1, 7])
def test_forward_shapes_and_stages(cls, batch_size, tmp_path):
    fmap = make_feature_map(num_categorical=5, num_numeric=2, num_sequence=2)
    model = _build(cls, tmp_path, feature_map=fmap, num_blocks=2)
    batch = random_batch(fmap, batch_size, seed=1)
    model.train()
    y = model(batch)["y_pred"]
    assert y.shape == (batch_size, 1) and ((y > 0) & (y < 1)).all()
    stages = model.collect_stages(batch)
    assert list(stages) == ["emb", "tokens", "block_0_mix", "block_0_ffn", "block_1_mix", "block_1_ffn"]
    assert stages["emb"].shape == (batch_size, 9, 4)
    for name in list(stages)[1:]:
        assert stages[name].shape == (batch_size, 4, 8)
    assert model.training


@pytest.mark.parametrize("cls,overrides", [
    (RankMixer, {}),
    (RankElastor, {}),
    (RankElastor, {"tokenizer": "vector", "pred_head": "mean"}),
    (RankElastor, {"token_mixing": "block_transpose", "ffn_activation": "ReLU"}),
    (RankMixer, {"tokenizer": None, "embedding_dim": 4, "num_tokens": 4, "token_dim": 8,
                 "ffn_activation": "GLU", "ffn_inner_norm": True}),
])
def test_trains_and_loss_falls(cls, overrides, tmp_path):
    fmap = make_feature_map(num_categorical=6, num_numeric=2)
    model = _build(cls, tmp_path, feature_map=fmap, learning_rate=3e-3, **overrides)
    batch = random_batch(fmap, 64, seed=3)
    y_true = model.get_labels(batch)
    model.train()
    losses = []
    for _ in range(40):
        model.optimizer.zero_grad()
        loss = model.compute_loss(model(batch), y_true)
        loss.backward()
        model.optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses[::10]


def test_every_parameter_gets_a_gradient(tmp_path):
    fmap = make_feature_map(num_categorical=6, num_numeric=2)
    model = _build(RankElastor, tmp_path, feature_map=fmap, num_blocks=2)
    batch = random_batch(fmap, 16, seed=4)
    model.compute_loss(model(batch), model.get_labels(batch)).backward()
    for name, param in model.named_parameters():
        if "embedding_layer" in name:
            continue
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cls", [RankMixer, RankElastor])
def test_save_load_roundtrip(cls, tmp_path):
    fmap = make_feature_map(num_categorical=6, num_numeric=2)
    model = _build(cls, tmp_path, feature_map=fmap, seed=1)
    batch = random_batch(fmap, 9, seed=5)
    model.eval()
    with torch.no_grad():
        expected = model(batch)["y_pred"]
    path = tmp_path / "model.ckpt"
    model.save_weights(str(path))
    other = _build(cls, tmp_path, feature_map=fmap, seed=2)
    other.eval()
    with torch.no_grad():
        assert not torch.allclose(other(batch)["y_pred"], expected)
    other.load_weights(str(path))
    with torch.no_grad():
        assert torch.equal(other(batch)["y_pred"], expected)


def test_eval_is_deterministic_and_dropout_only_in_training(tmp_path):
    fmap = make_feature_map(num_categorical=6, num_numeric=2)
    model = _build(RankElastor, tmp_path, feature_map=fmap, tokenizer_dropout=0.5, net_dropout=0.5)
    batch = random_batch(fmap, 8, seed=6)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch)["y_pred"], model(batch)["y_pred"])
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(batch)["y_pred"], model(batch)["y_pred"])


@pytest.mark.parametrize("overrides,match", [
    ({"tokenizer": "none", "embedding_dim": 4, "num_tokens": 4, "token_dim": 7},
     r"tokenizer='none'.*num_tokens \* token_dim"),
    ({"token_mixing": "block_transpose", "num_tokens": 3, "token_dim": 8}, "num_heads=3.*token_dim=8"),
    ({"token_mixing": "block_transpose", "num_heads": 5}, "num_heads=5"),
    ({"token_mixing": "attention"}, "token_mixing='attention'"),
    ({"ffn_activation": "SiLU"}, "ffn_activation='SiLU'"),
    ({"ffn_hidden_units": []}, "ffn_hidden_units"),
    ({"expansion_rate": 0.05}, "expansion_rate=0.05"),
    ({"pred_head": "attention"}, "pred_head='attention'"),
    ({"mixing_norm": "BatchNorm"}, "mixing_norm='BatchNorm'"),
    ({"ffn_norm": "GroupNorm"}, "ffn_norm='GroupNorm'"),
    ({"tokenizer": "matrix", "num_tokens": 100}, "num_tokens=100"),
    ({"num_blocks": 0}, "num_blocks=0"),
])
def test_invalid_settings_name_the_config_key(overrides, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        _build(RankElastor, tmp_path, **overrides)


def test_fields_with_their_own_embedding_size_are_rejected(tmp_path):
    fmap = make_feature_map(num_categorical=3, num_numeric=1)
    fmap.features["C1"]["embedding_dim"] = 16
    with pytest.raises(ValueError, match="embedding_dim=4.*C1"):
        _build(RankElastor, tmp_path, feature_map=fmap)


# --------------------------------------------------------------------------- configs
CONFIG_FIELDS = {"demo": (26, 13, 0), "demo_taobao": (16, 1, 3), "criteo_x1": (26, 13, 0), "avazu_x4": (24, 0, 0),
                 "kuaivideo_x1": (3, 0, 4), "taobaoad_x1": (16, 1, 3)}


def _expids():
    return [(name, expid) for name in ("RankMixer.yaml", "RankElastor.yaml")
            for expid in _load_yaml(name) if expid != "Base"]


@pytest.mark.parametrize("file_name,expid", _expids())
def test_every_config_builds_and_runs(file_name, expid, tmp_path):
    config = _load_yaml(file_name)
    params = {**config["Base"], **config[expid]}
    cls = get_model_class(params["model"])
    assert not unknown_model_keys(cls, params)
    if params.get("group_id"):
        assert "gAUC" in params["metrics"]
    categorical, numeric, sequence = CONFIG_FIELDS[params["dataset_id"]]
    fmap = make_feature_map(num_categorical=categorical, num_numeric=numeric, num_sequence=sequence)
    model = cls(fmap, **{**params, **unit_model_kwargs(tmp_path)})
    batch = random_batch(fmap, 2, seed=0)
    assert model(batch)["y_pred"].shape == (2, 1)


TABLE3 = {  # ablation id -> (base id, the switches it changes)
    "RankElastor_criteo_wo_full_mixing": ("RankElastor_criteo", {"token_mixing", "num_heads"}),
    "RankElastor_criteo_relu_ffn": ("RankElastor_criteo", {"ffn_activation"}),
    "RankElastor_criteo_gelu_ffn": ("RankElastor_criteo", {"ffn_activation"}),
    "RankMixer_criteo_glu_ffn": ("RankMixer_criteo", {"ffn_activation", "ffn_hidden_units", "ffn_inner_norm"}),
    "RankMixer_criteo_relu_ffn": ("RankMixer_criteo", {"ffn_activation"}),
    "RankElastor_avazu_wo_full_mixing": ("RankElastor_avazu", {"token_mixing", "num_heads"}),
    "RankElastor_avazu_relu_ffn": ("RankElastor_avazu", {"ffn_activation"}),
    "RankElastor_avazu_gelu_ffn": ("RankElastor_avazu", {"ffn_activation"}),
    "RankMixer_avazu_glu_ffn": ("RankMixer_avazu", {"ffn_activation", "ffn_hidden_units", "ffn_inner_norm"}),
    "RankMixer_avazu_relu_ffn": ("RankMixer_avazu", {"ffn_activation"}),
}


@pytest.mark.parametrize("ablation", sorted(TABLE3))
def test_table3_ablations_change_only_their_switches(ablation):
    configs = {**_load_yaml("RankMixer.yaml"), **_load_yaml("RankElastor.yaml")}
    base_id, switches = TABLE3[ablation]
    base, variant = configs[base_id], configs[ablation]
    assert set(base) == set(variant)
    changed = {k for k in base if base[k] != variant[k]}
    assert changed == switches


@pytest.mark.parametrize("tuner", sorted((REPO / "config" / "tuner").glob("rankelastor_*.yaml")),
                         ids=lambda p: p.stem)
def test_tuner_grids_tune_keys_of_their_base(tuner):
    with open(tuner) as fd:
        spec = yaml.safe_load(fd)
    base_file = "RankMixer.yaml" if spec["base_expid"].startswith("RankMixer") else "RankElastor.yaml"
    base = _load_yaml(base_file)[spec["base_expid"]]
    assert spec["dataset_id"] == base["dataset_id"]
    assert set(spec["tuner_space"]) <= set(base) and spec["tuner_space"]
    assert set(spec["tuner_space"]) <= {"num_blocks", "ffn_hidden_units"}
    for value in spec["tuner_space"].values():
        assert isinstance(value, list) and len(value) >= 3
