"""DNN: the plain deep network over concatenated field embeddings.

    e = [E(x_1); ...; E(x_F)]            # (B, F*D)
    y = sigmoid(MLP(e))                  # (B, 1)
"""

from typing import Sequence

from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block

from fuxictr_ext.base import ZooModel
from fuxictr_ext.registry import register_model


@register_model
class DNN(ZooModel):
    """Embedding + MLP baseline built from fuxictr's layers.

    Args:
        feature_map: FuxiCTR FeatureMap.
        embedding_dim: D, the size of every field embedding.
        hidden_units: widths of the MLP's hidden layers.
        hidden_activations: activation of the hidden layers.
        net_dropout: dropout after every hidden layer.
        batch_norm: batch normalization in the MLP.

    Example:
        >>> model = DNN(feature_map, embedding_dim=16, hidden_units=[64, 64])
        >>> model(batch)["y_pred"].shape          # (B, 1)

    Shapes: input batch dict of (B,) tensors -> y_pred (B, 1).
    """

    def __init__(self, feature_map, model_id: str = "DNN", gpu: int = -1,
                 embedding_dim: int = 10,
                 hidden_units: Sequence[int] = (400, 400, 400),
                 hidden_activations: str = "ReLU",
                 net_dropout: float = 0.0,
                 batch_norm: bool = False,
                 **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.mlp = MLP_Block(input_dim=feature_map.num_fields * embedding_dim,
                             output_dim=1,
                             hidden_units=list(hidden_units),
                             hidden_activations=hidden_activations,
                             output_activation=self.output_activation,
                             dropout_rates=net_dropout,
                             batch_norm=batch_norm)
        self.finalize_model()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.tap("embedding", self.embedding_layer(X))  # (B, F, D)
        y_pred = self.mlp(feature_emb.flatten(start_dim=1))          # (B, 1)
        return {"y_pred": y_pred}
