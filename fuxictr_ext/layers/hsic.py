"""Hilbert-Schmidt independence criterion (HSIC) with the linear kernel.

RoBlock (eq. 3) regularises the m components E_1..E_m that its decoupler
extracts, each (n, k) per sample, towards mutual independence::

    L_HSIC = 2 / (m^2 - m) * sum_{p<q} 1/(n-1)^2 * tr(K(E_p) H L(E_q) H)

with H = I - 11^T/n the centering matrix over the n rows and the linear kernels
K(E) = L(E) = E E^T. Appendix A.5.2 rewrites the trace (H is symmetric and
idempotent) as a Frobenius norm of a (k, k) cross-product::

    tr(E_p E_p^T H E_q E_q^T H) = || (H E_p)^T (H E_q) ||_F^2

which is what this module computes, for all m^2 pairs at once: the centred
components are laid side by side as one (n, m*k) matrix C per sample, and the
(m*k, m*k) product C^T C holds every (H E_p)^T (H E_q) as its (p, q) block.
Cost O(B n k^2 m^2) time, O(B k^2 m^2) memory, no loop over pairs.

Example:
    >>> components = torch.randn(32, 4, 39, 10)          # (B, m, n, k)
    >>> pairwise_linear_hsic(components).shape           # (B, m, m)
    torch.Size([32, 4, 4])
    >>> hsic_loss(components)                            # scalar, mean over B
"""

from __future__ import annotations

import torch

from ..precision import in_float32

__all__ = ["pairwise_linear_hsic", "hsic_loss"]


def _check_components(components: torch.Tensor) -> None:
    if components.dim() != 4:
        raise ValueError("HSIC expects components of shape (B, m, n, k), "
                         f"got shape {tuple(components.shape)}")
    if components.shape[2] < 2:
        raise ValueError(f"HSIC needs at least 2 rows per component (n >= 2), got n={components.shape[2]}")


def pairwise_linear_hsic(components: torch.Tensor) -> torch.Tensor:
    """Linear-kernel HSIC of every pair of components, per sample.

    HSIC(E_p, E_q) = || (H E_p)^T (H E_q) ||_F^2 / (n-1)^2   (RoBlock eq. 3 / eq. 15)

    Args:
        components: (B, m, n, k) - m components of n rows (fields) and k columns.

    Returns:
        (B, m, m) symmetric; entry (p, q) is HSIC(E_p, E_q) of that sample, the
        diagonal holds HSIC(E_p, E_p).
    """
    _check_components(components)
    B, m, n, k = components.shape
    centered = components - components.mean(dim=2, keepdim=True)          # H E_p, (B, m, n, k)
    side_by_side = centered.transpose(1, 2).reshape(B, n, m * k)           # (B, n, m*k)
    cross = side_by_side.transpose(1, 2) @ side_by_side                    # (B, m*k, m*k)
    cross = cross.view(B, m, k, m, k)                                      # block (p, q): (H E_p)^T (H E_q)
    return cross.square().sum(dim=(2, 4)) / (n - 1) ** 2                   # (B, m, m)


@in_float32
def hsic_loss(components: torch.Tensor) -> torch.Tensor:
    """RoBlock's HSIC regulariser (eq. 3), averaged over the batch.

    L = 2 / (m^2 - m) * sum_{p<q} HSIC(E_p, E_q), i.e. the mean HSIC over the
    unordered pairs of distinct components.

    Args:
        components: (B, m, n, k).

    Returns:
        Scalar tensor. With a single component (m = 1) there is no pair whose
        dependence could be penalised and the value is 0.
    """
    _check_components(components)
    m = components.shape[1]
    if m < 2:
        return components.new_zeros(())
    pairwise = pairwise_linear_hsic(components)                            # (B, m, m)
    off_diagonal_sum = pairwise.sum(dim=(1, 2)) - pairwise.diagonal(dim1=1, dim2=2).sum(dim=1)  # (B,)
    # off_diagonal_sum counts every pair p<q twice: 2/(m^2-m) * sum_{p<q} = off_diagonal_sum / (m^2-m)
    return (off_diagonal_sum / (m * m - m)).mean()
