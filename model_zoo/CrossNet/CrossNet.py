"""CrossNet: the cross network of DCN-V2 alone (Wang et al., WWW 2021, eq. 1), SE or ME.

    x_0 = [E(x_1); ...; E(x_F)]                              # (B, F*D)
    x_{l+1} = x_0 * (W_l x_l + b_l) + x_l,  l = 0..L-1       # eq. 1, fuxictr CrossNetV2
    y = sigmoid(w^T x_L + b)                                 # (B, 1)

SE: one cross network on D = s*k. ME: cross network i on embedding set i
(D = k), outputs concatenated to (B, s*F*k) before the logit.
"""

from fuxictr.pytorch.layers import CrossNetV2
from torch import nn

from fuxictr_ext.config import check_positive_int
from fuxictr_ext.base import ZooModel
from fuxictr_ext.layers.multi_embedding import EmbeddingLayout
from fuxictr_ext.registry import register_model


@register_model
class CrossNet(ZooModel):
    """CrossNetV2 + logistic output (FuxiCTR's DCNv2 with ``model_structure: crossnet_only``).

    Args:
        feature_map: FuxiCTR FeatureMap.
        embedding_dim: k, the base embedding size.
        num_cross_layers: L, the number of cross layers.
        num_embeddings: s, the scale factor (embedding width s*k).
        embedding_mode: ``"single"`` (one table of size s*k, one cross network)
            or ``"multi"`` (s tables of size k, one cross network each).

    Example:
        >>> model = CrossNet(feature_map, embedding_dim=10, num_cross_layers=3,
        ...                  num_embeddings=2, embedding_mode="multi")
        >>> model(batch)["y_pred"].shape          # (B, 1)

    Shapes: batch dict -> y_pred (B, 1). Stage tap ``embedding``: (B, F, s*k).
    Parameters: s * |E_k| + s * L * ((F k)^2 + F k) + F s k + 1 for ME, with
    s -> 1 and k -> s*k for SE (|E_k|: embedding parameters at size k).
    """

    def __init__(self, feature_map, model_id: str = "CrossNet", gpu: int = -1,
                 embedding_dim: int = 10,
                 num_cross_layers: int = 3,
                 num_embeddings: int = 1,
                 embedding_mode: str = "single",
                 **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        check_positive_int("num_cross_layers", num_cross_layers)
        layout = EmbeddingLayout(embedding_dim, num_embeddings, embedding_mode)
        num_fields = feature_map.num_fields
        self.embedding_layer = layout.embedding(feature_map)
        self.embedding_matrix = layout.embedding_matrix()
        self.crossnet = layout.interaction(lambda d: CrossNetV2(num_fields * d, num_cross_layers))
        self.fc = nn.Linear(num_fields * layout.total_dim, 1)
        self.finalize_model()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)                        # SE (B, F, s*k) | ME (B, s, F, k)
        self.tap("embedding", self.embedding_matrix(feature_emb))    # (B, F, s*k)
        cross_out = self.crossnet(feature_emb.flatten(start_dim=-2))  # (B, F*s*k)
        y_pred = self.output_activation(self.fc(cross_out))          # (B, 1)
        return {"y_pred": y_pred}
