"""NFM: Neural Factorization Machines (He & Chua, SIGIR 2017), SE or ME.

    f_BI(V_x) = sum_{i<j} x_i v_i * x_j v_j
              = 1/2 [(sum_i v_i)^2 - sum_i v_i^2]            # eq. 4, (B, D)
    y = sigmoid(sum_i w_i x_i + MLP(f_BI(V_x)))              # eq. 1 + 5, (B, 1)

As in FuxiCTR's NFM, the linear part has no global bias (the MLP's output layer
carries it). ME: bi-interaction pooling and the first hidden layer per
embedding set, the remaining layers on their concatenation (Guo et al. 2024).
"""

from typing import Sequence

from fuxictr.pytorch.layers import InnerProductInteraction, LogisticRegression

from fuxictr_ext.base import ZooModel
from fuxictr_ext.multi_embedding import EmbeddingLayout
from fuxictr_ext.registry import register_model


@register_model
class NFM(ZooModel):
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
