"""rDCN and rDCN** (section 4.2): equations, parameter counts, training, serving."""

import pytest
import torch
from fuxictr.pytorch.layers import CrossNetV2

from fuxictr_ext.serving import FieldPartition, build_scorer
from fuxictr_ext.layers.rank_aware import ContextTargetCrossNet
from fuxictr_ext.testing.serving import perturb_parameters, random_requests, train_steps
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs

SOURCES = ["user", "item", "user", "item", "context", "item", "user", "item"]  # I1 I2 C1..C6: K = 4, M = 4
MODELS = ["rDCN", "rDCNNoContextStream"]


@pytest.fixture(scope="module")
def feature_map():
    return make_feature_map(num_numeric=2, num_categorical=6, sources=SOURCES)


def build(name, feature_map, tmp_path, **kwargs):
    torch.manual_seed(0)
    options = dict(embedding_dim=4, num_cross_layers=2, dnn_hidden_units=[8])
    options.update(kwargs)
    return get_model_class(name)(feature_map, **options, **unit_model_kwargs(tmp_path))


def reference_streams(cross: ContextTargetCrossNet, c_0, t_0, request_index, context_stream):
    """Eqs. 19-20 one candidate and one layer at a time."""
    c_out, t_out = [], []
    for j in range(t_0.size(0)):
        c0, t0 = c_0[request_index[j]], t_0[j]
        c, t = c0, t0
        for layer in range(len(cross.target_layers)):
            W_ct = cross.context_to_target[layer].weight
            W_t, b_t = cross.target_layers[layer].weight, cross.target_layers[layer].bias
            t_next = t0 * (W_ct @ c + W_t @ t + b_t) + t                           # eq. 19
            if context_stream:
                W_c, b_c = cross.context_layers[layer].linear.weight, cross.context_layers[layer].linear.bias
                c = c0 * (W_c @ c + b_c) + c                                       # eq. 20
            t = t_next
        c_out.append(c)
        t_out.append(t)
    return torch.stack(c_out), torch.stack(t_out)


@pytest.mark.parametrize("context_stream", [True, False])
def test_streams_follow_equations_19_20(context_stream):
    torch.manual_seed(1)
    cross = ContextTargetCrossNet(context_dim=6, target_dim=5, num_layers=3, context_stream=context_stream)
    perturb_parameters(cross, std=0.4)
    c_0, t_0 = torch.randn(3, 6), torch.randn(7, 5)
    request_index = torch.tensor([0, 0, 2, 1, 1, 1, 2])
    c_L, t_L = cross(c_0, t_0, request_index)
    c_ref, t_ref = reference_streams(cross, c_0, t_0, request_index, context_stream)
    assert c_L.shape == (3, 6) and t_L.shape == (7, 5)
    assert torch.allclose(c_L[request_index], c_ref, atol=1e-5)
    assert torch.allclose(t_L, t_ref, atol=1e-5)
    if not context_stream:
        assert torch.equal(c_L, c_0)


@pytest.mark.parametrize("d_c, d_t, layers", [(16, 12, 2), (8, 20, 3)])
def test_parameter_count_per_layer(d_c, d_t, layers):
    rdcn = ContextTargetCrossNet(d_c, d_t, layers)
    rdcn_star = ContextTargetCrossNet(d_c, d_t, layers, context_stream=False)
    count = lambda module: sum(p.numel() for p in module.parameters())
    assert count(rdcn) == layers * (d_c ** 2 + d_c * d_t + d_t ** 2 + d_c + d_t)
    assert count(rdcn_star) == layers * (d_c * d_t + d_t ** 2 + d_t)
    assert count(CrossNetV2(d_c + d_t, layers)) - count(rdcn) == layers * d_c * d_t  # no W_ct block


@pytest.mark.parametrize("name", MODELS)
def test_model_parameters_and_shapes(name, feature_map, tmp_path):
    model = build(name, feature_map, tmp_path)
    d_c = d_t = 4 * 4
    cross = sum(p.numel() for p in model.crossnet.parameters())
    expected = 2 * (d_c * d_t + d_t ** 2 + d_t + (d_c ** 2 + d_c if name == "rDCN" else 0))
    assert cross == expected
    assert model.field_partition.num_context == 4 and model.field_partition.num_target == 4
    out = model(random_batch(feature_map, 5))["y_pred"]
    assert out.shape == (5, 1) and ((out > 0) & (out < 1)).all()


@pytest.mark.parametrize("name", MODELS)
def test_trains_and_gradients_reach_every_parameter(name, feature_map, tmp_path):
    model = build(name, feature_map, tmp_path, net_dropout=0.1)
    perturb_parameters(model, std=0.2)
    batch = random_batch(feature_map, 64, seed=3)
    model.compute_loss(model(batch), model.get_labels(batch)).backward()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not silent, f"no gradient reaches {silent}"
    losses = train_steps(model, [batch] * 25)
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("name", MODELS)
def test_batch_of_one_and_save_load(name, feature_map, tmp_path):
    model = perturb_parameters(build(name, feature_map, tmp_path, batch_norm=True))
    batch = random_batch(feature_map, 1, seed=2)
    model.eval()
    out = model(batch)["y_pred"]
    assert out.shape == (1, 1)
    path = str(tmp_path / "rdcn.model")
    model.save_weights(path)
    restored = build(name, feature_map, tmp_path, batch_norm=True)
    restored.load_weights(path)
    restored.eval()
    assert torch.equal(restored(batch)["y_pred"], out)


@pytest.mark.parametrize("name", MODELS)
def test_serving_runs_the_context_stream_once_per_request(name, feature_map, tmp_path):
    model = perturb_parameters(build(name, feature_map, tmp_path)).eval()
    partition = FieldPartition.from_feature_map(feature_map)
    requests = random_requests(feature_map, partition, [6, 1, 3], seed=4)
    seen = []
    hook = model.crossnet.context_to_target[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    rank_aware = build_scorer(model).score(requests)
    vanilla = build_scorer(model, "vanilla").score(requests)
    hook.remove()
    assert seen == [3, 10]  # W^ct c_0: one row per request, then one per broadcast candidate row
    assert (rank_aware - vanilla).abs().max() <= 1e-5


def test_needs_context_and_target_fields(tmp_path):
    only_items = make_feature_map(num_numeric=0, num_categorical=3, sources=["item"] * 3)
    with pytest.raises(ValueError, match="K=0, M=3"):
        build("rDCN", only_items, tmp_path)
    with pytest.raises(ValueError, match="num_cross_layers=0 must be a whole number >= 1"):
        build("rDCN", make_feature_map(num_numeric=0, num_categorical=2, sources=["user", "item"]), tmp_path,
              num_cross_layers=0)
    model = build("rDCN", make_feature_map(num_numeric=0, num_categorical=2, sources=["", "item"]), tmp_path,
                  context_sources=[""], dnn_hidden_units=[])
    assert model.field_partition.context_fields == ("C1",)
