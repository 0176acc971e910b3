"""DNN: the plain deep network over concatenated field embeddings, SE or ME.

    SE:  e = [E(x_1); ...; E(x_F)]                          # (B, F*s*k)
         y = sigmoid(MLP(e))                                 # (B, 1)
    ME:  e_i = [E_i(x_1); ...; E_i(x_F)],  i = 1..s          # (B, F*k) each
         h = [relu(W_1^(1) e_1 + b_1); ...; relu(W_1^(s) e_s + b_s)]   # (B, s*H_1)
         y = sigmoid(MLP_{2..}(h))                           # (B, 1)

ME follows Guo et al. (ICML 2024): every embedding set gets its own first
hidden layer; the remaining layers act on the concatenation.
"""

from typing import Sequence

from torch import nn

from fuxictr_ext.base import ZooModel
from fuxictr_ext.layers.multi_embedding import EmbeddingLayout
from fuxictr_ext.registry import register_model
from fuxictr_ext.serving import EmbeddingScorer, FieldPartition, RankAwareServable


@register_model
class DNN(ZooModel, RankAwareServable):
    """Embedding + MLP baseline built from fuxictr's layers.

    Args:
        feature_map: FuxiCTR FeatureMap.
        embedding_dim: k, the base size of every field embedding.
        hidden_units: widths of the MLP's hidden layers.
        hidden_activations: activation of the hidden layers.
        net_dropout: dropout after every hidden layer.
        batch_norm: batch normalization in the MLP.
        num_embeddings: s, the scale factor (embedding width s*k).
        embedding_mode: ``"single"`` (one table of size s*k) or ``"multi"``
            (s tables of size k, one first hidden layer per table).

    Example:
        >>> model = DNN(feature_map, embedding_dim=10, hidden_units=[64, 64],
        ...             num_embeddings=3, embedding_mode="multi")
        >>> model(batch)["y_pred"].shape          # (B, 1)

    Serving: single embedding only (:class:`DNNScorer`).

    Shapes: input batch dict of (B,) tensors -> y_pred (B, 1). Stage tap
    ``embedding``: the (B, F, s*k) embedding matrix (ME: the sets concatenated).
    """

    def __init__(self, feature_map, model_id: str = "DNN", gpu: int = -1,
                 embedding_dim: int = 10,
                 hidden_units: Sequence[int] = (400, 400, 400),
                 hidden_activations: str = "ReLU",
                 net_dropout: float = 0.0,
                 batch_norm: bool = False,
                 num_embeddings: int = 1,
                 embedding_mode: str = "single",
                 **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        layout = EmbeddingLayout(embedding_dim, num_embeddings, embedding_mode)
        num_fields = feature_map.num_fields
        self.embedding_layer = layout.embedding(feature_map)
        self.embedding_matrix = layout.embedding_matrix()
        self.mlp = layout.mlp(lambda d: num_fields * d, hidden_units, output_dim=1,
                              output_activation=self.output_activation,
                              hidden_activations=hidden_activations,
                              dropout_rates=net_dropout, batch_norm=batch_norm)
        self.finalize_model()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)                        # SE (B, F, s*k) | ME (B, s, F, k)
        self.tap("embedding", self.embedding_matrix(feature_emb))    # (B, F, s*k)
        y_pred = self.mlp(feature_emb.flatten(start_dim=-2))         # (B, 1)
        return {"y_pred": y_pred}

    def rank_aware_scorer(self, partition: FieldPartition, rank_aware_fc: bool = True) -> "DNNScorer":
        return DNNScorer(self, partition, rank_aware_fc)


class DNNScorer(EmbeddingScorer):
    """A plain DNN on flattened embeddings: first FC layer split (eq. 11).

    The DNN's MLP ends with the model's output activation itself, so the scorer adds none.

    Shapes: forward(context {f: (R, ...)}, candidates {f: (C, ...)}, request_index (C,)) -> (C,).
    """

    def __init__(self, model: DNN, partition: FieldPartition, rank_aware_fc: bool = True):
        super().__init__(model, partition, model.embedding_layer)
        self.fc = self.split_mlp(model.mlp, self.context_columns, self.target_columns, rank_aware_fc)
        self.output_activation = nn.Identity()

    def forward(self, context, candidates, request_index):
        e_c, e_t = self.embed(context, candidates, request_index)
        logit = self.fc(e_c.flatten(start_dim=1), e_t.flatten(start_dim=1), request_index)
        return self.output_activation(logit).view(-1)
