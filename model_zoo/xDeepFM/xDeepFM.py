"""xDeepFM (Lian et al., KDD 2018), SE or ME.

    y = sigmoid(w_linear^T a + w_dnn^T x^k_dnn + w_cin^T p^+ + b)       # eq. 8, (B, 1)

with a the raw features (linear part), x^k_dnn the DNN on the flattened
embeddings and p^+ the CIN's pooled feature maps (see model_zoo/CIN). Built
as FuxiCTR's xDeepFM: LogisticRegression (no bias) + CompressedInteractionNet
(with output unit) + MLP_Block (with output unit), logits summed.

ME: CIN i on embedding set i (logits summed: one output unit on the
concatenated pooled vectors) and, following Guo et al. 2024, the DNN's first
hidden layer per set with the remaining layers on the concatenation.
"""

from typing import Sequence

from fuxictr.pytorch.layers import CompressedInteractionNet, LogisticRegression

from fuxictr_ext.config import check_arg, check_positive_ints
from fuxictr_ext.base import ZooModel
from fuxictr_ext.layers.multi_embedding import EmbeddingLayout
from fuxictr_ext.registry import register_model


@register_model
class xDeepFM(ZooModel):
    """Linear part + CIN + DNN.

    Args:
        feature_map: FuxiCTR FeatureMap.
        embedding_dim: k, the base embedding size.
        dnn_hidden_units: hidden layers of the DNN (at least one; the model
            ``CIN`` is xDeepFM without DNN).
        dnn_activations: their activation.
        cin_hidden_units: H_1..H_T, feature maps per CIN layer.
        net_dropout: dropout after every DNN hidden layer.
        batch_norm: batch normalization in the DNN.
        num_embeddings: s, the scale factor (embedding width s*k).
        embedding_mode: ``"single"`` (one table of size s*k) or ``"multi"``
            (s tables of size k, one CIN and one first DNN layer each).

    Example:
        >>> model = xDeepFM(feature_map, embedding_dim=10, dnn_hidden_units=[64, 64],
        ...                 cin_hidden_units=[16, 16], num_embeddings=2, embedding_mode="multi")
        >>> model(batch)["y_pred"].shape          # (B, 1)

    Shapes: batch dict -> y_pred (B, 1). Stage tap ``embedding``: (B, F, s*k).
    """

    def __init__(self, feature_map, model_id: str = "xDeepFM", gpu: int = -1,
                 embedding_dim: int = 10,
                 dnn_hidden_units: Sequence[int] = (64, 64, 64),
                 dnn_activations: str = "ReLU",
                 cin_hidden_units: Sequence[int] = (16, 16, 16),
                 net_dropout: float = 0.0,
                 batch_norm: bool = False,
                 num_embeddings: int = 1,
                 embedding_mode: str = "single",
                 **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        check_arg(bool(dnn_hidden_units), "dnn_hidden_units", dnn_hidden_units,
                  "a list of at least one width; use model: CIN for the linear part + CIN alone")
        check_positive_ints("cin_hidden_units", cin_hidden_units, min_length=1)
        layout = EmbeddingLayout(embedding_dim, num_embeddings, embedding_mode)
        num_fields = feature_map.num_fields
        self.embedding_layer = layout.embedding(feature_map)
        self.embedding_matrix = layout.embedding_matrix()
        self.dnn = layout.mlp(lambda d: num_fields * d, dnn_hidden_units, output_dim=1,
                              hidden_activations=dnn_activations,
                              dropout_rates=net_dropout, batch_norm=batch_norm)
        self.lr_layer = LogisticRegression(feature_map, use_bias=False)
        self.cin = layout.interaction(
            lambda d: CompressedInteractionNet(num_fields, list(cin_hidden_units), output_dim=1))
        self.finalize_model()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)                        # SE (B, F, s*k) | ME (B, s, F, k)
        self.tap("embedding", self.embedding_matrix(feature_emb))    # (B, F, s*k)
        lr_logit = self.lr_layer(X)                                  # (B, 1)
        cin_logit = self.cin(feature_emb).sum(dim=-1, keepdim=True)  # SE (B, 1) | ME (B, s) -> (B, 1)
        dnn_logit = self.dnn(feature_emb.flatten(start_dim=-2))      # (B, 1)
        return {"y_pred": self.output_activation(lr_logit + cin_logit + dnn_logit)}
