"""DLRM-style FM + FC: the production template of the rank-aware paper.

Tkach, "Context Features Are Cheap" (sections 3.3, 3.4, 5.1), after Naumov et
al.'s DLRM (2019):

    e_i = E(x_i)                                        # (B, F, D) field embeddings
    FM(e) = [<e_i, e_j>]_{1 <= i < j <= F}              # eq. 3, (B, F(F-1)/2)
    x = [FM(e); e_1; ...; e_F]                          # (B, F(F-1)/2 + F*D), or FM(e) alone
    y = sigmoid(MLP(x))                                 # (B, 1)

The rank-aware serving path of this model (``fuxictr_ext.serving``) computes
FM_ctx and the context part of the first FC layer once per request.
"""

from typing import Mapping, Optional, Sequence

import torch
from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
from torch import nn

from fuxictr_ext.base import ZooModel
from fuxictr_ext.layers.common import AbsentBranch, FMPairs
from fuxictr_ext.serving import (EmbeddingScorer, FieldPartition, RankAwareFMPairs, RankAwareServable,
                                 fm_pair_columns)
from fuxictr_ext.registry import register_model


@register_model
class DLRM(ZooModel, RankAwareServable):
    """Embeddings, FM pair vector (upper triangle), optionally the embeddings themselves, then an MLP.

    Args:
        feature_map: FuxiCTR FeatureMap (every field embedded with width D).
        embedding_dim: D.
        concat_embeddings: feed ``[FM pairs; flattened embeddings]`` to the MLP
            (DLRM's concatenation of the dense vector with the interactions);
            False feeds the pairs alone, as in the paper's eq. 12.
        hidden_units: the FC stack's hidden widths (the first one is U of eq. 11).
        hidden_activations: activation of the hidden layers.
        net_dropout: dropout after every hidden layer.
        batch_norm: batch normalization in the MLP.
        context_sources, target_sources, field_roles: how serving splits the
            fields into context and target (see ``FieldPartition.from_feature_map``);
            training does not use them.

    Example:
        >>> model = DLRM(feature_map, embedding_dim=16, hidden_units=[256, 128])
        >>> model(batch)["y_pred"].shape          # (B, 1)

    Shapes: batch dict -> y_pred (B, 1). Stage taps ``embedding`` (B, F, D), ``interaction`` (B, P).
    """

    def __init__(self, feature_map, model_id: str = "DLRM", gpu: int = -1,
                 embedding_dim: int = 16,
                 concat_embeddings: bool = True,
                 hidden_units: Sequence[int] = (512, 256),
                 hidden_activations: str = "ReLU",
                 net_dropout: float = 0.0,
                 batch_norm: bool = False,
                 context_sources: Optional[Sequence[str]] = None,
                 target_sources: Optional[Sequence[str]] = None,
                 field_roles: Optional[Mapping[str, str]] = None,
                 **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        num_fields = feature_map.num_fields
        if num_fields < 2:
            raise ValueError(f"DLRM needs at least 2 fields for FM pairs, the FeatureMap has {num_fields}")
        self.partition_options = dict(context_sources=context_sources, target_sources=target_sources,
                                      field_roles=field_roles)
        self.concat_embeddings = concat_embeddings
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.interaction = FMPairs(num_fields)  # eq. 3
        self.embedding_features = nn.Flatten(start_dim=1) if concat_embeddings else AbsentBranch()
        input_dim = num_fields * (num_fields - 1) // 2 + (num_fields * embedding_dim if concat_embeddings else 0)
        self.mlp = MLP_Block(input_dim=input_dim, output_dim=1, hidden_units=list(hidden_units),
                             hidden_activations=hidden_activations, output_activation=None,
                             dropout_rates=net_dropout, batch_norm=batch_norm)
        self.finalize_model()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.tap("embedding", self.embedding_layer(X))          # (B, F, D)
        pairs = self.tap("interaction", self.interaction(feature_emb))       # (B, F(F-1)/2)
        x = torch.cat([pairs, self.embedding_features(feature_emb)], dim=1)  # (B, P [+ F*D])
        return {"y_pred": self.output_activation(self.mlp(x))}               # (B, 1)

    def rank_aware_scorer(self, partition: FieldPartition, rank_aware_fc: bool = True) -> "DLRMScorer":
        return DLRMScorer(self, partition, rank_aware_fc)


class DLRMScorer(EmbeddingScorer):
    """DLRM-style FM + FC: FM_ctx once, FM_tgt per candidate, first FC layer split (eqs. 4-12).

    The first FC layer reads ``[FM pairs; flattened embeddings]`` (or the pairs
    alone); its kernel columns are split once here into W_c for ``[FM_ctx; e_c]``
    and W_t for ``[FM_tgt; e_t]``, so the vanilla pair order is kept without a
    per-candidate permutation.

    Shapes: forward(context {f: (R, ...)}, candidates {f: (C, ...)}, request_index (C,)) -> (C,).
    """

    def __init__(self, model: DLRM, partition: FieldPartition, rank_aware_fc: bool = True):
        super().__init__(model, partition, model.embedding_layer)
        self.interaction = RankAwareFMPairs(partition.num_context, partition.num_target)
        self.embedding_features = model.embedding_features
        context_pairs, target_pairs = fm_pair_columns(partition.context_positions, partition.target_positions)
        num_pairs = len(partition.fields) * (len(partition.fields) - 1) // 2
        context_columns, target_columns = context_pairs, target_pairs
        if model.concat_embeddings:
            context_columns = torch.cat([context_pairs, num_pairs + self.context_columns])
            target_columns = torch.cat([target_pairs, num_pairs + self.target_columns])
        self.fc = self.split_mlp(model.mlp, context_columns, target_columns, rank_aware_fc)

    def forward(self, context, candidates, request_index):
        e_c, e_t = self.embed(context, candidates, request_index)
        fm_ctx, fm_tgt = self.interaction(e_c, e_t, request_index)           # (R, Pc), (C, Pt)
        x_c = torch.cat([fm_ctx, self.embedding_features(e_c)], dim=1)       # (R, |x_c|)
        x_t = torch.cat([fm_tgt, self.embedding_features(e_t)], dim=1)       # (C, |x_t|)
        return self.output_activation(self.fc(x_c, x_t, request_index)).view(-1)
