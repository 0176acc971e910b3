"""The token-transformation backbone shared by RankMixer and RankElastor.

Papers:
    Zhu et al. 2025, "RankMixer: Scaling Up Ranking Models in Industrial Recommenders".
    Li et al. 2026, "Expand More, Shrink Less: Shaping Effective-Rank Dynamics for
    Dense Scaling in Recommendation" (RankElastor).

Both models are the same pipeline with different switches::

    E   = FeatureEmbedding(x)                            # (B, F, k)   stage "emb"
    X0  = Tokenizer(E)                                   # (B, T, D)   stage "tokens"
    for block l = 0 .. L-1:
        M   = mixing_norm(X + Mix(X))                    # (B, T, D)   stage "block_l_mix"
        S   = token_norm(M)                              # (B, T, D)
        X   = ffn_norm(S + PFFN(S))                      # (B, T, D)   stage "block_l_ffn"
    y   = sigmoid(Head(X))                               # (B, 1)

with ``Mix`` RankMixer's parameter-free block transpose (the commutation
matrix of Eq. 2), RankElastor's parameterized full mixing (Eq. 3), or the
released code's Kronecker block mixing (I kron W, the coarse grids of Theorem
3.1), and ``PFFN`` T independent feed-forward networks (GELU or ReLU as in
RankMixer, or the GLU-improved P-FFN of Eq. 4). The T per-token networks are
stored as stacked weights (T, d_in, d_out): one ``einsum`` over the token axis
on GPUs, token by token on CPUs (see :class:`PerTokenLayer`). The released code (vasile-paskardlgm/RankElastor) runs every block
with ``token_norm`` an RMSNorm over each token and no ``ffn_norm``; RankMixer's
mixing keeps its LayerNorm as ``mixing_norm``. Every RMSNorm takes its epsilon
from ``norm_eps`` (1e-12 in the release); LayerNorms keep torch's 1e-5, as the
release's ``nn.LayerNorm`` does.

Shapes: B batch, F fields, k field-embedding size, T tokens, D token size,
H heads of the block transpose.
"""

from __future__ import annotations

import functools
from abc import ABCMeta, abstractmethod
import itertools
import math
from typing import Callable, List, Optional, Sequence

import torch
from fuxictr.pytorch.layers import MLP_Block
from fuxictr.pytorch.torch_utils import get_activation
from torch import nn

from ..config import check_arg, check_choice, check_positive_int, check_positive_ints
from .common import ROW_CHUNK, RandomBitsDropout, row_chunked
from ..precision import as_float32


TOKENIZER_MODES = ("matrix", "vector", "none")
TOKEN_MIXINGS = ("block_transpose", "full", "kronecker")
FFN_ACTIVATIONS = ("GLU", "GELU", "ReLU")
NORMS = ("LayerNorm", "RMSNorm", "none")
PRED_HEADS = ("mlp", "mean")
GLU_FORMS = ("release", "paper")
RELEASE_NORM_EPS = 1e-12


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` computed in float32 whatever the input's dtype.

    Under bfloat16 autocast its input comes out of a bf16 linear while its gain is a float32
    parameter; torch then skips the fused kernel (with a dtype-mismatch warning) and the
    mean square would be taken of bf16 values. A bfloat16 / float16 input is cast to float32
    instead (other inputs are used as they are), so the norm and its output are float32.

    Shapes: (*, d) -> (*, d).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.rms_norm(as_float32(x), self.normalized_shape, self.weight, self.eps)


def make_norm(kind: Optional[str], dim: int, key: str, eps: Optional[float] = RELEASE_NORM_EPS) -> nn.Module:
    """``LayerNorm`` / ``RMSNorm`` over the last dimension, or ``nn.Identity`` for none.

    ``eps`` is the RMSNorm's epsilon (``norm_eps``; None means torch's default,
    the dtype's machine epsilon); a LayerNorm keeps torch's 1e-5.
    """
    kind = check_choice(key, kind, NORMS)
    if kind == "LayerNorm":
        return nn.LayerNorm(dim)
    if kind == "RMSNorm":
        return RMSNorm(dim, eps=eps)
    return nn.Identity()


# --------------------------------------------------------------------------- per-token layers
TOKEN_LOOP_DEVICES = ("cpu",)
"""Device types on which the per-token layers run token by token (see :class:`PerTokenLayer`)."""

TokenFunction = Callable[[torch.Tensor], torch.Tensor]


class PerTokenLayer(nn.Module, metaclass=ABCMeta):
    """A layer with its own weights for each of T tokens, run batched or token by token.

    Two forms of the same function:

    * :meth:`batched`: one product over all tokens on (B, T, d) (stacked weights,
      ``einsum`` over the token axis), the form for GPUs (17x faster than a token
      loop on an H100, model_zoo/RankElastor/README.md);
    * :meth:`token_functions`: T functions, function t mapping the (B, d) slice of
      token t with token t's weights (views of the stacked weights, taken once
      with ``unbind`` so that the backward stacks their gradients in one op).

    On the devices of ``TOKEN_LOOP_DEVICES`` (CPU) :meth:`forward` runs the token
    functions on x[:, t] and stacks the results: a token's (B, width)
    intermediates stay in cache between the matrix product and the element-wise
    ops that follow it, while the batched form streams (B, T, width) tensors
    through memory (GELU and its backward 2.4-3x slower per element;
    ``python -m benchmarks.token_mixing_speed`` measures both against the
    release's token loop). A :class:`PerTokenFFN` chains the token functions of
    its layers, so each token runs through the whole network before the next.

    Shapes: (B, T, d_in) -> (B, T, d_out).
    """

    @abstractmethod
    def batched(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d_in) -> (B, T, d_out) in one batched product."""

    @abstractmethod
    def token_functions(self) -> List[TokenFunction]:
        """T functions, function t: (B, d_in) -> (B, d_out) with the weights of token t."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type not in TOKEN_LOOP_DEVICES:
            return self.batched(x)
        tokens = zip(self.token_functions(), x.unbind(1), strict=True)
        return torch.stack([function(x_t) for function, x_t in tokens], dim=1)  # (B, T, d_out)


def _affine(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x @ weight + bias for one token: (B, d_in) -> (B, d_out)."""
    return torch.mm(x, weight) if bias is None else torch.addmm(bias, x, weight)


def _residual_chain(functions: Sequence[TokenFunction], x: torch.Tensor) -> torch.Tensor:
    """x + functions[-1](... functions[0](x))."""
    h = x
    for function in functions:
        h = function(h)
    return x + h


class PerTokenLinear(PerTokenLayer):
    """T independent affine maps run as one batched product.

        y[b, t] = x[b, t] @ W_t + b_t,        W: (T, d_in, d_out), b: (T, d_out)

    Each W_t is initialised like fuxictr initialises an ``nn.Linear``
    (xavier normal, zero bias). ``init_splits`` splits the output columns into
    blocks that are initialised as separate matrices (used by fused projections).

    Args:
        num_tokens: T.
        in_features: d_in.
        out_features: d_out.
        bias: learn b_t.
        init_splits: output block sizes for the initialisation; default one block.

    Example:
        >>> layer = PerTokenLinear(num_tokens=4, in_features=8, out_features=16)
        >>> layer(torch.randn(32, 4, 8)).shape
        torch.Size([32, 4, 16])

    Shapes: (B, T, d_in) -> (B, T, d_out).
    """

    def __init__(self, num_tokens: int, in_features: int, out_features: int, bias: bool = True,
                 init_splits: Optional[Sequence[int]] = None):
        super().__init__()
        self.num_tokens, self.in_features, self.out_features = num_tokens, in_features, out_features
        self.init_splits = list(init_splits) if init_splits is not None else [out_features]
        check_arg(sum(self.init_splits) == out_features, "init_splits", self.init_splits,
                  f"widths adding up to out_features={out_features}")
        self.weight = nn.Parameter(torch.empty(num_tokens, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(num_tokens, out_features)) if bias else None
        self.init_weights()

    def init_weights(self) -> None:
        with torch.no_grad():
            for block in self.weight.split(self.init_splits, dim=-1):
                block.normal_(0.0, math.sqrt(2.0 / (self.in_features + block.shape[-1])))
            if self.bias is not None:
                self.bias.zero_()

    def batched(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bti,tio->bto", x, self.weight)  # (B, T, d_out)
        return y if self.bias is None else y + self.bias

    def token_functions(self) -> List[TokenFunction]:
        biases = self.bias.unbind(0) if self.bias is not None else itertools.repeat(None)
        return [functools.partial(_affine, weight=weight, bias=bias)
                for weight, bias in zip(self.weight.unbind(0), biases)]

    def extra_repr(self) -> str:
        return (f"num_tokens={self.num_tokens}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


class PerTokenRMSNorm(PerTokenLayer):
    """RMSNorm over the last dimension with its own gain per token.

        y[b, t] = x[b, t] / rms(x[b, t]) * g_t,        g: (T, d)

    Args:
        num_tokens: T.
        dim: d.
        eps: added to the mean square (``norm_eps``); None means torch's default.

    Shapes: (B, T, d) -> (B, T, d).
    """

    def __init__(self, num_tokens: int, dim: int, eps: Optional[float] = RELEASE_NORM_EPS):
        super().__init__()
        self.norm = RMSNorm(dim, eps=eps, elementwise_affine=False)
        self.weight = nn.Parameter(torch.ones(num_tokens, dim))

    def init_weights(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)

    def batched(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * self.weight  # (B, T, d)

    def token_functions(self) -> List[TokenFunction]:
        return [functools.partial(self._scaled_norm, gain=gain) for gain in self.weight.unbind(0)]

    def _scaled_norm(self, x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return nn.functional.rms_norm(as_float32(x), self.norm.normalized_shape, gain, self.norm.eps)  # (B, d)


class PerTokenGLU(PerTokenLayer):
    """One GLU-improved layer (RankElastor Eq. 4), one set of weights per token.

        GLU(x) = W_down [ (S x + GELU(W_1 x)) * (W_2 x) ] + R x

    W_1, W_2, S: d -> r*d lifting maps, W_down: r*d -> d compression, R: d -> d
    the learnable residual map, * the Hadamard product, r the expansion rate.
    W_1, W_2, S and R read the same input, so they are one fused per-token
    projection whose output columns are [W_1 | W_2 | S | R]; each block is
    initialised as its own matrix.

    Args:
        num_tokens: T.
        dim: d, input and output size.
        expansion_rate: r; the lifted width is int(d * r).
        activation: the gate non-linearity (GELU in the paper).

    Example:
        >>> glu = PerTokenGLU(num_tokens=4, dim=8, expansion_rate=3.0)
        >>> glu(torch.randn(2, 4, 8)).shape
        torch.Size([2, 4, 8])

    Shapes: (B, T, d) -> (B, T, d).
    """

    def __init__(self, num_tokens: int, dim: int, expansion_rate: float = 3.0, activation: str = "GELU"):
        super().__init__()
        hidden = int(dim * expansion_rate)
        check_arg(hidden >= 1, "expansion_rate", expansion_rate,
                  f"large enough that the GLU width int({dim} * {expansion_rate}) = {hidden} is at least 1")
        self.dim, self.hidden = dim, hidden
        self.split_sizes = [hidden, hidden, hidden, dim]  # W_1, W_2, S, R
        self.in_proj = PerTokenLinear(num_tokens, dim, 3 * hidden + dim, init_splits=self.split_sizes)
        self.down_proj = PerTokenLinear(num_tokens, hidden, dim)  # W_down
        self.activation = get_activation(activation)

    def batched(self, x: torch.Tensor) -> torch.Tensor:
        gate, value, lift, residual = self.in_proj.batched(x).split(self.split_sizes, dim=-1)  # (B, T, r*d) x3, (B, T, d)
        return self.down_proj.batched((lift + self.activation(gate)) * value) + residual      # (B, T, d)

    def token_functions(self) -> List[TokenFunction]:
        # One product per block [W_1 | W_2 | S | R] (column views of the fused weight), so that
        # the element-wise ops read contiguous (B, r*d) results instead of strided column slices.
        weights = [block.unbind(0) for block in self.in_proj.weight.split(self.split_sizes, dim=-1)]
        biases = [block.unbind(0) for block in self.in_proj.bias.split(self.split_sizes, dim=-1)]
        downs = self.down_proj.token_functions()
        return [functools.partial(self._token_glu, weights=token_weights, biases=token_biases, down=down)
                for token_weights, token_biases, down in zip(zip(*weights), zip(*biases), downs)]

    def _token_glu(self, x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                   down: TokenFunction) -> torch.Tensor:
        gate, value, lift, residual = (torch.addmm(b, x, w) for w, b in zip(weights, biases))  # (B, r*d) x3, (B, d)
        return down((lift + self.activation(gate)) * value) + residual                         # (B, d)


class PerTokenTiedGLU(PerTokenLayer):
    """The released code's GLU layer at expansion rate r = 1, one set of weights per token.

        GLU(x) = (R x + GELU(W_1 x)) * (W_2 x) + R x

    At r = 1 the release (``src/utils.py:SwiGLU``) has no compression W_down and
    uses the residual map R as the lifting map S; this is that form
    (``glu_form: release``). ``glu_form: paper`` keeps Eq. 4 with W_down and a
    separate S at every r (:class:`PerTokenGLU`). W_1, W_2 and R are one fused
    projection with output columns [W_1 | W_2 | R].

    Args:
        num_tokens: T.
        dim: d, input, lifted and output size.
        activation: the gate non-linearity (GELU in the paper).

    Example:
        >>> glu = PerTokenTiedGLU(num_tokens=4, dim=8)
        >>> glu(torch.randn(2, 4, 8)).shape
        torch.Size([2, 4, 8])

    Shapes: (B, T, d) -> (B, T, d).
    """

    def __init__(self, num_tokens: int, dim: int, activation: str = "GELU"):
        super().__init__()
        self.dim = dim
        self.in_proj = PerTokenLinear(num_tokens, dim, 3 * dim, init_splits=[dim, dim, dim])  # W_1, W_2, R
        self.activation = get_activation(activation)

    def batched(self, x: torch.Tensor) -> torch.Tensor:
        gate, value, residual = self.in_proj.batched(x).split(self.dim, dim=-1)  # (B, T, d) x3
        return (residual + self.activation(gate)) * value + residual             # (B, T, d)

    def token_functions(self) -> List[TokenFunction]:
        weights = [block.unbind(0) for block in self.in_proj.weight.split(self.dim, dim=-1)]
        biases = [block.unbind(0) for block in self.in_proj.bias.split(self.dim, dim=-1)]
        return [functools.partial(self._token_glu, weights=token_weights, biases=token_biases)
                for token_weights, token_biases in zip(zip(*weights), zip(*biases))]

    def _token_glu(self, x: torch.Tensor, weights: Sequence[torch.Tensor],
                   biases: Sequence[torch.Tensor]) -> torch.Tensor:
        gate, value, residual = (torch.addmm(b, x, w) for w, b in zip(weights, biases))  # (B, d) x3
        return (residual + self.activation(gate)) * value + residual                     # (B, d)


def glu_layer(num_tokens: int, dim: int, expansion_rate: float, glu_form: str) -> nn.Module:
    """The GLU layer of one P-FFN width: the tied release form at r = 1 under ``glu_form: release``."""
    glu_form = check_choice("glu_form", glu_form, GLU_FORMS)
    if glu_form == "release" and expansion_rate == 1.0:
        return PerTokenTiedGLU(num_tokens, dim)
    return PerTokenGLU(num_tokens, dim, expansion_rate)


class PerTokenFFN(nn.Module):
    """The P-FFN: T independent feed-forward networks with a residual (batched on GPUs,
    each token through the whole network in turn on CPUs).

        PFFN(X)[:, t] = X[:, t] + f_t(X[:, t]),     t = 1 .. T

    ``activation="GLU"`` (RankElastor): for every width h in ``hidden_units``,
    [per-token RMSNorm] -> GLU layer (Eq. 4; at r = 1 the release's tied form
    unless ``glu_form="paper"``) -> linear to h when h differs
    from the current width -> dropout; then a final linear back to D.
    ``activation="GELU"`` or ``"ReLU"`` (RankMixer): linear -> [per-token RMSNorm]
    -> activation -> dropout for every width, then a final linear to D; RankMixer's
    two-layer P-FFN is ``hidden_units=[k * D]``.

    Args:
        num_tokens: T.
        token_dim: D.
        hidden_units: widths of the stacked layers.
        activation: ``GLU``, ``GELU`` or ``ReLU``.
        expansion_rate: r of the GLU layers (unused otherwise).
        inner_norm: per-token RMSNorm before each GLU layer / after each hidden linear.
        dropout: dropout after each layer.
        norm_eps: epsilon of the per-token RMSNorms.
        glu_form: ``release`` (tied GLU at r = 1) or ``paper`` (Eq. 4 at every r).

    Example:
        >>> ffn = PerTokenFFN(num_tokens=4, token_dim=8, hidden_units=[16, 16], activation="GLU")
        >>> ffn(torch.randn(2, 4, 8)).shape
        torch.Size([2, 4, 8])

    Shapes: (B, T, D) -> (B, T, D).
    """

    def __init__(self, num_tokens: int, token_dim: int, hidden_units: Sequence[int],
                 activation: str = "GLU", expansion_rate: float = 3.0, inner_norm: bool = False,
                 dropout: float = 0.0, norm_eps: Optional[float] = RELEASE_NORM_EPS,
                 glu_form: str = "release"):
        super().__init__()
        activation = check_choice("ffn_activation", activation, FFN_ACTIVATIONS)
        glu_form = check_choice("glu_form", glu_form, GLU_FORMS)
        hidden_units = check_positive_ints("ffn_hidden_units", hidden_units, min_length=1)
        layers = []
        width = token_dim
        for out_width in hidden_units:
            if activation == "GLU":
                if inner_norm:
                    layers.append(PerTokenRMSNorm(num_tokens, width, norm_eps))
                layers.append(glu_layer(num_tokens, width, expansion_rate, glu_form))
                if out_width != width:
                    layers.append(PerTokenLinear(num_tokens, width, out_width))
            else:
                layers.append(PerTokenLinear(num_tokens, width, out_width))
                if inner_norm:
                    layers.append(PerTokenRMSNorm(num_tokens, out_width, norm_eps))
                layers.append(get_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = out_width
        layers.append(PerTokenLinear(num_tokens, width, token_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type not in TOKEN_LOOP_DEVICES or not self.runs_token_by_token():
            return x + self.net(x)  # (B, T, D)
        # Each token through the whole network before the next (see PerTokenLayer).
        columns = [layer.token_functions() if isinstance(layer, PerTokenLayer) else itertools.repeat(layer)
                   for layer in self.net]
        tokens = zip(zip(*columns), x.unbind(1), strict=True)
        return torch.stack([_residual_chain(functions, x_t) for functions, x_t in tokens], dim=1)  # (B, T, D)

    def runs_token_by_token(self) -> bool:
        """Every layer is a PerTokenLayer or holds no parameters (an activation or dropout: token-wise)."""
        return all(isinstance(layer, PerTokenLayer) or next(layer.parameters(), None) is None
                   for layer in self.net)


# --------------------------------------------------------------------------- token mixing
class BlockTransposeMixing(nn.Module):
    """RankMixer's parameter-free token mixing with its residual (RankElastor Eq. 2).

        P(X):  X.view(B, T, H, D/H).transpose(T, H).reshape(B, T, D)
        Mix(X) = X + P(X)

    Output token h holds head h of every token. With H = T (RankMixer) the
    output has T tokens of size D and P is an involution (P(P(X)) = X). With
    H != T the (H, T*D/H) result is read back row-major as (T, D): still a
    permutation of the T*D coordinates.

    Args:
        num_tokens: T.
        token_dim: D, divisible by H.
        num_heads: H; ``None`` means H = T.

    Example:
        >>> mix = BlockTransposeMixing(num_tokens=4, token_dim=8)
        >>> mix(torch.randn(2, 4, 8)).shape
        torch.Size([2, 4, 8])

    Shapes: (B, T, D) -> (B, T, D).
    """

    def __init__(self, num_tokens: int, token_dim: int, num_heads: Optional[int] = None):
        super().__init__()
        num_heads = num_tokens if num_heads is None else int(num_heads)
        check_arg(num_heads >= 1 and token_dim % num_heads == 0, "num_heads", num_heads,
                  f"a divisor of token_dim={token_dim}: token_mixing='block_transpose' splits each token into "
                  f"num_heads heads (num_heads defaults to num_tokens={num_tokens})")
        self.num_tokens, self.token_dim, self.num_heads = num_tokens, token_dim, num_heads

    def permute(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        heads = x.reshape(batch, self.num_tokens, self.num_heads, self.token_dim // self.num_heads)  # (B, T, H, D/H)
        return heads.transpose(1, 2).reshape(batch, self.num_tokens, self.token_dim)              # (B, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.permute(x)  # (B, T, D)

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, token_dim={self.token_dim}, num_heads={self.num_heads}"


class FullMixing(nn.Module):
    """RankElastor's parameterized full mixing (Eq. 3, Theorem 3.1's finest grid).

        Mix(X) = X + reshape(W_mix RMSNorm(vec X) + b),     W_mix: (T*D) x (T*D)

    Every token-feature coordinate mixes with every other one.

    Args:
        num_tokens: T.
        token_dim: D.
        bias: learn b (the released code does).
        input_norm: the norm of vec X (``mixing_input_norm``): None gives an RMSNorm over the
            T*D coordinates with the release's epsilon 1e-12; nn.Identity for none.

    Example:
        >>> mix = FullMixing(num_tokens=4, token_dim=8)
        >>> mix(torch.randn(2, 4, 8)).shape
        torch.Size([2, 4, 8])

    Shapes: (B, T, D) -> (B, T, D).
    """

    def __init__(self, num_tokens: int, token_dim: int, bias: bool = True, input_norm: Optional[nn.Module] = None):
        super().__init__()
        self.norm = RMSNorm(num_tokens * token_dim, eps=RELEASE_NORM_EPS) if input_norm is None else input_norm
        self.mix = nn.Linear(num_tokens * token_dim, num_tokens * token_dim, bias=bias)  # W_mix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(self.norm(x.flatten(start_dim=1))).view_as(x)  # (B, T, D)


class KroneckerMixing(nn.Module):
    """The released code's Kronecker block mixing (its ``_fast`` configs; Theorem 3.1 with a coarse grid).

        Mix(X) = X + reshape((I_G kron W) RMSNorm(vec X)),     W: (T*D/G) x (T*D/G)

    vec X is cut into G contiguous blocks of T*D/G coordinates and the same
    bias-free W maps every block: Theorem 3.1's block mixing, whose reachable
    updates are confined to the span of the input blocks. G = 1 is full mixing
    without bias. The release runs G = 26 with the flat RMSNorm on Criteo
    (``mixing_type: 8881``) and G = 2 without it, then a LayerNorm, on Avazu
    (``8882``).

    Args:
        num_tokens: T.
        token_dim: D.
        num_blocks: G (``kronecker_blocks``), a divisor of T*D.
        input_norm: the norm of vec X (``mixing_input_norm``): None gives an RMSNorm over the
            T*D coordinates with the release's epsilon 1e-12; nn.Identity for none.

    Example:
        >>> mix = KroneckerMixing(num_tokens=4, token_dim=8, num_blocks=2)
        >>> mix(torch.randn(2, 4, 8)).shape
        torch.Size([2, 4, 8])

    Shapes: (B, T, D) -> (B, T, D).
    """

    def __init__(self, num_tokens: int, token_dim: int, num_blocks: int, input_norm: Optional[nn.Module] = None):
        super().__init__()
        flat = num_tokens * token_dim
        check_positive_int("kronecker_blocks", num_blocks)
        check_arg(flat % num_blocks == 0, "kronecker_blocks", num_blocks,
                  f"a divisor of {flat}: token_mixing='kronecker' cuts the num_tokens * token_dim = "
                  f"{num_tokens} * {token_dim} = {flat} coordinates into kronecker_blocks equal blocks")
        self.num_blocks = num_blocks
        self.norm = RMSNorm(flat, eps=RELEASE_NORM_EPS) if input_norm is None else input_norm
        self.mix = nn.Linear(flat // num_blocks, flat // num_blocks, bias=False)  # W

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = self.norm(x.flatten(start_dim=1)).view(x.shape[0], self.num_blocks, -1)  # (B, G, T*D/G)
        return x + self.mix(blocks).view_as(x)                                            # (B, T, D)

    def extra_repr(self) -> str:
        return f"num_blocks={self.num_blocks}"


# --------------------------------------------------------------------------- tokenization
def _projection_mlp(in_dim: int, hidden_units: Sequence[int], out_dim: int, activation: str,
                    hidden_norm: bool, dropout: float, norm_eps: Optional[float]) -> nn.Sequential:
    """Linear -> [RMSNorm] -> activation -> [dropout] per hidden width, then Linear to out_dim
    (dropout: :class:`RandomBitsDropout`)."""
    layers = []
    for width in hidden_units:
        layers.append(nn.Linear(in_dim, width))
        if hidden_norm:
            layers.append(RMSNorm(width, eps=norm_eps))
        layers.append(get_activation(activation))
        if dropout > 0:
            layers.append(RandomBitsDropout(dropout))
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class Tokenizer(nn.Module):
    """Field embeddings -> T tokens of size D.

        e  = RMSNorm(vec E)                                  # (B, F*k)
        matrix: X[:, t] = MLP(e_t), e_t the t-th of T contiguous chunks of e
                (one MLP shared by all chunks; e is zero-padded at the end
                to T * ceil(F*k / T) when T does not divide F*k)
        vector: X = reshape(MLP(e), (T, D))                   # one MLP to T*D
        none:   X = reshape(e, (T, D))                        # needs F*k == T*D

    On CPU the MLP runs over ``chunk_rows`` (1024) of its rows at a time
    (:func:`~fuxictr_ext.layers.common.row_chunked`), its dropout is
    :class:`~fuxictr_ext.layers.common.RandomBitsDropout`.

    Args:
        num_fields: F.
        embedding_dim: k.
        num_tokens: T.
        token_dim: D.
        mode: ``matrix``, ``vector`` or ``none`` (config key ``tokenizer``).
        hidden_units: hidden widths of the projection MLP.
        activation: its hidden activation.
        hidden_norm: RMSNorm after each hidden linear.
        dropout: dropout after each hidden layer.
        norm_eps: epsilon of its RMSNorms (``norm_eps``); None means torch's default.

    Example:
        >>> tok = Tokenizer(num_fields=39, embedding_dim=20, num_tokens=26, token_dim=30,
        ...                 mode="matrix", hidden_units=[500])
        >>> tok(torch.randn(8, 39, 20)).shape
        torch.Size([8, 26, 30])

    Shapes: (B, F, k) -> (B, T, D).
    """

    def __init__(self, num_fields: int, embedding_dim: int, num_tokens: int, token_dim: int,
                 mode: Optional[str] = "matrix", hidden_units: Sequence[int] = (),
                 activation: str = "ReLU", hidden_norm: bool = False, dropout: float = 0.0,
                 norm_eps: Optional[float] = RELEASE_NORM_EPS):
        super().__init__()
        mode = check_choice("tokenizer", mode, TOKENIZER_MODES)
        flat_dim = num_fields * embedding_dim
        check_positive_int("num_tokens", num_tokens)
        check_positive_int("token_dim", token_dim)
        check_arg(mode != "matrix" or num_tokens <= flat_dim, "num_tokens", num_tokens,
                  f"at most {flat_dim}: tokenizer='matrix' cuts the {num_fields} x {embedding_dim} = {flat_dim} "
                  "embedding coordinates into num_tokens chunks")
        check_arg(mode != "none" or flat_dim == num_tokens * token_dim, "tokenizer", mode,
                  f"used only where num_fields * embedding_dim = {num_fields} * {embedding_dim} = {flat_dim} "
                  f"equals num_tokens * token_dim = {num_tokens} * {token_dim} = {num_tokens * token_dim} "
                  "(it reshapes the embeddings to tokens)")
        self.mode, self.num_tokens, self.token_dim = mode, num_tokens, token_dim
        self.chunk_rows = ROW_CHUNK
        self.input_norm = RMSNorm(flat_dim, eps=norm_eps)
        if mode == "matrix":
            chunk = -(-flat_dim // num_tokens)
            self.groups, self.padding = num_tokens, num_tokens * chunk - flat_dim
            self.project = _projection_mlp(chunk, hidden_units, token_dim, activation, hidden_norm, dropout,
                                           norm_eps)
        elif mode == "vector":
            self.groups, self.padding = 1, 0
            self.project = _projection_mlp(flat_dim, hidden_units, num_tokens * token_dim, activation,
                                           hidden_norm, dropout, norm_eps)
        else:
            self.groups, self.padding = num_tokens, 0
            self.project = nn.Identity()

    def forward(self, feature_emb: torch.Tensor) -> torch.Tensor:
        batch = feature_emb.shape[0]
        flat = self.input_norm(feature_emb.flatten(start_dim=1))                 # (B, F*k)
        flat = nn.functional.pad(flat, (0, self.padding))                        # (B, T*chunk) in matrix mode
        tokens = row_chunked(self.project, flat.view(batch, self.groups, -1), self.chunk_rows)  # (B, T, D) or (B, 1, T*D)
        return tokens.reshape(batch, self.num_tokens, self.token_dim)            # (B, T, D)


# --------------------------------------------------------------------------- block and heads
class TokenMixingBlock(nn.Module):
    """One block: M = mixing_norm(Mix(X)); S = token_norm(M); out = ffn_norm(PFFN(S)).

    ``Mix`` and ``PFFN`` already add their residuals (X + ..., S + ...).
    Released code (both models): ``token_norm`` an RMSNorm over each token, no
    ``ffn_norm``; RankMixer's ``mixing_norm`` is the LayerNorm of its mixing,
    RankElastor has none. The RankMixer paper's form is ``mixing_norm``
    LayerNorm, no ``token_norm``, ``ffn_norm`` LayerNorm. :meth:`mix` returns M,
    the representation the release measures after the mixing (before the
    token norm); :meth:`transform` applies the token norm and the P-FFN.

    Args:
        mixing: a mixing module (BlockTransposeMixing, FullMixing or KroneckerMixing).
        mixing_norm: norm of the mixing output (nn.Identity for none).
        token_norm: norm over each token before the P-FFN (nn.Identity for none).
        ffn: the per-token FFN with residual (PerTokenFFN).
        ffn_norm: norm after the P-FFN (nn.Identity for none).

    Shapes: (B, T, D) -> (B, T, D).
    """

    def __init__(self, mixing: nn.Module, mixing_norm: nn.Module, token_norm: nn.Module, ffn: nn.Module,
                 ffn_norm: nn.Module):
        super().__init__()
        self.mixing, self.mixing_norm, self.token_norm = mixing, mixing_norm, token_norm
        self.ffn, self.ffn_norm = ffn, ffn_norm

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixing_norm(self.mixing(x))  # (B, T, D)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn_norm(self.ffn(self.token_norm(x)))  # (B, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(self.mix(x))


class TokenMeanHead(nn.Module):
    """The parameter-free head of the released code: the mean of all T*D token entries.

    Shapes: (B, T, D) -> (B, 1).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2)).unsqueeze(-1)  # (B, 1)


class TokenMLPHead(nn.Module):
    """Flatten the tokens and score them with an MLP: (B, T*D) -> MLP -> (B, 1).

    Args:
        input_dim: T*D.
        hidden_units: the MLP's hidden widths.
        dropout: dropout after every hidden layer (``head_dropout``; the release has none).
    """

    def __init__(self, input_dim: int, hidden_units: Sequence[int], dropout: float = 0.0):
        super().__init__()
        self.mlp = MLP_Block(input_dim=input_dim, hidden_units=list(hidden_units), hidden_activations="ReLU",
                             output_dim=1, dropout_rates=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x.flatten(start_dim=1))  # (B, 1)
