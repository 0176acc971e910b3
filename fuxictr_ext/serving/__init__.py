"""Serving: score a request's N candidates with the context work done once.

Paper: Tkach, "Context Features Are Cheap: Rank-Aware Decomposition for
Efficient Feature Interaction in Recommender Systems".

Canonical import path for the serving API (``fuxictr_ext.rank_aware`` re-exports it):

* :mod:`.requests` - :class:`RequestBatch` (ragged R x N), the scorer base; :class:`FieldPartition`
  (from :mod:`fuxictr_ext.layers.rank_aware`).
* :mod:`.servable` - the contract a servable model keeps (:class:`RankAwareServable`).
* :mod:`.scorers` - :func:`build_scorer`, :class:`Scorer`, :func:`score_requests` (cached),
  :func:`cast_model` (float64 / bfloat16 / float16), torch.export, the vanilla path.
* :mod:`.encoding` - :class:`RawFeatureEncoder`: raw request values encoded with the
  dataset's fitted FuxiCTR FeatureProcessor, as the dataset build encoded them.
* :mod:`.load` - :func:`~.load.load_scorer` (and its command): config + checkpoint -> Scorer.
* :mod:`.answers` - what every engine shares: a trained experiment's scorer from its folder, raw
  requests answered as (HTTP status, JSON body), the error contract included.
* :mod:`.server` - the HTTP scoring server on LitServe (``pip install .[serve]``; not imported here).
* :mod:`.layers` - rank-aware forms of trained vanilla layers (split FM pairs, LR, cross
  layer 0, attention layer 0); the layers models train with (split dense layer, rDCN's and
  the rank-aware attention's two streams) are :mod:`fuxictr_ext.layers.rank_aware`.
* :mod:`.flops` - the paper's closed-form FLOP savings.

Serving reads models; no model needs this package to train (a model that declares a
rank-aware path implements the contract of :mod:`.servable` in its own file).
"""

from ..layers.rank_aware import (FieldPartition, RankAwareMLP, RankAwareUnsupportedError, RankSplitDense,
                                 gather_requests)
from .layers import (BroadcastMLP, RankAwareCrossNetV2, RankAwareFMPairs, RankAwareLogisticRegression,
                     RankAwareSelfAttention, SumThenMLP, fm_pair_columns)
from .requests import MultiTargetScorer, RequestBatch
from .scorers import (EXPORT_METHODS, PATHS, DeepFMScorer, Scorer, TwoStreamScorer, TwoStreamServable, VanillaScorer,
                      build_scorer,
                      cached_scorer, cast_model, export_scorer, rank_aware_models, register_scorer,
                      resolve_partition, score_difference, score_requests)
from .encoding import RawFeatureEncoder, RequestError, load_feature_processor
from .servable import EmbeddingScorer, RankAwareServable

__all__ = ["FieldPartition", "RequestBatch", "MultiTargetScorer", "RankAwareUnsupportedError",
           "RankAwareServable", "EmbeddingScorer", "VanillaScorer", "TwoStreamScorer", "TwoStreamServable", "DeepFMScorer",
           "Scorer", "RawFeatureEncoder", "RequestError", "load_feature_processor", "cast_model", "cached_scorer",
           "PATHS", "EXPORT_METHODS", "build_scorer", "score_requests", "score_difference", "export_scorer",
           "rank_aware_models", "register_scorer", "resolve_partition",
           "BroadcastMLP", "RankAwareCrossNetV2", "RankAwareFMPairs",
           "RankAwareLogisticRegression", "RankAwareMLP", "RankAwareSelfAttention", "RankSplitDense",
           "SumThenMLP", "fm_pair_columns", "gather_requests"]
