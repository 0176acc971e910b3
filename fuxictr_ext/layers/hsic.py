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

Scale. With the linear kernel, HSIC(a E_p, a E_q) = a^4 HSIC(E_p, E_q): eq. 3 as printed
can be lowered by shrinking the components, not only by decoupling them, and its size
follows the fourth power of their scale. ``normalization`` offers scale-free readings:

* ``"none"`` - eq. 3 as printed.
* ``"variance"`` - each pair divided by the two components' total variances
  V_p = tr(K_p H) / (n-1) = ||H E_p||_F^2 / (n-1), i.e. eq. 3 on the components scaled
  to unit total variance::

      HSIC_var(E_p, E_q) = ||(H E_p)^T (H E_q)||_F^2 / (||H E_p||_F^2 ||H E_q||_F^2)   in [0, 1]

  0 for linearly independent (orthogonal centred) components, 1 for two copies of the
  same rank-1 component, about 1/(n-1) for independent random ones.
* ``"cka"`` - each pair divided by sqrt(HSIC(E_p, E_p) HSIC(E_q, E_q)) (linear CKA, the
  RV coefficient), in [0, 1], 1 for two copies of any component.

Example:
    >>> components = torch.randn(32, 4, 39, 10)          # (B, m, n, k)
    >>> pairwise_linear_hsic(components).shape           # (B, m, m)
    torch.Size([32, 4, 4])
    >>> hsic_loss(components)                            # scalar, mean over B
"""

from __future__ import annotations

import torch

from ..precision import in_float32

__all__ = ["HSIC_NORMALIZATIONS", "pairwise_linear_hsic", "hsic_loss"]

HSIC_NORMALIZATIONS = ("none", "variance", "cka")


def _check_components(components: torch.Tensor) -> None:
    if components.dim() != 4:
        raise ValueError("HSIC expects components of shape (B, m, n, k), "
                         f"got shape {tuple(components.shape)}")
    if components.shape[2] < 2:
        raise ValueError(f"HSIC needs at least 2 rows per component (n >= 2), got n={components.shape[2]}")


def _check_normalization(normalization: str) -> None:
    if normalization not in HSIC_NORMALIZATIONS:
        raise ValueError(f"hsic_normalization must be one of {HSIC_NORMALIZATIONS}, got {normalization!r}")


def pairwise_linear_hsic(components: torch.Tensor, normalization: str = "none") -> torch.Tensor:
    """Linear-kernel HSIC of every pair of components, per sample.

    HSIC(E_p, E_q) = || (H E_p)^T (H E_q) ||_F^2 / (n-1)^2   (RoBlock eq. 3 / eq. 15)

    Args:
        components: (B, m, n, k) - m components of n rows (fields) and k columns.
        normalization: ``"none"`` (eq. 3), ``"variance"`` or ``"cka"`` (module docstring).

    Returns:
        (B, m, m) symmetric; entry (p, q) is HSIC(E_p, E_q) of that sample, the
        diagonal holds HSIC(E_p, E_p) (1 under ``"cka"``; under ``"variance"`` the
        diagonal is ||C^T C||_F^2 / ||C||_F^4 <= 1). A component that is constant over
        the rows (zero after centring) has 0 with every other under the normalised readings.
    """
    _check_components(components)
    _check_normalization(normalization)
    B, m, n, k = components.shape
    centered = components - components.mean(dim=2, keepdim=True)          # H E_p, (B, m, n, k)
    side_by_side = centered.transpose(1, 2).reshape(B, n, m * k)           # (B, n, m*k)
    cross = side_by_side.transpose(1, 2) @ side_by_side                    # (B, m*k, m*k)
    cross = cross.view(B, m, k, m, k)                                      # block (p, q): (H E_p)^T (H E_q)
    pairwise = cross.square().sum(dim=(2, 4))                              # (B, m, m) ||(H E_p)^T (H E_q)||_F^2
    tiny = torch.finfo(components.dtype).tiny
    if normalization == "variance":
        energy = centered.square().sum(dim=(2, 3))                         # (B, m) ||H E_p||_F^2
        return pairwise / (energy[:, :, None] * energy[:, None, :]).clamp_min(tiny)
    if normalization == "cka":
        self_hsic = pairwise.diagonal(dim1=1, dim2=2).clamp_min(tiny).sqrt()              # (B, m) ||(H E_p)^T (H E_p)||_F
        return pairwise / (self_hsic[:, :, None] * self_hsic[:, None, :])
    return pairwise / (n - 1) ** 2                                         # (B, m, m)


@in_float32
def hsic_loss(components: torch.Tensor, normalization: str = "none") -> torch.Tensor:
    """RoBlock's HSIC regulariser (eq. 3), averaged over the batch.

    L = 2 / (m^2 - m) * sum_{p<q} HSIC(E_p, E_q), i.e. the mean HSIC over the
    unordered pairs of distinct components.

    Args:
        components: (B, m, n, k).
        normalization: ``"none"`` (eq. 3 as printed), ``"variance"`` or ``"cka"``
            (scale-free readings, module docstring).

    Returns:
        Scalar tensor. With a single component (m = 1) there is no pair whose
        dependence could be penalised and the value is 0.
    """
    _check_components(components)
    _check_normalization(normalization)
    m = components.shape[1]
    if m < 2:
        return components.new_zeros(())
    pairwise = pairwise_linear_hsic(components, normalization)                            # (B, m, m)
    off_diagonal_sum = pairwise.sum(dim=(1, 2)) - pairwise.diagonal(dim1=1, dim2=2).sum(dim=1)  # (B,)
    # off_diagonal_sum counts every pair p<q twice: 2/(m^2-m) * sum_{p<q} = off_diagonal_sum / (m^2-m)
    return (off_diagonal_sum / (m * m - m)).mean()
