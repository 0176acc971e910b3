"""RankElastor (Li et al. 2026, "Expand More, Shrink Less").

    E  = FeatureEmbedding(x)                                  # (B, F, k)
    X0 = Tokenizer(E)                                         # (B, T, D)
    M  = X + reshape(W_mix RMSNorm(vec X) + b)                # Eq. 3, parameterized full mixing
    S  = RMSNorm_token(M)                                     # the release's per-token RMSNorm (eps 1e-12)
    X' = S + PFFN(S)                                          # GLU-improved P-FFN, per token:
         GLU(s) = W_down[(S s + GELU(W_1 s)) * (W_2 s)] + R s # Eq. 4, stacked per hidden width
    y  = sigmoid(MLP(vec X_L))                                # (B, 1)

A thin configuration of :class:`fuxictr_ext.layers.token_mixing.TokenMixingModel`;
the paper's Table 3 ablations switch ``token_mixing`` (w/o full mixing: the
release's ``kronecker`` block mixing) and ``ffn_activation`` (ReLU- / GELU-based FFN).
"""

from typing import Optional, Sequence

from fuxictr_ext.registry import register_model
from fuxictr_ext.backbones.token_mixing import TokenMixingModel


@register_model
class RankElastor(TokenMixingModel):
    """RankElastor: parameterized full token mixing + GLU-improved per-token FFNs.

    Args:
        feature_map: FuxiCTR FeatureMap.
        token_mixing: ``full`` (W_mix over all T*D coordinates).
        mixing_norm: norm of the mixing output; none in the released code.
        token_norm: norm over each token before the P-FFN; RMSNorm in the released code.
        ffn_activation: ``GLU`` (Eq. 4).
        ffn_hidden_units: widths of the stacked GLU layers ([64, 64] on Criteo, [16] on Avazu).
        expansion_rate: r, the GLU lifting ratio (3 in the released configs).
        ffn_inner_norm: per-token pre-RMSNorm before every GLU layer.
        ffn_norm: norm after the P-FFN residual; none in the released code.
        tokenizer_norm: RMSNorm after the tokenizer's hidden layer.
        **kwargs: every other :class:`TokenMixingModel` argument (embedding_dim,
            num_tokens T, token_dim D, num_blocks L, tokenizer, pred_head, ...).

    Example:
        >>> model = RankElastor(feature_map, embedding_dim=8, num_tokens=4, token_dim=16,
        ...                     ffn_hidden_units=[16, 16])
        >>> model(batch)["y_pred"].shape      # (B, 1)

    Shapes: batch dict -> y_pred (B, 1).
    """

    def __init__(self, feature_map, model_id: str = "RankElastor", gpu: int = -1,
                 token_mixing: str = "full",
                 mixing_norm: Optional[str] = None,
                 token_norm: Optional[str] = "RMSNorm",
                 ffn_activation: str = "GLU",
                 ffn_hidden_units: Sequence[int] = (64, 64),
                 expansion_rate: float = 3.0,
                 ffn_inner_norm: bool = True,
                 ffn_norm: Optional[str] = None,
                 tokenizer_norm: bool = True,
                 **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, token_mixing=token_mixing,
                         mixing_norm=mixing_norm, token_norm=token_norm, ffn_activation=ffn_activation,
                         ffn_hidden_units=ffn_hidden_units, expansion_rate=expansion_rate,
                         ffn_inner_norm=ffn_inner_norm, ffn_norm=ffn_norm, tokenizer_norm=tokenizer_norm,
                         **kwargs)
