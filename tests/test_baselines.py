"""Shallow baselines of the RoBlock paper (DNN, CrossNet, NFM, CIN, xDeepFM, DCNv2), SE and ME."""

from pathlib import Path

import pytest
import torch
import yaml
from fuxictr.autotuner import enumerate_params
from fuxictr.pytorch.layers import CrossNetV2, FeatureEmbedding

from fuxictr_ext import get_model_class
from fuxictr_ext.config import unknown_model_keys
from fuxictr_ext.layers.multi_embedding import MultiEmbedding, MultiEmbeddingInteraction
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs

NUM_CAT, NUM_NUM, VOCAB, K = 5, 2, 20, 4
F = NUM_CAT + NUM_NUM

SMALL = {
    "DNN": {"hidden_units": [16, 8]},
    "CrossNet": {"num_cross_layers": 2},
    "NFM": {"hidden_units": [16, 8]},
    "CIN": {"cin_hidden_units": [4, 3]},
    "xDeepFM": {"dnn_hidden_units": [16, 8], "cin_hidden_units": [4, 3]},
    "DCNv2": {"model_structure": "parallel", "parallel_dnn_hidden_units": [16, 8], "num_cross_layers": 2},
    "DCNv2_stacked_parallel": {"model": "DCNv2", "model_structure": "stacked_parallel",
                               "stacked_dnn_hidden_units": [12, 6], "parallel_dnn_hidden_units": [16, 8],
                               "num_cross_layers": 2},
    "DCNv2_stacked": {"model": "DCNv2", "model_structure": "stacked",
                      "stacked_dnn_hidden_units": [12, 6], "num_cross_layers": 1},
}
VARIANTS = sorted(SMALL)


@pytest.fixture(scope="module")
def feature_map():
    return make_feature_map(num_categorical=NUM_CAT, num_numeric=NUM_NUM, vocab_size=VOCAB)


def build(variant, feature_map, tmp_path, seed=0, **overrides):
    params = dict(SMALL[variant])
    model_cls = get_model_class(params.pop("model", variant))
    params.update(overrides)
    torch.manual_seed(seed)
    return model_cls(feature_map, embedding_dim=K, **params, **unit_model_kwargs(tmp_path))


@pytest.mark.parametrize("mode", ["single", "multi"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_trains_and_loss_falls(variant, mode, feature_map, tmp_path):
    model = build(variant, feature_map, tmp_path, num_embeddings=2, embedding_mode=mode,
                  learning_rate=2e-2)
    batch = random_batch(feature_map, batch_size=32, seed=3)
    labels = model.get_labels(batch)
    model.train()
    losses = []
    for step in range(10):
        model.optimizer.zero_grad()
        loss = model.compute_loss(model(batch), labels)
        loss.backward()
        if step == 0:
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            assert not missing, f"parameters without gradient: {missing}"
        model.optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("variant", VARIANTS)
def test_multi_with_one_set_equals_single(variant, feature_map, tmp_path):
    single = build(variant, feature_map, tmp_path, seed=11, num_embeddings=1, embedding_mode="single")
    multi = build(variant, feature_map, tmp_path, seed=11, num_embeddings=1, embedding_mode="multi")
    single_params, multi_params = list(single.parameters()), list(multi.parameters())
    assert [p.shape for p in single_params] == [p.shape for p in multi_params]
    for a, b in zip(single_params, multi_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    single.eval(), multi.eval()
    batch = random_batch(feature_map, batch_size=9, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(multi(batch)["y_pred"], single(batch)["y_pred"], rtol=1e-5, atol=1e-6)


def embedding_params(dim):
    """Categorical tables (VOCAB x dim) plus numeric projections (1 x dim, no bias)."""
    return dim * (NUM_CAT * VOCAB + NUM_NUM)


def cross_params(width, layers):
    return layers * (width * width + width)


def mlp_params(dims):
    return sum(i * o + o for i, o in zip(dims[:-1], dims[1:]))


@pytest.mark.parametrize("s", [1, 2, 3])
@pytest.mark.parametrize("mode", ["single", "multi"])
def test_crossnet_parameter_count(s, mode, feature_map, tmp_path):
    model = build("CrossNet", feature_map, tmp_path, num_embeddings=s, embedding_mode=mode)
    L = SMALL["CrossNet"]["num_cross_layers"]
    sets, d = (s, K) if mode == "multi" else (1, s * K)
    expected = sets * embedding_params(d) + sets * cross_params(F * d, L) + (F * s * K + 1)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("s", [1, 2, 3])
@pytest.mark.parametrize("mode", ["single", "multi"])
@pytest.mark.parametrize("variant", ["DCNv2", "DCNv2_stacked_parallel"])
def test_dcnv2_parameter_count(variant, s, mode, feature_map, tmp_path):
    model = build(variant, feature_map, tmp_path, num_embeddings=s, embedding_mode=mode)
    cfg = SMALL[variant]
    L, par = cfg["num_cross_layers"], cfg["parallel_dnn_hidden_units"]
    stk = cfg.get("stacked_dnn_hidden_units")
    sets, d = (s, K) if mode == "multi" else (1, s * K)
    x0 = F * d

    def dnn(units):  # per-set first layer (ME) or the whole MLP (SE, sets = 1, x0 = F*s*k)
        return sets * mlp_params([x0, units[0]]) + mlp_params([sets * units[0]] + units[1:])

    expected = sets * embedding_params(d) + sets * cross_params(x0, L) + dnn(par)
    if stk:
        expected += dnn(stk) + (stk[-1] + par[-1] + 1)
    else:
        expected += F * s * K + par[-1] + 1
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("batch_size", [1, 7])
@pytest.mark.parametrize("mode", ["single", "multi"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shape_and_probabilities(variant, mode, batch_size, feature_map, tmp_path):
    model = build(variant, feature_map, tmp_path, num_embeddings=3, embedding_mode=mode, net_dropout=0.1)
    batch = random_batch(feature_map, batch_size=batch_size, seed=5)
    for training in (True, False):
        model.train(training)
        y_pred = model(batch)["y_pred"]
        assert y_pred.shape == (batch_size, 1)
        assert torch.isfinite(y_pred).all() and ((y_pred > 0) & (y_pred < 1)).all()


@pytest.mark.parametrize("mode", ["single", "multi"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_save_load_round_trip(variant, mode, feature_map, tmp_path):
    model = build(variant, feature_map, tmp_path, seed=1, num_embeddings=2, embedding_mode=mode)
    batch = random_batch(feature_map, batch_size=8, seed=6)
    model.train()
    model.optimizer.zero_grad()
    model.compute_loss(model(batch), model.get_labels(batch)).backward()
    model.optimizer.step()
    model.save_weights(model.checkpoint)
    other = build(variant, feature_map, tmp_path, seed=2, num_embeddings=2, embedding_mode=mode)
    other.load_weights(model.checkpoint)
    model.eval(), other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other(batch)["y_pred"], model(batch)["y_pred"], rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["single", "multi"])
@pytest.mark.parametrize("variant", ["DNN", "CIN", "DCNv2"])
def test_embedding_stage_is_the_concatenated_sets(variant, mode, feature_map, tmp_path):
    model = build(variant, feature_map, tmp_path, num_embeddings=3, embedding_mode=mode)
    batch = random_batch(feature_map, batch_size=5, seed=7)
    stages = model.collect_stages(batch)
    assert list(stages) == ["embedding"] and stages["embedding"].shape == (5, F, 3 * K)
    X = model.get_inputs(batch)
    emb = model.embedding_layer
    with torch.no_grad():
        sets = ([emb.embedding_set(X, i) for i in range(emb.num_embeddings)] if mode == "multi" else [emb(X)])
        reference = torch.cat(sets, dim=-1)
    torch.testing.assert_close(stages["embedding"], reference)


def test_multi_embedding_modules(feature_map, tmp_path):
    model = build("DCNv2", feature_map, tmp_path, num_embeddings=3, embedding_mode="multi")
    assert isinstance(model.embedding_layer, MultiEmbedding) and model.embedding_layer.num_embeddings == 3
    assert isinstance(model.crossnet, MultiEmbeddingInteraction) and model.crossnet.vectorized
    assert all(isinstance(c, CrossNetV2) and c.cross_layers[0].in_features == F * K
               for c in model.crossnet.interactions)
    single = build("DCNv2", feature_map, tmp_path, num_embeddings=3, embedding_mode="single")
    assert isinstance(single.embedding_layer, FeatureEmbedding) and isinstance(single.crossnet, CrossNetV2)
    assert single.crossnet.cross_layers[0].in_features == F * 3 * K


def test_multi_crossnet_copies_initialised_and_regularised_as_separate_modules(feature_map, tmp_path):
    """Stacked ME cross networks in a model: BaseModel's init gives each copy xavier-normal
    weights and zero biases (its own draw), fuxictr's regularizers charge every copy as a
    separate module, and a checkpoint of the per-copy layout loads and predicts the same."""
    model = build("CrossNet", feature_map, tmp_path, num_embeddings=3, embedding_mode="multi",
                  net_regularizer=0.3, embedding_regularizer=0.2)
    copies = model.crossnet.interactions
    weights = [c.cross_layers[0].weight for c in copies]                        # (F*k, F*k) each
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    assert all(abs(w.std().item() - (1 / (F * K)) ** 0.5) < 0.03 for w in weights)
    assert not any(c.cross_layers[0].bias.any() for c in copies)
    for param in model.crossnet.parameters():
        param.data.normal_()
    stacked_ids = {id(p) for p in model.crossnet.parameters()}
    embedding = sum(0.2 / 2 * p.square().sum() for p in model.embedding_layer.parameters())
    others = sum(0.3 / 2 * p.square().sum() for p in model.parameters()
                 if id(p) not in stacked_ids and all(p is not q for q in model.embedding_layer.parameters()))
    per_copy = sum(0.3 / 2 * p.square().sum() for c in model.crossnet.interactions for p in c.parameters())
    torch.testing.assert_close(model.regularization_loss(), embedding + others + per_copy)
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("crossnet.")}
    old.update({f"crossnet.interactions.{i}.{k}": torch.randn_like(v)
                for i, c in enumerate(copies) for k, v in c.state_dict().items()})
    path = tmp_path / "per_copy_layout.model"
    torch.save(old, path)
    model.load_weights(str(path))
    model.eval()
    batch = random_batch(feature_map, batch_size=6, seed=8)
    x_0 = model.embedding_layer(model.get_inputs(batch))                         # (B, s, F, k)
    with torch.no_grad():
        cross = []
        for i in range(3):
            reference = CrossNetV2(F * K, 2)
            reference.load_state_dict({k[len(f"crossnet.interactions.{i}."):]: v for k, v in old.items()
                                       if k.startswith(f"crossnet.interactions.{i}.")})
            cross.append(reference(x_0[:, i].flatten(start_dim=1)))
        expected = torch.sigmoid(model.fc(torch.cat(cross, dim=-1)))
        torch.testing.assert_close(model(batch)["y_pred"], expected, rtol=1e-5, atol=1e-6)


def test_multi_crossnet_equals_slow_loop(feature_map, tmp_path):
    """ME CrossNet: cross network i on table i, concatenated, one logit - written out by hand."""
    model = build("CrossNet", feature_map, tmp_path, num_embeddings=3, embedding_mode="multi")
    model.eval()
    batch = random_batch(feature_map, batch_size=6, seed=8)
    X = model.get_inputs(batch)
    with torch.no_grad():
        cross_outs = []
        for i, crossnet in enumerate(model.crossnet.interactions):
            x_0 = model.embedding_layer.embedding_set(X, i).flatten(start_dim=1)   # (B, F*k)
            x_l = x_0
            for layer in crossnet.cross_layers:
                x_l = x_0 * layer(x_l) + x_l
            cross_outs.append(x_l)
        reference = torch.sigmoid(model.fc(torch.cat(cross_outs, dim=-1)))
        torch.testing.assert_close(model(batch)["y_pred"], reference, rtol=1e-5, atol=1e-6)


def test_multi_dcnv2_stacked_parallel_equals_slow_loop(feature_map, tmp_path):
    model = build("DCNv2_stacked_parallel", feature_map, tmp_path, num_embeddings=2, embedding_mode="multi")
    model.eval()
    batch = random_batch(feature_map, batch_size=6, seed=9)
    X = model.get_inputs(batch)
    stacked_first, stacked_rest = model.stacked_dnn[1]
    parallel_first, parallel_rest = model.parallel_dnn
    with torch.no_grad():
        stacked_h, parallel_h = [], []
        for i in range(model.embedding_layer.num_embeddings):
            x_0 = model.embedding_layer.embedding_set(X, i).flatten(start_dim=1)
            stacked_h.append(stacked_first.interactions[i](model.crossnet.interactions[i](x_0)))
            parallel_h.append(parallel_first.interactions[i](x_0))
        final = torch.cat([stacked_rest(torch.cat(stacked_h, -1)), parallel_rest(torch.cat(parallel_h, -1))], -1)
        torch.testing.assert_close(model(batch)["y_pred"], torch.sigmoid(model.fc(final)), rtol=1e-5, atol=1e-6)


def test_multi_with_batch_norm_runs_per_set_layers_in_a_loop(feature_map, tmp_path):
    model = build("DNN", feature_map, tmp_path, num_embeddings=2, embedding_mode="multi", batch_norm=True)
    per_set = model.mlp[0]
    assert isinstance(per_set, MultiEmbeddingInteraction) and not per_set.vectorized
    model.train()
    model(random_batch(feature_map, batch_size=8, seed=10))
    assert all(m.mlp[1].num_batches_tracked.item() == 1 for m in per_set.interactions)


@pytest.mark.parametrize("variant,overrides,key", [
    ("DNN", {"embedding_mode": "mixed"}, "embedding_mode"),
    ("CrossNet", {"num_embeddings": 0}, "num_embeddings"),
    ("CrossNet", {"num_cross_layers": 0}, "num_cross_layers"),
    ("CIN", {"cin_hidden_units": []}, "cin_hidden_units"),
    ("xDeepFM", {"dnn_hidden_units": []}, "dnn_hidden_units"),
    ("DCNv2", {"model_structure": "serial"}, "model_structure"),
    ("DCNv2", {"model_structure": "stacked"}, "stacked_dnn_hidden_units"),
    ("DCNv2", {"parallel_dnn_hidden_units": []}, "parallel_dnn_hidden_units"),
])
def test_bad_config_fails_early(variant, overrides, key, feature_map, tmp_path):
    with pytest.raises(ValueError, match=key):
        build(variant, feature_map, tmp_path, **overrides)


def test_dnn_keeps_its_single_embedding_interface(feature_map, tmp_path):
    torch.manual_seed(0)
    model = get_model_class("DNN")(feature_map, embedding_dim=6, hidden_units=[8], **unit_model_kwargs(tmp_path))
    assert isinstance(model.embedding_layer, FeatureEmbedding)
    assert model.mlp.mlp[0].in_features == F * 6


REPO = Path(__file__).resolve().parents[1]
BASELINES = ["DNN", "CrossNet", "NFM", "CIN", "xDeepFM", "DCNv2"]


@pytest.mark.parametrize("model_name", BASELINES)
def test_model_configs_use_only_known_keys(model_name):
    with open(REPO / "config" / "model_config" / f"{model_name}.yaml") as fd:
        blocks = yaml.safe_load(fd)
    expids = {f"{model_name}_demo", f"{model_name}_criteo", f"{model_name}_avazu"}
    assert expids <= set(blocks)
    model_cls = get_model_class(model_name)
    for expid in expids:
        assert blocks[expid]["model"] == model_name
        assert unknown_model_keys(model_cls, blocks[expid]) == []
    for expid in expids - {"DNN_demo"}:
        block = blocks[expid]
        assert (block["learning_rate"], block["embedding_regularizer"], block["net_regularizer"]) == (1e-3, 1e-8, 0)
        assert block.get("net_dropout", 0.1) == 0.1
    for expid in (f"{model_name}_criteo", f"{model_name}_avazu"):
        assert (blocks[expid]["batch_size"], blocks[expid]["embedding_dim"]) == (10000, 10)


@pytest.mark.parametrize("dataset,runs", [("criteo", 10), ("avazu", 10), ("demo", 4)])
@pytest.mark.parametrize("model_name", BASELINES)
def test_scale_grids_enumerate(model_name, dataset, runs, tmp_path):
    with open(REPO / "config" / "tuner" / f"baselines_scale_{model_name}_{dataset}.yaml") as fd:
        tuner = yaml.safe_load(fd)
    tuner["base_config"] = str(REPO / "config")
    tuner_file = tmp_path / "grid.yaml"
    tuner_file.write_text(yaml.safe_dump(tuner))
    config_dir = enumerate_params(str(tuner_file))
    with open(Path(config_dir) / "model_config.yaml") as fd:
        trials = yaml.safe_load(fd)
    assert len(trials) == runs
    scales = {(t["num_embeddings"], t["embedding_mode"]) for t in trials.values()}
    expected = [1, 2, 3, 5, 10] if dataset != "demo" else [1, 5]
    assert scales == {(s, m) for s in expected for m in ("single", "multi")}
