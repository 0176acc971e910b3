"""NFM: Neural Factorization Machines (He & Chua, SIGIR 2017), SE or ME.

    f_BI(V_x) = sum_{i<j} x_i v_i * x_j v_j
              = 1/2 [(sum_i v_i)^2 - sum_i v_i^2]            # eq. 4, (B, D)
    y = sigmoid(sum_i w_i x_i + MLP(f_BI(V_x)))              # eq. 1 + 5, (B, 1)

As in FuxiCTR's NFM, the linear part has no global bias (the MLP's output layer
carries it). ME: bi-interaction pooling and the first hidden layer per
embedding set, the remaining layers on their concatenation (Guo et al. 2024).
"""

from typing import Sequence

import torch
from fuxictr.pytorch.layers import InnerProductInteraction, LogisticRegression

from fuxictr_ext.base import ZooModel
from fuxictr_ext.layers.multi_embedding import EmbeddingLayout
from fuxictr_ext.registry import register_model
from fuxictr_ext.serving import (EmbeddingScorer, FieldPartition, RankAwareLogisticRegression, RankAwareMLP,
                                 RankAwareServable, SumThenMLP, gather_requests)


@register_model
class NFM(ZooModel, RankAwareServable):
    """Linear part + bi-interaction pooling + MLP.

    Args:
        feature_map: FuxiCTR FeatureMap.
        embedding_dim: k, the base embedding size.
        hidden_units: hidden layers of the MLP on the pooled vector.
        hidden_activations: their activation.
        net_dropout: dropout after every hidden layer.
        batch_norm: batch normalization in the MLP.
        num_embeddings: s, the scale factor (embedding width s*k).
        embedding_mode: ``"single"`` (one table of size s*k) or ``"multi"``
            (s tables of size k, pooled separately).

    Example:
        >>> model = NFM(feature_map, embedding_dim=10, hidden_units=[64, 64],
        ...             num_embeddings=5, embedding_mode="multi")
        >>> model(batch)["y_pred"].shape          # (B, 1)

    Shapes: batch dict -> y_pred (B, 1). Stage tap ``embedding``: (B, F, s*k).
    """

    def __init__(self, feature_map, model_id: str = "NFM", gpu: int = -1,
                 embedding_dim: int = 10,
                 hidden_units: Sequence[int] = (64, 64, 64),
                 hidden_activations: str = "ReLU",
                 net_dropout: float = 0.0,
                 batch_norm: bool = False,
                 num_embeddings: int = 1,
                 embedding_mode: str = "single",
                 **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        layout = EmbeddingLayout(embedding_dim, num_embeddings, embedding_mode)
        self.embedding_layer = layout.embedding(feature_map)
        self.embedding_matrix = layout.embedding_matrix()
        self.lr_layer = LogisticRegression(feature_map, use_bias=False)
        self.bi_pooling_layer = InnerProductInteraction(feature_map.num_fields, output="bi_interaction")
        self.dnn = layout.mlp(lambda d: d, hidden_units, output_dim=1,
                              hidden_activations=hidden_activations,
                              dropout_rates=net_dropout, batch_norm=batch_norm)
        self.finalize_model()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)                        # SE (B, F, s*k) | ME (B, s, F, k)
        self.tap("embedding", self.embedding_matrix(feature_emb))    # (B, F, s*k)
        # Bi-interaction has no parameters: pool every set at once, (B*s, F, k) -> (B, s, k).
        bi_pooling_vec = self.bi_pooling_layer(feature_emb.flatten(0, -3)) \
            .unflatten(0, feature_emb.shape[:-2])                    # SE (B, s*k) | ME (B, s, k)
        y_pred = self.lr_layer(X) + self.dnn(bi_pooling_vec)         # (B, 1)
        return {"y_pred": self.output_activation(y_pred)}

    def rank_aware_scorer(self, partition: FieldPartition, rank_aware_fc: bool = True) -> "NFMScorer":
        return NFMScorer(self, partition, rank_aware_fc)


class NFMScorer(EmbeddingScorer):
    """NFM: bi-interaction pooling split by rank, first FC layer split.

        f_BI = sum_{i<j in ctx} e_i*e_j   (once)  +  s_c * s_t + sum_{i<j in tgt} e_i*e_j
        h_1  = W f_BI + b = W f_BI^ctx (once) + W f_BI^tgt + b

    Single embedding only (multi-embedding NFM pools per set).

    Shapes: forward(context {f: (R, ...)}, candidates {f: (C, ...)}, request_index (C,)) -> (C,).
    """

    def __init__(self, model: NFM, partition: FieldPartition, rank_aware_fc: bool = True):
        super().__init__(model, partition, model.embedding_layer)
        self.wide = RankAwareLogisticRegression(model.lr_layer, partition.context_fields, partition.target_fields)
        every_column = torch.arange(self.embedding_dim)
        self.fc = (RankAwareMLP.from_mlp_block(model.dnn, every_column, every_column) if rank_aware_fc
                   else SumThenMLP(model.dnn))

    @staticmethod
    def _pairs(e: torch.Tensor) -> torch.Tensor:
        """sum_{i<j} e_i * e_j over the fields of e (rows, n, D) -> (rows, D)."""
        return 0.5 * (e.sum(dim=1) ** 2 - (e ** 2).sum(dim=1))

    def forward(self, context, candidates, request_index):
        e_c, e_t = self.embed(context, candidates, request_index)
        pooled_c = self._pairs(e_c)                                                  # (R, D) once
        pooled_t = gather_requests(e_c.sum(dim=1), request_index) * e_t.sum(dim=1) + self._pairs(e_t)  # (C, D)
        logit = self.wide(context, candidates, request_index) + self.fc(pooled_c, pooled_t, request_index)
        return self.output_activation(logit).view(-1)
