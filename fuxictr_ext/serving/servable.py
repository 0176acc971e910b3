"""The serving contract: what a model declares so that its candidates can be scored rank-aware.

A model with a rank-aware path subclasses :class:`RankAwareServable` and
defines :meth:`~RankAwareServable.rank_aware_scorer` beside its own code (its
folder in ``model_zoo``); shared code never looks at a model's class name or
attribute names to decide how to serve it. :class:`EmbeddingScorer` is the part
most such scorers share: context fields embedded once per request, target
fields per candidate.

Example (in a model's own file)::

    class DNN(ZooModel, RankAwareServable):
        def rank_aware_scorer(self, partition, rank_aware_fc=True):
            return DNNScorer(self, partition, rank_aware_fc)

Shapes: R requests, C candidates, K context fields, M target fields, D embedding size.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Mapping, Optional

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
from torch import nn

from ..layers.rank_aware import FieldPartition, RankAwareMLP, RankAwareUnsupportedError
from .layers import BroadcastMLP, count_requests, field_columns, field_embedding, table_width
from .requests import MultiTargetScorer


class RankAwareServable(metaclass=ABCMeta):
    """Mixin of models that declare a rank-aware decomposition.

    Attributes:
        partition_options: the model's ``context_sources`` / ``target_sources`` /
            ``field_roles`` config keys; the default partition reads the FeatureMap's
            sources with them.
    """

    partition_options: Mapping[str, object] = {}

    def serving_partition(self, partition: Optional[FieldPartition] = None, **overrides) -> FieldPartition:
        """The context/target split to serve with: ``partition`` if given, else the
        FeatureMap's sources with ``partition_options`` updated by ``overrides``."""
        if partition is not None:
            return partition
        options = dict(self.partition_options)
        options.update({k: v for k, v in overrides.items() if v is not None})
        return FieldPartition.from_feature_map(self.feature_map, **options)

    @abstractmethod
    def rank_aware_scorer(self, partition: FieldPartition, rank_aware_fc: bool = True) -> MultiTargetScorer:
        """A scorer whose scores equal the model's own forward, with context work once per request.

        Args:
            partition: the context/target split.
            rank_aware_fc: also split the first FC layer (False keeps it per candidate).

        Raises:
            RankAwareUnsupportedError: this instance's structure admits no rank-aware path.
        """


class EmbeddingScorer(MultiTargetScorer):
    """Shared part of rank-aware scorers over one fuxictr ``FeatureEmbedding``.

    Args:
        model: the trained model (its device and output activation are used).
        partition: the context/target split.
        embedding_layer: the model's embedding table, passed in by the model.

    Shapes: embed(context {f: (R, ...)}, candidates {f: (C, ...)}, request_index (C,))
    -> e_c (R, K, D), e_t (C, M, D).
    """

    def __init__(self, model: nn.Module, partition: FieldPartition, embedding_layer: nn.Module):
        super().__init__(model, partition)
        if not isinstance(embedding_layer, FeatureEmbedding):
            raise RankAwareUnsupportedError(
                f"{model.__class__.__name__}'s embedding is {embedding_layer.__class__.__name__}; the rank-aware path "
                "needs a single fuxictr FeatureEmbedding (multi-embedding models are not covered)")
        self.embedding_dim = table_width(embedding_layer, partition.fields)
        self.context_embedding = field_embedding(embedding_layer, partition.context_fields, self.embedding_dim)
        self.target_embedding = field_embedding(embedding_layer, partition.target_fields, self.embedding_dim)
        self.output_activation = model.output_activation
        self.context_columns = field_columns(partition.context_positions, self.embedding_dim)
        self.target_columns = field_columns(partition.target_positions, self.embedding_dim)

    def embed(self, context, candidates, request_index):
        """(e_c (R, K, D), e_t (C, M, D))."""
        e_c = self.context_embedding(context, count_requests(context, request_index))  # once per request
        e_t = self.target_embedding(candidates, request_index.size(0))
        return e_c, e_t

    @staticmethod
    def split_mlp(mlp: MLP_Block, context_columns: torch.Tensor, target_columns: torch.Tensor,
                  rank_aware_fc: bool) -> nn.Module:
        """The MLP with its first layer split (rank_aware_fc) or run per candidate in vanilla order."""
        if rank_aware_fc:
            return RankAwareMLP.from_mlp_block(mlp, context_columns, target_columns)
        return BroadcastMLP(mlp, context_columns, target_columns)
