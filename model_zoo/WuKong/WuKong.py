"""WuKong: stacked factorization machines (Zhang et al., "Wukong: Towards a Scaling
Law for Large-Scale Recommendation", ICML 2024), in single- and multi-embedding
form as compared in the RoBlock paper; two models: ``WuKong`` (the WuKong paper's
layers) and ``WuKongFuxiCTR`` (FuxiCTR 2.3.4's release, which the RoBlock paper ran).

One interaction layer i maps X_i (n_i embeddings of size D) to X_{i+1}:

    FM(X_i)      = X_i X_i^T Y_i                        # (n_i, r)   optimized FM, Y_i: (n_i, r)
    FMB_i(X_i)   = reshape(MLP(LN(flatten(FM(X_i)))))   # (n_F, D)
    LCB_i(X_i)   = W_L X_i                              # (n_L, D)   W_L: (n_L, n_i)
    X_{i+1}      = LN(concat(FMB_i(X_i), LCB_i(X_i)) + P_i X_i)   # (n_F + n_L, D)

(r is the projection rank the WuKong paper calls k; here k is the RoBlock
paper's base embedding size.) X_0 is the (F, D) field-embedding matrix.

P_i is the identity when n_i = n_F + n_L and a learned (n_F + n_L, n_i) projection
otherwise. The prediction is y = sigmoid(MLP(flatten(X_l))).

``WuKongFuxiCTR`` is instead FuxiCTR's WuKong as released in FuxiCTR 2.3.4
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
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from fuxictr.pytorch.layers import MLP_Block

from fuxictr_ext.backbones.embedding_sets import EmbeddingSetStack
from fuxictr_ext.config import check_arg, check_positive_int, check_probability
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


class _WuKongStack(EmbeddingSetStack):
    """What both WuKong forms share: SE / ME embedding sets, ``num_layers`` interaction layers
    (each replicated over the embedding sets and run as one vectorised call), the MLP head.

    Shapes: batch dict of (B,) tensors -> y_pred (B, 1). Stages ``layer_{i}_in``,
    i = 0..l-1: (B, n_i, s*k), the input of layer i with the ME stacks' embedding
    sets concatenated per embedding.
    """

    def build_stack(self, feature_map, layout: EmbeddingLayout, layer_factory: Callable[[int], nn.Module],
                    layer_outputs: Sequence[int], mlp_hidden_units: Sequence[int], hidden_activations: str,
                    head_dropout: float) -> None:
        """Embedding, layers and head. ``layer_factory(n_i)`` builds one copy of layer i from its
        input count n_i; ``layer_outputs`` are n_1..n_l (n_0 = F)."""
        self.build_embedding(feature_map, layout.set_dim, layout.num_sets)
        layer_inputs = [feature_map.num_fields] + list(layer_outputs)
        self.layers = nn.ModuleList(
            MultiEmbeddingInteraction.replicate(partial(layer_factory, n_i), self.num_sets,
                                                vectorize=self.num_sets > 1)
            for n_i in layer_inputs[:-1])
        self.build_head(layer_inputs[-1], mlp_hidden_units, hidden_activations, head_dropout)
        self.finalize_model()


@register_model
class WuKong(_WuKongStack):
    """WuKong (Zhang et al. 2024), the WuKong paper's layers, on single (SE) or multi-embedding (ME) input.

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
        net_dropout: dropout after every hidden layer of the FMB MLPs and the final MLP.

    FuxiCTR 2.3.4's form, which the RoBlock paper ran, is :class:`WuKongFuxiCTR`.

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
                 **kwargs):
        check_arg("variant" not in kwargs, "variant", kwargs.get("variant"),
                  "left out: the two forms are two models now, `model: WuKong` (the WuKong paper's) "
                  "and `model: WuKongFuxiCTR` (FuxiCTR 2.3.4's, formerly variant: fuxictr)")
        layout = EmbeddingLayout(embedding_dim, num_embeddings, embedding_mode)
        check_positive_int("num_layers", num_layers)
        check_positive_int("num_fmb_outputs", num_fmb_outputs)
        check_positive_int("num_lcb_outputs", num_lcb_outputs)
        check_positive_int("fm_rank", fm_rank, optional=True)
        check_probability("net_dropout", net_dropout)
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        num_outputs = num_fmb_outputs + num_lcb_outputs
        self.build_stack(feature_map, layout,
                         partial(WuKongLayer, embedding_dim=layout.set_dim, num_fmb_outputs=num_fmb_outputs,
                                 num_lcb_outputs=num_lcb_outputs, fm_rank=fm_rank,
                                 fmb_hidden_units=fmb_hidden_units, hidden_activations=hidden_activations,
                                 dropout=net_dropout),
                         [num_outputs] * num_layers, mlp_hidden_units, hidden_activations, net_dropout)


@register_model
class WuKongFuxiCTR(_WuKongStack):
    """WuKong as released in FuxiCTR 2.3.4 (reczoo/FuxiCTR model_zoo/WuKong, the code the RoBlock
    paper ran), on single (SE) or multi-embedding (ME) input: :class:`FuxiCTRWuKongLayer` layers
    that keep the F x D field matrix, then an MLP head without dropout.

    Args:
        feature_map: FuxiCTR FeatureMap.
        embedding_dim: k, the base embedding size (10 in the RoBlock paper).
        num_embeddings: s, the scale factor (SE: one table of size s*k; ME: s tables of size k,
            one stack each).
        embedding_mode: ``"single"`` (SE) or ``"multi"`` (ME).
        num_layers: l, stacked layers.
        fm_rank: r, columns of the FM projection Y (FuxiCTR's ``project_dim``).
        fmb_hidden_units: hidden widths of every FMB's MLP (FuxiCTR's ``fmb_units``).
        fmb_dim: d_F, FMB output width.
        compression_dim: d_C, LCB output width.
        lcb_dropout: dropout of the LCB output (FuxiCTR's ``dropout_rate``), the model's only dropout.
        mlp_hidden_units: hidden widths of the final MLP.
        hidden_activations: activation of every MLP.

    Example:
        >>> model = WuKongFuxiCTR(feature_map, embedding_dim=10, num_embeddings=2, embedding_mode="multi",
        ...                       num_layers=3, fm_rank=8, fmb_dim=40, compression_dim=40)
        >>> model(batch)["y_pred"].shape          # (B, 1)

    Shapes: batch dict of (B,) tensors -> y_pred (B, 1). Stages ``layer_{i}_in``,
    i = 0..l-1: (B, F, s*k), the input of layer i with the ME stacks' embedding
    sets concatenated per field.
    """

    def __init__(self, feature_map, model_id: str = "WuKongFuxiCTR", gpu: int = -1,
                 embedding_dim: int = 10,
                 num_embeddings: int = 1,
                 embedding_mode: str = "single",
                 num_layers: int = 2,
                 fm_rank: int = 8,                   # r: Y is (F x r)
                 fmb_hidden_units: Sequence[int] = (400, 400),
                 fmb_dim: int = 40,                  # d_F
                 compression_dim: int = 40,          # d_C
                 lcb_dropout: float = 0.2,
                 mlp_hidden_units: Sequence[int] = (400, 400),
                 hidden_activations: str = "ReLU",
                 **kwargs):
        layout = EmbeddingLayout(embedding_dim, num_embeddings, embedding_mode)
        check_positive_int("num_layers", num_layers)
        check_positive_int("fm_rank", fm_rank)
        check_positive_int("fmb_dim", fmb_dim)
        check_positive_int("compression_dim", compression_dim)
        check_probability("lcb_dropout", lcb_dropout)
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        num_fields = feature_map.num_fields
        self.build_stack(feature_map, layout,
                         partial(FuxiCTRWuKongLayer, embedding_dim=layout.set_dim, fm_rank=fm_rank,
                                 fmb_hidden_units=fmb_hidden_units, fmb_dim=fmb_dim,
                                 compression_dim=compression_dim, lcb_dropout=lcb_dropout,
                                 hidden_activations=hidden_activations),
                         [num_fields] * num_layers, mlp_hidden_units, hidden_activations, head_dropout=0.0)
