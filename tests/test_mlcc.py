"""MLCC and MC-MLCC: layers against slow reference loops, models end to end, configs."""

import inspect
import os

import pytest
import torch
import yaml
from torch import nn

from fuxictr_ext.config import unknown_model_keys
from fuxictr_ext.layers.mlcc import (GlobalCompressor, InnerProductCross, LocalCompressor,
                                     ProgressiveLayeredCrossing, TokenSqueezeExcitation,
                                     dynamic_mlp_param_count)
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs
from fuxictr_ext.training import Trainer
from model_zoo.DNN import DNN
from model_zoo.MCMLCC import MCMLCC
from model_zoo.MLCC import MLCC

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(embedding_dim=8, num_heads=3, dynamic_mlp_units=[3, 2], refined_dim=4,
             dnn_hidden_units=[16, 8], net_dropout=0.0)


@pytest.fixture(scope="module")
def feature_map():
    return make_feature_map(num_categorical=5, num_numeric=2, vocab_size=20)


def build(model_cls, feature_map, tmp_path, seed=0, **overrides):
    torch.manual_seed(seed)
    params = dict(SMALL)
    params.update(overrides)
    return model_cls(feature_map, **params, **unit_model_kwargs(tmp_path))


def dense_params(model):
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("embedding_layer"))


def mlp_params(widths):
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def plc_reference(X, M, units, keep, activation):
    """Eqs. 6-9 literally: one sample, one head, one layer at a time."""
    E = X.shape[-1]
    widths = [E] + list(units)
    samples = []
    for b in range(X.shape[0]):
        heads = []
        for h in range(M.shape[1]):
            offset, O, outputs = 0, X[b], []
            for e_in, e_out in zip(widths[:-1], widths[1:]):
                D = M[b, h, offset:offset + e_in * e_out].reshape(e_in, e_out)   # eq. 6
                offset += e_in * e_out
                O = activation(O @ D)                                            # eq. 7
                outputs.append(O)
            heads.append(torch.cat([outputs[k - 1] for k in keep if k > 0], dim=-1))  # eq. 8
        originals = [X[b]] if 0 in keep else []
        samples.append(torch.cat(originals + heads, dim=-1))                     # eq. 9
    return torch.stack(samples)


# ----------------------------------------------------------------------------- layers
@pytest.mark.parametrize("E,units", [(16, [4, 1]), (8, [3]), (6, [5, 2, 3]), (16, [2, 1])])
def test_global_token_width_is_dynamic_mlp_param_count(E, units):
    widths = [E] + units
    mlp = nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])])
    W = sum(p.numel() for p in mlp.parameters())
    plc = ProgressiveLayeredCrossing(E, num_heads=3, dynamic_mlp_units=units)
    assert plc.head_dim == W == dynamic_mlp_param_count(E, units)
    gc = GlobalCompressor(num_tokens=5, token_dim=E, num_heads=3, head_dim=plc.head_dim)
    assert gc(torch.randn(2, 5, E)).shape == (2, 3, W)


def test_global_compressor_matches_eq4_sum():
    gc = GlobalCompressor(num_tokens=4, token_dim=3, num_heads=2, head_dim=5)
    gc.init_weights()
    X = torch.randn(6, 4, 3)
    W_gc = gc.weight.reshape(4, 3, 2, 5)                                 # W^GC_{i,j,k,l}
    expected = torch.stack([(X[b][:, :, None, None] * W_gc).sum(dim=(0, 1)) for b in range(6)])
    torch.testing.assert_close(gc(X), expected)


@pytest.mark.parametrize("units,keep", [([4, 1], None), ([4, 1], [0, 1, 2]), ([3], None),
                                        ([3, 2, 2], [0, 3]), ([3, 2, 2], [1, 3]), ([2, 2], [2])])
@pytest.mark.parametrize("activation", [None, "ReLU", "Tanh"])
def test_plc_equals_per_sample_per_head_loop(units, keep, activation):
    torch.manual_seed(1)
    E, H = 5, 3
    plc = ProgressiveLayeredCrossing(E, H, units, keep_layers=keep, activation=activation)
    X, M = torch.randn(4, 6, E), torch.randn(4, H, plc.head_dim)
    sigma = {None: lambda t: t, "ReLU": torch.relu, "Tanh": torch.tanh}[activation]
    expected = plc_reference(X, M, units, keep if keep is not None else range(len(units) + 1), sigma)
    torch.testing.assert_close(plc(X, M), expected)


def test_plc_with_channel_axis_equals_each_channel_alone():
    plc = ProgressiveLayeredCrossing(4, 2, [3, 1])
    X, M = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 2, plc.head_dim)   # (B, S, N, E), (B, S, H, W)
    out = plc(X, M)
    for s in range(2):
        torch.testing.assert_close(out[:, s], plc(X[:, s], M[:, s]))


@pytest.mark.parametrize("cross", [ProgressiveLayeredCrossing(4, 2, [3, 1]),
                                   ProgressiveLayeredCrossing(4, 2, [3, 2, 1], keep_layers=[1, 3]),
                                   ProgressiveLayeredCrossing(4, 2, [3, 1], activation="ReLU"),
                                   InnerProductCross(4, num_heads=2)],
                         ids=["plc", "plc_without_originals", "plc_relu", "inner_product"])
def test_forward_channels_concatenates_each_channels_cross_per_token(cross):
    """Eq. 12: C (B, N, S*L) = [C_1, ..., C_S] per token, C_s the cross of channel s alone;
    gradients as through that explicit concatenation."""
    X = torch.randn(3, 2, 5, 4, requires_grad=True)                      # (B, S, N, E)
    M = torch.randn(3, 2, 2, cross.head_dim, requires_grad=True)         # (B, S, H, W)
    out = cross.forward_channels(X, M)
    expected = torch.cat([cross(X[:, s], M[:, s]) for s in range(2)], dim=-1)
    assert out.shape == (3, 5, 2 * cross.output_dim)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), [X, M])
    expected_grads = torch.autograd.grad((expected * weights).sum(), [X, M])
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("E,H,units,keep,expected", [
    (16, 4, [4, 1], None, 16 + 4 * 5),                # released Criteo: L = E + H * sum e_i = 36
    (16, 4, [2, 1], None, 16 + 4 * 3),
    (8, 2, [3, 2, 1], [0, 3], 8 + 2 * 1),
    (8, 2, [3, 2, 1], [1, 3], 2 * (3 + 1)),
    (8, 5, [6], [1], 5 * 6),
])
def test_interwoven_dimension(E, H, units, keep, expected):
    plc = ProgressiveLayeredCrossing(E, H, units, keep_layers=keep)
    assert plc.output_dim == expected
    assert plc(torch.randn(2, 3, E), torch.randn(2, H, plc.head_dim)).shape == (2, 3, expected)


def test_inner_product_cross_is_plc_with_one_unit():
    X, M = torch.randn(4, 6, 5), torch.randn(4, 7, 5)
    inner = InnerProductCross(5, num_heads=7)
    assert inner.head_dim == 5 and inner.output_dim == 5 + 7
    torch.testing.assert_close(inner(X, M), ProgressiveLayeredCrossing(5, 7, [1])(X, M))


def test_local_compressor_is_token_wise():
    lc = LocalCompressor(num_tokens=5, input_dim=7, refined_dim=3)
    lc.init_weights()
    C = torch.randn(4, 5, 7)
    out = lc(C)
    expected = torch.stack([C[:, k] @ lc.weight[k] for k in range(5)], dim=1)   # eq. 5 per token
    torch.testing.assert_close(out, expected)
    for j in range(5):
        changed = C.clone()
        changed[:, j] += torch.randn(4, 7)
        diff = (lc(changed) - out).abs().amax(dim=(0, 2))
        assert diff[j] > 0
        assert torch.all(diff[torch.arange(5) != j] == 0)


def test_squeeze_excitation_gates_tokens():
    se = TokenSqueezeExcitation(6)
    X = torch.randn(3, 6, 4)
    gate = se(X) / X
    assert torch.all((gate > 0) & (gate < 1))
    torch.testing.assert_close(gate, gate[..., :1].expand_as(gate))     # one gate per token


# ----------------------------------------------------------------------------- models
def test_mcmlcc_with_one_channel_equals_mlcc(feature_map, tmp_path):
    mlcc = build(MLCC, feature_map, tmp_path, seed=3).eval()
    mc = build(MCMLCC, feature_map, tmp_path, seed=3, channel_dim=SMALL["embedding_dim"]).eval()
    assert mc.num_channels == 1
    mc_state = mc.state_dict()
    assert list(mlcc.state_dict()) == list(mc_state)
    for name, value in mlcc.state_dict().items():
        torch.testing.assert_close(value.reshape(mc_state[name].shape), mc_state[name], msg=name)
    batch = random_batch(feature_map, 16, seed=1)
    torch.testing.assert_close(mlcc(batch)["y_pred"], mc(batch)["y_pred"])


def test_mcmlcc_equals_explicit_channel_loop(feature_map, tmp_path):
    S, E = 3, 4
    model = build(MCMLCC, feature_map, tmp_path, embedding_dim=S * E, channel_dim=E).eval()
    batch = random_batch(feature_map, 8, seed=2)
    X_tilde = model.embedding_layer(model.get_inputs(batch))                      # (B, N, S*E)
    channels = []
    for s in range(S):
        X_s = X_tilde[..., s * E:(s + 1) * E]                                     # eq. 10
        M_s = (X_s.flatten(1) @ model.global_compressor.weight[s]).unflatten(-1, (SMALL["num_heads"], -1))
        channels.append(model.cross(X_s, M_s))                                    # eq. 11
    C = torch.cat(channels, dim=-1)                                               # eq. 12
    assert C.shape[-1] == model.interwoven_dim
    refined = model.squeeze_excitation(model.local_compressor(C))
    expected = model.dnn(refined.flatten(1))
    torch.testing.assert_close(model(batch)["y_pred"], expected)
    # the original tokens enter C once: S slices of E columns, not S copies of S*E
    assert model.interwoven_dim == S * E + S * SMALL["num_heads"] * sum(SMALL["dynamic_mlp_units"])


@pytest.mark.parametrize("model_cls,extra,S", [
    (MLCC, {}, 1),
    (MLCC, {"squeeze_excitation": False}, 1),
    (MLCC, {"local_compression": False}, 1),
    (MCMLCC, {"embedding_dim": 16, "channel_dim": 8}, 2),
    (MCMLCC, {"embedding_dim": 24, "channel_dim": 8, "keep_layers": [2]}, 3),
])
def test_dense_parameter_count_closed_form(feature_map, tmp_path, model_cls, extra, S):
    model = build(model_cls, feature_map, tmp_path, **extra)
    params = dict(SMALL, **extra)
    N = feature_map.num_fields
    E = params.get("channel_dim", params["embedding_dim"])
    H, units, E_ref = params["num_heads"], params["dynamic_mlp_units"], params["refined_dim"]
    W = sum(a * b for a, b in zip([E] + units[:-1], units))
    keep = params.get("keep_layers", range(len(units) + 1))
    L = E * (0 in keep) + H * sum(units[k - 1] for k in keep if k > 0)
    lc = params.get("local_compression", True)
    token_dim = E_ref if lc else S * L
    expected = (S * N * E * H * W                                       # GC
                + (N * S * L * E_ref if lc else 0)                      # LC
                + (2 * N * (N // 2) + N // 2 + N if params.get("squeeze_excitation", True) else 0)
                + mlp_params([N * token_dim] + params["dnn_hidden_units"] + [1]))
    assert dense_params(model) == expected


def test_inner_product_variant_parameters(feature_map, tmp_path):
    model = build(MLCC, feature_map, tmp_path, cross_type="inner_product", num_heads=6)
    N, E = feature_map.num_fields, SMALL["embedding_dim"]
    assert model.global_compressor.weight.shape == (N * E, 6 * E)
    assert model.interwoven_dim == E + 6
    assert model.local_compressor.weight.shape == (N, E + 6, SMALL["refined_dim"])


@pytest.mark.parametrize("model_cls,extra", [
    (MLCC, {}),
    (MLCC, {"cross_type": "inner_product"}),
    (MLCC, {"dynamic_mlp_activation": "ReLU", "keep_layers": [0, 2]}),
    (MCMLCC, {"embedding_dim": 16, "channel_dim": 8}),
])
def test_trains_and_loss_falls(feature_map, tmp_path, model_cls, extra):
    model = build(model_cls, feature_map, tmp_path, learning_rate=1e-2, **extra)
    trainer = Trainer(model)
    batch = random_batch(feature_map, 64, seed=5)
    model.train()
    with torch.no_grad():
        before = model.compute_loss(model(batch), model.get_labels(batch)).item()
    for _ in range(30):
        trainer.train_step(batch)
    with torch.no_grad():
        after = model.compute_loss(model(batch), model.get_labels(batch)).item()
    assert after < before - 0.05


def test_every_parameter_gets_a_gradient(feature_map, tmp_path):
    model = build(MCMLCC, feature_map, tmp_path, embedding_dim=16, channel_dim=8, dynamic_mlp_activation="Tanh")
    batch = random_batch(feature_map, 32, seed=6)
    model.compute_loss(model(batch), model.get_labels(batch)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("model_cls,extra", [(MLCC, {}), (MCMLCC, {"embedding_dim": 16, "channel_dim": 8})])
def test_batch_size_one(feature_map, tmp_path, model_cls, extra):
    model = build(model_cls, feature_map, tmp_path, **extra)
    batch = random_batch(feature_map, 1, seed=7)
    model.train()
    out = model(batch)["y_pred"]
    assert out.shape == (1, 1)
    out.sum().backward()
    model.eval()
    assert model(batch)["y_pred"].shape == (1, 1)


def test_stages_and_sequence_fields(tmp_path):
    fmap = make_feature_map(num_categorical=3, num_numeric=1, num_sequence=2, vocab_size=15)
    model = build(MCMLCC, fmap, tmp_path, embedding_dim=16, channel_dim=8)
    stages = model.collect_stages(random_batch(fmap, 5))
    N, S = fmap.num_fields, 2
    assert list(stages) == ["original_tokens", "interwoven_tokens", "refined_tokens"]
    assert stages["original_tokens"].shape == (5, N, 16)
    assert stages["interwoven_tokens"].shape == (5, N, model.interwoven_dim)
    assert stages["refined_tokens"].shape == (5, N, SMALL["refined_dim"])
    assert model.interwoven_dim == S * (8 + 3 * 5)


def test_compression_ratio(feature_map, tmp_path):
    assert build(MLCC, feature_map, tmp_path, embedding_dim=16, refined_dim=8).compression_ratio == 2
    model = build(MCMLCC, feature_map, tmp_path, embedding_dim=64, channel_dim=16, refined_dim=8)
    assert (model.num_channels, model.compression_ratio) == (4, 8)
    assert build(MLCC, feature_map, tmp_path, local_compression=False).compression_ratio is None


def test_save_and_load(feature_map, tmp_path):
    model = build(MCMLCC, feature_map, tmp_path, seed=1, embedding_dim=16, channel_dim=8).eval()
    batch = random_batch(feature_map, 8, seed=8)
    path = str(tmp_path / "mcmlcc.model")
    model.save_weights(path)
    other = build(MCMLCC, feature_map, tmp_path, seed=2, embedding_dim=16, channel_dim=8).eval()
    assert not torch.allclose(model(batch)["y_pred"], other(batch)["y_pred"])
    other.load_weights(path)
    torch.testing.assert_close(model(batch)["y_pred"], other(batch)["y_pred"])


def test_deterministic_under_seed(feature_map, tmp_path):
    batch = random_batch(feature_map, 8, seed=9)
    a = build(MLCC, feature_map, tmp_path, seed=4).eval()(batch)["y_pred"]
    b = build(MLCC, feature_map, tmp_path, seed=4).eval()(batch)["y_pred"]
    torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("model_cls,extra,key", [
    (MLCC, {"dynamic_mlp_units": [4, 0]}, "dynamic_mlp_units"),
    (MLCC, {"dynamic_mlp_units": []}, "dynamic_mlp_units"),
    (MLCC, {"num_heads": 0}, "num_heads"),
    (MLCC, {"embedding_dim": 0}, "embedding_dim"),
    (MLCC, {"refined_dim": 0}, "refined_dim"),
    (MLCC, {"refined_dim": -8}, "refined_dim"),
    (MLCC, {"dnn_hidden_units": [16, 0]}, "dnn_hidden_units"),
    (MLCC, {"keep_layers": [0, 1]}, "keep_layers"),
    (MLCC, {"keep_layers": [0, 5]}, "keep_layers"),
    (MLCC, {"keep_layers": []}, "keep_layers"),
    (MLCC, {"cross_type": "outer_product"}, "cross_type"),
    (MLCC, {"dynamic_mlp_activation": "NoSuchActivation"}, "dynamic_mlp_activation"),
    (MLCC, {"dynamic_mlp_activation": "PReLU"}, "dynamic_mlp_activation"),
    (MCMLCC, {"embedding_dim": 20, "channel_dim": 8}, "channel_dim"),
    (MCMLCC, {"embedding_dim": 16, "channel_dim": 0}, "channel_dim"),
    (MCMLCC, {"embedding_dim": 16, "channel_dim": 8, "refined_dim": 0}, "refined_dim"),
    (MCMLCC, {"embedding_dim": 16, "channel_dim": 8, "num_heads": -1}, "num_heads"),
])
def test_bad_config_raises_naming_the_key(feature_map, tmp_path, model_cls, extra, key):
    with pytest.raises(ValueError, match=key):
        build(model_cls, feature_map, tmp_path, **extra)


def test_squeeze_excitation_needs_two_fields(tmp_path):
    fmap = make_feature_map(num_categorical=1, num_numeric=0)
    with pytest.raises(ValueError, match="squeeze_excitation"):
        build(MLCC, fmap, tmp_path)
    assert build(MLCC, fmap, tmp_path, squeeze_excitation=False)(random_batch(fmap, 2))["y_pred"].shape == (2, 1)


# ----------------------------------------------------------------------------- configs
def load_expids(name):
    with open(os.path.join(REPO, "config", "model_config", f"{name}.yaml")) as fd:
        config = yaml.safe_load(fd)
    return {k: v for k, v in config.items() if k != "Base"}


@pytest.mark.parametrize("name,model_cls", [("MLCC", MLCC), ("MCMLCC", MCMLCC)])
def test_configs_build(tmp_path, name, model_cls):
    """Every experiment id names only known keys and builds on a Criteo-shaped feature map."""
    fmap = make_feature_map(num_categorical=26, num_numeric=13, vocab_size=10)
    model_args = set(inspect.signature(model_cls.__init__).parameters) - {"self", "feature_map", "kwargs"}
    expids = load_expids(name)
    assert f"{name}_demo" in expids and expids[f"{name}_demo"]["dataset_id"] == "demo"
    for expid, params in expids.items():
        assert params["model"] == name, expid
        assert unknown_model_keys(model_cls, params) == [], expid
        kwargs = {k: v for k, v in params.items() if k in model_args}
        model_cls(fmap, **kwargs, **unit_model_kwargs(tmp_path))


MODELS = {"MLCC": MLCC, "MCMLCC": MCMLCC, "DNN": DNN}


def test_tuner_grids_name_model_keys():
    """Every mlcc_* grid tunes only keys its base experiment has and its model reads."""
    folder = os.path.join(REPO, "config", "tuner")
    tuners = [f for f in sorted(os.listdir(folder)) if f.startswith("mlcc_") and f.endswith(".yaml")]
    assert tuners
    expids = {}
    for name in os.listdir(os.path.join(REPO, "config", "model_config")):
        expids.update(load_expids(name[:-len(".yaml")]))
    for tuner in tuners:
        with open(os.path.join(folder, tuner)) as fd:
            config = yaml.safe_load(fd)
        base = expids[config["base_expid"]]
        assert set(config["tuner_space"]) <= set(base), tuner
        assert unknown_model_keys(MODELS[base["model"]], config["tuner_space"]) == [], tuner
        space = config["tuner_space"]
        if "channel_dim" in space:
            assert all(e % space["channel_dim"] == 0 for e in space["embedding_dim"]), tuner


# --------------------------------------------------------------------------- initialisation as released
def test_local_compressor_init_is_the_releases_3d_xavier_normal():
    """The release's xavier_normal_ on the (N, L, E') tensor: fans L*E' and N*E', std sqrt(2 / (E'(L + N)))."""
    torch.manual_seed(0)
    N, L, E_ref = 39, 36, 8
    lc = LocalCompressor(num_tokens=N, input_dim=L, refined_dim=E_ref)
    lc.init_weights()
    expected = (2.0 / (E_ref * (L + N))) ** 0.5                       # 0.0577
    assert abs(lc.weight.std().item() / expected - 1) < 0.05
    assert abs(lc.weight.mean().item()) < 0.1 * expected


@pytest.mark.parametrize("model_cls,extra", [(MLCC, {}), (MCMLCC, {"embedding_dim": 8, "channel_dim": 4})])
def test_embedding_initializer_reaches_the_tables(feature_map, tmp_path, model_cls, extra):
    bound = 2.5e-3
    model = build(model_cls, feature_map, tmp_path, **extra,
                  embedding_initializer=f"partial(nn.init.uniform_, a=-{bound}, b={bound})")
    tables = model.embedding_layer.embedding_layer.embedding_layers
    values = torch.cat([t.weight[1:].flatten() for t in tables.values() if isinstance(t, nn.Embedding)])
    assert values.abs().max() <= bound
    assert abs(values.std().item() / (bound / 3 ** 0.5) - 1) < 0.1
    default = build(model_cls, feature_map, tmp_path, **extra)
    default_values = torch.cat([t.weight[1:].flatten() for t in default.embedding_layer.embedding_layer
                                .embedding_layers.values() if isinstance(t, nn.Embedding)])
    assert default_values.std() < 3e-4  # FuxiCTR's N(0, 1e-4) when the key is not set


def _released_expids():
    return {name: {expid: params for expid, params in load_expids(name).items()
                   if not any(tag in expid for tag in ("demo", "synthetic", "ml100k"))} for name in ("MLCC", "MCMLCC")}


def test_released_configs_initialise_embeddings_as_the_release():
    """U(-a, a), a = sqrt(6 / (10^6 + S*E)): the release's xavier_uniform_ on its 10^6-row table per field."""
    for name, expids in _released_expids().items():
        assert expids, name
        for expid, params in expids.items():
            bound = (6 / (10 ** 6 + params["embedding_dim"])) ** 0.5
            assert params["embedding_initializer"] == (f"partial(nn.init.uniform_, a=-{bound:.5e}, "
                                                       f"b={bound:.5e})"), expid


@pytest.mark.parametrize("tuner,heads", [("mlcc_embedding", 1), ("mlcc_channels", 1), ("mlcc_heads", None)])
def test_table7_and_8_grids_run_at_the_papers_heads_and_refined_dim(tuner, heads):
    """Table 8 at H = 1 (its E*S = 16 row is Table 7's H = 1 row); E' = 16, which the tables' #Params imply."""
    with open(os.path.join(REPO, "config", "tuner", f"{tuner}.yaml")) as fd:
        space = yaml.safe_load(fd)["tuner_space"]
    assert space["refined_dim"] == 16
    assert space["num_heads"] == (heads if heads is not None else [1, 2, 4, 8, 16, 32])
