"""Trainable layers that several models share.

* :class:`FMPairs` - the FM pair vector [<e_i, e_j>]_{i<j} (DLRM, the rank-aware paper's eq. 3).
* :class:`MultiHeadSelfAttention` - AutoInt's interacting layer (AutoInt, and the
  rank-aware attention that decomposes it).
* :class:`ZeroTerm` - a term a structure does not have in a sum (a 0-dim zero).
* :class:`AbsentBranch` - a branch a structure does not have: a (rows, 0) tensor, so a
  concatenation needs no if-branch in forward.
* :func:`row_chunked` - a row-wise network over chunks of rows on CPU (intermediates in cache).
* :class:`RandomBitsDropout` - ``nn.Dropout`` whose CPU mask is drawn from 32-bit random
  integers (half the generator calls of ``bernoulli_``).
* :class:`DropPath` - stochastic depth: a residual branch dropped per sample in training.

Shapes: B batch, F fields, D embedding size, T tokens, H heads, A attention size.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..config import check_arg, check_positive_int


class AbsentBranch(nn.Module):
    """A branch a model does not have: zeros of shape (rows, 0).

    Called as any branch it stands in for: ``forward(x)`` with ``x`` (B, ...) gives
    (B, 0); a rank-aware branch ``forward(x_c, x_t, request_index)`` gives (C, 0).
    The rows are those of the last argument, the dtype and device those of the first.
    """

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return inputs[0].new_zeros(inputs[-1].size(0), 0)


CPU_RANDOM_BITS_DEVICES = ("cpu",)
"""Device types on which :class:`RandomBitsDropout` draws its own mask (elsewhere: torch's fused dropout)."""


class RandomBitsDropout(nn.Dropout):
    """Inverted dropout, ``nn.Dropout``'s function, with a mask drawn from 32-bit random integers on CPU.

        keep = (u >= t),  u uniform on the int32 range,  t = round(p * 2^32) - 2^31
        y = x * keep / (1 - p)          (training; y = x in eval mode)

    On CPU torch's ``bernoulli_`` costs one 32-bit draw of the Mersenne twister plus a
    float conversion per element; here the int64 ``random_`` over the full range gives two
    uniform int32 per 64-bit draw (the same twister, half its calls), compared with an
    integer threshold. An element is dropped with probability (t + 2^31) / 2^32, p rounded
    to a multiple of 2^-32. The masks differ
    from ``nn.Dropout``'s for the same seed; rate, scale and gradients are the same
    (tests/test_token_mixing.py). On other devices it is ``nn.Dropout``.

    Args:
        p: the probability of dropping an element.

    Example:
        >>> drop = RandomBitsDropout(0.1).train()
        >>> y = drop(torch.ones(1000, 100))
        >>> 0.09 < (y == 0).float().mean().item() < 0.11
        True

    Shapes: (*) -> (*).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p in (0.0, 1.0) or x.device.type not in CPU_RANDOM_BITS_DEVICES:
            return super().forward(x)
        keep = random_int32(x.shape, x.device) >= round(self.p * 2 ** 32) - 2 ** 31  # (*) bool
        return x * keep * (1.0 / (1.0 - self.p))


def random_int32(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """Uniform int32 over its whole range, two per 64-bit draw of torch's generator: (shape) int32."""
    count = math.prod(shape)
    bits = torch.empty((count + 1) // 2, dtype=torch.int64, device=device).random_(-2 ** 63, None)
    return bits.view(torch.int32)[:count].view(shape)


ROW_CHUNK = 1024
"""Rows per chunk of a row-wise network on the devices of ``ROW_CHUNK_DEVICES`` (:func:`row_chunked`)."""
ROW_CHUNK_DEVICES = ("cpu",)
"""Device types on which :func:`row_chunked` splits the rows (elsewhere one call)."""


def row_chunked(network: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, rows: int) -> torch.Tensor:
    """``network`` (row-wise: each output row depends on its input row only) applied to ``x``.

    On the devices of ``ROW_CHUNK_DEVICES`` (CPU) the rows of ``x`` flattened to (N, d_in) go
    through ``network`` ``rows`` at a time and the results are concatenated: each chunk's
    (rows, width) intermediates stay in cache between the matrix product and the element-wise
    ops around it (norm, activation, dropout) and their backward, where the whole (N, width)
    tensors would stream through memory (the token models' tokenizer, whose hidden layer is
    (B * T, 500), and the CIN interaction; the step times with and without it:
    ``python -m benchmarks.training_step_changes``). Elsewhere one call.

    Shapes: (*, d_in) -> (*, d_out).
    """
    if x.device.type not in ROW_CHUNK_DEVICES:
        return network(x)
    chunks = [network(chunk) for chunk in x.reshape(-1, x.shape[-1]).split(rows)]  # (rows, d_out) each
    return torch.cat(chunks).view(*x.shape[:-1], -1)                               # (*, d_out)


class ZeroTerm(nn.Module):
    """A term that contributes nothing to a sum: returns a 0-dim zero whatever it is given."""

    def __init__(self):
        super().__init__()
        self.register_buffer("zero", torch.zeros(()), persistent=False)

    def forward(self, *args) -> torch.Tensor:
        return self.zero


class FMPairs(nn.Module):
    """The FM pair vector of eq. 3: FM(e) = [<e_i, e_j>]_{1 <= i < j <= F}.

    The same values in the same row-major order as fuxictr's
    ``InnerProductInteraction(output="inner_product")``, but the upper triangle
    of the Gram matrix is read with an index gather (as torchrec's DLRM does)
    rather than a boolean mask, which on CPU costs several times the Gram matmul
    itself and would inflate any comparison with the rank-aware path.

    Shapes: forward(e (B, F, D)) -> (B, F(F-1)/2).
    """

    def __init__(self, num_fields: int):
        super().__init__()
        self.register_buffer("triu", torch.triu_indices(num_fields, num_fields, offset=1), persistent=False)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(e, e.transpose(1, 2))            # (B, F, F)
        return gram[:, self.triu[0], self.triu[1]]         # (B, F(F-1)/2)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016) on a
    residual branch: in training every sample's branch is zeroed with probability ``p`` and kept
    ones are scaled by 1 / (1 - p), so x + DropPath(f(x)) is x for a dropped sample and its
    expectation is x + f(x); in evaluation the identity.

    Args:
        p: the probability of dropping a sample's branch, in [0, 1).

    Example:
        >>> drop = DropPath(0.2)
        >>> drop(torch.ones(4, 3, 2)).shape        # (B, F, D), whole rows of samples zeroed
        torch.Size([4, 3, 2])

    Shapes: (B, ...) -> (B, ...).
    """

    def __init__(self, p: float):
        super().__init__()
        check_arg(0 <= p < 1, "p", p, "a probability in [0, 1)")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        return x * keep.bernoulli_(1 - self.p) / (1 - self.p)                      # (B, ...)


class ZeroResidual(nn.Module):
    """No residual connection: zeros of the attention output's shape."""

    def __init__(self, attention_dim: int):
        super().__init__()
        self.attention_dim = attention_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], self.attention_dim)


FORMER_RESIDUAL_NAME = "residual.weight"


class MultiHeadSelfAttention(nn.Module):
    """AutoInt's interacting layer (Song et al., CIKM 2019, eqs. 5-8), as FuxiCTR's AutoInt builds it.

        head_h = softmax(Q_h K_h^T / s) V_h,  Q = E W_q, K = E W_k, V = E W_v
        out = ReLU(LN([head_1; ...; head_H] + E W_res))

    ``s`` is sqrt(head size) with ``use_scale`` and 1 otherwise; ``W_res`` is the
    identity when the input already has the attention size. Parameter names are
    FuxiCTR's (``W_q``, ``W_k``, ``W_v``, ``W_res``, ``layer_norm``), so a FuxiCTR AutoInt
    checkpoint loads into the zoo's AutoInt.

    Args:
        input_dim: width of each input token.
        attention_dim: A, the output width (H times the head size).
        num_heads: H.
        dropout_rate: dropout on the attention weights.
        use_residual: add the (projected) input.
        use_scale: divide scores by sqrt(head size).
        layer_norm: LayerNorm before the ReLU.

    Shapes: forward(x (B, T, input_dim)) -> (B, T, A).
    """

    def __init__(self, input_dim: int, attention_dim: int, num_heads: int = 1, dropout_rate: float = 0.0,
                 use_residual: bool = True, use_scale: bool = False, layer_norm: bool = False):
        super().__init__()
        check_positive_int("num_heads", num_heads)
        check_arg(attention_dim % num_heads == 0, "num_heads", num_heads, f"a divisor of attention_dim={attention_dim}")
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.scale = self.head_dim ** 0.5 if use_scale else 1.0
        self.W_q = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_k = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_v = nn.Linear(input_dim, attention_dim, bias=False)
        if not use_residual:
            self.W_res = ZeroResidual(attention_dim)
        elif input_dim != attention_dim:
            self.W_res = nn.Linear(input_dim, attention_dim, bias=False)
        else:
            self.W_res = nn.Identity()
        self.dropout = nn.Dropout(dropout_rate)
        self.layer_norm = nn.LayerNorm(attention_dim) if layer_norm else nn.Identity()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Checkpoints written before the residual projection took FuxiCTR's name load unchanged:
        ``<prefix>residual.weight`` is read as ``<prefix>W_res.weight``."""
        old_name = prefix + FORMER_RESIDUAL_NAME
        if old_name in state_dict and prefix + "W_res.weight" not in state_dict:
            state_dict[prefix + "W_res.weight"] = state_dict.pop(old_name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, A) -> (B, H, T, A/H)."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def finish(self, attended: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Concatenate heads (B, H, T, A/H), add the residual of ``x``, normalise, ReLU."""
        return self.layer_norm(attended.transpose(1, 2).flatten(start_dim=2) + self.W_res(x)).relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.heads(self.W_q(x)), self.heads(self.W_k(x)), self.heads(self.W_v(x))
        scores = torch.matmul(query, key.transpose(-1, -2)) / self.scale   # (B, H, T, T)
        attended = torch.matmul(self.dropout(scores.softmax(dim=-1)), value)  # (B, H, T, A/H)
        return self.finish(attended, x)                                      # (B, T, A)
