"""Rank-1 update normalization (Yu et al., ECCV 2020), as used by RoBlock (eq. 2).

For one sample's matrix X (n, d) and a random start v^(0) ~ N(0, I_d), t power
iterations give an estimate of the top right singular vector, whose rank-1
component is then removed::

    v^(j) = X^T X v^(j-1),   j = 1..t
    X~    = X - X v^(t) v^(t)T / ||v^(t)||^2

Proposition 4.1 of the RoBlock paper: in expectation over v^(0), X~ keeps the
singular vectors of X and scales sigma_i by (1 - lambda_i(t)), a factor that is
smaller for larger sigma_i, so the spectrum is rebalanced and the information
abundance rises.

Numerics: v is divided by its norm after every iteration. The direction, and
so X~, is unchanged (eq. 2 is invariant to the scale of v), but the raw
iterate grows like sigma_1^(2t) and overflows float32 already for t = 3 and
sigma_1 = 1e4; the normalised one stays at unit length.

Gradients flow through the whole computation, v included (the autograd of
eq. 2 as written). The module is a training-time augmentation: in eval mode it
returns its input unchanged, so inference pays nothing for it, unless it is
built with ``at_inference=True`` (eval then applies eq. 2 from v^(0) = 1).

Example:
    >>> norm = RankOneUpdateNorm(num_iterations=3)
    >>> X = torch.randn(32, 39, 20)                  # (B, n, d)
    >>> norm.train()(X).shape                        # (B, n, d), one random v^(0) per sample
    torch.Size([32, 39, 20])
    >>> norm.eval()(X) is X
    True
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import check_positive_int
from ..precision import in_float32

__all__ = ["rank_one_update", "RankOneUpdateNorm"]


@in_float32
def rank_one_update(X: torch.Tensor, v0: torch.Tensor, num_iterations: int) -> torch.Tensor:
    """Apply eq. 2 to every matrix of a batch with the given start vectors.

    Args:
        X: (*, n, d) matrices.
        v0: (*, d) start vectors v^(0), one per matrix.
        num_iterations: t >= 1, the number of power iterations.

    Returns:
        (*, n, d) X~ = X - X v v^T / ||v||^2 with v = (X^T X)^t v0 (computed with
        a normalisation after each iteration). A matrix for which the iterate
        vanishes (e.g. X = 0) is returned unchanged.
    """
    if num_iterations < 1:
        raise ValueError(f"rank-1 update needs num_iterations >= 1, got {num_iterations}")
    if X.dim() < 2 or v0.shape != X.shape[:-2] + X.shape[-1:]:
        raise ValueError(f"rank-1 update expects X (*, n, d) and v0 (*, d), got {tuple(X.shape)} "
                         f"and {tuple(v0.shape)}")
    tiny = torch.finfo(X.dtype).tiny
    v = v0
    for _ in range(num_iterations):
        Xv = torch.einsum("...nd,...d->...n", X, v)                        # (*, n)
        v = torch.einsum("...nd,...n->...d", X, Xv)                        # (*, d) X^T X v
        v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(tiny)
    Xv = torch.einsum("...nd,...d->...n", X, v)                            # (*, n)
    squared_norm = v.square().sum(dim=-1).clamp_min(tiny)                  # (*,) 1, or 0 if v vanished
    return X - (Xv / squared_norm[..., None])[..., :, None] * v[..., None, :]  # (*, n, d)


class RankOneUpdateNorm(nn.Module):
    """RoBlock's rank-1 update normalization (eq. 2), by default training only (identity in eval).

    In training each sample of the batch gets its own random start vector
    v^(0) ~ N(0, I_d), drawn from torch's global generator. The paper applies it in
    training only ("omitted at inference"); ``at_inference=True`` applies eq. 2 in
    eval mode too, from the fixed start v^(0) = 1 (all ones), so that evaluation
    sees inputs of the kind training saw and stays deterministic.

    Args:
        num_iterations: t, the number of power iterations (the paper uses 3).
        at_inference: also apply it in eval mode (from v^(0) = 1).

    Shapes: (B, n, d) -> (B, n, d); any leading dimensions are treated as batch.
    """

    def __init__(self, num_iterations: int = 3, at_inference: bool = False):
        super().__init__()
        check_positive_int("rank1_iterations", num_iterations)
        self.num_iterations = num_iterations
        self.at_inference = bool(at_inference)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        shape = X.shape[:-2] + X.shape[-1:]                                             # (B, d)
        if self.training:
            v0 = torch.randn(shape, dtype=X.dtype, device=X.device)
        elif self.at_inference:
            v0 = torch.ones(shape, dtype=X.dtype, device=X.device)
        else:
            return X
        return rank_one_update(X, v0, self.num_iterations)

    def extra_repr(self) -> str:
        return f"num_iterations={self.num_iterations}, at_inference={self.at_inference}"
