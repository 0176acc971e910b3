"""Parameter and FLOPs accounting of zoo models."""

import pytest
import torch
from torch import nn

from fuxictr_ext.cost import ModelCost, count_flops, count_parameters, model_cost
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs
from model_zoo.DNN import DNN

EMBEDDING_DIM, HIDDEN = 4, [16, 8]


class DictLinear(nn.Module):
    """A single nn.Linear reading the batch dict's ``x``."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, batch):
        return self.linear(batch["x"])


@pytest.fixture(scope="module")
def feature_map():
    return make_feature_map(num_categorical=5, num_numeric=2, vocab_size=20)


@pytest.fixture(scope="module")
def dnn(feature_map, tmp_path_factory):
    return DNN(feature_map, embedding_dim=EMBEDDING_DIM, hidden_units=HIDDEN, net_dropout=0.1,
               **unit_model_kwargs(tmp_path_factory.mktemp("dnn")))


def mlp_dims(feature_map):
    return [feature_map.num_fields * EMBEDDING_DIM] + HIDDEN + [1]


def test_dnn_parameters_match_closed_form(dnn, feature_map):
    vocab = {name: spec.get("vocab_size", 1) for name, spec in feature_map.features.items()}
    expected_embedding = sum(vocab.values()) * EMBEDDING_DIM      # numeric fields: nn.Linear(1, D)
    dims = mlp_dims(feature_map)
    expected_dense = sum(d_in * d_out + d_out for d_in, d_out in zip(dims[:-1], dims[1:]))
    cost = model_cost(dnn, random_batch(feature_map, 8))
    assert cost.embedding_params == expected_embedding == (5 * 20 + 2) * EMBEDDING_DIM
    assert cost.dense_params == expected_dense
    assert cost.total_params == sum(p.numel() for p in dnn.parameters())


@pytest.mark.parametrize("batch_size", [1, 8, 33])
def test_dnn_flops_per_sample_match_closed_form(dnn, feature_map, batch_size):
    dims = mlp_dims(feature_map)
    mlp = sum(2 * d_in * d_out for d_in, d_out in zip(dims[:-1], dims[1:]))
    numeric_embedding = 2 * 1 * EMBEDDING_DIM * 2                # two numeric fields, (B, 1) @ (1, D)
    cost = model_cost(dnn, random_batch(feature_map, batch_size))
    assert cost.flops_per_sample == mlp + numeric_embedding


@pytest.mark.parametrize("in_features, out_features, batch_size", [(7, 3, 5), (16, 16, 1), (1, 9, 4)])
def test_linear_flops_are_two_in_out_per_sample(in_features, out_features, batch_size):
    model = DictLinear(in_features, out_features)
    batch = {"x": torch.randn(batch_size, in_features)}
    cost = model_cost(model, batch)
    assert cost.flops_per_sample == 2 * in_features * out_features
    assert count_flops(model.linear, batch["x"]) == 2 * in_features * out_features * batch_size
    assert (cost.embedding_params, cost.dense_params) == (0, in_features * out_features + out_features)


@pytest.mark.parametrize("training", [True, False])
def test_modes_are_restored(dnn, feature_map, training):
    dnn.train(training)
    dnn.embedding_layer.eval()
    before = [module.training for module in dnn.modules()]
    model_cost(dnn, random_batch(feature_map, 4))
    assert [module.training for module in dnn.modules()] == before
    assert dnn.training is training and not dnn.embedding_layer.training
    dnn.train()


def test_no_gradients_are_built(dnn, feature_map):
    dnn.zero_grad(set_to_none=True)
    model_cost(dnn, random_batch(feature_map, 4))
    assert all(p.grad is None for p in dnn.parameters())


def test_plain_embeddings_and_tied_weights_count_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(50, 6)
            self.bag = nn.EmbeddingBag(10, 6)
            self.out = nn.Linear(6, 50, bias=False)
            self.out.weight = self.table.weight                     # weight tying

    counts = count_parameters(Tied())
    assert counts == {"embedding": 50 * 6 + 10 * 6, "dense": 0, "total": 50 * 6 + 10 * 6}


def test_summary_line_and_dict():
    cost = ModelCost(embedding_params=1000, dense_params=234, total_params=1234, flops_per_sample=468.0)
    assert cost.summary() == "params: total=1,234 embedding=1,000 dense=234 | flops/sample=468"
    assert cost.to_dict() == {"embedding_params": 1000, "dense_params": 234, "total_params": 1234,
                              "flops_per_sample": 468.0}


def test_batch_without_tensors_raises():
    with pytest.raises(ValueError, match="no batched tensor"):
        model_cost(DictLinear(2, 2), {"x": torch.tensor(1.0)})
