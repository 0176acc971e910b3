"""Rank-aware forms of trained vanilla layers, for serving (Tkach, "Context Features Are
Cheap", section 3).

Every layer here takes a rank-2 context part, computed once per request, and a
rank-3 target part, computed per candidate, and a ``request_index`` (C,) that
names each candidate's request, as the layers of :mod:`fuxictr_ext.layers.rank_aware`
(which models train with, and which these reuse) do.

Identity-equivalent decompositions of existing layers:

* :class:`RankAwareFMPairs` - FM pairs, eqs. 4-6 (FM_ctx once, FM_tgt in one
  asymmetric matmul).
* :class:`RankAwareLogisticRegression` - fuxictr's LR with the context weights summed once.
* :class:`BroadcastMLP` / :class:`SumThenMLP` - a trained MLP run per candidate
  (the first-layer split is :class:`~fuxictr_ext.layers.rank_aware.RankAwareMLP`).
* :class:`RankAwareCrossNetV2` - a DCNv2 cross network with layer 0 split, eq. 14.
* :class:`RankAwareSelfAttention` - self-attention layer 0 with the context-context
  block once per request and a block-wise log-sum-exp softmax, eqs. 16-18; it
  decomposes :class:`~fuxictr_ext.layers.common.MultiHeadSelfAttention`, AutoInt's
  self-attention layer.

Shapes: R requests, C candidates, K context fields, M target fields, F = K + M,
D embedding size, H heads, A attention size (H * head size), U units.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from torch import nn

from ..layers.common import MultiHeadSelfAttention
from ..layers.rank_aware import RankAwareUnsupportedError, RankSplitDense, embed_fields, gather_requests


def count_requests(context: Dict[str, torch.Tensor], request_index: torch.Tensor) -> int:
    """R: the rows of the context inputs, or (with no context fields) the last request index + 1."""
    if context:
        return next(iter(context.values())).size(0)
    return int(request_index[-1]) + 1 if request_index.numel() else 0


def split_order_permutation(context_columns: torch.Tensor, target_columns: torch.Tensor) -> torch.Tensor:
    """For each vanilla column, its position in ``[context columns; target columns]``.

    ``torch.cat([x_c, x_t], -1)[:, perm]`` restores the vanilla column order.
    """
    split_order = torch.cat([context_columns, target_columns])
    if not torch.equal(torch.sort(split_order).values, torch.arange(split_order.numel())):
        raise ValueError("context and target columns must partition the vanilla columns exactly")
    return torch.argsort(split_order)


def field_columns(positions: torch.Tensor, width: int) -> torch.Tensor:
    """Flattened columns of fields at ``positions`` when every field is ``width`` wide."""
    return (positions.view(-1, 1) * width + torch.arange(width).view(1, -1)).view(-1)


# ---------------------------------------------------------------------------- embeddings
class FieldSubsetEmbedding(nn.Module):
    """The embeddings of some fields of a fuxictr ``FeatureEmbedding``, stacked in a given order.

    Args:
        embedding_layer: the model's ``FeatureEmbedding`` (its tables are shared, not copied).
        fields: the fields to embed, in output order.

    Shapes: forward(inputs, num_rows): ``{field: (rows,) or (rows, L)}`` -> (rows, len(fields), D).
    """

    def __init__(self, embedding_layer: FeatureEmbedding, fields: Sequence[str]):
        super().__init__()
        self.embedding_layer = embedding_layer
        self.fields = tuple(fields)

    def forward(self, inputs: Dict[str, torch.Tensor], num_rows: int) -> torch.Tensor:
        return embed_fields(self.embedding_layer, inputs, self.fields)  # (rows, n, D)


class NoFieldEmbedding(nn.Module):
    """The embedding of an empty field set: (rows, 0, D) zeros of the embedding tables' dtype."""

    def __init__(self, embedding_dim: int, dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.register_buffer("anchor", torch.zeros((), dtype=dtype), persistent=False)

    def forward(self, inputs: Dict[str, torch.Tensor], num_rows: int) -> torch.Tensor:
        return self.anchor.new_zeros(num_rows, 0, self.embedding_dim)


def field_embedding(embedding_layer: FeatureEmbedding, fields: Sequence[str], embedding_dim: int) -> nn.Module:
    """:class:`FieldSubsetEmbedding` of ``fields``, or :class:`NoFieldEmbedding` when there are none."""
    if fields:
        return FieldSubsetEmbedding(embedding_layer, fields)
    return NoFieldEmbedding(embedding_dim, next(embedding_layer.parameters()).dtype)


def table_width(embedding_layer: FeatureEmbedding, fields: Sequence[str]) -> int:
    """The common embedding width D of ``fields`` (embedding or numeric tables).

    Raises:
        RankAwareUnsupportedError: another kind of table (pretrained, pre-embedded
            input) or fields of different widths.
    """
    widths = {}
    for name in fields:
        table = embedding_layer.embedding_layer.embedding_layers[name]
        if isinstance(table, nn.Embedding):
            widths[name] = table.embedding_dim
        elif isinstance(table, nn.Linear):
            widths[name] = table.out_features
        else:
            raise RankAwareUnsupportedError(f"field {name!r} is embedded by {table.__class__.__name__}; the rank-aware "
                                            "paths cover nn.Embedding and numeric (Linear) tables")
    if len(set(widths.values())) != 1:
        raise RankAwareUnsupportedError(f"fields need one common embedding width, got {widths}")
    return next(iter(widths.values()))


class RankAwareLogisticRegression(nn.Module):
    """fuxictr's ``LogisticRegression`` with the context fields' weights summed once per request.

        y_lr = sum_{k in ctx} w_k  (+)  sum_{m in tgt} w_m + b

    Args:
        lr_layer: the trained ``LogisticRegression`` (its weight tables are shared).
        context_fields, target_fields: the partition of its fields.

    Shapes: forward(context, candidates, request_index (C,)) -> (C, 1).
    """

    def __init__(self, lr_layer: nn.Module, context_fields: Sequence[str], target_fields: Sequence[str]):
        super().__init__()
        self.context_weights = field_embedding(lr_layer.embedding_layer, context_fields, 1)
        self.target_weights = field_embedding(lr_layer.embedding_layer, target_fields, 1)
        weight = next(lr_layer.parameters())
        bias = lr_layer.bias.detach().clone() if lr_layer.bias is not None else weight.new_zeros(1)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, context: Dict[str, torch.Tensor], candidates: Dict[str, torch.Tensor],
                request_index: torch.Tensor) -> torch.Tensor:
        once = self.context_weights(context, count_requests(context, request_index)).sum(dim=1)  # (R, 1)
        per_candidate = self.target_weights(candidates, request_index.size(0)).sum(dim=1)         # (C, 1)
        return gather_requests(once, request_index) + per_candidate + self.bias


# ---------------------------------------------------------------------------- FM pairs
def fm_pair_columns(context_positions: torch.Tensor, target_positions: torch.Tensor):
    """Vanilla pair indices of the rank-aware FM outputs.

    The vanilla FM vector (eq. 3) lists pairs (i, j), i < j, row-major over the F
    fields, as fuxictr's ``InnerProductInteraction(output="inner_product")`` does.

    Returns:
        (context_pairs, target_pairs): long tensors of length K(K-1)/2 and
        K*M + M(M-1)/2 giving, for each entry of FM_ctx and FM_tgt as
        :class:`RankAwareFMPairs` returns them, its index in the vanilla vector.
    """
    num_fields = context_positions.numel() + target_positions.numel()

    def pair_index(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        lo, hi = torch.minimum(i, j), torch.maximum(i, j)
        return lo * num_fields - lo * (lo + 1) // 2 + (hi - lo - 1)

    ci, cj = torch.triu_indices(context_positions.numel(), context_positions.numel(), offset=1)
    ti, tj = torch.triu_indices(target_positions.numel(), target_positions.numel(), offset=1)
    cross_t, cross_c = torch.meshgrid(target_positions, context_positions, indexing="ij")  # (M, K)
    context_pairs = pair_index(context_positions[ci], context_positions[cj])
    target_pairs = torch.cat([pair_index(cross_t.reshape(-1), cross_c.reshape(-1)),
                              pair_index(target_positions[ti], target_positions[tj])])
    return context_pairs, target_pairs


class RankAwareFMPairs(nn.Module):
    """FM pairwise inner products split by rank (eqs. 4-6, Table 1).

        FM_ctx = [<e_ci, e_cj>]_{i<j<=K}                       # once per request
        FM_tgt = [<e_tm, e_ck>]_{m,k} ; [<e_tm, e_tn>]_{m<n}   # per candidate

    FM_ctx is the upper triangle of the K x K context Gram matrix; FM_tgt is one
    asymmetric matmul of the M target embeddings against ``[context; targets]``.

    Args:
        num_context: K.
        num_target: M.

    Shapes: forward(e_c (R, K, D), e_t (C, M, D), request_index (C,)) ->
        (FM_ctx (R, K(K-1)/2), FM_tgt (C, K*M + M(M-1)/2)); FM_tgt lists the
        context-target pairs as m*K + k, then the target-target upper triangle.

    Example:
        >>> pairs = RankAwareFMPairs(num_context=8, num_target=4)
        >>> fm_ctx, fm_tgt = pairs(e_c, e_t, request_index)
    """

    def __init__(self, num_context: int, num_target: int):
        super().__init__()
        self.num_context = num_context
        self.register_buffer("context_triu", torch.triu_indices(num_context, num_context, offset=1),
                             persistent=False)
        self.register_buffer("target_triu", torch.triu_indices(num_target, num_target, offset=1),
                             persistent=False)

    def forward(self, e_c: torch.Tensor, e_t: torch.Tensor, request_index: torch.Tensor):
        gram = torch.bmm(e_c, e_c.transpose(1, 2))                              # (R, K, K) once
        fm_ctx = gram[:, self.context_triu[0], self.context_triu[1]]            # (R, K(K-1)/2)
        stacked = torch.cat([gather_requests(e_c, request_index), e_t], dim=1)  # (C, K+M, D)
        products = torch.bmm(e_t, stacked.transpose(1, 2))                      # (C, M, K+M)
        context_target = products[:, :, :self.num_context].flatten(start_dim=1)  # (C, M*K)
        target_target = products[:, :, self.num_context:][:, self.target_triu[0], self.target_triu[1]]
        return fm_ctx, torch.cat([context_target, target_target], dim=1)        # (C, K*M + M(M-1)/2)


# ---------------------------------------------------------------------------- FC
class BroadcastMLP(nn.Module):
    """A trained MLP run per candidate on ``[x_c; x_t]`` restored to the vanilla column order.

    The FC stack of a model whose interaction layer alone is rank-aware (Table 3's "FM" row).

    Shapes: forward(x_c (R, |x_c|), x_t (C, |x_t|), request_index (C,)) -> (C, out).
    """

    def __init__(self, mlp: nn.Module, context_columns: torch.Tensor, target_columns: torch.Tensor):
        super().__init__()
        self.mlp = mlp
        self.register_buffer("permutation", split_order_permutation(context_columns, target_columns),
                             persistent=False)

    def forward(self, x_c: torch.Tensor, x_t: torch.Tensor, request_index: torch.Tensor) -> torch.Tensor:
        x = torch.cat([gather_requests(x_c, request_index), x_t], dim=-1)  # (C, |x|) split order
        return self.mlp(x.index_select(1, self.permutation))                # vanilla order


class SumThenMLP(nn.Module):
    """A trained MLP run per candidate on ``x_c + x_t`` (NFM's pooled vector without a split first layer).

    Shapes: forward(x_c (R, D), x_t (C, D), request_index (C,)) -> (C, out).
    """

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.mlp = mlp

    def forward(self, x_c: torch.Tensor, x_t: torch.Tensor, request_index: torch.Tensor) -> torch.Tensor:
        return self.mlp(gather_requests(x_c, request_index) + x_t)


# ---------------------------------------------------------------------------- DCNv2
class RankAwareCrossNetV2(nn.Module):
    """A trained fuxictr ``CrossNetV2`` with cross layer 0 split by rank (eqs. 13-14).

        W_0 x_0 = W[:, ctx] x_0^c + W[:, tgt] x_0^t      # first term once per request
        x_1 = x_0 * (W_0 x_0 + b_0) + x_0
        x_{l+1} = x_0 * (W_l x_l + b_l) + x_l,  l >= 1    # as usual, per candidate

    W[:, ctx] holds the W_cc and W_tc blocks of eq. 14 (both read only x_0^c).

    Args:
        crossnet: the trained ``CrossNetV2`` (layers >= 1 are shared, not copied).
        context_columns: the columns of x_0 that are context, in x_c's order.
        target_columns: the columns of x_0 that are target, in x_t's order.

    Shapes: forward(x_c (R, d_c), x_t (C, d_t), request_index (C,)) -> x_L (C, d_c + d_t),
        columns in the vanilla order.
    """

    def __init__(self, crossnet: nn.Module, context_columns: torch.Tensor, target_columns: torch.Tensor):
        super().__init__()
        self.layer0 = RankSplitDense.from_linear(crossnet.cross_layers[0], context_columns, target_columns)
        self.deeper_layers = nn.ModuleList(crossnet.cross_layers[1:])
        self.register_buffer("permutation", split_order_permutation(context_columns, target_columns),
                             persistent=False)

    def forward(self, x_c: torch.Tensor, x_t: torch.Tensor, request_index: torch.Tensor) -> torch.Tensor:
        x_0 = torch.cat([gather_requests(x_c, request_index), x_t], dim=-1).index_select(1, self.permutation)
        x_l = x_0 + x_0 * self.layer0(x_c, x_t, request_index)    # (C, d) layer 0, eq. 14
        for layer in self.deeper_layers:
            x_l = x_l + x_0 * layer(x_l)                           # (C, d) eq. 13
        return x_l


# ---------------------------------------------------------------------------- attention
class RankAwareSelfAttention(nn.Module):
    """A trained :class:`MultiHeadSelfAttention` as layer 0 over rank-partitioned tokens (eqs. 16-18).

    Context projections Q_c, K_c, V_c and the context-context block are computed
    once per request: S_cc = Q_c K_c^T, its row log-sum-exp and its normalised
    output softmax(S_cc) V_c. Per candidate, a context query's row softmax over
    [K_c; K_t] is assembled FlashAttention-style from the two blocks:

        lse = logaddexp(lse_cc, lse_ct)
        out_c = exp(lse_cc - lse) * softmax(S_cc) V_c + exp(lse_ct - lse) * softmax(S_ct) V_t

    Target queries attend to [K_c; K_t] directly. Layers after this one see
    rank-mixed tokens and run as usual.

    Args:
        attention: the trained layer (its projections are shared, not copied).
        vanilla_from_split: (F,) for each vanilla token, its index in ``[context; target]``.

    Shapes: forward(e_c (R, K, D), e_t (C, M, D), request_index (C,)) -> (C, F, A), vanilla token order.
    """

    def __init__(self, attention: MultiHeadSelfAttention, vanilla_from_split: torch.Tensor):
        super().__init__()
        self.attention = attention
        self.register_buffer("permutation", vanilla_from_split, persistent=False)

    def forward(self, e_c: torch.Tensor, e_t: torch.Tensor, request_index: torch.Tensor) -> torch.Tensor:
        att = self.attention
        q_c, k_c, v_c = att.heads(att.W_q(e_c)), att.heads(att.W_k(e_c)), att.heads(att.W_v(e_c))  # (R, H, K, d)
        q_t, k_t, v_t = att.heads(att.W_q(e_t)), att.heads(att.W_k(e_t)), att.heads(att.W_v(e_t))  # (C, H, M, d)
        # Once per request: the context-context block.
        s_cc = torch.matmul(q_c, k_c.transpose(-1, -2)) / att.scale                 # (R, H, K, K)
        lse_cc = torch.logsumexp(s_cc, dim=-1, keepdim=True)                       # (R, H, K, 1)
        out_cc = torch.matmul(s_cc.softmax(dim=-1), v_c)                           # (R, H, K, d)
        # Per candidate: context queries against target keys, merged by log-sum-exp.
        s_ct = torch.matmul(gather_requests(q_c, request_index), k_t.transpose(-1, -2)) / att.scale  # (C, H, K, M)
        lse_ct = torch.logsumexp(s_ct, dim=-1, keepdim=True)                       # (C, H, K, 1)
        out_ct = torch.matmul(s_ct.softmax(dim=-1), v_t)                           # (C, H, K, d)
        lse_cc = gather_requests(lse_cc, request_index)                            # (C, H, K, 1)
        lse = torch.logaddexp(lse_cc, lse_ct)
        out_c = torch.exp(lse_cc - lse) * gather_requests(out_cc, request_index) + torch.exp(lse_ct - lse) * out_ct
        # Per candidate: target queries against all keys.
        keys = torch.cat([gather_requests(k_c, request_index), k_t], dim=2)         # (C, H, F, d)
        values = torch.cat([gather_requests(v_c, request_index), v_t], dim=2)       # (C, H, F, d)
        s_t = torch.matmul(q_t, keys.transpose(-1, -2)) / att.scale                 # (C, H, M, F)
        out_t = torch.matmul(s_t.softmax(dim=-1), values)                          # (C, H, M, d)
        attended = torch.cat([out_c, out_t], dim=2).index_select(2, self.permutation)  # (C, H, F, d)
        residual = torch.cat([gather_requests(att.W_res(e_c), request_index), att.W_res(e_t)], dim=1)
        concat = attended.transpose(1, 2).flatten(start_dim=2)                     # (C, F, A)
        return att.layer_norm(concat + residual.index_select(1, self.permutation)).relu()


