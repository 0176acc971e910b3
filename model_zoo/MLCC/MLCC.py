"""MLCC: Multi-Level Compression Cross network (single channel, S = 1).

Yu et al., "Compress, Cross and Scale: Multi-Level Compression Cross Networks
for Efficient Scaling in Recommender Systems" (2026), eqs. 1-9:

    X  = [E(x_1); ...; E(x_N)]        original tokens        (B, N, E)
    M  = GC(X)                        global tokens          (B, H, W)     eqs. 1, 4
    C  = PLC(X; M)                    interwoven tokens      (B, N, L)     eqs. 2, 6-9
    X' = LC(C)                        refined tokens         (B, N, E')    eqs. 3, 5
    y  = sigmoid(DNN(flatten(SE(X'))))                       (B, 1)

MLCC is MC-MLCC with one channel (S = 1, ``channel_dim = embedding_dim``): the
code is :class:`model_zoo.MCMLCC.MCMLCC`'s, with MLCC's arguments and defaults.
"""

from __future__ import annotations

from typing import Optional, Sequence

from fuxictr_ext.registry import register_model
from ..MCMLCC import MCMLCC


@register_model
class MLCC(MCMLCC):
    """MLCC: global compressor -> progressive layered crossing -> local compressor -> DNN.

    Args:
        feature_map: FuxiCTR FeatureMap; its N fields are the original tokens.
        embedding_dim: E, dimension of every original token.
        num_heads: H, number of global tokens (dynamic MLPs).
        dynamic_mlp_units: [e_1, ..., e_K], widths of the dynamic MLP (e_0 = E);
            the global token dimension is W = sum_i e_{i-1} e_i.
        dynamic_mlp_activation: sigma of eq. 7 (a torch.nn activation name) or null
            for identity, as released.
        keep_layers: dynamic-MLP outputs concatenated into C (eq. 8-9); 0 is X itself.
            null keeps 0..K (the paper). The last layer K must be kept.
        cross_type: "plc" (the paper) or "inner_product", the static ablation of
            Table 6 (W = E, C = [X, X M^T], ignores the dynamic_mlp_* keys).
        refined_dim: E', refined token dimension; compression ratio r = E / E'.
        local_compression: False drops LC (Table 5 "w/o LC"): the DNN reads C.
        squeeze_excitation: squeeze-excitation over the refined tokens (released code).
        dnn_hidden_units: hidden widths of the DNN on the flattened refined tokens.
        dnn_activations: activation of the DNN's hidden layers.
        net_dropout: dropout after every DNN hidden layer.
        batch_norm: batch normalization in the DNN.
        embedding_initializer: FuxiCTR's initializer string for the embedding tables (the
            released configs: the release's U(-a, a), a = sqrt(6 / (10^6 + E))).

    Example:
        >>> model = MLCC(feature_map, embedding_dim=16, num_heads=4, dynamic_mlp_units=[4, 1],
        ...              refined_dim=8, dnn_hidden_units=[256, 128, 64, 32])
        >>> model(batch)["y_pred"].shape          # (B, 1)

    Shapes: batch dict of (B,) tensors -> y_pred (B, 1). Stages (``collect_stages``):
        original_tokens (B, N, E), interwoven_tokens (B, N, L), refined_tokens (B, N, E').
    """

    def __init__(self, feature_map, model_id: str = "MLCC", gpu: int = -1,
                 embedding_dim: int = 16,                           # E
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
        super().__init__(feature_map, model_id=model_id, gpu=gpu, embedding_dim=embedding_dim,
                         channel_dim=embedding_dim, num_heads=num_heads, dynamic_mlp_units=dynamic_mlp_units,
                         dynamic_mlp_activation=dynamic_mlp_activation, keep_layers=keep_layers,
                         cross_type=cross_type, refined_dim=refined_dim, local_compression=local_compression,
                         squeeze_excitation=squeeze_excitation, dnn_hidden_units=dnn_hidden_units,
                         dnn_activations=dnn_activations, net_dropout=net_dropout, batch_norm=batch_norm,
                         embedding_initializer=embedding_initializer, **kwargs)
