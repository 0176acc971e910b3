"""Layers of models built rank-aware (Tkach, "Context Features Are Cheap", sections 3-4).

A rank-aware layer takes a rank-2 context part, computed once per request, a rank-3
target part, computed per candidate, and a ``request_index`` (C,) that names each
candidate's request. Context-derived tensors are broadcast to the candidates
(:func:`gather_requests`) only where they mix with target ones, so R requests with a
ragged number of candidates run in one call. During training a row is its own request
(R = C = B, ``request_index = arange(B)``).

* :class:`FieldPartition` - which fields are context (rank 2) and which are target (rank 3).
* :class:`RankSplitDense` / :class:`RankAwareMLP` - a first FC layer split by rank, eqs. 9-10.
* :class:`ContextTargetCrossNet` - rDCN's two cross streams, eqs. 19-20 (and rDCN**
  without the context stream).
* :class:`TwoStreamAttentionLayer` - the rank-aware attention of section 4.3.

Models train with these layers (``fuxictr_ext.backbones.two_stream``, rDCN,
RankAwareAttention); serving (:mod:`fuxictr_ext.serving.layers`) reuses them to
decompose trained vanilla layers.

Shapes: R requests, C candidates, K context fields, M target fields, F = K + M,
D embedding size, H heads, A attention size (H * head size), U units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
from torch import nn

from ..config import ZooError
from .common import MultiHeadSelfAttention

CONTEXT, TARGET = "context", "target"
DEFAULT_CONTEXT_SOURCES = ("user", "context")
DEFAULT_TARGET_SOURCES = ("item",)


class RankAwareUnsupportedError(ZooError):
    """Raised when a model's structure admits no rank-aware forward path."""


@dataclass(frozen=True)
class FieldPartition:
    """The split of a model's fields into context (rank 2) and target (rank 3).

    By default a feature's role comes from its FeatureMap ``source``:
    ``user`` and ``context`` features are context, ``item`` features are target.

    Args:
        fields: every embedded (non-meta) field, in the FeatureMap's order.
        context_fields: the K context fields, in the FeatureMap's order.
        target_fields: the M target fields, in the FeatureMap's order.

    Example:
        >>> part = FieldPartition.from_feature_map(feature_map)
        >>> part.context_positions          # (K,) positions in the vanilla field order
    """

    fields: Tuple[str, ...]
    context_fields: Tuple[str, ...]
    target_fields: Tuple[str, ...]

    @property
    def num_context(self) -> int:
        return len(self.context_fields)

    @property
    def num_target(self) -> int:
        return len(self.target_fields)

    @property
    def context_positions(self) -> torch.Tensor:
        """(K,) long: position of each context field in the vanilla field order."""
        return torch.tensor([self.fields.index(f) for f in self.context_fields], dtype=torch.long)

    @property
    def target_positions(self) -> torch.Tensor:
        """(M,) long: position of each target field in the vanilla field order."""
        return torch.tensor([self.fields.index(f) for f in self.target_fields], dtype=torch.long)

    @property
    def vanilla_from_split(self) -> torch.Tensor:
        """(F,) long: index into ``[context fields; target fields]`` of each vanilla field."""
        split_order = list(self.context_fields) + list(self.target_fields)
        return torch.tensor([split_order.index(f) for f in self.fields], dtype=torch.long)

    @classmethod
    def from_feature_map(cls, feature_map,
                         context_sources: Optional[Sequence[str]] = None,
                         target_sources: Optional[Sequence[str]] = None,
                         field_roles: Optional[Mapping[str, str]] = None) -> "FieldPartition":
        """Partition the FeatureMap's fields by their ``source``.

        Args:
            feature_map: a FuxiCTR FeatureMap.
            context_sources: source names whose features are context; default
                ``("user", "context")``. Names given here must occur in the FeatureMap.
            target_sources: source names whose features are target; default ``("item",)``.
            field_roles: per-feature override, ``{feature_name: "context" | "target"}``.

        Raises:
            ValueError: a feature whose source is in neither list (and has no
                override), a source name no feature carries, a source in both
                lists, or a ``field_roles`` entry naming an unknown feature or role.
        """
        fields = tuple(name for name, spec in feature_map.features.items() if spec["type"] != "meta")
        present = {feature_map.features[name].get("source", "") for name in fields}
        for key, given in (("context_sources", context_sources), ("target_sources", target_sources)):
            unknown = sorted(set(given or ()) - present)
            if unknown:
                raise ValueError(f"{key} names source(s) {unknown} that no feature of the FeatureMap "
                                 f"has; sources present: {sorted(present)}")
        context_sources = tuple(DEFAULT_CONTEXT_SOURCES if context_sources is None else context_sources)
        target_sources = tuple(DEFAULT_TARGET_SOURCES if target_sources is None else target_sources)
        overlap = sorted(set(context_sources) & set(target_sources))
        if overlap:
            raise ValueError(f"source(s) {overlap} are in both context_sources and target_sources")
        field_roles = dict(field_roles or {})
        for name, role in field_roles.items():
            if name not in fields:
                raise ValueError(f"field_roles names {name!r}, which is not a field of the FeatureMap")
            if role not in (CONTEXT, TARGET):
                raise ValueError(f"field_roles[{name!r}]={role!r}: must be {CONTEXT!r} or {TARGET!r}")
        roles = {}
        for name in fields:
            source = feature_map.features[name].get("source", "")
            if name in field_roles:
                roles[name] = field_roles[name]
            elif source in context_sources:
                roles[name] = CONTEXT
            elif source in target_sources:
                roles[name] = TARGET
            else:
                raise ValueError(
                    f"feature {name!r} has source {source!r}, which is neither a context source "
                    f"{list(context_sources)} nor a target source {list(target_sources)}; set its "
                    "`source` in the dataset config, or name it in context_sources, "
                    "target_sources or field_roles")
        return cls(fields=fields,
                   context_fields=tuple(f for f in fields if roles[f] == CONTEXT),
                   target_fields=tuple(f for f in fields if roles[f] == TARGET))


def gather_requests(x: torch.Tensor, request_index: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-request tensor (R, ...) to the candidates: (C, ...)."""
    return x.index_select(0, request_index)


def embed_fields(embedding_layer: FeatureEmbedding, inputs: Dict[str, torch.Tensor],
                 fields: Sequence[str]) -> torch.Tensor:
    """Embed ``fields`` (at least one) of ``inputs`` with a fuxictr ``FeatureEmbedding``: (rows, n, D)."""
    embedded = embedding_layer.embedding_layer({f: inputs[f] for f in fields})
    return torch.stack([embedded[f] for f in fields], dim=1)


# ---------------------------------------------------------------------------- FC
class RankSplitDense(nn.Module):
    """The first FC layer over a rank-partitioned input (eqs. 9-10, "RankSplitDense").

        h = x_c W_c^T + x_t W_t^T + b        # x_c W_c^T once per request

    The activation, normalisation and dropout that follow stay with the next
    module. As a trainable layer it is initialised like BaseModel initialises an
    ``nn.Linear`` over ``[x_c; x_t]`` (xavier normal on the whole kernel, zero bias).

    Args:
        context_dim: |x_c|.
        target_dim: |x_t|.
        units: U.
        bias: add a bias b.

    Shapes: forward(x_c (R, |x_c|), x_t (C, |x_t|), request_index (C,)) -> (C, U).

    Example:
        >>> layer = RankSplitDense.from_linear(mlp.mlp[0], context_columns, target_columns)
        >>> h = layer(x_c, x_t, request_index)
    """

    def __init__(self, context_dim: int, target_dim: int, units: int, bias: bool = True,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.context_weight = nn.Parameter(torch.empty(units, context_dim, **factory))
        self.target_weight = nn.Parameter(torch.empty(units, target_dim, **factory))
        self.bias = nn.Parameter(torch.empty(units, **factory)) if bias else None
        self.init_weights()

    def init_weights(self) -> None:
        kernel = torch.empty(self.context_weight.size(0), self.context_weight.size(1) + self.target_weight.size(1),
                             dtype=self.context_weight.dtype, device=self.context_weight.device)
        nn.init.xavier_normal_(kernel)
        with torch.no_grad():
            self.context_weight.copy_(kernel[:, :self.context_weight.size(1)])
            self.target_weight.copy_(kernel[:, self.context_weight.size(1):])
            if self.bias is not None:
                self.bias.zero_()

    @classmethod
    def from_linear(cls, linear: nn.Linear, context_columns: torch.Tensor,
                    target_columns: torch.Tensor) -> "RankSplitDense":
        """Split a trained ``nn.Linear``'s kernel by input columns: W_c = W[:, ctx], W_t = W[:, tgt].

        The split layer has the linear layer's dtype and device."""
        weight = linear.weight.detach()
        layer = cls(len(context_columns), len(target_columns), linear.out_features, linear.bias is not None,
                    device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            layer.context_weight.copy_(weight[:, context_columns.to(weight.device)])
            layer.target_weight.copy_(weight[:, target_columns.to(weight.device)])
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach())
        return layer

    def forward(self, x_c: torch.Tensor, x_t: torch.Tensor, request_index: torch.Tensor) -> torch.Tensor:
        once = F.linear(x_c, self.context_weight)                                  # (R, U) once
        return F.linear(x_t, self.target_weight, self.bias) + gather_requests(once, request_index)  # (C, U)


class RankAwareMLP(nn.Module):
    """An MLP whose first layer is a :class:`RankSplitDense`; the others run per candidate.

    Args:
        first: the split first layer.
        tail: what follows it (normalisation, activation, dropout, deeper layers).

    Shapes: forward(x_c (R, |x_c|), x_t (C, |x_t|), request_index (C,)) -> (C, out).

    Example:
        >>> head = RankAwareMLP.build(context_dim=64, target_dim=32, hidden_units=[128, 64], output_dim=1)
        >>> logit = head(x_c, x_t, request_index)                   # (C, 1)
    """

    def __init__(self, first: RankSplitDense, tail: nn.Module):
        super().__init__()
        self.first = first
        self.tail = tail

    @classmethod
    def build(cls, context_dim: int, target_dim: int, hidden_units: Sequence[int], output_dim: Optional[int] = None,
              hidden_activations="ReLU", dropout_rates=0.0, batch_norm: bool = False) -> "RankAwareMLP":
        """A new trainable MLP over ``[x_c; x_t]``, laid out as fuxictr's ``MLP_Block``."""
        if not hidden_units and output_dim is None:
            raise ValueError("RankAwareMLP needs hidden_units or an output_dim")
        mlp = MLP_Block(context_dim + target_dim, list(hidden_units), hidden_activations=hidden_activations,
                        output_dim=output_dim, dropout_rates=dropout_rates, batch_norm=batch_norm)
        first, *rest = mlp.mlp
        return cls(RankSplitDense(context_dim, target_dim, first.out_features), nn.Sequential(*rest))

    @classmethod
    def from_mlp_block(cls, mlp: MLP_Block, context_columns: torch.Tensor,
                       target_columns: torch.Tensor) -> "RankAwareMLP":
        """The rank-aware form of a trained ``MLP_Block``; the layers after the first are shared."""
        first, *rest = mlp.mlp
        if not isinstance(first, nn.Linear):
            raise RankAwareUnsupportedError(
                f"the MLP starts with {first.__class__.__name__}, not a Linear layer (batch_norm with "
                "bn_only_once normalises the whole input first), so its first layer cannot be split")
        return cls(RankSplitDense.from_linear(first, context_columns, target_columns), nn.Sequential(*rest))

    def forward(self, x_c: torch.Tensor, x_t: torch.Tensor, request_index: torch.Tensor) -> torch.Tensor:
        return self.tail(self.first(x_c, x_t, request_index))


# ---------------------------------------------------------------------------- rDCN
class ContextCrossLayer(nn.Module):
    """rDCN's context stream, eq. 20: c_{l+1} = c_0 * (W_c c_l + b_c) + c_l.

    Shapes: forward(c_0 (R, d_c), c_l (R, d_c)) -> (R, d_c).
    """

    def __init__(self, context_dim: int):
        super().__init__()
        self.linear = nn.Linear(context_dim, context_dim)

    def forward(self, c_0: torch.Tensor, c_l: torch.Tensor) -> torch.Tensor:
        return c_0 * self.linear(c_l) + c_l


class FrozenContext(nn.Module):
    """rDCN**: no context stream; the context stays c_0 at every layer."""

    def forward(self, c_0: torch.Tensor, c_l: torch.Tensor) -> torch.Tensor:
        return c_l


class ContextTargetCrossNet(nn.Module):
    """rDCN's cross network (eqs. 19-20): a rank-2 context and a rank-3 target stream.

        T_{l+1} = T_0 * (W_l^ct c_l  (+)  W_l^t T_l + b_l^t) + T_l    # eq. 19, W^ct c_l once
        c_{l+1} = c_0 * (W_l^c c_l + b_l^c) + c_l                      # eq. 20

    No weight maps target inputs to context outputs, so both streams keep their
    rank at every depth. Parameters per layer: D_c^2 + D_c D_t + D_t^2 weights
    plus D_c + D_t biases; rDCN** (``context_stream=False``) drops W^c, b^c and the
    target stream reads c_0 at every layer.

    Args:
        context_dim: D_c = K * D.
        target_dim: D_t = M * D.
        num_layers: L.
        context_stream: keep the context stream (rDCN) or not (rDCN**).

    Shapes: forward(c_0 (R, D_c), T_0 (C, D_t), request_index (C,)) -> (c_L (R, D_c), T_L (C, D_t)).

    Example:
        >>> cross = ContextTargetCrossNet(context_dim=64, target_dim=32, num_layers=3)
        >>> c_L, T_L = cross(c_0, T_0, request_index)
    """

    def __init__(self, context_dim: int, target_dim: int, num_layers: int, context_stream: bool = True):
        super().__init__()
        self.context_layers = nn.ModuleList(
            ContextCrossLayer(context_dim) if context_stream else FrozenContext() for _ in range(num_layers))
        self.context_to_target = nn.ModuleList(
            nn.Linear(context_dim, target_dim, bias=False) for _ in range(num_layers))  # W^ct
        self.target_layers = nn.ModuleList(nn.Linear(target_dim, target_dim) for _ in range(num_layers))  # W^t, b^t

    def forward(self, c_0: torch.Tensor, t_0: torch.Tensor, request_index: torch.Tensor):
        c_l, t_l = c_0, t_0
        for context_layer, context_to_target, target_layer in zip(
                self.context_layers, self.context_to_target, self.target_layers):
            from_context = gather_requests(context_to_target(c_l), request_index)  # (C, D_t), once per request
            t_l = t_0 * (from_context + target_layer(t_l)) + t_l                    # (C, D_t) eq. 19
            c_l = context_layer(c_0, c_l)                                           # (R, D_c) eq. 20
        return c_l, t_l


# ---------------------------------------------------------------------------- attention
class TwoStreamAttentionLayer(nn.Module):
    """Rank-aware attention (section 4.3): a context stream and a target-anchored stream.

        context stream:  c_{l+1} = SelfAttention(c_l)                       # rank 2
        target stream:   Q = T_l W_Q,  K = [c_l W_K^c; T_l W_K^t],  V = [c_l W_V^c; T_l W_V^t]
                         T_{l+1} = ReLU(LN(softmax(Q K^T / s) V + T_l W_res))

    Context keys and values are projected once per request. Context outputs never
    read targets, so rank separation holds at every depth. With
    ``share_context_kv`` the target stream's W_K^c, W_V^c are the context
    stream's own key/value projections; otherwise they are separate weights.

    Args:
        input_dim: width of the input tokens.
        attention_dim: A.
        num_heads: H.
        dropout_rate: dropout on attention weights.
        use_residual, use_scale, layer_norm: as :class:`MultiHeadSelfAttention`.
        share_context_kv: reuse the context stream's key/value projections.

    Shapes: forward(c (R, K, in), T (C, M, in), request_index (C,)) -> (c' (R, K, A), T' (C, M, A)).
    """

    def __init__(self, input_dim: int, attention_dim: int, num_heads: int = 1, dropout_rate: float = 0.0,
                 use_residual: bool = True, use_scale: bool = False, layer_norm: bool = False,
                 share_context_kv: bool = False):
        super().__init__()
        options = dict(num_heads=num_heads, dropout_rate=dropout_rate, use_residual=use_residual,
                       use_scale=use_scale, layer_norm=layer_norm)
        self.context_attention = MultiHeadSelfAttention(input_dim, attention_dim, **options)
        self.target_attention = MultiHeadSelfAttention(input_dim, attention_dim, **options)  # W_Q, W_K^t, W_V^t
        self.W_k_context = self.context_attention.W_k if share_context_kv \
            else nn.Linear(input_dim, attention_dim, bias=False)
        self.W_v_context = self.context_attention.W_v if share_context_kv \
            else nn.Linear(input_dim, attention_dim, bias=False)

    def forward(self, c: torch.Tensor, t: torch.Tensor, request_index: torch.Tensor):
        att = self.target_attention
        k_c = gather_requests(att.heads(self.W_k_context(c)), request_index)   # (C, H, K, d), projected once
        v_c = gather_requests(att.heads(self.W_v_context(c)), request_index)   # (C, H, K, d)
        q_t, k_t, v_t = att.heads(att.W_q(t)), att.heads(att.W_k(t)), att.heads(att.W_v(t))  # (C, H, M, d)
        keys, values = torch.cat([k_c, k_t], dim=2), torch.cat([v_c, v_t], dim=2)  # (C, H, K+M, d)
        scores = torch.matmul(q_t, keys.transpose(-1, -2)) / att.scale          # (C, H, M, K+M)
        attended = torch.matmul(att.dropout(scores.softmax(dim=-1)), values)    # (C, H, M, d)
        return self.context_attention(c), att.finish(attended, t)
