"""fuxictr_ext.layers.multi_embedding: ME tables, per-set interactions, the SE/ME layout."""

import copy

import pytest
import torch
from torch import nn
from fuxictr.pytorch.layers import (CompressedInteractionNet, CrossNetV2, FeatureEmbedding,
                                    InnerProductInteraction, MLP_Block)

from fuxictr_ext.layers.multi_embedding import (ConcatEmbeddingSets, EmbeddingLayout, MultiEmbedding,
                                         MultiEmbeddingInteraction)
from fuxictr_ext.testing import make_feature_map, random_batch

NUM_CAT, NUM_NUM = 4, 2
F = NUM_CAT + NUM_NUM


@pytest.fixture(scope="module")
def feature_map():
    return make_feature_map(num_categorical=NUM_CAT, num_numeric=NUM_NUM, vocab_size=20)


def inputs(feature_map, batch_size=5, seed=0):
    batch = random_batch(feature_map, batch_size, seed)
    return {k: v for k, v in batch.items() if k not in feature_map.labels}


def per_set_tables(feature_map, num_embeddings, embedding_dim, seed=0):
    """The former layout, written out: one FeatureEmbedding per set, random weights."""
    torch.manual_seed(seed)
    tables = [FeatureEmbedding(feature_map, embedding_dim) for _ in range(num_embeddings)]
    for table in tables:
        for param in table.parameters():
            nn.init.normal_(param)
    return tables


@pytest.mark.parametrize("num_embeddings", [1, 2, 5])
def test_multi_embedding_equals_one_table_per_set(feature_map, num_embeddings):
    """Stacked storage, one lookup per field: the same (B, s, F, k) as s separate tables
    (weights copied in through the former layout's checkpoint keys)."""
    tables = per_set_tables(feature_map, num_embeddings, embedding_dim=3)
    emb = MultiEmbedding(feature_map, embedding_dim=3, num_embeddings=num_embeddings)
    emb.load_state_dict({f"embedding_sets.{i}.{key}": value for i, table in enumerate(tables)
                         for key, value in table.state_dict().items()})
    X = inputs(feature_map)
    out = emb(X)
    assert out.shape == (5, num_embeddings, F, 3)
    for i, table in enumerate(tables):
        torch.testing.assert_close(out[:, i], table(X), rtol=0, atol=0)
        torch.testing.assert_close(emb.embedding_set(X, i), table(X), rtol=0, atol=0)


def test_former_layout_checkpoint_loads_into_a_model(feature_map, tmp_path):
    """A DNN ME checkpoint saved with one FeatureEmbedding per set loads and predicts the same."""
    from fuxictr_ext.registry import get_model_class
    from fuxictr_ext.testing import unit_model_kwargs
    model = get_model_class("DNN")(feature_map, embedding_dim=3, num_embeddings=2, embedding_mode="multi",
                                   hidden_units=[8], **unit_model_kwargs(tmp_path)).eval()
    tables = per_set_tables(feature_map, 2, embedding_dim=3, seed=4)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("embedding_layer.")}
    state.update({f"embedding_layer.embedding_sets.{i}.{key}": value for i, table in enumerate(tables)
                  for key, value in table.state_dict().items()})
    path = tmp_path / "former_layout.model"
    torch.save(state, path)
    model.load_weights(str(path))
    batch = random_batch(feature_map, 6, seed=2)
    X = model.get_inputs(batch)
    with torch.no_grad():
        expected = model.mlp(torch.stack([t(X) for t in tables], dim=1).flatten(start_dim=-2))
        torch.testing.assert_close(model(batch)["y_pred"], expected, rtol=0, atol=0)


def test_blocks_are_initialised_as_separate_tables(feature_map):
    """Each k-wide block: the embedding initializer (categorical), xavier-normal of a
    (1 -> k) Linear (numeric), as FuxiCTR initialises a k-wide table."""
    torch.manual_seed(0)
    k, s = 50, 4
    emb = MultiEmbedding(make_feature_map(num_categorical=2, num_numeric=200, vocab_size=4000), k, s,
                         embedding_initializer="partial(nn.init.normal_, std=1e-2)")
    emb.init_weights()
    layers = emb.tables.embedding_layer.embedding_layers
    categorical = layers["C1"].weight
    numeric = torch.cat([layers[f"I{j}"].weight for j in range(1, 201)], dim=1)   # (s*k, 200)
    for i in range(s):
        block = slice(i * k, (i + 1) * k)
        assert abs(categorical[:, block].std().item() - 1e-2) < 1e-3
        assert abs(numeric[block].std().item() - (2 / (1 + k)) ** 0.5) < 0.01
    assert not torch.equal(categorical[:, :k], categorical[:, k:2 * k])


def test_multi_embedding_single_set_equals_feature_embedding(feature_map):
    torch.manual_seed(7)
    reference = FeatureEmbedding(feature_map, 4)
    torch.manual_seed(7)
    multi = MultiEmbedding(feature_map, embedding_dim=4, num_embeddings=1)
    ref_params = list(reference.parameters())
    me_params = list(multi.parameters())
    assert len(ref_params) == len(me_params)
    for a, b in zip(ref_params, me_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    X = inputs(feature_map)
    torch.testing.assert_close(multi(X)[:, 0], reference(X), rtol=0, atol=0)


def test_multi_embedding_tables_are_independent(feature_map):
    emb = MultiEmbedding(feature_map, embedding_dim=3, num_embeddings=3)
    weight = emb.tables.embedding_layer.embedding_layers["C1"].weight              # (V, s*k)
    w = [weight[:, i * 3:(i + 1) * 3] for i in range(3)]
    assert not torch.equal(w[0], w[1])
    emb(inputs(feature_map))[:, 1].sum().backward()
    grads = [weight.grad[:, i * 3:(i + 1) * 3] for i in range(3)]
    assert not grads[0].any() and not grads[2].any() and grads[1].abs().sum() > 0


def test_multi_embedding_refuses_pretrained_features(feature_map):
    pretrained = copy.deepcopy(feature_map)
    pretrained.features["C1"]["pretrained_emb"] = "pretrained_C1.h5"
    with pytest.raises(ValueError, match="pretrained embeddings of feature"):
        MultiEmbedding(pretrained, embedding_dim=3, num_embeddings=2)


@pytest.mark.parametrize("bad", [{"embedding_dim": 0, "num_embeddings": 2},
                                 {"embedding_dim": 3, "num_embeddings": 0}])
def test_multi_embedding_rejects_bad_sizes(feature_map, bad):
    with pytest.raises(ValueError, match=next(k for k, v in bad.items() if v == 0)):
        MultiEmbedding(feature_map, **bad)


def test_concat_embedding_sets():
    sets = torch.randn(2, 3, F, 4)
    out = ConcatEmbeddingSets()(sets)
    assert out.shape == (2, F, 12)
    torch.testing.assert_close(out, torch.cat([sets[:, i] for i in range(3)], dim=-1))


FACTORIES = {
    "crossnet": (lambda: CrossNetV2(F * 4, 2), lambda x: x.flatten(start_dim=2)),
    "cin": (lambda: CompressedInteractionNet(F, [3, 2], output_dim=1), lambda x: x),
    "bi_mlp": (lambda: nn.Sequential(InnerProductInteraction(F, "bi_interaction"), MLP_Block(4, [6])),
               lambda x: x),
    "mlp_dropout": (lambda: MLP_Block(F * 4, [6], dropout_rates=0.3), lambda x: x.flatten(start_dim=2)),
}


def loop_reference(modules, x):
    """The definition: copy i on set i, concatenated on the last axis."""
    return torch.cat([m(x[:, i]) for i, m in enumerate(modules)], dim=-1)


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("batch_size", [1, 6])
def test_vectorized_interaction_equals_loop(name, batch_size):
    """Stacked copies in one vmapped call: the outputs and every gradient of a loop over
    the separate modules the copies were built from."""
    factory, prepare = FACTORIES[name]
    torch.manual_seed(0)
    modules = [factory().eval() for _ in range(3)]
    inter = MultiEmbeddingInteraction(modules).eval()
    assert inter.vectorized
    x = prepare(torch.randn(batch_size, 3, F, 4)).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    out = inter(x)
    ref = loop_reference(modules, x_ref)
    assert out.shape == ref.shape and out.shape[0] == batch_size
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    out.square().sum().backward()
    ref.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-6)
    for param_name, stacked in inter.stacked.named_parameters():
        for i, module in enumerate(modules):
            reference = module.get_parameter(param_name)
            if reference.requires_grad:
                torch.testing.assert_close(stacked.grad[i], reference.grad, rtol=1e-4, atol=1e-6)


def test_copies_are_stored_stacked_and_viewed_per_copy():
    """One (s, *shape) tensor per parameter of a copy, nothing per copy; ``interactions[i]``
    is a module of the copy's type whose tensors view slice i (in-place edits reach it)."""
    modules = [CrossNetV2(8, 2) for _ in range(3)]
    inter = MultiEmbeddingInteraction(modules)
    names = [name for name, _ in modules[0].named_parameters()]
    assert [name for name, _ in inter.named_parameters()] == [f"stacked.{name}" for name in names]
    assert sorted(inter.state_dict()) == sorted(f"stacked.{name}" for name in names)
    for name in names:
        stacked = inter.stacked.get_parameter(name)
        assert stacked.shape == (3, *modules[0].get_parameter(name).shape)
        for i, module in enumerate(modules):
            torch.testing.assert_close(stacked[i], module.get_parameter(name), rtol=0, atol=0)
    views = inter.interactions
    assert len(views) == len(inter) == 3 and all(isinstance(view, CrossNetV2) for view in views)
    assert not any(p.requires_grad for p in views[1].parameters())
    views[1].cross_layers[0].weight.data.fill_(0.5)
    assert (inter.stacked.get_parameter("cross_layers.0.weight")[1] == 0.5).all()
    assert not (inter.stacked.get_parameter("cross_layers.0.weight")[0] == 0.5).all()


class ScaledCopy(nn.Module):
    """A copy with a Linear (BaseModel's default initialisation) and its own init_weights."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(40, 30)
        self.scale = nn.Parameter(torch.zeros(30))

    def init_weights(self):
        nn.init.normal_(self.scale)

    def forward(self, x):
        return self.linear(x) * self.scale


def test_stacked_copies_initialised_as_fuxictr_initialises_each_module():
    """BaseModel.reset_parameters on a model holding stacked copies: every copy gets what
    fuxictr's reset gives a separate module (xavier-normal Linear weight, zero bias, its
    init_weights), each its own draw."""
    from fuxictr.pytorch.models import BaseModel
    inter = MultiEmbeddingInteraction.replicate(ScaledCopy, 3)
    references = [ScaledCopy() for _ in range(3)]
    torch.manual_seed(11)
    BaseModel.reset_parameters(nn.Sequential(inter))
    torch.manual_seed(11)
    for reference in references:
        BaseModel.reset_parameters(reference)
    for i, reference in enumerate(references):
        for name, param in reference.named_parameters():
            torch.testing.assert_close(inter.stacked.get_parameter(name)[i], param, rtol=0, atol=0)
    weights = inter.stacked.linear.weight                                        # (3, 30, 40)
    assert not inter.stacked.linear.bias.any()
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(inter.stacked.scale[1], inter.stacked.scale[2])
    assert all(abs(w.std().item() - (2 / 70) ** 0.5) < 0.02 for w in weights)


def test_per_copy_checkpoint_loads_into_stacked_copies():
    """A state dict of the former layout (``interactions.<i>.<name>``, under a parent's
    prefix) loads and gives the loop over those copies."""
    torch.manual_seed(3)
    saved = [MLP_Block(8, [5]) for _ in range(2)]
    parent = nn.Sequential(MultiEmbeddingInteraction.replicate(lambda: MLP_Block(8, [5]), 2))
    parent.load_state_dict({f"0.interactions.{i}.{key}": value for i, module in enumerate(saved)
                            for key, value in module.state_dict().items()})
    x = torch.randn(4, 2, 8)
    torch.testing.assert_close(parent(x), loop_reference(saved, x), rtol=1e-6, atol=1e-6)
    with pytest.raises(KeyError):
        parent.load_state_dict({f"0.interactions.0.{key}": value for key, value in saved[0].state_dict().items()})


def test_stacked_copies_follow_dtype_and_deepcopy():
    inter = MultiEmbeddingInteraction.replicate(lambda: CrossNetV2(8, 1), 2).double()
    x = torch.randn(3, 2, 8, dtype=torch.float64)
    out = inter(x)
    assert out.dtype == torch.float64
    twin = copy.deepcopy(inter)
    torch.testing.assert_close(twin(x), out, rtol=0, atol=0)
    twin.stacked.get_parameter("cross_layers.0.weight").data.add_(1.0)
    assert not torch.equal(twin(x), inter(x))


def test_vectorized_dropout_differs_per_copy_and_trains():
    torch.manual_seed(0)
    inter = MultiEmbeddingInteraction.replicate(lambda: MLP_Block(8, [200], dropout_rates=0.5), 2)
    for a, b in zip(inter.interactions[0].parameters(), inter.interactions[1].parameters()):
        b.data.copy_(a.data)
    x = torch.randn(4, 1, 8).expand(4, 2, 8)
    inter.train()
    out = inter(x)                                                   # (B, 2*200)
    assert not torch.equal(out[:, :200], out[:, 200:])
    inter.eval()
    out = inter(x)
    torch.testing.assert_close(out[:, :200], out[:, 200:])


def test_heterogeneous_and_batchnorm_copies_fall_back_to_loop():
    hetero = MultiEmbeddingInteraction([MLP_Block(8, [3]), MLP_Block(8, [5])])
    assert not hetero.vectorized
    x = torch.randn(4, 2, 8)
    out = hetero(x)
    assert out.shape == (4, 8)
    torch.testing.assert_close(out, loop_reference(hetero.interactions, x))
    bn = MultiEmbeddingInteraction.replicate(lambda: MLP_Block(8, [3], batch_norm=True), 2)
    assert not bn.vectorized
    bn.train()
    bn(x)
    assert all(m.mlp[1].num_batches_tracked.item() == 1 for m in bn.interactions)


def test_interaction_rejects_wrong_number_of_sets():
    inter = MultiEmbeddingInteraction.replicate(lambda: CrossNetV2(8, 1), 3)
    with pytest.raises(ValueError, match="one embedding set per interaction copy"):
        inter(torch.randn(4, 2, 8))
    with pytest.raises(ValueError, match="num_embeddings"):
        MultiEmbeddingInteraction.replicate(lambda: CrossNetV2(8, 1), 0)


@pytest.mark.parametrize("mode,num_sets,set_dim", [("single", 1, 12), ("multi", 3, 4)])
def test_layout_modules(feature_map, mode, num_sets, set_dim):
    layout = EmbeddingLayout(embedding_dim=4, num_embeddings=3, embedding_mode=mode)
    assert (layout.num_sets, layout.set_dim, layout.total_dim) == (num_sets, set_dim, 12)
    E = layout.embedding(feature_map)(inputs(feature_map))
    assert E.shape == ((5, 3, F, 4) if mode == "multi" else (5, F, 12))
    assert layout.embedding_matrix()(E).shape == (5, F, 12)
    inter = layout.interaction(lambda d: CrossNetV2(F * d, 1))
    assert inter(E.flatten(start_dim=-2)).shape == (5, F * 12)
    assert isinstance(layout.multi_only(lambda d: nn.Linear(d, 2)),
                      MultiEmbeddingInteraction if mode == "multi" else nn.Identity)


@pytest.mark.parametrize("bad,key", [({"embedding_mode": "dual"}, "embedding_mode"),
                                     ({"num_embeddings": 0}, "num_embeddings"),
                                     ({"embedding_dim": 0}, "embedding_dim")])
def test_layout_rejects_bad_config(bad, key):
    kwargs = {"embedding_dim": 4, "num_embeddings": 2, "embedding_mode": "multi", **bad}
    with pytest.raises(ValueError, match=key):
        EmbeddingLayout(**kwargs)
