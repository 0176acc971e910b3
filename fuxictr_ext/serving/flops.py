"""FLOPs of multi-target scoring: the paper's closed forms, this code's closed forms, counted FLOPs.

Tkach, "Context Features Are Cheap", eqs. 7, 8, 11, 12, 15 and section 4.2.
The paper counts one multiply-accumulate (MAC) per product term; PyTorch's
``torch.utils.flop_counter`` counts 2 FLOPs per MAC of a matmul (elementwise
work, gathers and softmax are not counted). So for every matmul-only stage:

    counted FLOPs = 2 * MACs

The paper's FM formulas (eqs. 7-8) count only the pairs i < j. The
implementation the paper describes, and this code, computes Gram blocks with
dense matmuls: the vanilla FM layer (fuxictr's ``InnerProductInteraction``)
computes the whole F x F Gram matrix per candidate, the rank-aware one the
K x K context Gram matrix once and an M x (K + M) block per candidate. The
``*_macs`` functions below are exact for that code (tests check them against
counted FLOPs); the ``eq*`` functions are the paper's formulas as printed.

N candidates per request, K context / M target fields, F = K + M, D embedding
size, U units of the first FC layer, d_c / d_t context / target widths of a
cross network's input (K*D / M*D), A attention size.
"""

from __future__ import annotations

from math import comb
from typing import Dict, Tuple

# ------------------------------------------------------------------ the paper's formulas (MACs)


def eq7_fm_savings(K: int, M: int, N: int, D: int) -> int:
    """Eq. 7: Delta_FM = (N - 1) * C(K, 2) * D."""
    return (N - 1) * comb(K, 2) * D


def eq8_fm_savings_fraction(K: int, M: int, N: int) -> float:
    """Eq. 8: Delta_FM / FLOPs_FM^std = (N - 1) K (K - 1) / (N (K + M) (K + M - 1))."""
    return (N - 1) * K * (K - 1) / (N * (K + M) * (K + M - 1))


def eq11_fc_savings(N: int, context_width: int, units: int) -> int:
    """Eq. 11: Delta_FC = (N - 1) * |x_c| * U."""
    return (N - 1) * context_width * units


def eq12_fm_fc_savings(K: int, N: int, units: int) -> int:
    """Eq. 12: Delta_FC = (N - 1) * C(K, 2) * U (the FC layer reads FM_ctx as x_c)."""
    return (N - 1) * comb(K, 2) * units


def eq15_cross_layer0_savings_fraction(d_c: int, d_t: int) -> float:
    """Eq. 15 as printed: d_c^2 / (d_c + d_t)^2, the share of the W_cc block alone.

    The text computes both W_cc x_c and W_tc x_c once per request; that saves
    d_c / (d_c + d_t) of the layer-0 matmul (see :func:`cross_layer0_macs`).
    """
    return d_c ** 2 / (d_c + d_t) ** 2


# ------------------------------------------------------------------ this code's closed forms (MACs)


def fm_macs(K: int, M: int, N: int, D: int) -> Tuple[int, int]:
    """(vanilla, rank-aware) MACs of the FM pair layer for one request.

    vanilla: N * F^2 * D (full Gram per candidate); rank-aware: K^2 * D + N * M * F * D.
    Their difference is 2 * eq7 + (N - 1) K D + N K M D: the dense Gram also
    computes the diagonal and both triangles.
    """
    F = K + M
    return N * F * F * D, K * K * D + N * M * F * D


def fc_first_layer_macs(N: int, context_width: int, target_width: int, units: int) -> Tuple[int, int]:
    """(vanilla, rank-aware) MACs of the first FC layer; the difference is eq. 11."""
    return N * (context_width + target_width) * units, context_width * units + N * target_width * units


def mlp_macs(input_width: int, hidden_units, output_dim: int = 0) -> int:
    """MACs of one row through an MLP (input_width -> hidden_units -> output_dim)."""
    widths = [input_width] + list(hidden_units) + ([output_dim] if output_dim else [])
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def cross_layer0_macs(N: int, d_c: int, d_t: int) -> Tuple[int, int]:
    """(vanilla, rank-aware) MACs of DCNv2 cross layer 0: N d^2 vs d_c d + N d_t d (d = d_c + d_t)."""
    d = d_c + d_t
    return N * d * d, d_c * d + N * d_t * d


def dcnv2_cross_macs(N: int, d_c: int, d_t: int, num_layers: int, rank_aware: bool) -> int:
    """MACs of an L-layer DCNv2 cross network, with or without the layer-0 split."""
    d = d_c + d_t
    vanilla0, split0 = cross_layer0_macs(N, d_c, d_t)
    return (split0 if rank_aware else vanilla0) + (num_layers - 1) * N * d * d


def rdcn_cross_macs(N: int, d_c: int, d_t: int, num_layers: int, context_stream: bool = True) -> int:
    """MACs of rDCN's cross network (section 4.2): L (d_c^2 + d_c d_t + N d_t^2); rDCN** drops d_c^2."""
    return num_layers * ((d_c * d_c if context_stream else 0) + d_c * d_t + N * d_t * d_t)


def attention_layer0_macs(N: int, K: int, M: int, input_dim: int, attention_dim: int,
                          residual_projection: bool) -> Tuple[int, int]:
    """(vanilla, rank-aware) MACs of self-attention layer 0 (section 3.6).

    Projections: (3 or 4) * tokens * input_dim * A; scores and weighted values:
    2 * A per (query, key) pair. Rank-aware: context projections and the K x K
    block once; per candidate K*M + M*F pairs. The score saving is
    2 (N - 1) K^2 A MACs: quadratic in K.
    """
    F = K + M
    projections = (4 if residual_projection else 3) * input_dim * attention_dim
    vanilla = N * (F * projections + 2 * F * F * attention_dim)
    rank_aware = K * projections + 2 * K * K * attention_dim + N * (
        M * projections + 2 * (K * M + M * F) * attention_dim)
    return vanilla, rank_aware


# ------------------------------------------------------------------ counting
def group_flops(counts: Dict[str, int], prefixes) -> int:
    """Sum of the counts of the top-level modules named in ``prefixes``."""
    return sum(v for k, v in counts.items() if k in prefixes)
