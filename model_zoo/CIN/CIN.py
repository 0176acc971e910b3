"""CIN: the Compressed Interaction Network of xDeepFM (Lian et al., KDD 2018), SE or ME.

    X^k_{h,*} = sum_i sum_j W^{k,h}_{ij} (X^{k-1}_{i,*} o X^0_{j,*})   # eq. 6, (B, H_k, D)
    p^k_i = sum_d X^k_{i,d}                                           # sum pooling, (B, H_k)
    y = sigmoid(sum_i w_i x_i + w_o^T [p^1; ...; p^T] + b)             # (B, 1)

This is FuxiCTR's xDeepFM without its DNN (``dnn_hidden_units: []``): linear
part + CIN. ME: CIN i (with its own output unit) on embedding set i; the s CIN
logits are summed, which is one output unit on the concatenation
[p^(1); ...; p^(s)] of the sets' pooled vectors.
"""

from typing import Sequence

from fuxictr.pytorch.layers import CompressedInteractionNet, LogisticRegression

from fuxictr_ext.config import check_positive_ints
from fuxictr_ext.base import ZooModel
from fuxictr_ext.layers.multi_embedding import EmbeddingLayout
from fuxictr_ext.registry import register_model


@register_model
class CIN(ZooModel):
    """Linear part + Compressed Interaction Network.

    Args:
        feature_map: FuxiCTR FeatureMap.
        embedding_dim: k, the base embedding size.
        cin_hidden_units: H_1..H_T, feature maps per CIN layer.
        num_embeddings: s, the scale factor (embedding width s*k).
        embedding_mode: ``"single"`` (one table of size s*k, one CIN) or
            ``"multi"`` (s tables of size k, one CIN each).

    Example:
        >>> model = CIN(feature_map, embedding_dim=10, cin_hidden_units=[16, 16],
        ...             num_embeddings=3, embedding_mode="multi")
        >>> model(batch)["y_pred"].shape          # (B, 1)

    Shapes: batch dict -> y_pred (B, 1). Stage tap ``embedding``: (B, F, s*k).
    """

    def __init__(self, feature_map, model_id: str = "CIN", gpu: int = -1,
                 embedding_dim: int = 10,
                 cin_hidden_units: Sequence[int] = (16, 16, 16),
                 num_embeddings: int = 1,
                 embedding_mode: str = "single",
                 **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        check_positive_ints("cin_hidden_units", cin_hidden_units, min_length=1)
        layout = EmbeddingLayout(embedding_dim, num_embeddings, embedding_mode)
        num_fields = feature_map.num_fields
        self.embedding_layer = layout.embedding(feature_map)
        self.embedding_matrix = layout.embedding_matrix()
        self.lr_layer = LogisticRegression(feature_map, use_bias=False)
        self.cin = layout.interaction(
            lambda d: CompressedInteractionNet(num_fields, list(cin_hidden_units), output_dim=1))
        self.finalize_model()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)                        # SE (B, F, s*k) | ME (B, s, F, k)
        self.tap("embedding", self.embedding_matrix(feature_emb))    # (B, F, s*k)
        cin_logit = self.cin(feature_emb).sum(dim=-1, keepdim=True)  # SE (B, 1) | ME (B, s) -> (B, 1)
        y_pred = self.lr_layer(X) + cin_logit                        # (B, 1)
        return {"y_pred": self.output_activation(y_pred)}
