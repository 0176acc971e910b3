"""Every registered model: built with its defaults on a small FeatureMap.

Forward shape, probabilities in (0, 1), no NaN, every parameter gets a
gradient, batch size 1 works, state_dict round-trips, one optimizer step runs.
"""

import pytest
import torch

from fuxictr_ext import get_model_class, list_models
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs


@pytest.fixture(scope="module")
def feature_map():
    """Fields with FuxiCTR sources, so models that split context (user, context)
    from target (item) fields build too; the others ignore sources."""
    sources = ["user", "context", "user", "user", "context", "item", "item", "item", "user"]
    return make_feature_map(num_categorical=6, num_numeric=2, num_sequence=1, vocab_size=25, sources=sources)


@pytest.mark.parametrize("name", list_models())
def test_registered_model_contract(name, feature_map, tmp_path):
    torch.manual_seed(0)
    model = get_model_class(name)(feature_map, **unit_model_kwargs(tmp_path))
    batch = random_batch(feature_map, batch_size=16, seed=1)

    model.train()
    out = model(batch)
    y_pred = out["y_pred"]
    assert y_pred.shape == (16, 1)
    assert torch.isfinite(y_pred).all() and ((y_pred > 0) & (y_pred < 1)).all()
    loss = model.compute_loss(out, model.get_labels(batch))
    model.optimizer.zero_grad()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    model.optimizer.step()

    model.eval()
    single = model(random_batch(feature_map, batch_size=1, seed=2))["y_pred"]
    assert single.shape == (1, 1) and torch.isfinite(single).all()

    clone = get_model_class(name)(feature_map, **unit_model_kwargs(tmp_path))
    clone.load_state_dict(model.state_dict())
    clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(clone(batch)["y_pred"], model(batch)["y_pred"])


def test_both_wukong_forms_are_covered():
    """WuKong's two forms are two registered models, so the contract above runs on each."""
    assert {"WuKong", "WuKongFuxiCTR"} <= set(list_models())
