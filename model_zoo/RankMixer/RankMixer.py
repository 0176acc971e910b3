"""RankMixer (Zhu et al. 2025), as the RankElastor paper and its released code run it.

    E  = FeatureEmbedding(x)                          # (B, F, k)
    X0 = Tokenizer(E)                                 # (B, T, D)
    M  = LN(X + P(X))                                 # token mixing: P the block transpose, H = T heads
    S  = RMSNorm_token(M)                             # the release's per-token RMSNorm (eps 1e-12)
    X' = S + PFFN(S),  PFFN_t(s) = W2_t GELU(W1_t s + b1_t) + b2_t   # per-token FFN, no norm after it
    y  = sigmoid(MLP(vec X_L))                        # (B, 1)

The norms are the released code's (vasile-paskardlgm/RankElastor, ``mixing_type: 2``);
the RankMixer paper's form, LN(S + PFFN(S)) with no token norm, is
``token_norm: null, ffn_norm: LayerNorm``. A thin configuration of
:class:`fuxictr_ext.backbones.token_mixing.TokenMixingModel`; every switch of the
shared backbone stays available (the paper's Table 3 "RankMixer + GLU-style FFN"
and "RankMixer + ReLU FFN" are ``ffn_activation: GLU`` / ``ReLU``).
"""

from typing import Optional, Sequence

from fuxictr_ext.registry import register_model
from fuxictr_ext.backbones.token_mixing import TokenMixingModel


@register_model
class RankMixer(TokenMixingModel):
    """RankMixer: parameter-free block-transpose token mixing + per-token GELU FFNs.

    Args:
        feature_map: FuxiCTR FeatureMap.
        token_mixing: ``block_transpose`` (RankMixer's token mixing).
        mixing_norm: norm of M = LN(X + P(X)); LayerNorm in RankMixer.
        token_norm: norm over each token before the P-FFN; RMSNorm in the release, none in the paper.
        ffn_activation: activation of the per-token FFN; GELU in RankMixer.
        ffn_hidden_units: per-token FFN widths; RankMixer's two-layer FFN is [k * D].
        ffn_inner_norm: per-token RMSNorm inside the FFN; off in RankMixer.
        ffn_norm: norm after the P-FFN residual; none in the release, LayerNorm in the paper.
        tokenizer_norm: RMSNorm inside the tokenizer MLP; off in the released RankMixer runs.
        **kwargs: every other :class:`TokenMixingModel` argument (embedding_dim,
            num_tokens T, token_dim D, num_blocks L, num_heads H, tokenizer, norm_eps, ...).

    Example:
        >>> model = RankMixer(feature_map, embedding_dim=8, num_tokens=4, token_dim=16,
        ...                   ffn_hidden_units=[64])
        >>> model(batch)["y_pred"].shape      # (B, 1)

    Shapes: batch dict -> y_pred (B, 1).
    """

    def __init__(self, feature_map, model_id: str = "RankMixer", gpu: int = -1,
                 token_mixing: str = "block_transpose",
                 mixing_norm: Optional[str] = "LayerNorm",
                 token_norm: Optional[str] = "RMSNorm",
                 ffn_activation: str = "GELU",
                 ffn_hidden_units: Sequence[int] = (200, 200),
                 ffn_inner_norm: bool = False,
                 ffn_norm: Optional[str] = None,
                 tokenizer_norm: bool = False,
                 **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, token_mixing=token_mixing,
                         mixing_norm=mixing_norm, token_norm=token_norm, ffn_activation=ffn_activation,
                         ffn_hidden_units=ffn_hidden_units, ffn_inner_norm=ffn_inner_norm,
                         ffn_norm=ffn_norm, tokenizer_norm=tokenizer_norm, **kwargs)
