"""WuKong: stacked factorization machines (Zhang et al., "Wukong: Towards a Scaling
Law for Large-Scale Recommendation", ICML 2024), with single- and multi-embedding
variants as compared in the RoBlock paper.

One interaction layer i maps X_i (n_i embeddings of size D) to X_{i+1}:

    FM(X_i)      = X_i X_i^T Y_i                        # (n_i, r)   optimized FM, Y_i: (n_i, r)
    FMB_i(X_i)   = reshape(MLP(LN(flatten(FM(X_i)))))   # (n_F, D)
    LCB_i(X_i)   = W_L X_i                              # (n_L, D)   W_L: (n_L, n_i)
    X_{i+1}      = LN(concat(FMB_i(X_i), LCB_i(X_i)) + P_i X_i)   # (n_F + n_L, D)

(r is the projection rank the WuKong paper calls k; here k is the RoBlock
paper's base embedding size.) X_0 is the (F, D) field-embedding matrix.

P_i is the identity when n_i = n_F + n_L and a learned (n_F + n_L, n_i) projection
otherwise. The prediction is y = sigmoid(MLP(flatten(X_l))).

``variant: fuxictr`` is instead FuxiCTR's WuKong as released in FuxiCTR 2.3.4
(reczoo/FuxiCTR model_zoo/WuKong), the implementation the RoBlock paper ran
(its appendix A.4.2). Every layer keeps the F x D field matrix:

    FM(X)   = X X^T Y                                    # (F, r)
    FMB(X)  = ReLU(MLP(LN(flatten(FM(X)))))              # (d_F,)    a flat vector
    LCB(X)  = Dropout(W_C vec(X) + b_C)                  # (d_C,)    compresses the flattened X
    X'      = LN(vec(X) + W_T [FMB(X); LCB(X)] + b_T)    # (F*D,) read back as (F, D)

with one LayerNorm over all F*D entries and no dropout in the FMB or the final
MLP.

Single embedding (SE) at scale s: one table of size s*k and one stack of width
D = s*k. Multi-embedding (ME, Guo et al. 2024): s tables of size k, each feeding
its own copy of the whole interaction stack (D = k); every layer runs the s
copies in one vectorised call, and the copies' outputs are concatenated before
the final MLP.
"""

from __future__ import annotations

from functools import partial
from typing import Optional, Sequence

import torch
from torch import nn
from fuxictr.pytorch.layers import MLP_Block

from fuxictr_ext.backbones.embedding_sets import EmbeddingSetStack
from fuxictr_ext.layers.multi_embedding import EmbeddingLayout, MultiEmbeddingInteraction
from fuxictr_ext.registry import register_model


class FactorizationMachineBlock(nn.Module):
    """FMB(X) = reshape(MLP(LN(flatten(X X^T Y)))) (WuKong sections 3.4 and 3.6).

    With ``rank`` r the optimized FM computes X (X^T Y) with a learned Y: (n, r) in
    O(n r D); with ``rank=None`` Y is the identity and the block sees the full X X^T.

    Args:
        num_inputs: n, embeddings entering the block.
        embedding_dim: D.
        num_outputs: n_F, embeddings produced.
        rank: r, columns of the projection Y; None for the full n x n FM.
        hidden_units: hidden widths of the block's MLP.
        hidden_activations: MLP activation.
        dropout: dropout after every hidden MLP layer.

    Shapes: (B, n, D) -> (B, n_F, D).

    Example:
        >>> fmb = FactorizationMachineBlock(39, 10, num_outputs=16, rank=8, hidden_units=[400, 400])
        >>> fmb(torch.randn(4, 39, 10)).shape          # (4, 16, 10)
    """

    def __init__(self, num_inputs: int, embedding_dim: int, num_outputs: int, rank: Optional[int],
                 hidden_units: Sequence[int], hidden_activations: str = "ReLU", dropout: float = 0.0):
        super().__init__()
        self.num_outputs = num_outputs
        self.embedding_dim = embedding_dim
        fm_columns = num_inputs if rank is None else rank
        # Y acts on X^T over the embedding axis: (B, D, n) -> (B, D, r); the identity keeps X^T.
        self.projection = nn.Identity() if rank is None else nn.Linear(num_inputs, rank, bias=False)
        self.norm = nn.LayerNorm(num_inputs * fm_columns)
        self.mlp = MLP_Block(input_dim=num_inputs * fm_columns,
                             output_dim=num_outputs * embedding_dim,
                             hidden_units=list(hidden_units),
                             hidden_activations=hidden_activations,
                             dropout_rates=dropout)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        projected = self.projection(X.transpose(1, 2))          # (B, D, r)
        fm = torch.matmul(X, projected)                         # (B, n, r) = X X^T Y
        h = self.mlp(self.norm(fm.flatten(start_dim=1)))        # (B, n_F * D)
        return h.reshape(-1, self.num_outputs, self.embedding_dim)   # (B, n_F, D)


class LinearCompressBlock(nn.Module):
    """LCB(X) = W_L X: a linear recombination of n embeddings into n_out embeddings
    (WuKong section 3.5). Also the residual projection when the embedding count changes.

    Shapes: (B, n, D) -> (B, n_out, D).
    """

    def __init__(self, num_inputs: int, num_outputs: int):
        super().__init__()
        self.weight = nn.Linear(num_inputs, num_outputs, bias=False)   # W_L: (n_out, n)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.weight(X.transpose(1, 2)).transpose(1, 2)         # (B, n_out, D)


class WuKongLayer(nn.Module):
    """X_{i+1} = LN(concat(FMB(X_i), LCB(X_i)) + P X_i) (WuKong section 3.3).

    P is the identity when n_i = n_F + n_L, else a learned linear compression.
    The LayerNorm normalizes every embedding over its D entries.

    Shapes: (B, n_i, D) -> (B, n_F + n_L, D).
    """

    def __init__(self, num_inputs: int, embedding_dim: int, num_fmb_outputs: int,
                 num_lcb_outputs: int, fm_rank: Optional[int], fmb_hidden_units: Sequence[int],
                 hidden_activations: str = "ReLU", dropout: float = 0.0):
        super().__init__()
        num_outputs = num_fmb_outputs + num_lcb_outputs
        self.fmb = FactorizationMachineBlock(num_inputs, embedding_dim, num_fmb_outputs, fm_rank,
                                             fmb_hidden_units, hidden_activations, dropout)
        self.lcb = LinearCompressBlock(num_inputs, num_lcb_outputs)
        self.residual = (nn.Identity() if num_inputs == num_outputs
                         else LinearCompressBlock(num_inputs, num_outputs))
        self.norm = nn.LayerNorm(embedding_dim)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        interactions = torch.cat([self.fmb(X), self.lcb(X)], dim=1)   # (B, n_F + n_L, D)
        return self.norm(interactions + self.residual(X))             # (B, n_F + n_L, D)


class FuxiCTRWuKongLayer(nn.Module):
    """One layer of FuxiCTR 2.3.4's WuKong: X' = LN(vec X + W_T [FMB(X); LCB(X)]), read back as (F, D).

        FM(X)  = X (X^T Y)                               Y: (F, r), initialised N(0, 1) as FuxiCTR's randn
        FMB(X) = ReLU(MLP(LN(flatten(FM(X)))))           hidden ReLU layers, then a linear to d_F
        LCB(X) = Dropout(W_C vec(X) + b_C)               W_C: (d_C, F*D)
        X'     = LN(vec(X) + W_T [FMB(X); LCB(X)] + b_T) W_T: (F*D, d_F + d_C), LN over F*D

    Args:
        num_fields: F.
        embedding_dim: D.
        fm_rank: r, columns of Y (FuxiCTR's ``project_dim``).
        fmb_hidden_units: hidden widths of the FMB's MLP (FuxiCTR's ``fmb_units``).
        fmb_dim: d_F, the FMB's output width.
        compression_dim: d_C, the LCB's output width.
        lcb_dropout: dropout on the LCB output (FuxiCTR's ``dropout_rate``, 0.2).
        hidden_activations: activation of the FMB's hidden layers.

    Shapes: (B, F, D) -> (B, F, D).

    Example:
        >>> layer = FuxiCTRWuKongLayer(39, 10, fm_rank=8, fmb_hidden_units=[400, 400], fmb_dim=40,
        ...                            compression_dim=40)
        >>> layer(torch.randn(4, 39, 10)).shape          # (4, 39, 10)
    """

    def __init__(self, num_fields: int, embedding_dim: int, fm_rank: int, fmb_hidden_units: Sequence[int],
                 fmb_dim: int, compression_dim: int, lcb_dropout: float = 0.2, hidden_activations: str = "ReLU"):
        super().__init__()
        flat = num_fields * embedding_dim
        self.projection = nn.Parameter(torch.empty(num_fields, fm_rank))         # Y
        self.fm_norm = nn.LayerNorm(num_fields * fm_rank)
        self.fmb_mlp = MLP_Block(input_dim=num_fields * fm_rank, output_dim=fmb_dim,
                                 hidden_units=list(fmb_hidden_units), hidden_activations=hidden_activations,
                                 output_activation="ReLU")
        self.lcb = nn.Sequential(nn.Linear(flat, compression_dim), nn.Dropout(lcb_dropout))   # W_C, b_C
        self.transform = nn.Linear(fmb_dim + compression_dim, flat)             # W_T, b_T
        self.norm = nn.LayerNorm(flat)

    def init_weights(self) -> None:
        nn.init.normal_(self.projection)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        flat = X.flatten(start_dim=1)                                            # (B, F*D)
        fm = torch.matmul(X, torch.matmul(X.transpose(1, 2), self.projection))  # (B, F, r)
        fmb = self.fmb_mlp(self.fm_norm(fm.flatten(start_dim=1)))               # (B, d_F)
        lcb = self.lcb(flat)                                                     # (B, d_C)
        out = self.norm(flat + self.transform(torch.cat([fmb, lcb], dim=-1)))   # (B, F*D)
        return out.view_as(X)                                                    # (B, F, D)


WUKONG_VARIANTS = ("paper", "fuxictr")


@register_model
class WuKong(EmbeddingSetStack):
    """WuKong (Zhang et al. 2024) on single (SE) or multi-embedding (ME) input.

    Args:
        feature_map: FuxiCTR FeatureMap.
        embedding_dim: k, the base embedding size (10 in the RoBlock paper).
        num_embeddings: s, the scale factor: SE embeds into one table of size s*k
            and runs one stack of width D = s*k; ME embeds into s tables of size k
            and runs s stacks of width D = k, one per table.
        embedding_mode: ``"single"`` (SE) or ``"multi"`` (ME).
        num_layers: l, stacked WuKong layers.
        num_fmb_outputs: n_F, embeddings produced by every FMB.
        num_lcb_outputs: n_L, embeddings produced by every LCB.
        fm_rank: r, columns of the optimized FM's projection Y (n x r; the WuKong
            paper's k); null for the full X X^T.
        fmb_hidden_units: hidden widths of the MLP inside every FMB.
        mlp_hidden_units: hidden widths of the final MLP.
        hidden_activations: activation of every MLP.
        net_dropout: dropout after every hidden MLP layer (``paper``; FuxiCTR's form reads none).
        variant: ``paper`` (the WuKong paper, the layers above) or ``fuxictr`` (FuxiCTR 2.3.4's
            :class:`FuxiCTRWuKongLayer`, which the RoBlock paper ran). ``fuxictr`` reads
            ``fmb_dim``, ``compression_dim`` and ``lcb_dropout`` instead of ``num_fmb_outputs``,
            ``num_lcb_outputs`` and ``net_dropout``, and needs an integer ``fm_rank``.
        fmb_dim: d_F, FMB output width (``fuxictr``).
        compression_dim: d_C, LCB output width (``fuxictr``).
        lcb_dropout: dropout of the LCB output (``fuxictr``; FuxiCTR's ``dropout_rate``).

    Example:
        >>> model = WuKong(feature_map, embedding_dim=10, num_embeddings=2, embedding_mode="multi",
        ...                num_layers=3, num_fmb_outputs=8, num_lcb_outputs=8, fm_rank=4)
        >>> model(batch)["y_pred"].shape          # (B, 1)

    Shapes: batch dict of (B,) tensors -> y_pred (B, 1). Stages ``layer_{i}_in``,
    i = 0..l-1: (B, n_i, s*k), the input of layer i with the ME stacks' embedding
    sets concatenated per embedding (n_0 = F, later n_i = n_F + n_L).
    """

    def __init__(self, feature_map, model_id: str = "WuKong", gpu: int = -1,
                 embedding_dim: int = 10,
                 num_embeddings: int = 1,
                 embedding_mode: str = "single",
                 num_layers: int = 2,
                 num_fmb_outputs: int = 16,          # n_F
                 num_lcb_outputs: int = 16,          # n_L
                 fm_rank: Optional[int] = 8,         # r: Y is (n x r)
                 fmb_hidden_units: Sequence[int] = (400, 400),
                 mlp_hidden_units: Sequence[int] = (400, 400),
                 hidden_activations: str = "ReLU",
                 net_dropout: float = 0.0,
                 variant: str = "paper",
                 fmb_dim: int = 40,                  # d_F (fuxictr)
                 compression_dim: int = 40,          # d_C (fuxictr)
                 lcb_dropout: float = 0.2,           # fuxictr
                 **kwargs):
        layout = EmbeddingLayout(embedding_dim, num_embeddings, embedding_mode)
        if variant not in WUKONG_VARIANTS:
            raise ValueError(f"variant={variant!r} must be one of {list(WUKONG_VARIANTS)}")
        if variant == "fuxictr":
            for key, value in (("fmb_dim", fmb_dim), ("compression_dim", compression_dim), ("fm_rank", fm_rank)):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"variant='fuxictr' needs {key} >= 1, got {value!r}")
        for key, value in (("num_layers", num_layers), ("num_fmb_outputs", num_fmb_outputs),
                           ("num_lcb_outputs", num_lcb_outputs)):
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if fm_rank is not None and fm_rank < 1:
            raise ValueError(f"fm_rank must be >= 1 or null (full FM), got {fm_rank}")
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        self.build_embedding(feature_map, layout.set_dim, layout.num_sets)
        if variant == "fuxictr":
            layer_inputs = [feature_map.num_fields] * (num_layers + 1)
            layer_factories = [partial(FuxiCTRWuKongLayer, feature_map.num_fields, self.set_dim, fm_rank,
                                       fmb_hidden_units, fmb_dim, compression_dim, lcb_dropout, hidden_activations)
                               ] * num_layers
            head_dropout = 0.0
        else:
            layer_inputs = [feature_map.num_fields] + [num_fmb_outputs + num_lcb_outputs] * num_layers
            layer_factories = [partial(WuKongLayer, n_i, self.set_dim, num_fmb_outputs, num_lcb_outputs,
                                       fm_rank, fmb_hidden_units, hidden_activations, net_dropout)
                               for n_i in layer_inputs[:-1]]
            head_dropout = net_dropout
        self.layers = nn.ModuleList(
            MultiEmbeddingInteraction.replicate(factory, self.num_sets, vectorize=self.num_sets > 1)
            for factory in layer_factories)
        self.build_head(layer_inputs[-1], mlp_hidden_units, hidden_activations, head_dropout)
        self.finalize_model()
