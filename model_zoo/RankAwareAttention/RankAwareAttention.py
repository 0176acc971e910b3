"""Rank-aware attention (Tkach, "Context Features Are Cheap", section 4.3).

    c_0 = E_c (R, K, D),  T_0 = E_t (C, M, D)
    c_{l+1} = SelfAttention(c_l)                                   # context stream, rank 2
    T_{l+1} = ReLU(LN(softmax(Q K^T / s) V + T_l W_res))           # target-anchored stream, rank 3
              Q = T_l W_Q,  K = [c_l W_K^c; T_l W_K^t],  V = [c_l W_V^c; T_l W_V^t]
    y = sigmoid(MLP([flatten(c_L); flatten(T_L)]))                 # first FC layer rank-aware

Context keys and values are projected once per request; no context output reads
a target, so rank separation holds at every depth. The paper leaves the
evaluation of this design open.
"""

from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from fuxictr_ext.config import check_positive_int
from fuxictr_ext.layers.rank_aware import RankAwareMLP, TwoStreamAttentionLayer
from fuxictr_ext.backbones.two_stream import TwoStreamModel
from fuxictr_ext.registry import register_model
from fuxictr_ext.serving import TwoStreamServable


@register_model
class RankAwareAttention(TwoStreamModel, TwoStreamServable):
    """A context self-attention stream and a target stream attending to [context; targets].

    Args:
        feature_map: FuxiCTR FeatureMap with context and target fields.
        embedding_dim: D.
        attention_layers: L.
        num_heads: H.
        attention_dim: A.
        use_residual: residual connections (projected when D != A).
        use_scale: scale scores by sqrt(A/H).
        layer_norm: LayerNorm in every attention layer.
        share_context_kv: the target stream reuses the context stream's key/value
            projections for the context tokens (else W_K^c, W_V^c are its own).
        dnn_hidden_units: hidden widths of the head on [c_L; T_L] ([] for one linear layer).
        dnn_activations: the head's activation.
        net_dropout: dropout on attention weights and in the head.
        batch_norm: batch normalization in the head.
        context_sources, target_sources, field_roles: the context/target split.

    Example:
        >>> model = RankAwareAttention(feature_map, embedding_dim=16, attention_layers=2,
        ...                            num_heads=2, attention_dim=16, dnn_hidden_units=[64])
        >>> model(batch)["y_pred"].shape          # (B, 1)

    Shapes: batch dict -> y_pred (B, 1). Stage taps ``context_embedding`` (B, K, D),
    ``target_embedding`` (B, M, D), ``context_stream`` (B, K, A), ``target_stream`` (B, M, A).
    """

    def __init__(self, feature_map, model_id: str = "RankAwareAttention", gpu: int = -1,
                 embedding_dim: int = 16,
                 attention_layers: int = 2,
                 num_heads: int = 2,
                 attention_dim: int = 16,
                 use_residual: bool = True,
                 use_scale: bool = False,
                 layer_norm: bool = False,
                 share_context_kv: bool = False,
                 dnn_hidden_units: Sequence[int] = (64,),
                 dnn_activations: str = "ReLU",
                 net_dropout: float = 0.0,
                 batch_norm: bool = False,
                 context_sources: Optional[Sequence[str]] = None,
                 target_sources: Optional[Sequence[str]] = None,
                 field_roles: Optional[Mapping[str, str]] = None,
                 **kwargs):
        super().__init__(feature_map, model_id, gpu, embedding_dim, context_sources, target_sources,
                         field_roles, **kwargs)
        check_positive_int("attention_layers", attention_layers)
        self.layers = nn.ModuleList(
            TwoStreamAttentionLayer(embedding_dim if i == 0 else attention_dim, attention_dim,
                                    num_heads=num_heads, dropout_rate=net_dropout, use_residual=use_residual,
                                    use_scale=use_scale, layer_norm=layer_norm, share_context_kv=share_context_kv)
            for i in range(attention_layers))
        self.head = RankAwareMLP.build(self.field_partition.num_context * attention_dim,
                                       self.field_partition.num_target * attention_dim,
                                       dnn_hidden_units, output_dim=1, hidden_activations=dnn_activations,
                                       dropout_rates=net_dropout, batch_norm=batch_norm)
        self.finalize_model()

    def stream_logits(self, e_c: torch.Tensor, e_t: torch.Tensor, request_index: torch.Tensor) -> torch.Tensor:
        c, t = e_c, e_t                                     # (R, K, D), (C, M, D)
        for layer in self.layers:
            c, t = layer(c, t, request_index)               # (R, K, A), (C, M, A)
        c, t = self.tap("context_stream", c), self.tap("target_stream", t)
        return self.head(c.flatten(start_dim=1), t.flatten(start_dim=1), request_index)  # (C, 1)
