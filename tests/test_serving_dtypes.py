"""Serving in other dtypes, and the scorer cache of score_requests."""

import pytest
import torch

from fuxictr_ext.serving import Scorer, build_scorer, cached_scorer, cast_model, score_requests
from fuxictr_ext.layers.rank_aware import RankSplitDense
from fuxictr_ext.testing.serving import random_requests, train_steps
from fuxictr_ext.testing import random_batch
from test_rank_aware import MODELS, build, feature_map, partition  # noqa: F401  (the fixtures)


@pytest.mark.parametrize("key", list(MODELS))
def test_float64_rank_aware_is_exact(key, feature_map, partition, tmp_path):
    model = cast_model(build(key, feature_map, tmp_path), torch.float64)
    batch = random_requests(feature_map, partition, [3, 1, 7, 2], seed=7)
    with torch.no_grad():
        own_forward = model(batch.broadcast())["y_pred"].view(-1)
    rank_aware = Scorer(model, "rank_aware").score_batch(batch)
    assert own_forward.dtype == rank_aware.dtype == torch.float64
    assert (rank_aware - own_forward).abs().max() <= 1e-10
    assert (Scorer(model, "vanilla").score_batch(batch) - own_forward).abs().max() == 0


@pytest.mark.parametrize("dtype, bound", [(torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
@pytest.mark.parametrize("key", list(MODELS))
def test_half_precision_error_is_bounded(key, dtype, bound, feature_map, partition, tmp_path):
    reference = cast_model(build(key, feature_map, tmp_path), torch.float64)
    model = cast_model(build(key, feature_map, tmp_path), dtype)
    batch = random_requests(feature_map, partition, [3, 1, 7, 2], seed=7)
    exact = Scorer(reference, "vanilla").score_batch(batch)
    vanilla, rank_aware = Scorer(model, "vanilla").score_batch(batch), Scorer(model, "rank_aware").score_batch(batch)
    assert vanilla.dtype == rank_aware.dtype == dtype
    assert (rank_aware.double() - vanilla.double()).abs().max() <= bound
    assert (rank_aware.double() - exact).abs().max() <= 2 * bound


def test_split_dense_takes_the_linear_layers_dtype():
    linear = torch.nn.Linear(6, 3).double()
    split = RankSplitDense.from_linear(linear, torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5]))
    assert split.context_weight.dtype == split.target_weight.dtype == split.bias.dtype == torch.float64
    x = torch.randn(4, 6, dtype=torch.float64)
    out = split(x[:, [0, 2, 4]], x[:, [1, 3, 5]], torch.arange(4))
    assert (out - linear(x)).abs().max() <= 1e-12


def test_score_requests_reuses_its_scorer_until_the_weights_change(feature_map, partition, tmp_path):
    model = build("DLRM", feature_map, tmp_path)
    batch = random_requests(feature_map, partition, [4, 2], seed=1)
    first = cached_scorer(model)
    assert cached_scorer(model) is first
    assert cached_scorer(model, "vanilla") is not first
    before = score_requests(model, batch)
    train_steps(model, [random_batch(feature_map, 16, seed=0)])          # an optimizer step changes the weights
    rebuilt = cached_scorer(model)
    assert rebuilt is not first
    after = score_requests(model.eval(), batch)
    assert (after - before).abs().max() > 1e-6
    assert (after - build_scorer(model).score(batch)).abs().max() == 0
    model.train()
    assert not any(module.training for module in cached_scorer(model).modules())   # scored in eval mode
    model.load_state_dict(build("DLRM", feature_map, tmp_path, seed=5).state_dict())
    assert cached_scorer(model) is not rebuilt
