"""AutoInt (Song et al., CIKM 2019), as FuxiCTR's AutoInt builds it.

    E = [e_1; ...; e_F]                                  # (B, F, D)
    H_0 = E,  H_{l+1} = ReLU(LN(MHSA(H_l) + H_l W_res))  # eqs. 5-8, (B, F, A)
    y = sigmoid(w^T flatten(H_L) + MLP(flatten(E)) + LR(x))   # eq. 9, DNN and LR optional

It is the attention baseline of the rank-aware paper (section 3.6): the
rank-aware serving path (``fuxictr_ext.serving``) splits attention layer 0,
and ``RankAwareAttention`` is its two-stream variant (section 4.3).
"""

from typing import Mapping, Optional, Sequence

from fuxictr.pytorch.layers import FeatureEmbedding, LogisticRegression, MLP_Block
from torch import nn

from fuxictr_ext.config import check_positive_int
from fuxictr_ext.base import ZooModel
from fuxictr_ext.layers.common import MultiHeadSelfAttention, ZeroTerm
from fuxictr_ext.registry import register_model
from fuxictr_ext.serving import (EmbeddingScorer, FieldPartition, RankAwareLogisticRegression, RankAwareSelfAttention,
                                 RankAwareServable)


@register_model
class AutoInt(ZooModel, RankAwareServable):
    """Stacked multi-head self-attention over field embeddings, plus optional DNN and LR.

    Args:
        feature_map: FuxiCTR FeatureMap.
        embedding_dim: D.
        attention_layers: number of interacting layers.
        num_heads: H.
        attention_dim: A, the width of each layer's output.
        use_residual: residual connections in the attention layers.
        use_scale: scale scores by sqrt(A/H).
        layer_norm: LayerNorm in the attention layers.
        dnn_hidden_units: widths of a parallel DNN on the flattened embeddings ([] for none).
        dnn_activations: activation of the DNN.
        net_dropout: dropout on attention weights and in the DNN.
        batch_norm: batch normalization in the DNN.
        use_wide: add a logistic-regression term.
        context_sources, target_sources, field_roles: how serving splits the
            fields into context and target; training does not use them.

    Example:
        >>> model = AutoInt(feature_map, embedding_dim=16, attention_layers=2, num_heads=2, attention_dim=16)
        >>> model(batch)["y_pred"].shape          # (B, 1)

    Shapes: batch dict -> y_pred (B, 1). Stage taps ``embedding`` (B, F, D), ``attention`` (B, F, A).
    """

    def __init__(self, feature_map, model_id: str = "AutoInt", gpu: int = -1,
                 embedding_dim: int = 16,
                 attention_layers: int = 2,
                 num_heads: int = 2,
                 attention_dim: int = 16,
                 use_residual: bool = True,
                 use_scale: bool = False,
                 layer_norm: bool = False,
                 dnn_hidden_units: Sequence[int] = (),
                 dnn_activations: str = "ReLU",
                 net_dropout: float = 0.0,
                 batch_norm: bool = False,
                 use_wide: bool = False,
                 context_sources: Optional[Sequence[str]] = None,
                 target_sources: Optional[Sequence[str]] = None,
                 field_roles: Optional[Mapping[str, str]] = None,
                 **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        check_positive_int("attention_layers", attention_layers)
        self.partition_options = dict(context_sources=context_sources, target_sources=target_sources,
                                      field_roles=field_roles)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.self_attention = nn.Sequential(*[
            MultiHeadSelfAttention(embedding_dim if i == 0 else attention_dim, attention_dim=attention_dim,
                                   num_heads=num_heads, dropout_rate=net_dropout, use_residual=use_residual,
                                   use_scale=use_scale, layer_norm=layer_norm)
            for i in range(attention_layers)])
        self.fc = nn.Linear(feature_map.num_fields * attention_dim, 1)
        self.dnn = MLP_Block(input_dim=feature_map.num_fields * embedding_dim, output_dim=1,
                             hidden_units=list(dnn_hidden_units), hidden_activations=dnn_activations,
                             dropout_rates=net_dropout, batch_norm=batch_norm) if dnn_hidden_units else ZeroTerm()
        self.lr_layer = LogisticRegression(feature_map, use_bias=False) if use_wide else ZeroTerm()
        self.finalize_model()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.tap("embedding", self.embedding_layer(X))            # (B, F, D)
        attention_out = self.tap("attention", self.self_attention(feature_emb))  # (B, F, A)
        y_pred = (self.fc(attention_out.flatten(start_dim=1))                   # (B, 1)
                  + self.dnn(feature_emb.flatten(start_dim=1)) + self.lr_layer(X))
        return {"y_pred": self.output_activation(y_pred)}

    def rank_aware_scorer(self, partition: FieldPartition, rank_aware_fc: bool = True) -> "AutoIntScorer":
        return AutoIntScorer(self, partition, rank_aware_fc)


class AutoIntScorer(EmbeddingScorer):
    """AutoInt: attention layer 0 split with a block-wise log-sum-exp softmax; DNN first layer and LR split.

    Shapes: forward(context {f: (R, ...)}, candidates {f: (C, ...)}, request_index (C,)) -> (C,).
    """

    def __init__(self, model: AutoInt, partition: FieldPartition, rank_aware_fc: bool = True):
        super().__init__(model, partition, model.embedding_layer)
        layers = model.self_attention
        self.attention0 = RankAwareSelfAttention(layers[0], partition.vanilla_from_split)
        self.deeper_attention = nn.Sequential(*layers[1:])
        self.attention_fc = model.fc
        self.dnn = (self.split_mlp(model.dnn, self.context_columns, self.target_columns, rank_aware_fc)
                    if isinstance(model.dnn, MLP_Block) else ZeroTerm())
        self.wide = (RankAwareLogisticRegression(model.lr_layer, partition.context_fields, partition.target_fields)
                     if isinstance(model.lr_layer, LogisticRegression) else ZeroTerm())

    def forward(self, context, candidates, request_index):
        e_c, e_t = self.embed(context, candidates, request_index)
        tokens = self.deeper_attention(self.attention0(e_c, e_t, request_index))   # (C, F, A)
        logit = (self.attention_fc(tokens.flatten(start_dim=1))
                 + self.dnn(e_c.flatten(start_dim=1), e_t.flatten(start_dim=1), request_index)
                 + self.wide(context, candidates, request_index))                 # (C, 1)
        return self.output_activation(logit).view(-1)
