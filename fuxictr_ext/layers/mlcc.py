"""Layers of MLCC and MC-MLCC.

Paper: Yu et al., "Compress, Cross and Scale: Multi-Level Compression Cross
Networks for Efficient Scaling in Recommender Systems" (2026).

    M  = GC(X)          eq. 1 / 4   GlobalCompressor
    C  = PLC(X; M)      eq. 2, 6-9  ProgressiveLayeredCrossing (or InnerProductCross)
    X' = LC(C)          eq. 3 / 5   LocalCompressor
    X' <- SE(X')        released code, optional    TokenSqueezeExcitation

Shapes: B batch, S channels, N tokens (fields), E token dimension, H heads
(global tokens), W global-token dimension = parameter count of one dynamic MLP,
K dynamic-MLP layers with widths e_1..e_K (e_0 = E), L interwoven dimension,
E' refined dimension. Every layer is vectorised over batch, channels and heads.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
from fuxictr.pytorch.layers import MLP_Block
from fuxictr.pytorch.torch_utils import get_activation
from torch import nn

from ..config import ConfigError, check_arg, check_choice, check_positive_int, check_positive_ints

__all__ = [
    "dynamic_mlp_param_count",
    "GlobalCompressor",
    "ProgressiveLayeredCrossing",
    "InnerProductCross",
    "LocalCompressor",
    "TokenSqueezeExcitation",
    "build_cross",
    "build_mlcc_head",
    "CROSS_TYPES",
]


def _elementwise_activation(name: str) -> nn.Module:
    """A parameter-free activation module from its fuxictr / torch.nn name ("ReLU", "tanh", ...)."""
    check_arg(isinstance(name, str) and name.lower() not in ("prelu", "dice", "softmax"), "dynamic_mlp_activation",
              name, "an element-wise, parameter-free activation such as ReLU, Tanh, Sigmoid, GELU or null")
    try:
        return get_activation(name)
    except AttributeError:
        raise ConfigError(f"dynamic_mlp_activation={name!r} must be an activation of torch.nn") from None


def dynamic_mlp_param_count(input_dim: int, units: Sequence[int]) -> int:
    """W = sum_i e_{i-1} * e_i: the number of weights of a bias-free MLP input_dim -> units.

    Example:
        >>> dynamic_mlp_param_count(16, [4, 1])   # 16*4 + 4*1
        68
    """
    widths = [input_dim] + list(units)
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


class GlobalCompressor(nn.Module):
    """Global compressor (GC), eq. 4: every global token reads all original tokens.

        M_{k,l} = sum_{i<=N, j<=E} X_{i,j} W^GC_{i,j,k,l}        W^GC: (N*E, H*W)

    With ``num_channels=S`` each channel has its own W^GC (eq. 11) and all
    channels are compressed in one batched contraction.

    Args:
        num_tokens: N, number of original tokens.
        token_dim: E, dimension of an original token.
        num_heads: H, number of global tokens.
        head_dim: W, dimension of a global token.
        num_channels: S; ``None`` for one weight without a channel axis (MLCC), applied to
            every leading axis of the input.

    Shapes:
        (B, N, E) -> (B, H, W), or with channels (B, S, N, E) -> (B, S, H, W).

    Example:
        >>> gc = GlobalCompressor(num_tokens=39, token_dim=16, num_heads=4, head_dim=68)
        >>> gc(torch.randn(8, 39, 16)).shape
        torch.Size([8, 4, 68])
    """

    def __init__(self, num_tokens: int, token_dim: int, num_heads: int, head_dim: int,
                 num_channels: Optional[int] = None):
        super().__init__()
        self.num_tokens = check_positive_int("num_tokens", num_tokens)
        self.token_dim = check_positive_int("token_dim", token_dim)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.head_dim = check_positive_int("head_dim", head_dim)
        in_features, out_features = num_tokens * token_dim, num_heads * head_dim
        if num_channels is None:
            shape, self.equation = (in_features, out_features), "...i,io->...o"
        else:
            check_positive_int("num_channels", num_channels)
            shape, self.equation = (num_channels, in_features, out_features), "bsi,sio->bso"
        self.weight = nn.Parameter(torch.empty(shape))

    def init_weights(self) -> None:
        """Xavier-normal per channel over the (N*E, H*W) matrix, as in the released code."""
        fan_in, fan_out = self.weight.shape[-2:]
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / (fan_in + fan_out)))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        M = torch.einsum(self.equation, X.flatten(-2), self.weight)  # (B, [S,] H*W)
        return M.unflatten(-1, (self.num_heads, self.head_dim))     # (B, [S,] H, W)


class ProgressiveLayeredCrossing(nn.Module):
    """Progressive layered crossing (PLC), eqs. 6-9: each global token is a dynamic MLP.

        [D_1^h, ..., D_K^h] = M^h,   D_i^h: (e_{i-1}, e_i)                 eq. 6
        O_k^h = sigma(O_{k-1}^h D_k^h),   O_0^h = X                          eq. 7
        O^h   = Concat(O_k^h for the kept layers k)                         eq. 8
        C     = Concat(X, O^1, ..., O^H)  (X only if layer 0 is kept)       eq. 9

    L = E * [0 kept] + H * sum_{k kept, k >= 1} e_k; with every layer kept this is
    the paper's L = E + H * sum_i e_i. All samples, channels and heads go through
    one batched contraction per layer.

    Args:
        token_dim: E = e_0.
        num_heads: H.
        dynamic_mlp_units: [e_1, ..., e_K].
        keep_layers: which O_k enter C; 0 is the original tokens X. ``None`` keeps
            0..K (eqs. 8-9). The last layer K must be kept (a deeper layer that is
            not kept would only add dead weights to GC).
        activation: sigma of eq. 7 as a fuxictr activation name; ``None`` is identity
            (the released configs).

    Shapes:
        X (..., N, E), M (..., H, W) -> C (..., N, L); ``...`` is (B,) or (B, S).
        ``forward_channels``: X (B, S, N, E), M (B, S, H, W) -> (B, N, S*L), eq. 12.

    Example:
        >>> plc = ProgressiveLayeredCrossing(16, num_heads=4, dynamic_mlp_units=[4, 1])
        >>> plc.head_dim, plc.output_dim          # W = 16*4 + 4*1, L = 16 + 4*(4+1)
        (68, 36)
        >>> plc(torch.randn(8, 39, 16), torch.randn(8, 4, 68)).shape
        torch.Size([8, 39, 36])
    """

    def __init__(self, token_dim: int, num_heads: int, dynamic_mlp_units: Sequence[int],
                 keep_layers: Optional[Sequence[int]] = None, activation: Optional[str] = None):
        super().__init__()
        self.token_dim = check_positive_int("token_dim", token_dim)
        self.num_heads = check_positive_int("num_heads", num_heads)
        units = check_positive_ints("dynamic_mlp_units", dynamic_mlp_units, min_length=1)
        widths = [token_dim] + units
        depth = len(units)
        keep = list(range(depth + 1)) if keep_layers is None else list(keep_layers)
        check_arg(keep and len(set(keep)) == len(keep)
                  and all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= depth for k in keep),
                  "keep_layers", keep_layers,
                  f"a list of distinct layer indices in 0..{depth} (0 = original tokens, k = output of dynamic layer k)")
        check_arg(depth in keep, "keep_layers", keep_layers,
                  f"a list holding the last dynamic layer {depth}: shorten dynamic_mlp_units instead of "
                  "dropping deep layers")
        self.layer_shapes = list(zip(widths[:-1], widths[1:]))
        self.param_counts = [a * b for a, b in self.layer_shapes]
        self.head_dim = sum(self.param_counts)                        # W
        self.keep_original = 0 in keep
        self.keep_mask = [k in keep for k in range(1, depth + 1)]
        self.output_dim = (token_dim * self.keep_original
                           + num_heads * sum(w for w, kept in zip(units, self.keep_mask) if kept))
        self.activation = nn.Identity() if activation is None else _elementwise_activation(activation)

    def _kept_outputs(self, X: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        """The kept O_k of every head, eqs. 6-8: (..., H, N, sum e_kept)."""
        weights = torch.split(M, self.param_counts, dim=-1)           # K x (..., H, e_{k-1}*e_k)
        first = weights[0].unflatten(-1, self.layer_shapes[0])          # (..., H, E, e_1)
        hidden = self.activation(torch.einsum("...ne,...hef->...hnf", X, first))  # (..., H, N, e_1)
        kept = [hidden] if self.keep_mask[0] else []
        for D_k, shape, keep in zip(weights[1:], self.layer_shapes[1:], self.keep_mask[1:]):
            hidden = self.activation(torch.matmul(hidden, D_k.unflatten(-1, shape)))  # (..., H, N, e_k)
            kept += [hidden] if keep else []
        return torch.cat(kept, dim=-1)                                # (..., H, N, sum e_kept)

    def forward(self, X: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        O = self._kept_outputs(X, M).transpose(-3, -2).flatten(-2)    # (..., N, H*sum e_kept)
        originals = [X] if self.keep_original else []
        return torch.cat(originals + [O], dim=-1)                     # (..., N, L)

    def forward_channels(self, X: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        """Eqs. 11-12: X (B, S, N, E), M (B, S, H, W) -> the channels' C_s concatenated per
        token, (B, N, S*L); equals ``forward(X, M).transpose(1, 2).flatten(2)``, with O
        written token-major (B, N, S, H*sum e_kept) in one copy and one concatenation."""
        O = self._kept_outputs(X, M).permute(0, 3, 1, 2, 4).flatten(-2)   # (B, N, S, H*sum e_kept)
        originals = [X.transpose(1, 2)] if self.keep_original else []      # (B, N, S, E)
        return torch.cat(originals + [O], dim=-1).flatten(start_dim=2)     # (B, N, S*L)


class InnerProductCross(nn.Module):
    """Static inner-product cross: the ablation of PLC (Table 6, Appendix A, Table 9).

    Each global token is a vector of the token space (W = E) and crosses token n
    by a plain inner product; the result is concatenated to the original tokens:

        C_n = Concat(X_n, <X_n, M^1>, ..., <X_n, M^H>)        L = E + H

    It equals PLC with ``dynamic_mlp_units=[1]`` and no activation.

    Args:
        token_dim: E.
        num_heads: H.

    Shapes:
        X (..., N, E), M (..., H, E) -> C (..., N, E + H).

    Example:
        >>> cross = InnerProductCross(16, num_heads=64)
        >>> cross(torch.randn(8, 39, 16), torch.randn(8, 64, 16)).shape
        torch.Size([8, 39, 80])
    """

    def __init__(self, token_dim: int, num_heads: int):
        super().__init__()
        self.token_dim = check_positive_int("token_dim", token_dim)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.head_dim = token_dim
        self.output_dim = token_dim + num_heads

    def forward(self, X: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("...ne,...he->...nh", X, M)             # (..., N, H)
        return torch.cat([X, scores], dim=-1)                         # (..., N, E + H)

    def forward_channels(self, X: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        """X (B, S, N, E), M (B, S, H, E) -> (B, N, S*(E + H)), channels concatenated per token."""
        return self(X, M).transpose(1, 2).flatten(start_dim=2)


CROSS_TYPES = ("plc", "inner_product")


def build_cross(cross_type: str, token_dim: int, num_heads: int, dynamic_mlp_units: Sequence[int],
                keep_layers: Optional[Sequence[int]], activation: Optional[str]) -> nn.Module:
    """The cross of eq. 2 named by ``cross_type``: "plc" (the paper) or "inner_product" (ablation).

    The inner-product cross ignores ``dynamic_mlp_units``, ``keep_layers`` and
    ``activation``. The returned module has ``head_dim`` (W), ``output_dim`` (L), ``forward``
    ((..., N, E), (..., H, W) -> (..., N, L)) and ``forward_channels`` ((B, S, N, E),
    (B, S, H, W) -> (B, N, S*L)).
    """
    if check_choice("cross_type", cross_type, CROSS_TYPES) == "plc":
        return ProgressiveLayeredCrossing(token_dim, num_heads, dynamic_mlp_units, keep_layers, activation)
    return InnerProductCross(token_dim, num_heads)


class LocalCompressor(nn.Module):
    """Local compressor (LC), eq. 5: a separate L -> E' projection for every token.

        X'_{k,j} = sum_{i<=L} C_{k,i} W^LC_{k,i,j}        W^LC: (N, L, E')

    Args:
        num_tokens: N.
        input_dim: L, interwoven token dimension.
        refined_dim: E', refined token dimension.

    Shapes:
        C (B, N, L) -> X' (B, N, E').

    Example:
        >>> lc = LocalCompressor(num_tokens=39, input_dim=36, refined_dim=8)
        >>> lc(torch.randn(8, 39, 36)).shape
        torch.Size([8, 39, 8])
    """

    def __init__(self, num_tokens: int, input_dim: int, refined_dim: int):
        super().__init__()
        check_positive_int("num_tokens", num_tokens)
        check_positive_int("input_dim", input_dim)
        check_positive_int("refined_dim", refined_dim)
        self.weight = nn.Parameter(torch.empty(num_tokens, input_dim, refined_dim))

    def init_weights(self) -> None:
        """The released code's ``xavier_normal_`` on the 3-D (N, L, E') tensor.

        torch reads a 3-D tensor as (out, in, kernel): fan_in = L * E', fan_out = N * E',
        so std = sqrt(2 / (E' (L + N))) (0.058 at N = 39, L = 36, E' = 8).
        """
        nn.init.xavier_normal_(self.weight)

    def forward(self, C: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bnl,nle->bne", C, self.weight)          # (B, N, E')


class TokenSqueezeExcitation(nn.Module):
    """Squeeze-excitation over the N refined tokens, as in the released MLCC code.

        z = mean_j X'_{:, j}                                  (B, N)
        a = sigmoid(W_2 LayerNorm(ReLU(W_1 z + b_1)) + b_2)   (B, N), hidden N // 2
        X'_n <- a_n X'_n

    The LayerNorm has no affine parameters. fuxictr's ``SqueezeExcitation``
    (FiBiNET) differs: no biases, no LayerNorm, ReLU gate by default.

    Args:
        num_tokens: N (>= 2, so that the hidden width N // 2 is not zero).

    Shapes:
        (B, N, D) -> (B, N, D).

    Example:
        >>> se = TokenSqueezeExcitation(39)
        >>> se(torch.randn(8, 39, 8)).shape
        torch.Size([8, 39, 8])
    """

    def __init__(self, num_tokens: int):
        super().__init__()
        hidden = check_positive_int("num_tokens", num_tokens) // 2
        check_arg(hidden >= 1, "squeeze_excitation", True,
                  f"false with {num_tokens} token (field): its hidden width N // 2 would be 0; it needs at least 2")
        self.excitation = nn.Sequential(nn.Linear(num_tokens, hidden), nn.ReLU(),
                                        nn.LayerNorm(hidden, elementwise_affine=False),
                                        nn.Linear(hidden, num_tokens), nn.Sigmoid())

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        gate = self.excitation(X.mean(dim=-1))                        # (B, N)
        return X * gate.unsqueeze(-1)                                 # (B, N, D)


def build_mlcc_head(num_tokens: int, interwoven_dim: int, refined_dim: int, local_compression: bool,
                    squeeze_excitation: bool, dnn_hidden_units: Sequence[int], dnn_activations: str,
                    net_dropout: float, batch_norm: bool, output_activation) -> tuple:
    """LC, SE and DNN of MLCC / MC-MLCC, checked against the config keys that set them.

    Returns (local_compressor, squeeze_excitation, dnn); disabled parts are ``nn.Identity``.
    """
    check_positive_int("refined_dim", refined_dim)
    hidden_units = check_positive_ints("dnn_hidden_units", dnn_hidden_units)
    local_compressor = (LocalCompressor(num_tokens, interwoven_dim, refined_dim)
                        if local_compression else nn.Identity())
    token_dim = refined_dim if local_compression else interwoven_dim
    excitation = TokenSqueezeExcitation(num_tokens) if squeeze_excitation else nn.Identity()
    dnn = MLP_Block(input_dim=num_tokens * token_dim,
                    output_dim=1,
                    hidden_units=hidden_units,
                    hidden_activations=dnn_activations,
                    output_activation=output_activation,
                    dropout_rates=net_dropout,
                    batch_norm=batch_norm)
    return local_compressor, excitation, dnn
