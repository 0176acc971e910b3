"""TokenMixingModel: the token-transformation backbone shared by RankMixer and RankElastor.

Papers:
    Zhu et al. 2025, "RankMixer: Scaling Up Ranking Models in Industrial Recommenders".
    Li et al. 2026, "Expand More, Shrink Less: Shaping Effective-Rank Dynamics for
    Dense Scaling in Recommendation" (RankElastor).

The layers (tokenizer, mixings, per-token FFNs, heads) are in
:mod:`fuxictr_ext.layers.token_mixing`; this module wires them into one model.

Shapes: B batch, F fields, k field-embedding size, T tokens, D token size.
"""

from __future__ import annotations

from typing import Optional, Sequence

from fuxictr.pytorch.layers import FeatureEmbedding
from torch import nn

from ..base import ZooModel
from ..layers.token_mixing import (PRED_HEADS, RELEASE_NORM_EPS, TOKEN_MIXINGS, BlockTransposeMixing, FullMixing,
                                   KroneckerMixing, PerTokenFFN, TokenMeanHead, TokenMixingBlock, TokenMLPHead,
                                   Tokenizer, make_norm)
from ..config import check_arg, check_choice, check_positive_int


class TokenMixingModel(ZooModel):
    """Embedding -> tokenizer -> L x (token mixing, P-FFN) -> head, with every switch exposed.

    ``model_zoo.RankMixer`` and ``model_zoo.RankElastor`` subclass this with their
    papers' defaults; the Table 3 ablations of the RankElastor paper are
    combinations of ``token_mixing``, ``ffn_activation`` and the norms.

    Spectrum stages (``self.tap``): ``emb`` (B, F, k), ``tokens`` (B, T, D), and for
    every block l ``block_l_mix`` (after the mixing and its ``mixing_norm``,
    before the ``token_norm``: where the release hooks its effective rank) and
    ``block_l_ffn`` (after the P-FFN and its norm).

    The defaults are the released code's (vasile-paskardlgm/RankElastor, FuxiCTR
    model ``UniMixer``): RMSNorm epsilon 1e-12, a per-token RMSNorm between the
    mixing and the P-FFN, no norm after the P-FFN, no dropout in the head (the
    release never reads ``net_dropout``, so neither does this model).

    Sequence features are pooled in the embedding stage by the feature encoder
    fuxictr gives them (``layers.MaskedAveragePooling()`` unless the dataset or
    ``feature_specs`` says otherwise), so each one is one field.

    Args:
        feature_map: FuxiCTR FeatureMap; every field must embed to ``embedding_dim``.
        embedding_dim: k, the field embedding size.
        num_tokens: T.
        token_dim: D.
        num_blocks: L, the depth.
        tokenizer: ``matrix``, ``vector`` or ``none`` (see :class:`Tokenizer`).
        tokenizer_hidden_units: hidden widths of the tokenizer MLP.
        tokenizer_activation: its activation.
        tokenizer_norm: RMSNorm after each tokenizer hidden layer.
        tokenizer_dropout: dropout in the tokenizer MLP.
        token_mixing: ``block_transpose`` (RankMixer), ``full`` (RankElastor) or
            ``kronecker`` (the release's block mixing of its ``_fast`` configs).
        num_heads: H of the block transpose; null means H = T.
        kronecker_blocks: G of the Kronecker mixing (26 on Criteo, 2 on Avazu in the release).
        mixing_input_norm: RMSNorm over vec X inside the full / Kronecker mixing.
        mixing_norm: ``LayerNorm``, ``RMSNorm`` or ``none`` on the mixing output.
        token_norm: ``RMSNorm``, ``LayerNorm`` or ``none`` over each token before the P-FFN.
        ffn_activation: ``GLU`` (RankElastor), ``GELU`` (RankMixer) or ``ReLU``.
        ffn_hidden_units: widths inside every per-token FFN.
        expansion_rate: r of the GLU layers.
        glu_form: ``release`` (at r = 1 the release's GLU without W_down, S tied to R) or
            ``paper`` (Eq. 4 at every r).
        ffn_inner_norm: per-token RMSNorm inside the FFN.
        ffn_dropout: dropout inside the FFN.
        ffn_norm: ``LayerNorm``, ``RMSNorm`` or ``none`` after the FFN.
        norm_eps: epsilon of every RMSNorm (1e-12 in the release; null for torch's default).
        pred_head: ``mlp`` (flatten -> MLP) or ``mean`` (mean of all entries).
        head_hidden_units: hidden widths of the MLP head; null means [2*T*D].
        head_dropout: dropout in the MLP head (0 in the release).

    Example:
        >>> model = TokenMixingModel(feature_map, embedding_dim=8, num_tokens=4, token_dim=16)
        >>> model(batch)["y_pred"].shape       # (B, 1)

    Shapes: batch dict of (B,) / (B, L) tensors -> y_pred (B, 1).
    """

    def __init__(self, feature_map, model_id: str = "TokenMixingModel", gpu: int = -1,
                 embedding_dim: int = 10,
                 num_tokens: int = 16,
                 token_dim: int = 16,
                 num_blocks: int = 2,
                 tokenizer: Optional[str] = "matrix",
                 tokenizer_hidden_units: Sequence[int] = (500,),
                 tokenizer_activation: str = "ReLU",
                 tokenizer_norm: bool = True,
                 tokenizer_dropout: float = 0.1,
                 token_mixing: str = "full",
                 num_heads: Optional[int] = None,
                 kronecker_blocks: Optional[int] = None,
                 mixing_input_norm: bool = True,
                 mixing_norm: Optional[str] = None,
                 token_norm: Optional[str] = "RMSNorm",
                 ffn_activation: str = "GLU",
                 ffn_hidden_units: Sequence[int] = (64, 64),
                 expansion_rate: float = 3.0,
                 glu_form: str = "release",
                 ffn_inner_norm: bool = True,
                 ffn_dropout: float = 0.0,
                 ffn_norm: Optional[str] = None,
                 norm_eps: Optional[float] = RELEASE_NORM_EPS,
                 pred_head: str = "mlp",
                 head_hidden_units: Optional[Sequence[int]] = None,
                 head_dropout: float = 0.0,
                 **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        check_positive_int("num_blocks", num_blocks)
        token_mixing = check_choice("token_mixing", token_mixing, TOKEN_MIXINGS)
        pred_head = check_choice("pred_head", pred_head, PRED_HEADS)
        num_fields = feature_map.get_num_fields()
        odd = {name: spec["embedding_dim"] for name, spec in feature_map.features.items()
               if spec["type"] != "meta" and spec.get("embedding_dim", embedding_dim) != embedding_dim}
        check_arg(not odd, "embedding_dim", embedding_dim,
                  f"the size of every field's embedding (the (F, k) embedding matrix), but these features "
                  f"set their own: {odd}")

        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.tokenizer = Tokenizer(num_fields, embedding_dim, num_tokens, token_dim, mode=tokenizer,
                                   hidden_units=tokenizer_hidden_units, activation=tokenizer_activation,
                                   hidden_norm=tokenizer_norm, dropout=tokenizer_dropout, norm_eps=norm_eps)

        def mixing() -> nn.Module:
            input_norm = make_norm("RMSNorm" if mixing_input_norm else None, num_tokens * token_dim,
                                   "mixing_input_norm", norm_eps)
            if token_mixing == "full":
                return FullMixing(num_tokens, token_dim, input_norm=input_norm)
            if token_mixing == "kronecker":
                return KroneckerMixing(num_tokens, token_dim, kronecker_blocks, input_norm=input_norm)
            return BlockTransposeMixing(num_tokens, token_dim, num_heads)

        self.blocks = nn.ModuleList(
            TokenMixingBlock(mixing=mixing(),
                             mixing_norm=make_norm(mixing_norm, token_dim, "mixing_norm", norm_eps),
                             token_norm=make_norm(token_norm, token_dim, "token_norm", norm_eps),
                             ffn=PerTokenFFN(num_tokens, token_dim, ffn_hidden_units, activation=ffn_activation,
                                             expansion_rate=expansion_rate, inner_norm=ffn_inner_norm,
                                             dropout=ffn_dropout, norm_eps=norm_eps, glu_form=glu_form),
                             ffn_norm=make_norm(ffn_norm, token_dim, "ffn_norm", norm_eps))
            for _ in range(num_blocks))

        if pred_head == "mlp":
            hidden = [2 * num_tokens * token_dim] if head_hidden_units is None else list(head_hidden_units)
            self.head = TokenMLPHead(num_tokens * token_dim, hidden, dropout=head_dropout)
        else:
            self.head = TokenMeanHead()
        self.finalize_model()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.tap("emb", self.embedding_layer(X))              # (B, F, k)
        tokens = self.tap("tokens", self.tokenizer(feature_emb))            # (B, T, D)
        for index, block in enumerate(self.blocks):
            tokens = self.tap(f"block_{index}_mix", block.mix(tokens))      # (B, T, D)
            tokens = self.tap(f"block_{index}_ffn", block.transform(tokens))  # (B, T, D)
        y_pred = self.output_activation(self.head(tokens))                  # (B, 1)
        return {"y_pred": y_pred}
