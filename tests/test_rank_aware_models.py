"""DLRM, AutoInt and RankAwareAttention: equations against slow references, training, configs."""

import pytest
import torch
import yaml

from fuxictr_ext.config import unknown_model_keys
from fuxictr_ext.layers.common import MultiHeadSelfAttention
from fuxictr_ext.layers.rank_aware import TwoStreamAttentionLayer
from fuxictr_ext.testing.serving import perturb_parameters, train_steps
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs

SOURCES = ["user", "item", "user", "item", "context", "item", "user", "item"]
MODELS = {
    "DLRM": dict(embedding_dim=4, hidden_units=[16, 8]),
    "AutoInt": dict(embedding_dim=4, attention_dim=6, num_heads=2, dnn_hidden_units=[8], use_wide=True),
    "RankAwareAttention": dict(embedding_dim=4, attention_dim=6, num_heads=2, dnn_hidden_units=[8]),
}
CONFIG_FILES = ["DLRM", "AutoInt", "rDCN", "RankAwareAttention"]


@pytest.fixture(scope="module")
def feature_map():
    return make_feature_map(num_numeric=2, num_categorical=6, sources=SOURCES)


def build(name, feature_map, tmp_path, **overrides):
    torch.manual_seed(0)
    return get_model_class(name)(feature_map, **dict(MODELS[name], **overrides), **unit_model_kwargs(tmp_path))


def reference_attention(layer: MultiHeadSelfAttention, x):
    """AutoInt's interacting layer one row, one head and one query at a time."""
    rows = []
    for b in range(x.size(0)):
        query, key, value = layer.W_q(x[b]), layer.W_k(x[b]), layer.W_v(x[b])   # (T, A)
        heads = []
        for h in range(layer.num_heads):
            cols = slice(h * layer.head_dim, (h + 1) * layer.head_dim)
            out = torch.stack([torch.softmax(key[:, cols] @ query[i, cols] / layer.scale, dim=0) @ value[:, cols]
                               for i in range(x.size(1))])
            heads.append(out)
        rows.append(layer.layer_norm(torch.cat(heads, dim=1) + layer.W_res(x[b])).relu())
    return torch.stack(rows)


@pytest.mark.parametrize("input_dim, use_residual, use_scale, layer_norm",
                         [(6, True, False, False), (4, True, True, True), (6, False, True, False)])
def test_self_attention_matches_reference(input_dim, use_residual, use_scale, layer_norm):
    torch.manual_seed(2)
    layer = MultiHeadSelfAttention(input_dim, 6, num_heads=3, use_residual=use_residual, use_scale=use_scale,
                                   layer_norm=layer_norm)
    x = torch.randn(3, 5, input_dim)
    assert torch.allclose(layer(x), reference_attention(layer, x), atol=1e-5)
    with pytest.raises(ValueError, match="num_heads=4 must be a divisor of attention_dim=6"):
        MultiHeadSelfAttention(4, 6, num_heads=4)


@pytest.mark.parametrize("share_context_kv", [False, True])
def test_two_stream_attention_matches_reference(share_context_kv):
    torch.manual_seed(3)
    layer = TwoStreamAttentionLayer(4, 6, num_heads=2, use_scale=True, share_context_kv=share_context_kv)
    c, t = torch.randn(2, 3, 4), torch.randn(5, 2, 4)
    request_index = torch.tensor([1, 0, 0, 1, 1])
    c_next, t_next = layer(c, t, request_index)
    assert torch.allclose(c_next, reference_attention(layer.context_attention, c), atol=1e-5)
    att = layer.target_attention
    for j in range(5):
        keys = torch.cat([layer.W_k_context(c[request_index[j]]), att.W_k(t[j])])    # (K + M, A)
        values = torch.cat([layer.W_v_context(c[request_index[j]]), att.W_v(t[j])])
        query = att.W_q(t[j])                                                          # (M, A)
        heads = [torch.softmax(query[:, h * 3:(h + 1) * 3] @ keys[:, h * 3:(h + 1) * 3].T / att.scale, dim=1)
                 @ values[:, h * 3:(h + 1) * 3] for h in range(2)]
        expected = (torch.cat(heads, dim=1) + att.W_res(t[j])).relu()
        assert torch.allclose(t_next[j], expected, atol=1e-5)
    assert (layer.W_k_context is layer.context_attention.W_k) == share_context_kv


@pytest.mark.parametrize("concat_embeddings", [True, False])
def test_dlrm_follows_its_equations(concat_embeddings, feature_map, tmp_path):
    model = perturb_parameters(build("DLRM", feature_map, tmp_path, concat_embeddings=concat_embeddings)).eval()
    batch = random_batch(feature_map, 4, seed=1)
    e = model.embedding_layer(model.get_inputs(batch))                               # (B, F, D)
    F = e.size(1)
    pairs = torch.stack([(e[:, i] * e[:, j]).sum(dim=1) for i in range(F) for j in range(i + 1, F)], dim=1)
    x = torch.cat([pairs, e.flatten(start_dim=1)], dim=1) if concat_embeddings else pairs
    assert torch.allclose(model(batch)["y_pred"], torch.sigmoid(model.mlp(x)), atol=1e-6)
    stages = model.collect_stages(batch)
    assert list(stages) == ["embedding", "interaction"] and stages["interaction"].shape == (4, F * (F - 1) // 2)


def test_autoint_sums_attention_dnn_and_wide(feature_map, tmp_path):
    model = perturb_parameters(build("AutoInt", feature_map, tmp_path)).eval()
    batch = random_batch(feature_map, 3, seed=2)
    X = model.get_inputs(batch)
    e = model.embedding_layer(X)
    tokens = e
    for layer in model.self_attention:
        tokens = reference_attention(layer, tokens)
    logit = model.fc(tokens.flatten(start_dim=1)) + model.dnn(e.flatten(start_dim=1)) + model.lr_layer(X)
    assert torch.allclose(model(batch)["y_pred"], torch.sigmoid(logit), atol=1e-5)
    plain = build("AutoInt", feature_map, tmp_path, dnn_hidden_units=[], use_wide=False)
    assert not any(n.startswith(("dnn.", "lr_layer.")) for n, _ in plain.named_parameters())


@pytest.mark.parametrize("name", list(MODELS))
def test_trains_batch_of_one_and_saves(name, feature_map, tmp_path):
    model = perturb_parameters(build(name, feature_map, tmp_path), std=0.2)
    losses = train_steps(model, [random_batch(feature_map, 64, seed=5)] * 20)
    assert losses[-1] < 0.8 * losses[0]
    model.eval()
    single = random_batch(feature_map, 1, seed=6)
    out = model(single)["y_pred"]
    assert out.shape == (1, 1)
    model.save_weights(str(tmp_path / "m.model"))
    restored = build(name, feature_map, tmp_path)
    restored.load_weights(str(tmp_path / "m.model"))
    assert torch.equal(restored.eval()(single)["y_pred"], out)


def test_invalid_configurations(feature_map, tmp_path):
    with pytest.raises(ValueError, match="attention_layers=0 must be a whole number >= 1"):
        build("AutoInt", feature_map, tmp_path, attention_layers=0)
    with pytest.raises(ValueError, match="attention_layers=0 must be a whole number >= 1"):
        build("RankAwareAttention", feature_map, tmp_path, attention_layers=0)
    with pytest.raises(ValueError, match="at least 2 fields"):
        build("DLRM", make_feature_map(num_numeric=0, num_categorical=1, sources=["user"]), tmp_path)


@pytest.mark.parametrize("config", CONFIG_FILES)
def test_configs_use_only_known_keys(config):
    with open(f"config/model_config/{config}.yaml") as fd:
        experiments = yaml.safe_load(fd)
    demo_ids = [expid for expid in experiments if expid.endswith("_demo")]
    assert demo_ids and all(experiments[expid]["dataset_id"] == "demo" for expid in demo_ids)
    for expid, params in experiments.items():
        if expid != "Base":
            assert unknown_model_keys(get_model_class(params["model"]), params) == [], expid
