"""Every registered model honours FuxiCTR's embedding keys (issue 21).

``embedding_initializer`` initialises every embedding table, and
``embedding_regularizer`` / ``net_regularizer`` add the L2 terms that FuxiCTR's
BaseModel adds: (lambda / 2) * ||p||^2 over the parameters of the
``FeatureEmbeddingDict`` modules and over all other parameters, respectively.
"""

import pytest
import torch
from fuxictr.pytorch.layers import FeatureEmbeddingDict
from torch import nn

from fuxictr_ext import get_model_class, list_models
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs

WIDE_INITIALIZER = "partial(nn.init.normal_, std=1e-2)"


@pytest.fixture(scope="module")
def feature_map():
    sources = ["user", "context", "user", "user", "context", "item", "item", "item", "user"]
    return make_feature_map(num_categorical=6, num_numeric=2, num_sequence=1, vocab_size=25, sources=sources)


def _build(name, feature_map, tmp_path, **keys):
    torch.manual_seed(0)
    return get_model_class(name)(feature_map, **unit_model_kwargs(tmp_path), **keys)


def _embedding_tables(model):
    return [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]


def _embedding_parameter_ids(model):
    return {id(p) for m in model.modules() if isinstance(m, FeatureEmbeddingDict) for p in m.parameters()}


@pytest.mark.parametrize("name", list_models())
def test_embedding_initializer_initialises_every_table(name, feature_map, tmp_path):
    default = _build(name, feature_map, tmp_path)
    wide = _build(name, feature_map, tmp_path, embedding_initializer=WIDE_INITIALIZER)
    default_tables, wide_tables = _embedding_tables(default), _embedding_tables(wide)
    assert default_tables, f"{name} has no embedding table"
    for table, wide_table in zip(default_tables, wide_tables):
        rows = slice(1, None)                                   # row 0 is the padding id, zero in both
        assert table[rows].std().item() < 3e-4
        assert 5e-3 < wide_table[rows].std().item() < 2e-2


@pytest.mark.parametrize("name", list_models())
def test_regularizers_add_fuxictrs_l2_terms(name, feature_map, tmp_path):
    emb_lambda, net_lambda = 0.3, 0.02
    model = _build(name, feature_map, tmp_path, embedding_regularizer=emb_lambda, net_regularizer=net_lambda)
    embedding_ids = _embedding_parameter_ids(model)
    tables = {id(table) for table in _embedding_tables(model)}
    assert tables <= embedding_ids, f"{name}: embedding tables outside FeatureEmbeddingDict escape the regularizer"
    trainable = [p for p in model.parameters() if p.requires_grad]
    expected_emb = sum(emb_lambda / 2 * p.pow(2).sum() for p in trainable if id(p) in embedding_ids)
    expected_net = sum(net_lambda / 2 * p.pow(2).sum() for p in trainable if id(p) not in embedding_ids)

    model.eval()
    batch = random_batch(feature_map, batch_size=8, seed=1)
    out = model(batch)
    y_true = model.get_labels(batch)
    unregularised = model.add_loss(out, y_true) + sum(out.get("aux_losses", {}).values())
    added = model.compute_loss(out, y_true) - unregularised
    torch.testing.assert_close(added, expected_emb + expected_net, rtol=1e-5, atol=1e-8)
    assert expected_emb > 0 and expected_net > 0

    plain = _build(name, feature_map, tmp_path, embedding_regularizer=0, net_regularizer=0)
    plain.eval()
    with torch.no_grad():
        out = plain(batch)
        assert float(plain.compute_loss(out, y_true) - plain.add_loss(out, y_true)
                     - sum(out.get("aux_losses", {}).values())) == 0.0


def test_an_unknown_embedding_initializer_is_refused_naming_the_key(feature_map, tmp_path):
    with pytest.raises(ValueError, match="embedding_initializer='nn.init.no_such_init_'"):
        _build("DNN", feature_map, tmp_path, embedding_initializer="nn.init.no_such_init_")
