"""MC-MLCC: multi-channel MLCC.

Yu et al., "Compress, Cross and Scale: Multi-Level Compression Cross Networks
for Efficient Scaling in Recommender Systems" (2026), eqs. 10-12 on top of 1-9:

    X~ = [E(x_1); ...; E(x_N)]          original tokens, S*E each      (B, N, S*E)
    [X_1, ..., X_S] = X~                channels                        (B, S, N, E)   eq. 10
    C_s = PLC_s(X_s; GC_s(X_s))         per-channel GC + PLC            (B, S, N, L)   eq. 11
    C  = Concat(C_1, ..., C_S)          per token                       (B, N, S*L)    eq. 12
    X' = LC(C)                          one shared local compressor     (B, N, E')
    y  = sigmoid(DNN(flatten(SE(X'))))                                  (B, 1)
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from fuxictr.pytorch.layers import FeatureEmbedding

from fuxictr_ext.base import ZooModel
from fuxictr_ext.config import check_arg, check_positive_int
from fuxictr_ext.layers.mlcc import GlobalCompressor, build_cross, build_mlcc_head
from fuxictr_ext.registry import register_model


@register_model
class MCMLCC(ZooModel):
    """MC-MLCC: S parallel GC + PLC channels over a split embedding, one shared LC, DNN.

    Each field embedding of size ``embedding_dim`` = S * E is cut into S slices of
    ``channel_dim`` = E. Channel s has its own global compressor (all channels in
    one batched contraction) and its own dynamic MLPs; the channels' interwoven
    tokens are concatenated per token. Each C_s starts with its slice X_s when
    layer 0 is kept, so the original tokens X~ enter C exactly once (the paper's
    footnote 2). With S = 1 this is MLCC.

    Args:
        feature_map: FuxiCTR FeatureMap; its N fields are the original tokens.
        embedding_dim: S * E, the size of every field embedding.
        channel_dim: E, the size of one channel's slice; S = embedding_dim / channel_dim.
        num_heads: H, global tokens per channel.
        dynamic_mlp_units: [e_1, ..., e_K], widths of each dynamic MLP (e_0 = E).
        dynamic_mlp_activation: sigma of eq. 7 or null (identity, as released).
        keep_layers: dynamic-MLP outputs kept in each C_s; 0 is X_s. null keeps 0..K.
        cross_type: "plc" or "inner_product" (static ablation, W = E).
        refined_dim: E'; compression ratio r = S * E / E'.
        local_compression: False drops LC: the DNN reads C.
        squeeze_excitation: squeeze-excitation over the refined tokens.
        dnn_hidden_units, dnn_activations, net_dropout, batch_norm: the DNN.
        embedding_initializer: FuxiCTR's initializer string for the embedding tables; the
            released configs use the release's U(-a, a), a = sqrt(6 / (10^6 + S*E)): its
            ``xavier_uniform_`` on a 10^6-row hashed table per field.

    Example:
        >>> model = MCMLCC(feature_map, embedding_dim=32, channel_dim=16, num_heads=4,
        ...                dynamic_mlp_units=[4, 1], refined_dim=8)
        >>> model.num_channels, model.compression_ratio
        (2, 4.0)

    Shapes: batch dict of (B,) tensors -> y_pred (B, 1). Stages (``collect_stages``):
        original_tokens (B, N, S*E), interwoven_tokens (B, N, S*L), refined_tokens (B, N, E').
    """

    def __init__(self, feature_map, model_id: str = "MCMLCC", gpu: int = -1,
                 embedding_dim: int = 32,                           # S * E
                 channel_dim: int = 16,                             # E
                 num_heads: int = 4,                                # H
                 dynamic_mlp_units: Sequence[int] = (4, 1),         # e_1 .. e_K
                 dynamic_mlp_activation: Optional[str] = None,      # sigma, eq. 7
                 keep_layers: Optional[Sequence[int]] = None,       # eqs. 8-9
                 cross_type: str = "plc",
                 refined_dim: int = 8,                              # E'
                 local_compression: bool = True,
                 squeeze_excitation: bool = True,
                 dnn_hidden_units: Sequence[int] = (256, 128, 64, 32),
                 dnn_activations: str = "ReLU",
                 net_dropout: float = 0.2,
                 batch_norm: bool = False,
                 embedding_initializer: str = "partial(nn.init.normal_, std=1e-4)",
                 **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        check_positive_int("embedding_dim", embedding_dim)
        check_positive_int("channel_dim", channel_dim)
        check_positive_int("num_heads", num_heads)
        check_arg(embedding_dim % channel_dim == 0, "channel_dim", channel_dim,
                  f"a divisor of embedding_dim={embedding_dim}: MC-MLCC splits each embedding into "
                  "S = embedding_dim / channel_dim channels of channel_dim each")
        num_tokens = feature_map.num_fields                                        # N
        self.num_channels = embedding_dim // channel_dim                           # S
        self.channel_dim = channel_dim
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim,
                                                embedding_initializer=embedding_initializer)
        self.cross = build_cross(cross_type, channel_dim, num_heads, dynamic_mlp_units,
                                 keep_layers, dynamic_mlp_activation)
        # One channel keeps MLCC's (N*E, H*W) weight without a channel axis (MLCC's checkpoints).
        self.global_compressor = GlobalCompressor(num_tokens, channel_dim, num_heads, self.cross.head_dim,
                                                  num_channels=None if self.num_channels == 1 else self.num_channels)
        self.interwoven_dim = self.num_channels * self.cross.output_dim            # S * L
        self.local_compressor, self.squeeze_excitation, self.dnn = build_mlcc_head(
            num_tokens, self.interwoven_dim, refined_dim, local_compression, squeeze_excitation,
            dnn_hidden_units, dnn_activations, net_dropout, batch_norm, self.output_activation)
        self.compression_ratio = embedding_dim / refined_dim if local_compression else None  # r = S*E / E'
        logging.info(f"{type(self).__name__}: N={num_tokens} S={self.num_channels} E={channel_dim} H={num_heads} "
                     f"W={self.cross.head_dim} S*L={self.interwoven_dim} "
                     f"E'={refined_dim if local_compression else '-'} r={self.compression_ratio}")
        self.finalize_model()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        X_tilde = self.tap("original_tokens", self.embedding_layer(X))             # (B, N, S*E)
        # (B, S, N, E), eq. 10: one copy into the channel-major layout that GC and PLC both read
        X = X_tilde.unflatten(-1, (self.num_channels, self.channel_dim)).transpose(1, 2).contiguous()
        M = self.global_compressor(X)                                             # (B, S, H, W)  eq. 11
        C = self.cross.forward_channels(X, M)                                     # (B, N, S*L)   eqs. 11-12
        C = self.tap("interwoven_tokens", C)
        refined = self.tap("refined_tokens", self.local_compressor(C))            # (B, N, E')
        refined = self.squeeze_excitation(refined)                                # (B, N, E')
        y_pred = self.dnn(refined.flatten(start_dim=1))                           # (B, 1)
        return {"y_pred": y_pred}
