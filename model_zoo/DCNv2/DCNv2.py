"""DCN-V2 (Wang et al., WWW 2021), FuxiCTR's structures, SE or ME.

    x_0 = [E(x_1); ...; E(x_F)]                              # (B, F*D)
    x_{l+1} = x_0 * (W_l x_l + b_l) + x_l                    # eq. 1, fuxictr CrossNetV2
    stacked:          y = sigmoid(w^T MLP_s(x_L))            # fig. 2 (b)
    parallel:         y = sigmoid(w^T [x_L; MLP_p(x_0)])     # fig. 2 (a)
    stacked_parallel: y = sigmoid(w^T [MLP_s(x_L); MLP_p(x_0)])
    crossnet_only:    y = sigmoid(w^T x_L)

ME: cross network i on embedding set i (outputs concatenated), and every DNN
runs its first hidden layer per set (on set i's x_0 for the parallel DNN, on
set i's x_L for the stacked DNN) with the remaining layers on the
concatenation, as Guo et al.'s multi-embedding DCNv2 does.
"""

from typing import Sequence

import torch
from fuxictr.pytorch.layers import CrossNetV2
from torch import nn

from fuxictr_ext.config import check_arg, check_choice, check_positive_int
from fuxictr_ext.base import ZooModel
from fuxictr_ext.layers.multi_embedding import EmbeddingLayout
from fuxictr_ext.layers.common import AbsentBranch
from fuxictr_ext.registry import register_model
from fuxictr_ext.serving import (EmbeddingScorer, FieldPartition, RankAwareCrossNetV2, RankAwareServable,
                                 RankAwareUnsupportedError)

MODEL_STRUCTURES = ("crossnet_only", "stacked", "parallel", "stacked_parallel")


@register_model
class DCNv2(ZooModel, RankAwareServable):
    """Cross network v2 + stacked and/or parallel DNN, as FuxiCTR's DCNv2.

    Attribute names follow FuxiCTR (``embedding_layer``, ``crossnet``,
    ``stacked_dnn``, ``parallel_dnn``, ``fc``); in SE mode ``embedding_layer`` is
    a fuxictr ``FeatureEmbedding`` and ``crossnet`` fuxictr's ``CrossNetV2``, so the
    state_dict keys are those of FuxiCTR's DCNv2 with the same layers.

    Args:
        feature_map: FuxiCTR FeatureMap.
        embedding_dim: k, the base embedding size.
        model_structure: one of ``crossnet_only``, ``stacked``, ``parallel``,
            ``stacked_parallel``.
        stacked_dnn_hidden_units: DNN after the cross network (stacked structures).
        parallel_dnn_hidden_units: DNN beside the cross network (parallel structures).
        dnn_activations: activation of the DNN hidden layers.
        num_cross_layers: L, the number of cross layers.
        net_dropout: dropout after every DNN hidden layer.
        batch_norm: batch normalization in the DNNs.
        num_embeddings: s, the scale factor (embedding width s*k).
        embedding_mode: ``"single"`` (one table of size s*k) or ``"multi"``
            (s tables of size k, one cross network and first DNN layer each).

    Example:
        >>> model = DCNv2(feature_map, embedding_dim=10, model_structure="parallel",
        ...               parallel_dnn_hidden_units=[400, 400], num_cross_layers=3,
        ...               num_embeddings=2, embedding_mode="multi")
        >>> model(batch)["y_pred"].shape          # (B, 1)

    Shapes: batch dict -> y_pred (B, 1). Stage tap ``embedding``: (B, F, s*k).
    """

    def __init__(self, feature_map, model_id: str = "DCNv2", gpu: int = -1,
                 embedding_dim: int = 10,
                 model_structure: str = "parallel",
                 stacked_dnn_hidden_units: Sequence[int] = (),
                 parallel_dnn_hidden_units: Sequence[int] = (400, 400, 400),
                 dnn_activations: str = "ReLU",
                 num_cross_layers: int = 3,
                 net_dropout: float = 0.0,
                 batch_norm: bool = False,
                 num_embeddings: int = 1,
                 embedding_mode: str = "single",
                 **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        model_structure = check_choice("model_structure", model_structure, MODEL_STRUCTURES)
        stacked = model_structure in ("stacked", "stacked_parallel")
        parallel = model_structure in ("parallel", "stacked_parallel")
        check_arg(not stacked or bool(stacked_dnn_hidden_units), "stacked_dnn_hidden_units", stacked_dnn_hidden_units,
                  f"a list of at least one width with model_structure={model_structure!r}")
        check_arg(not parallel or bool(parallel_dnn_hidden_units), "parallel_dnn_hidden_units",
                  parallel_dnn_hidden_units, f"a list of at least one width with model_structure={model_structure!r}")
        check_positive_int("num_cross_layers", num_cross_layers)
        layout = EmbeddingLayout(embedding_dim, num_embeddings, embedding_mode)
        num_fields = feature_map.num_fields
        cross_dim = num_fields * layout.total_dim
        dnn = dict(hidden_activations=dnn_activations, dropout_rates=net_dropout, batch_norm=batch_norm)
        self.model_structure = model_structure
        self.embedding_layer = layout.embedding(feature_map)
        self.embedding_matrix = layout.embedding_matrix()
        self.crossnet = layout.interaction(lambda d: CrossNetV2(num_fields * d, num_cross_layers))
        self.stacked_dnn = nn.Identity()
        self.parallel_dnn = AbsentBranch()
        final_dim = cross_dim
        if stacked:
            self.stacked_dnn = layout.mlp(lambda d: num_fields * d, stacked_dnn_hidden_units, **dnn)
            if layout.is_multi:  # the concatenated cross outputs back to one x_L per set
                self.stacked_dnn = nn.Sequential(
                    nn.Unflatten(-1, (layout.num_sets, num_fields * layout.set_dim)), self.stacked_dnn)
            final_dim = stacked_dnn_hidden_units[-1]
        if parallel:
            self.parallel_dnn = layout.mlp(lambda d: num_fields * d, parallel_dnn_hidden_units, **dnn)
            final_dim += parallel_dnn_hidden_units[-1]
        self.fc = nn.Linear(final_dim, 1)
        self.finalize_model()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)                        # SE (B, F, s*k) | ME (B, s, F, k)
        self.tap("embedding", self.embedding_matrix(feature_emb))    # (B, F, s*k)
        x_0 = feature_emb.flatten(start_dim=-2)                      # SE (B, F*s*k) | ME (B, s, F*k)
        cross_out = self.crossnet(x_0)                               # (B, F*s*k)
        final_out = torch.cat([self.stacked_dnn(cross_out),          # (B, H_s) or (B, F*s*k)
                               self.parallel_dnn(x_0)], dim=-1)      # (B, H_p) or (B, 0)
        y_pred = self.output_activation(self.fc(final_out))          # (B, 1)
        return {"y_pred": y_pred}

    def rank_aware_scorer(self, partition: FieldPartition, rank_aware_fc: bool = True) -> "DCNv2Scorer":
        return DCNv2Scorer(self, partition, rank_aware_fc)


class DCNv2Scorer(EmbeddingScorer):
    """DCNv2 (single embedding): cross layer 0 split (eq. 14), parallel DNN's first layer split.

    The stacked DNN and the output layer read the rank-mixed cross output and
    run per candidate.

    Shapes: forward(context {f: (R, ...)}, candidates {f: (C, ...)}, request_index (C,)) -> (C,).
    """

    def __init__(self, model: DCNv2, partition: FieldPartition, rank_aware_fc: bool = True):
        super().__init__(model, partition, model.embedding_layer)
        if not isinstance(model.crossnet, CrossNetV2):
            raise RankAwareUnsupportedError(f"DCNv2.crossnet is {type(model.crossnet).__name__}; the rank-aware "
                                            "path needs fuxictr's CrossNetV2 on one embedding")
        self.crossnet = RankAwareCrossNetV2(model.crossnet, self.context_columns, self.target_columns)
        self.stacked_dnn = model.stacked_dnn
        self.parallel_dnn = (AbsentBranch() if isinstance(model.parallel_dnn, AbsentBranch) else
                             self.split_mlp(model.parallel_dnn, self.context_columns, self.target_columns,
                                            rank_aware_fc))
        self.fc = model.fc

    def forward(self, context, candidates, request_index):
        e_c, e_t = self.embed(context, candidates, request_index)
        x_c, x_t = e_c.flatten(start_dim=1), e_t.flatten(start_dim=1)        # (R, d_c), (C, d_t)
        cross_out = self.crossnet(x_c, x_t, request_index)                   # (C, d)
        final_out = torch.cat([self.stacked_dnn(cross_out), self.parallel_dnn(x_c, x_t, request_index)], dim=-1)
        return self.output_activation(self.fc(final_out)).view(-1)
