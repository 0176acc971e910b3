"""DHEN and WuKong, the RoBlock paper's deep baselines, in SE and ME form.

Training makes the loss fall; outputs are probabilities for any batch size;
ME with one table is SE; the vectorised ME stacks equal a per-stack loop; the
WuKong parameter count matches its closed formula; the FM parts equal explicit
pairwise loops; DHEN deals module combinations without replacement; weights
round-trip through a checkpoint; stage taps have the documented names and
shapes; bad settings fail early; the YAML and tuner configs are consistent.
"""

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from fuxictr.autotuner import enumerate_params

from fuxictr_ext import get_model_class
from fuxictr_ext.config import ConfigError, unknown_model_keys
from fuxictr_ext.layers.interactions import INTERACTION_TYPES
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs
from model_zoo.DHEN.DHEN import DHENLayer, sample_interaction_combinations
from model_zoo.WuKong.WuKong import FactorizationMachineBlock, FuxiCTRWuKongLayer

REPO = Path(__file__).resolve().parents[1]
EMBEDDING_DIM = 4
SMALL = {
    "DHEN": dict(num_layers=2, gate_hidden_units=[8, 8], dnn_hidden_units=[16],
                 cin_hidden_units=[4], num_cross_layers=1, mlp_hidden_units=[16]),
    "WuKong": dict(num_layers=2, num_fmb_outputs=4, num_lcb_outputs=3, fm_rank=3,
                   fmb_hidden_units=[16], mlp_hidden_units=[16]),
    # FuxiCTR 2.3.4's WuKong, the form the RoBlock paper ran
    "WuKongFuxiCTR": dict(num_layers=2, fm_rank=3, fmb_hidden_units=[6, 5], fmb_dim=4, compression_dim=3,
                          mlp_hidden_units=[9]),
}
MODES = [("single", 1), ("single", 2), ("multi", 1), ("multi", 3)]


@pytest.fixture(scope="module")
def feature_map():
    return make_feature_map(num_categorical=5, num_numeric=2, vocab_size=20)


def build(name, feature_map, tmp_path, torch_seed=0, **overrides):
    torch.manual_seed(torch_seed)
    kwargs = {**SMALL[name], "embedding_dim": EMBEDDING_DIM, **overrides}
    return get_model_class(name)(feature_map, **kwargs, **unit_model_kwargs(tmp_path))


@pytest.mark.parametrize("mode,scale", [("single", 2), ("multi", 3)])
@pytest.mark.parametrize("name", ["DHEN", "WuKong", "WuKongFuxiCTR"])
def test_loss_falls_on_a_fixed_batch(name, mode, scale, feature_map, tmp_path):
    model = build(name, feature_map, tmp_path, embedding_mode=mode, num_embeddings=scale,
                  learning_rate=1e-2)
    batch = random_batch(feature_map, batch_size=64, seed=3)
    labels = model.get_labels(batch)
    model.train()
    losses = []
    for _ in range(25):
        loss = model.compute_loss(model(batch), labels)
        model.optimizer.zero_grad()
        loss.backward()
        model.optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("mode,scale", MODES)
@pytest.mark.parametrize("name", ["DHEN", "WuKong"])
def test_probabilities_for_any_batch_size(name, mode, scale, batch_size, feature_map, tmp_path):
    model = build(name, feature_map, tmp_path, embedding_mode=mode, num_embeddings=scale)
    batch = random_batch(feature_map, batch_size=batch_size, seed=4)
    for training in (True, False):
        model.train(training)
        y_pred = model(batch)["y_pred"]
        assert y_pred.shape == (batch_size, 1)
        assert torch.isfinite(y_pred).all() and ((y_pred > 0) & (y_pred < 1)).all()


@pytest.mark.parametrize("name", ["DHEN", "WuKong"])
def test_multi_embedding_with_one_table_equals_single(name, feature_map, tmp_path):
    single = build(name, feature_map, tmp_path, torch_seed=7, embedding_mode="single", num_embeddings=1)
    multi = build(name, feature_map, tmp_path, torch_seed=7, embedding_mode="multi", num_embeddings=1)
    single_state, multi_state = single.state_dict(), multi.state_dict()
    assert single_state.keys() == multi_state.keys()
    for key in single_state:
        torch.testing.assert_close(single_state[key], multi_state[key], rtol=0, atol=0)
    batch = random_batch(feature_map, batch_size=8, seed=5)
    single.eval(), multi.eval()
    torch.testing.assert_close(single(batch)["y_pred"], multi(batch)["y_pred"], rtol=0, atol=0)


@pytest.mark.parametrize("mode,scale", [("single", 3), ("multi", 3)])
@pytest.mark.parametrize("name", ["DHEN", "WuKong"])
def test_stacks_per_mode(name, mode, scale, feature_map, tmp_path):
    """SE: one stack of width s*k; ME: s stacks of width k."""
    model = build(name, feature_map, tmp_path, embedding_mode=mode, num_embeddings=scale)
    expected = (1, scale * EMBEDDING_DIM) if mode == "single" else (scale, EMBEDDING_DIM)
    assert (model.num_sets, model.set_dim) == expected
    assert all(len(layer) == model.num_sets for layer in model.layers)


@pytest.mark.parametrize("name", ["DHEN", "WuKong"])
def test_multi_embedding_stacks_equal_a_per_stack_loop(name, feature_map, tmp_path):
    model = build(name, feature_map, tmp_path, embedding_mode="multi", num_embeddings=3, num_layers=3)
    model.eval()
    batch = random_batch(feature_map, batch_size=6, seed=6)
    with torch.no_grad():
        sets = model.embedding_layer(model.get_inputs(batch))              # (B, S, F, D)
        outputs = []
        for copy in range(sets.shape[1]):
            H = sets[:, copy]
            for layer in model.layers:
                H = layer.interactions[copy](H)
            outputs.append(H)                                              # (B, n, D)
        reference = model.mlp(torch.cat(outputs, dim=-1).flatten(start_dim=1))
        torch.testing.assert_close(model(batch)["y_pred"], reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode,scale", [("single", 2), ("multi", 3)])
@pytest.mark.parametrize("name", ["DHEN", "WuKong"])
def test_layer_inputs_are_tapped(name, mode, scale, feature_map, tmp_path):
    model = build(name, feature_map, tmp_path, embedding_mode=mode, num_embeddings=scale, num_layers=3)
    batch = random_batch(feature_map, batch_size=5, seed=7)
    stages = model.collect_stages(batch)
    assert list(stages) == ["layer_0_in", "layer_1_in", "layer_2_in"]
    num_fields = feature_map.num_fields
    wukong = SMALL["WuKong"]
    later = num_fields if name == "DHEN" else wukong["num_fmb_outputs"] + wukong["num_lcb_outputs"]
    width = scale * EMBEDDING_DIM
    assert stages["layer_0_in"].shape == (5, num_fields, width)
    assert stages["layer_1_in"].shape == stages["layer_2_in"].shape == (5, later, width)
    with torch.no_grad():
        tables = model.embedding_layer(model.get_inputs(batch))            # (B, S, F, D)
    torch.testing.assert_close(stages["layer_0_in"], torch.cat(tables.unbind(dim=1), dim=-1))


@pytest.mark.parametrize("mode,scale", [("single", 1), ("multi", 3)])
@pytest.mark.parametrize("name", ["DHEN", "WuKong"])
def test_every_parameter_gets_a_gradient(name, mode, scale, feature_map, tmp_path):
    overrides = {"modules_per_layer": 4} if name == "DHEN" else {"fm_rank": None}
    model = build(name, feature_map, tmp_path, embedding_mode=mode, num_embeddings=scale, **overrides)
    batch = random_batch(feature_map, batch_size=8, seed=8)
    model.compute_loss(model(batch), model.get_labels(batch)).backward()
    for param_name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), param_name


@pytest.mark.parametrize("name", ["DHEN", "WuKong", "WuKongFuxiCTR"])
def test_checkpoint_round_trip(name, feature_map, tmp_path):
    model = build(name, feature_map, tmp_path, torch_seed=1, embedding_mode="multi", num_embeddings=2)
    other = build(name, feature_map, tmp_path, torch_seed=2, embedding_mode="multi", num_embeddings=2)
    batch = random_batch(feature_map, batch_size=8, seed=9)
    model.eval(), other.eval()
    with torch.no_grad():
        expected = model(batch)["y_pred"]
        assert not torch.allclose(other(batch)["y_pred"], expected)
        checkpoint = tmp_path / "round_trip.model"
        model.save_weights(str(checkpoint))
        other.load_weights(str(checkpoint))
        torch.testing.assert_close(other(batch)["y_pred"], expected, rtol=0, atol=0)


def test_torch_seed_makes_runs_reproducible(feature_map, tmp_path):
    batch = random_batch(feature_map, batch_size=8, seed=10)
    outputs = []
    for _ in range(2):
        model = build("WuKong", feature_map, tmp_path, torch_seed=3, embedding_mode="multi", num_embeddings=2)
        model.eval()
        outputs.append(model(batch)["y_pred"])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


# ----------------------------------------------------------------------------- WuKong

def mlp_params(widths):
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(widths[:-1], widths[1:]))


def wukong_parameter_count(feature_map, embedding_dim, num_sets, num_layers, n_F, n_L, rank,
                           fmb_hidden_units, mlp_hidden_units):
    """Closed form: embeddings + S copies of every layer + the final MLP."""
    d = embedding_dim
    vocab = sum(spec.get("vocab_size", 1) for spec in feature_map.features.values())
    total = num_sets * vocab * d                                    # tables (numeric: Linear(1, d))
    n_out = n_F + n_L
    n_in = feature_map.num_fields
    for _ in range(num_layers):
        columns = n_in if rank is None else rank
        layer = 0 if rank is None else n_in * rank                  # Y
        layer += 2 * n_in * columns                                 # LN over flatten(FM)
        layer += mlp_params([n_in * columns, *fmb_hidden_units, n_F * d])
        layer += n_L * n_in                                         # W_L
        layer += 0 if n_in == n_out else n_out * n_in               # residual projection
        layer += 2 * d                                              # LN over d
        total += num_sets * layer
        n_in = n_out
    total += mlp_params([num_sets * n_out * d, *mlp_hidden_units, 1])
    return total


@pytest.mark.parametrize("rank", [None, 3])
@pytest.mark.parametrize("mode,scale", [("single", 1), ("single", 2), ("multi", 3)])
@pytest.mark.parametrize("num_layers,n_F,n_L", [(1, 4, 3), (3, 4, 3), (3, 5, 3)])
def test_wukong_parameter_count_matches_closed_formula(rank, mode, scale, num_layers, n_F, n_L,
                                                       feature_map, tmp_path):
    # n_F + n_L = 7 = F needs no residual projection; 8 != F needs one in the first layer.
    model = build("WuKong", feature_map, tmp_path, embedding_mode=mode, num_embeddings=scale,
                  num_layers=num_layers, num_fmb_outputs=n_F, num_lcb_outputs=n_L, fm_rank=rank,
                  fmb_hidden_units=[6, 5], mlp_hidden_units=[9])
    num_sets, set_dim = (1, scale * EMBEDDING_DIM) if mode == "single" else (scale, EMBEDDING_DIM)
    expected = wukong_parameter_count(feature_map, set_dim, num_sets, num_layers, n_F, n_L, rank,
                                      [6, 5], [9])
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


@pytest.mark.parametrize("rank", [None, 2])
def test_wukong_fm_equals_explicit_pairwise_products(rank):
    torch.manual_seed(0)
    block = FactorizationMachineBlock(num_inputs=5, embedding_dim=3, num_outputs=2, rank=rank,
                                      hidden_units=[4])
    X = torch.randn(2, 5, 3)
    captured = {}
    block.norm.register_forward_hook(lambda module, args, out: captured.setdefault("fm", args[0]))
    block(X)
    Y = torch.eye(5) if rank is None else block.projection.weight.t()   # (n, k)
    expected = torch.zeros(2, 5, Y.shape[1])
    for b, i, r in itertools.product(range(2), range(5), range(Y.shape[1])):
        expected[b, i, r] = sum(torch.dot(X[b, i], X[b, j]) * Y[j, r] for j in range(5))
    torch.testing.assert_close(captured["fm"], expected.flatten(start_dim=1), rtol=1e-5, atol=1e-5)


def test_wukong_layer_output_is_layer_normalised(feature_map, tmp_path):
    model = build("WuKong", feature_map, tmp_path)
    stages = model.collect_stages(random_batch(feature_map, batch_size=4, seed=11))
    after_first = stages["layer_1_in"]                                   # LN weight 1, bias 0 at init
    torch.testing.assert_close(after_first.mean(dim=-1), torch.zeros(after_first.shape[:-1]),
                               rtol=0, atol=1e-5)


def _randomize(module, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * 0.3)
    return module


def test_wukong_fuxictr_layer_matches_written_reference():
    """X' = LN(vec X + W_T [ReLU(MLP(LN(vec(X X^T Y)))); W_C vec X + b_C] + b_T), LN over all F*D entries."""
    torch.manual_seed(0)
    layer = _randomize(FuxiCTRWuKongLayer(5, 3, fm_rank=2, fmb_hidden_units=[6], fmb_dim=4,
                                          compression_dim=3)).double().eval()
    X = torch.randn(4, 5, 3, dtype=torch.float64)
    flat = X.flatten(1)
    fm = torch.einsum("bid,bjd,jr->bir", X, X, layer.projection).flatten(1)
    fm = F.layer_norm(fm, (10,), layer.fm_norm.weight, layer.fm_norm.bias)
    first, second = [m for m in layer.fmb_mlp.modules() if isinstance(m, torch.nn.Linear)]
    fmb = torch.relu(F.linear(torch.relu(F.linear(fm, first.weight, first.bias)), second.weight, second.bias))
    lcb = F.linear(flat, layer.lcb[0].weight, layer.lcb[0].bias)
    mixed = flat + F.linear(torch.cat([fmb, lcb], -1), layer.transform.weight, layer.transform.bias)
    expected = F.layer_norm(mixed, (15,), layer.norm.weight, layer.norm.bias).view(4, 5, 3)
    torch.testing.assert_close(layer(X), expected, rtol=0, atol=1e-12)


def test_wukong_fuxictr_keeps_the_field_matrix_and_mixes_all_of_it(feature_map, tmp_path):
    model = build("WuKongFuxiCTR", feature_map, tmp_path, num_layers=3)
    stages = model.collect_stages(random_batch(feature_map, batch_size=4, seed=2))
    assert all(t.shape == (4, feature_map.num_fields, EMBEDDING_DIM) for t in stages.values())
    layer = model.layers[0].interactions[0].eval()
    X = torch.randn(1, feature_map.num_fields, EMBEDDING_DIM, requires_grad=True)
    layer(X)[0, 0, 0].backward()
    assert (X.grad != 0).all()  # the flat LCB and the flat LayerNorm reach every input entry


def test_wukong_fuxictr_dropout_is_only_the_lcb_dropout(feature_map, tmp_path):
    batch = random_batch(feature_map, batch_size=8, seed=3)
    quiet = build("WuKongFuxiCTR", feature_map, tmp_path, lcb_dropout=0.0).train()
    noisy = build("WuKongFuxiCTR", feature_map, tmp_path, lcb_dropout=0.5).train()
    with torch.no_grad():
        torch.testing.assert_close(quiet(batch)["y_pred"], quiet(batch)["y_pred"], rtol=0, atol=0)
        assert not torch.equal(noisy(batch)["y_pred"], noisy(batch)["y_pred"])


@pytest.mark.parametrize("mode,scale", [("single", 2), ("multi", 3)])
def test_wukong_fuxictr_parameter_count_and_init(mode, scale, feature_map, tmp_path):
    model = build("WuKongFuxiCTR", feature_map, tmp_path, embedding_mode=mode, num_embeddings=scale)
    sets, d = (1, scale * EMBEDDING_DIM) if mode == "single" else (scale, EMBEDDING_DIM)
    n = feature_map.num_fields
    vocab = sum(spec.get("vocab_size", 1) for spec in feature_map.features.values())
    layer = (n * 3 + 2 * n * 3 + mlp_params([n * 3, 6, 5, 4])           # Y, LN, FMB MLP to d_F = 4
             + mlp_params([n * d, 3]) + mlp_params([4 + 3, n * d]) + 2 * n * d)   # W_C, W_T, flat LN
    expected = sets * vocab * d + 2 * sets * layer + mlp_params([sets * n * d, 9, 1])
    assert sum(p.numel() for p in model.parameters()) == expected
    big = FuxiCTRWuKongLayer(39, 10, fm_rank=8, fmb_hidden_units=[4], fmb_dim=4, compression_dim=4)
    big.init_weights()
    assert abs(big.projection.std().item() - 1.0) < 0.15   # FuxiCTR's torch.randn, not Xavier


@pytest.mark.parametrize("overrides,key", [({"fm_rank": None}, "fm_rank"), ({"fmb_dim": 0}, "fmb_dim"),
                                           ({"compression_dim": 2.5}, "compression_dim"),
                                           ({"lcb_dropout": 1.0}, "lcb_dropout"), ({"num_layers": 0}, "num_layers")])
def test_wukong_fuxictr_bad_settings_fail_early(overrides, key, feature_map, tmp_path):
    with pytest.raises(ConfigError, match=f"^{key}="):
        build("WuKongFuxiCTR", feature_map, tmp_path, **overrides)


def test_wukong_names_the_fuxictr_model_for_the_removed_variant_key(feature_map, tmp_path):
    with pytest.raises(ConfigError, match="^variant='fuxictr' .*WuKongFuxiCTR"):
        build("WuKong", feature_map, tmp_path, variant="fuxictr")


# Parameter names (layer 0 and the head, ME s = 2, net dropout 0.1) under which checkpoints of the one-class WuKong
# (variant: paper / variant: fuxictr) were saved; each form's class must load them.
CHECKPOINT_NAMES = {
    "WuKong": ["fmb.projection.weight", "fmb.norm.weight", "fmb.norm.bias", "fmb.mlp.mlp.0.weight",
               "fmb.mlp.mlp.0.bias", "fmb.mlp.mlp.3.weight", "fmb.mlp.mlp.3.bias", "lcb.weight.weight",
               "norm.weight", "norm.bias"],
    "WuKongFuxiCTR": ["projection", "fm_norm.weight", "fm_norm.bias", "fmb_mlp.mlp.0.weight", "fmb_mlp.mlp.0.bias",
                      "fmb_mlp.mlp.2.weight", "fmb_mlp.mlp.2.bias", "fmb_mlp.mlp.4.weight", "fmb_mlp.mlp.4.bias",
                      "lcb.0.weight", "lcb.0.bias", "transform.weight", "transform.bias", "norm.weight", "norm.bias"],
}


@pytest.mark.parametrize("name,overrides", [("WuKong", {"net_dropout": 0.1}), ("WuKongFuxiCTR", {})])
def test_wukong_forms_keep_the_checkpoint_names_of_the_one_class_model(name, overrides, feature_map, tmp_path):
    model = build(name, feature_map, tmp_path, embedding_mode="multi", num_embeddings=2, **overrides)
    names = list(model.state_dict())
    assert [n[len("layers.0.stacked."):] for n in names if n.startswith("layers.0.")] == CHECKPOINT_NAMES[name]
    assert {n.split(".")[0] for n in names} == {"embedding_layer", "layers", "mlp"}
    assert [n for n in names if n.startswith("mlp.")] == \
        ["mlp.mlp.0.weight", "mlp.mlp.0.bias", f"mlp.mlp.{3 if name == 'WuKong' else 2}.weight",
         f"mlp.mlp.{3 if name == 'WuKong' else 2}.bias"]   # the paper form's head has dropout layers


def test_wukong_configs_of_the_roblock_tables_run_fuxictrs_form():
    config = load_yaml(REPO / "config" / "model_config" / "WuKong.yaml")
    tables = [e for e in config if e.startswith(("WuKong_SE_", "WuKong_ME_"))]
    assert len(tables) >= 4
    for expid in tables:
        params = config[expid]
        assert params["model"] == "WuKongFuxiCTR", expid
        assert (params["fmb_dim"], params["compression_dim"], params["fm_rank"], params["lcb_dropout"]) == \
            (40, 40, 8, 0.2), expid
    assert config["WuKong_demo"]["model"] == "WuKong"


# ------------------------------------------------------------------------------- DHEN

@pytest.mark.parametrize("modules_per_layer", [1, 2, 3, 4])
def test_dhen_deals_combinations_without_replacement(modules_per_layer):
    combinations = set(itertools.combinations(INTERACTION_TYPES, modules_per_layer))
    cycle = len(combinations)
    dealt = sample_interaction_combinations(INTERACTION_TYPES, modules_per_layer, 3 * cycle + 1, seed=5)
    assert len(dealt) == 3 * cycle + 1
    for start in range(0, 3 * cycle, cycle):
        assert set(dealt[start:start + cycle]) == combinations
    assert dealt == sample_interaction_combinations(INTERACTION_TYPES, modules_per_layer,
                                                    3 * cycle + 1, seed=5)


def test_dhen_seed_draws_the_layer_combinations(feature_map, tmp_path):
    draws = {tuple(build("DHEN", feature_map, tmp_path, num_layers=5, seed=seed)
                   .interaction_combinations[0]) for seed in range(6)}
    assert len(draws) > 1
    model = build("DHEN", feature_map, tmp_path, num_layers=3, seed=11, embedding_mode="multi",
                  num_embeddings=2)
    expected = sample_interaction_combinations(INTERACTION_TYPES, 2, 6, seed=11)
    assert [c for layer in model.interaction_combinations for c in layer] == expected
    class_of = {"FM": "FMInteraction", "CIN": "CINInteraction", "DNN": "DNNInteraction",
                "DCNv2": "CrossInteraction"}
    for layer, combinations in zip(model.layers, model.interaction_combinations):
        for dhen_layer, combination in zip(layer.interactions, combinations):
            assert [type(m).__name__ for m in dhen_layer.interactions] == [class_of[n] for n in combination]


def test_dhen_layer_is_a_gated_sum_with_residual_and_layernorm():
    torch.manual_seed(0)
    modules = [torch.nn.Linear(3, 3), torch.nn.Tanh(), torch.nn.Linear(3, 3)]
    gate = torch.nn.Linear(4 * 3, 3)
    layer = DHENLayer(modules, gate, embedding_dim=3)
    X = torch.randn(5, 4, 3)
    expected = torch.empty_like(X)
    for b in range(5):
        weights = torch.softmax(gate(X[b].flatten()), dim=-1)
        mixed = sum(weights[j] * modules[j](X[b]) for j in range(3))
        expected[b] = F.layer_norm(mixed + X[b], (3,))
    torch.testing.assert_close(layer(X), expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("name,overrides,key", [
    ("DHEN", {"embedding_mode": "wide"}, "embedding_mode"),
    ("DHEN", {"num_embeddings": 0}, "num_embeddings"),
    ("DHEN", {"interaction_types": ["FM", "GRU"]}, "interaction_types"),
    ("DHEN", {"interaction_types": ["FM", "FM"]}, "interaction_types"),
    ("DHEN", {"modules_per_layer": 5}, "modules_per_layer"),
    ("DHEN", {"num_layers": 0}, "num_layers"),
    ("DHEN", {"cin_hidden_units": []}, "cin_hidden_units"),
    ("WuKong", {"embedding_mode": "ME"}, "embedding_mode"),
    ("WuKong", {"num_layers": 0}, "num_layers"),
    ("WuKong", {"num_lcb_outputs": 0}, "num_lcb_outputs"),
    ("WuKong", {"fm_rank": 0}, "fm_rank"),
])
def test_bad_settings_fail_early(name, overrides, key, feature_map, tmp_path):
    with pytest.raises(ValueError, match=key):
        build(name, feature_map, tmp_path, **overrides)


# ---------------------------------------------------------------------------- configs

def load_yaml(path):
    with open(path) as fd:
        return yaml.safe_load(fd)


MODELS_OF_FILE = {"DHEN": {"DHEN"}, "WuKong": {"WuKong", "WuKongFuxiCTR"}}


@pytest.mark.parametrize("name", ["DHEN", "WuKong"])
def test_model_configs_use_only_known_keys_and_the_paper_settings(name):
    config = load_yaml(REPO / "config" / "model_config" / f"{name}.yaml")
    assert f"{name}_demo" in config and config[f"{name}_demo"]["dataset_id"] == "demo"
    assert config["Base"]["early_stop_patience"] == 2
    for expid, params in config.items():
        if expid == "Base":
            continue
        assert params["model"] in MODELS_OF_FILE[name], expid
        assert unknown_model_keys(get_model_class(params["model"]), params) == [], expid
        if params["dataset_id"] not in ("demo", "movielens_100k"):   # the papers' settings; ml100k ids have their dataset's
            assert (params["learning_rate"], params["embedding_regularizer"], params["net_regularizer"],
                    params["batch_size"], params["embedding_dim"]) == (1e-3, 1e-8, 0, 10000, 10), expid
            # the paper's net dropout 0.1 where the model has one (FuxiCTR's WuKong has none)
            assert params.get("net_dropout", 0.1) == 0.1, expid


def test_deep_tuner_grids_cover_depths_and_scales():
    model_configs = {}
    for name in ("DHEN", "WuKong"):
        model_configs.update(load_yaml(REPO / "config" / "model_config" / f"{name}.yaml"))
    tuner_files = sorted((REPO / "config" / "tuner").glob("deep_*.yaml"))
    covered = set()
    for path in tuner_files:
        tuner = load_yaml(path)
        base = model_configs[tuner["base_expid"]]
        assert tuner["dataset_id"] == base["dataset_id"]
        assert set(tuner["tuner_space"]) <= set(base), path.name
        assert tuner["tuner_space"]["num_layers"] == [2, 3, 4, 5]
        assert tuner["tuner_space"]["num_embeddings"] == [1, 2, 3, 5, 10]
        covered.add((base["model"], base["embedding_mode"], base["dataset_id"]))
    assert covered == {(m, e, d) for m in ("DHEN", "WuKongFuxiCTR") for e in ("single", "multi")
                       for d in ("criteo_x1", "avazu_x4")}


@pytest.mark.parametrize("tuner_name", ["deep_DHEN_ME_criteo", "deep_WuKong_SE_avazu"])
def test_fuxictr_tuner_enumerates_the_depth_by_scale_grid(tuner_name, tmp_path):
    tuner = load_yaml(REPO / "config" / "tuner" / f"{tuner_name}.yaml")
    tuner["base_config"] = str(REPO / "config")
    tuner_file = tmp_path / f"{tuner_name}.yaml"
    tuner_file.write_text(yaml.safe_dump(tuner))
    trials = load_yaml(Path(enumerate_params(str(tuner_file))) / "model_config.yaml")
    grid = {(trial["num_layers"], trial["num_embeddings"]) for trial in trials.values()}
    assert len(trials) == 20 and grid == set(itertools.product([2, 3, 4, 5], [1, 2, 3, 5, 10]))
