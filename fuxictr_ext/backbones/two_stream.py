"""Base class of models built rank-aware (section 4 of "Context Features Are Cheap").

A two-stream model keeps a rank-2 context stream (one row per request) and a
rank-3 target stream (one row per candidate). Training data has one row per
(context, candidate) pair, so in ``forward`` every row is its own request; in
serving, ``score_candidates`` runs the context stream once per request (a model
declares that by also subclassing :class:`fuxictr_ext.serving.TwoStreamServable`).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Dict, Mapping, Optional, Sequence

import torch
from fuxictr.pytorch.layers import FeatureEmbedding

from ..base import ZooModel
from ..layers.rank_aware import FieldPartition, embed_fields


class TwoStreamModel(ZooModel, metaclass=ABCMeta):
    """Embeds context and target fields separately and scores through ``stream_logits``.

    Subclasses build their streams in ``__init__`` (after ``super().__init__``),
    end it with ``self.finalize_model()`` and implement
    ``stream_logits(e_c (R, K, D), e_t (C, M, D), request_index (C,)) -> (C, 1)``.

    Args:
        feature_map: FuxiCTR FeatureMap.
        embedding_dim: D.
        context_sources: FeatureMap sources of the context fields (default user, context).
        target_sources: FeatureMap sources of the target fields (default item).
        field_roles: per-field override ``{name: "context" | "target"}``.

    Raises:
        ValueError: the partition leaves no context (K = 0) or no target (M = 0) field.
    """

    def __init__(self, feature_map, model_id: str, gpu: int, embedding_dim: int,
                 context_sources: Optional[Sequence[str]], target_sources: Optional[Sequence[str]],
                 field_roles: Optional[Mapping[str, str]], **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        self.field_partition = FieldPartition.from_feature_map(feature_map, context_sources, target_sources,
                                                               field_roles)
        if not self.field_partition.num_context or not self.field_partition.num_target:
            raise ValueError(
                f"{self.__class__.__name__} needs context and target fields; context_sources / target_sources / "
                f"field_roles give K={self.field_partition.num_context}, M={self.field_partition.num_target}")
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)

    @abstractmethod
    def stream_logits(self, e_c: torch.Tensor, e_t: torch.Tensor, request_index: torch.Tensor) -> torch.Tensor:
        """The model's two-stream network, defined by each subclass (rDCN, RankAwareAttention):
        context embeddings (R, K, D), candidate embeddings (C, M, D) and each candidate's
        request (C,) -> logits (C, 1)."""

    def score_candidates(self, context: Dict[str, torch.Tensor], candidates: Dict[str, torch.Tensor],
                         request_index: torch.Tensor) -> torch.Tensor:
        """(C, 1) scores: context ``{f: (R, ...)}`` once per request, candidates ``{f: (C, ...)}``."""
        e_c = self.tap("context_embedding",
                       embed_fields(self.embedding_layer, context, self.field_partition.context_fields))  # (R, K, D)
        e_t = self.tap("target_embedding",
                       embed_fields(self.embedding_layer, candidates, self.field_partition.target_fields))  # (C, M, D)
        return self.output_activation(self.stream_logits(e_c, e_t, request_index))

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        context = {f: X[f] for f in self.field_partition.context_fields}
        candidates = {f: X[f] for f in self.field_partition.target_fields}
        rows = next(iter(candidates.values())).size(0)
        request_index = torch.arange(rows, device=self.device)  # each training row is its own request
        return {"y_pred": self.score_candidates(context, candidates, request_index)}
