"""RankMixer and RankElastor models, their configs and tuner grids."""

from pathlib import Path

import pytest
import torch
import yaml

from fuxictr.autotuner import load_experiment_ids

from fuxictr_ext.config import unknown_model_keys
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs
from fuxictr_ext.layers.token_mixing import (BlockTransposeMixing, FullMixing, KroneckerMixing, PerTokenGLU,
                                             PerTokenRMSNorm)
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
        assert isinstance(block.ffn.net[1], torch.nn.GELU)
    else:
        assert isinstance(block.mixing, FullMixing)
        assert isinstance(block.mixing_norm, torch.nn.Identity)
        assert any(isinstance(m, PerTokenGLU) for m in block.ffn.net)
    # the released code's norms: a token-wise RMSNorm (eps 1e-12) before the P-FFN, none after it
    assert isinstance(block.token_norm, torch.nn.RMSNorm) and block.token_norm.eps == 1e-12
    assert isinstance(block.ffn_norm, torch.nn.Identity)
    assert len(model.blocks) == 2


def _randomize(module, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return module


def test_rankmixer_block_is_the_released_layer(tmp_path):
    """LN(X + P(X)) -> RMSNorm per token -> S + PFFN(S), with no norm after the P-FFN."""
    model = _build(RankMixer, tmp_path, num_blocks=1, ffn_hidden_units=[12]).double()
    block = _randomize(model.blocks[0])
    x = torch.randn(5, 4, 8, dtype=torch.float64)
    mixed = torch.nn.functional.layer_norm(x + block.mixing.permute(x), (8,), block.mixing_norm.weight,
                                           block.mixing_norm.bias, eps=1e-5)
    s = mixed / torch.sqrt(mixed.pow(2).mean(-1, keepdim=True) + 1e-12) * block.token_norm.weight
    first, second = block.ffn.net[0], block.ffn.net[2]
    hidden = torch.nn.functional.gelu(torch.einsum("btd,tdh->bth", s, first.weight) + first.bias)
    expected = s + torch.einsum("bth,thd->btd", hidden, second.weight) + second.bias
    assert torch.allclose(block(x), expected, atol=1e-10)


def test_paper_norms_stay_a_switch(tmp_path):
    model = _build(RankMixer, tmp_path, token_norm=None, ffn_norm="LayerNorm")
    assert isinstance(model.blocks[0].token_norm, torch.nn.Identity)
    assert isinstance(model.blocks[0].ffn_norm, torch.nn.LayerNorm)


@pytest.mark.parametrize("cls", [RankMixer, RankElastor])
@pytest.mark.parametrize("eps", [1e-12, 1e-6])
def test_norm_eps_reaches_every_rmsnorm(cls, eps, tmp_path):
    model = _build(cls, tmp_path, norm_eps=eps, tokenizer_norm=True, ffn_inner_norm=True)
    rms = [m for m in model.modules() if isinstance(m, torch.nn.RMSNorm)]
    assert len(rms) >= 3 and all(m.eps == eps for m in rms)
    assert any(isinstance(m, PerTokenRMSNorm) for m in model.modules())


def test_head_dropout_is_its_own_key_and_net_dropout_is_not_read(tmp_path):
    """The release's head has no dropout and its configs' net_dropout reaches no code."""
    fmap = make_feature_map(num_categorical=6, num_numeric=2)
    batch = random_batch(fmap, 8, seed=6)
    quiet = _build(RankElastor, tmp_path, feature_map=fmap, tokenizer_dropout=0, net_dropout=0.5).train()
    noisy = _build(RankElastor, tmp_path, feature_map=fmap, tokenizer_dropout=0, head_dropout=0.5).train()
    with torch.no_grad():
        assert torch.equal(quiet(batch)["y_pred"], quiet(batch)["y_pred"])
        assert not torch.equal(noisy(batch)["y_pred"], noisy(batch)["y_pred"])
    assert "net_dropout" in unknown_model_keys(RankElastor, {"net_dropout": 0.1})


@pytest.mark.parametrize("cls", [RankMixer, RankElastor])
def test_mix_stage_is_read_before_the_token_norm(cls, tmp_path):
    """The release hooks its effective rank on the mixing's output, before the per-token RMSNorm."""
    fmap = make_feature_map(num_categorical=6, num_numeric=2)
    model = _build(cls, tmp_path, feature_map=fmap, num_blocks=1).eval()
    with torch.no_grad():
        model.blocks[0].token_norm.weight.fill_(3.0)
        stages = model.collect_stages(random_batch(fmap, 4, seed=2))
        block = model.blocks[0]
        assert torch.allclose(stages["block_0_mix"], block.mix(stages["tokens"]))
        assert torch.allclose(stages["block_0_ffn"], block.transform(stages["block_0_mix"]))


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
    model = _build(RankElastor, tmp_path, feature_map=fmap, tokenizer_dropout=0.5, head_dropout=0.5)
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
    ({"token_norm": "BatchNorm"}, "token_norm='BatchNorm'"),
    ({"glu_form": "tied"}, "glu_form='tied'"),
    ({"token_mixing": "kronecker", "kronecker_blocks": 5}, "kronecker_blocks=5"),
    ({"token_mixing": "kronecker"}, "kronecker_blocks=None"),
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
                 "kuaivideo_x1": (3, 0, 4), "taobaoad_x1": (16, 1, 3), "movielens_100k": (9, 0, 1)}


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


TABLE3 = {  # ablation id -> (base id, the switches it changes); every row at two blocks
    "RankElastor_criteo_wo_full_mixing": ("RankElastor_criteo_L2", {"token_mixing", "kronecker_blocks"}),
    "RankElastor_criteo_relu_ffn": ("RankElastor_criteo_L2", {"ffn_activation"}),
    "RankElastor_criteo_gelu_ffn": ("RankElastor_criteo_L2", {"ffn_activation"}),
    "RankMixer_criteo_glu_ffn": ("RankMixer_criteo", {"ffn_activation", "ffn_hidden_units", "ffn_inner_norm"}),
    "RankMixer_criteo_relu_ffn": ("RankMixer_criteo", {"ffn_activation"}),
    "RankElastor_avazu_wo_full_mixing": ("RankElastor_avazu_L2", {"token_mixing", "kronecker_blocks",
                                                                  "mixing_input_norm", "mixing_norm"}),
    "RankElastor_avazu_relu_ffn": ("RankElastor_avazu_L2", {"ffn_activation"}),
    "RankElastor_avazu_gelu_ffn": ("RankElastor_avazu_L2", {"ffn_activation"}),
    "RankMixer_avazu_glu_ffn": ("RankMixer_avazu_L2", {"ffn_activation", "ffn_hidden_units", "ffn_inner_norm"}),
    "RankMixer_avazu_relu_ffn": ("RankMixer_avazu_L2", {"ffn_activation"}),
}


def _all_configs():
    return {**_load_yaml("RankMixer.yaml"), **_load_yaml("RankElastor.yaml")}


@pytest.mark.parametrize("ablation", sorted(TABLE3))
def test_table3_ablations_change_only_their_switches(ablation):
    configs = _all_configs()
    base_id, switches = TABLE3[ablation]
    base, variant = configs[base_id], configs[ablation]
    assert set(base) == set(variant)
    changed = {k for k in base if base[k] != variant[k]}
    assert changed == switches
    assert base["num_blocks"] == variant["num_blocks"] == 2


# Values typed from the release's config/model_config.yaml (UniMixer_* ids):
# (our expid, release id, k, T, D, depth, tokenizer, GLU widths, r, lr)
RELEASED = [
    ("RankElastor_criteo_dim_10", "criteo_dim_10", 10, 15, 26, 1, "matrix", [64, 64], 3.0, 1e-3),
    ("RankElastor_criteo", "criteo_dim_20", 20, 26, 30, 1, "matrix", [64, 64], 3.0, 1e-3),
    ("RankElastor_criteo_v1", "criteo_dim_20_v1", 20, 26, 30, 1, "matrix", [24, 24], 1.5, 1e-3),
    ("RankElastor_criteo_v2", "criteo_dim_20_v2", 20, 26, 30, 1, "matrix", [24, 24], 2.0, 1e-3),
    ("RankElastor_criteo_v3", "criteo_dim_20_v3", 20, 26, 30, 2, "matrix", [24, 24], 2.0, 1e-3),
    ("RankElastor_criteo_v4", "criteo_dim_20_v4", 20, 26, 30, 2, "matrix", [24, 24], 3.0, 1e-3),
    ("RankElastor_criteo_v5", "criteo_dim_20_v5", 20, 26, 30, 2, "matrix", [48, 48], 3.0, 1e-3),
    ("RankElastor_criteo_v6", "criteo_dim_20_v6", 20, 26, 30, 3, "matrix", [48, 48], 3.0, 1e-3),
    ("RankElastor_criteo_v7", "criteo_dim_20_v7", 20, 26, 30, 4, "matrix", [64, 64], 3.0, 1e-3),
    ("RankElastor_criteo_wo_full_mixing", "criteo_dim_20_fast", 20, 26, 30, 2, "matrix", [24, 24], 3.0, 1e-3),
    ("RankElastor_avazu", "avazu_dim_16", 16, 24, 16, 4, "vector", [16], 3.0, 1e-3),
    ("RankElastor_avazu_dim_32", "avazu_dim_32", 32, 24, 32, 3, "none", [32], 3.0, 1e-3),
    ("RankElastor_avazu_dim_64_v1", "avazu_dim_64_v1", 64, 24, 64, 1, "vector", [64], 1.0, 1e-4),
    ("RankElastor_avazu_dim_64_v2", "avazu_dim_64_v2", 64, 24, 64, 2, "vector", [64], 1.5, 1e-4),
    ("RankElastor_avazu_dim_64_v3", "avazu_dim_64_v3", 64, 24, 64, 2, "vector", [64], 2.0, 1e-4),
    ("RankElastor_avazu_dim_64_v4", "avazu_dim_64_v4", 64, 24, 64, 3, "vector", [64], 2.0, 1e-4),
    ("RankElastor_avazu_dim_64_v5", "avazu_dim_64_v5", 64, 24, 64, 3, "vector", [64], 3.0, 1e-4),
    ("RankElastor_avazu_dim_64_v6", "avazu_dim_64_v6", 64, 24, 64, 4, "vector", [64], 3.0, 1e-4),
    ("RankElastor_avazu_dim_64_v7", "avazu_dim_64_v7", 64, 24, 64, 5, "vector", [64], 3.0, 1e-4),
    ("RankElastor_avazu_dim_64", "avazu_dim_64", 64, 24, 64, 5, "vector", [64], 3.0, 1e-4),
    ("RankElastor_avazu_dim_64_fast", "avazu_dim_64_fast", 64, 24, 48, 5, "vector", [64], 3.0, 1e-4),
]


@pytest.mark.parametrize("row", RELEASED, ids=lambda row: row[0])
def test_released_settings(row):
    expid, _, k, T, D, depth, tokenizer, widths, rate, lr = row
    config = _all_configs()[expid]
    assert (config["embedding_dim"], config["num_tokens"], config["token_dim"], config["num_blocks"]) == (k, T, D, depth)
    assert (config["tokenizer"], config["ffn_hidden_units"], config["expansion_rate"]) == (tokenizer, widths, rate)
    assert config["learning_rate"] == lr and config["head_hidden_units"] == [2 * T * D]
    assert config["batch_size"] == (4096 if "criteo" in expid else 10000)


def test_released_configs_use_the_releases_norms_and_head():
    configs = _all_configs()
    released = [row[0] for row in RELEASED] + ["RankMixer_criteo", "RankMixer_avazu_dim_64"]
    for expid, config in configs.items():
        if expid == "Base":
            continue
        assert "net_dropout" not in config, expid
        assert config["glu_form"] == "release" and config["head_dropout"] == 0, expid
    for expid in released:
        assert configs[expid]["norm_eps"] == 1e-12 and configs[expid]["token_norm"] == "RMSNorm", expid
        assert configs[expid]["ffn_norm"] is None, expid
    assert configs["RankElastor_criteo_wo_full_mixing"]["kronecker_blocks"] == 26
    assert configs["RankElastor_avazu_dim_64_fast"]["kronecker_blocks"] == 2


@pytest.mark.parametrize("tag,count", [("RankElastor_criteo_v", 7), ("RankElastor_avazu_dim_64_v", 7)])
def test_release_scaling_series_run_by_expid_tag(tag, count):
    """grid_search(config_dir, gpus, expid_tag=tag) runs exactly the series: its points couple keys."""
    series = [e for e in load_experiment_ids(str(REPO / "config")) if tag in e]
    assert len(series) == count
    depths = [_all_configs()[e]["num_blocks"] for e in sorted(series)]
    assert depths == sorted(depths)


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
