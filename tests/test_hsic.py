"""HSIC with the linear kernel (RoBlock eq. 3 and its Frobenius form, appendix A.5.2)."""

import itertools

import pytest
import torch

from fuxictr_ext.layers.hsic import hsic_loss, pairwise_linear_hsic


def trace_form_hsic(E_p: torch.Tensor, E_q: torch.Tensor) -> torch.Tensor:
    """tr(K H L H) / (n-1)^2 with K = E_p E_p^T, L = E_q E_q^T for one (n, k) pair."""
    n = E_p.shape[0]
    H = torch.eye(n, dtype=E_p.dtype) - torch.ones(n, n, dtype=E_p.dtype) / n
    K = E_p @ E_p.T
    L = E_q @ E_q.T
    return torch.trace(K @ H @ L @ H) / (n - 1) ** 2


def reference_loss(components: torch.Tensor) -> torch.Tensor:
    """Eq. 3 with a loop over samples and pairs, averaged over the batch."""
    B, m = components.shape[:2]
    per_sample = []
    for b in range(B):
        total = sum(trace_form_hsic(components[b, p], components[b, q])
                    for p, q in itertools.combinations(range(m), 2))
        per_sample.append(2.0 / (m * m - m) * total)
    return torch.stack(per_sample).mean()


@pytest.mark.parametrize("B,m,n,k", [(3, 2, 5, 4), (2, 4, 39, 10), (1, 3, 2, 1), (4, 5, 7, 12)])
def test_pairwise_equals_trace_form(B, m, n, k):
    gen = torch.Generator().manual_seed(B * 100 + m * 10 + n)
    components = torch.randn(B, m, n, k, generator=gen, dtype=torch.float64) * 3 + 1
    pairwise = pairwise_linear_hsic(components)
    assert pairwise.shape == (B, m, m)
    for b, p, q in itertools.product(range(B), range(m), range(m)):
        expected = trace_form_hsic(components[b, p], components[b, q])
        torch.testing.assert_close(pairwise[b, p, q], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("B,m,n,k", [(3, 2, 5, 4), (2, 4, 39, 10), (5, 3, 11, 2)])
def test_loss_equals_equation_3(B, m, n, k):
    gen = torch.Generator().manual_seed(7)
    components = torch.randn(B, m, n, k, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(hsic_loss(components), reference_loss(components), rtol=1e-10, atol=1e-12)


def test_float32_matches_float64():
    components = torch.randn(8, 4, 39, 10, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(hsic_loss(components), hsic_loss(components.double()).float(),
                               rtol=1e-4, atol=1e-6)


def test_zero_for_orthogonal_centred_components():
    """Components whose centred columns are mutually orthogonal are exactly independent
    under the linear kernel: every cross block (H E_p)^T (H E_q) vanishes."""
    n, k, m = 30, 3, 4
    gen = torch.Generator().manual_seed(3)
    raw = torch.randn(n, m * k, generator=gen, dtype=torch.float64)
    raw = raw - raw.mean(dim=0, keepdim=True)
    basis, _ = torch.linalg.qr(raw)                                   # (n, m*k), columns orthonormal and centred
    shifts = torch.randn(m, 1, k, generator=gen, dtype=torch.float64)  # a per-component offset is removed by H
    components = (basis.T.reshape(m, k, n).transpose(1, 2) * 5 + shifts)[None]  # (1, m, n, k)
    assert hsic_loss(components).abs() < 1e-24
    dependent = components.clone()
    dependent[:, 1] = dependent[:, 0] * 2
    assert hsic_loss(dependent) > 1e-2


def test_independent_samples_vanish_with_sampling_noise():
    """For independent unit-variance components the expected empirical value is
    about k^2/(n-1) (squared entries of a sample cross-covariance): it shrinks like 1/n,
    while a dependent pair stays near ||Cov||_F^2 = k."""
    k, m = 4, 3
    gen = torch.Generator().manual_seed(11)
    values = {}
    for n in (250, 4000):
        independent = torch.randn(16, m, n, k, generator=gen, dtype=torch.float64)
        values[n] = hsic_loss(independent).item()
        noise_level = k * k / (n - 1)
        assert 0.5 * noise_level < values[n] < 2.0 * noise_level
    assert values[4000] < values[250] / 8
    shared = torch.randn(16, 1, 4000, k, generator=gen, dtype=torch.float64)
    dependent = shared.expand(16, m, 4000, k)
    assert hsic_loss(dependent).item() == pytest.approx(k, rel=0.2)


def test_single_component_has_no_pair():
    assert hsic_loss(torch.randn(4, 1, 6, 3)).item() == 0.0


def test_differentiable():
    components = torch.randn(2, 3, 5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(hsic_loss, (components,))
    assert torch.autograd.gradcheck(pairwise_linear_hsic, (components,))
    loss = hsic_loss(components)
    loss.backward()
    assert components.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (2, 3, 1, 4), (1, 2, 3, 4, 5)])
def test_bad_shapes(shape):
    with pytest.raises(ValueError):
        hsic_loss(torch.randn(*shape))


# ------------------------------------------------------------------ scale-free readings
def reference_normalised_loss(components: torch.Tensor, normalization: str) -> torch.Tensor:
    """Eq. 3 with a loop over samples and pairs, each pair divided by the product of the two
    components' total variances tr(K H)/(n-1) ("variance") or by sqrt(HSIC(p,p) HSIC(q,q)) ("cka")."""
    B, m, n = components.shape[:3]
    H = torch.eye(n, dtype=components.dtype) - torch.ones(n, n, dtype=components.dtype) / n
    per_sample = []
    for b in range(B):
        total = 0.0
        for p, q in itertools.combinations(range(m), 2):
            E_p, E_q = components[b, p], components[b, q]
            if normalization == "variance":
                scale = (torch.trace(E_p @ E_p.T @ H) / (n - 1)) * (torch.trace(E_q @ E_q.T @ H) / (n - 1))
            else:
                scale = (trace_form_hsic(E_p, E_p) * trace_form_hsic(E_q, E_q)).sqrt()
            total = total + trace_form_hsic(E_p, E_q) / scale
        per_sample.append(2.0 / (m * m - m) * total)
    return torch.stack(per_sample).mean()


@pytest.mark.parametrize("normalization", ["variance", "cka"])
@pytest.mark.parametrize("B,m,n,k", [(3, 2, 5, 4), (2, 4, 39, 10), (4, 5, 7, 12)])
def test_normalised_readings_equal_their_trace_forms(normalization, B, m, n, k):
    gen = torch.Generator().manual_seed(B + m + n + k)
    components = torch.randn(B, m, n, k, generator=gen, dtype=torch.float64) * 3 + 1
    torch.testing.assert_close(hsic_loss(components, normalization),
                               reference_normalised_loss(components, normalization), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("normalization", ["variance", "cka"])
def test_normalised_readings_are_scale_free_and_bounded(normalization):
    """Eq. 3 as printed grows with the fourth power of the components' scale; the normalised
    readings do not move with any per-component scale and stay in [0, 1]."""
    gen = torch.Generator().manual_seed(5)
    components = torch.randn(6, 3, 10, 8, generator=gen, dtype=torch.float64)
    components[:, 1] += 0.7 * components[:, 0]                                   # a dependent pair
    scales = torch.tensor([1e-3, 10.0, 300.0], dtype=torch.float64)[None, :, None, None]
    raw, scaled = hsic_loss(components), hsic_loss(components * scales)
    assert not torch.isclose(raw, scaled)
    torch.testing.assert_close(hsic_loss(components * 1e-3), raw * 1e-12)          # a^4 scaling of eq. 3
    torch.testing.assert_close(hsic_loss(components * scales, normalization), hsic_loss(components, normalization))
    pairwise = pairwise_linear_hsic(components * scales, normalization)
    assert (pairwise >= 0).all() and (pairwise <= 1 + 1e-12).all()


def test_variance_reading_limits():
    """1 for two copies of a rank-1 component, 0 for orthogonal centred ones, about 1/(n-1)
    for independent random ones (the sampling-noise floor)."""
    gen = torch.Generator().manual_seed(6)
    n, k = 400, 4
    rank_one = torch.randn(1, 1, n, 1, generator=gen, dtype=torch.float64) * torch.randn(1, 1, 1, k, generator=gen,
                                                                                           dtype=torch.float64)
    assert hsic_loss(torch.cat([rank_one, 5 * rank_one], dim=1), "variance").item() == pytest.approx(1.0)
    basis, _ = torch.linalg.qr(torch.randn(n, 2 * k, generator=gen, dtype=torch.float64)
                               - torch.randn(n, 2 * k, generator=gen, dtype=torch.float64).mean(dim=0))
    basis = basis - basis.mean(dim=0)
    basis, _ = torch.linalg.qr(basis)
    orthogonal = basis.T.reshape(2, k, n).transpose(1, 2)[None]                       # (1, 2, n, k)
    assert hsic_loss(orthogonal, "variance").item() < 1e-20
    independent = torch.randn(32, 2, n, k, generator=gen, dtype=torch.float64)
    assert hsic_loss(independent, "variance").item() == pytest.approx(1 / (n - 1), rel=0.3)


@pytest.mark.parametrize("normalization", ["variance", "cka"])
def test_normalised_readings_are_differentiable_and_finite_at_zero(normalization):
    components = torch.randn(2, 3, 5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: hsic_loss(c, normalization), (components,))
    constant = torch.ones(2, 3, 5, 2, dtype=torch.float64, requires_grad=True)       # zero after centring
    loss = hsic_loss(constant, normalization)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(constant.grad).all()


def test_unknown_normalization_names_the_key():
    with pytest.raises(ValueError, match="hsic_normalization"):
        hsic_loss(torch.randn(2, 3, 5, 2), "frobenius")
