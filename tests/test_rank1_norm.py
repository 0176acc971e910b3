"""Rank-1 update normalization (RoBlock eq. 2, Proposition 4.1, Figure 3)."""

import pytest
import torch

from fuxictr_ext.layers.rank1_norm import RankOneUpdateNorm, rank_one_update


def textbook_rank_one_update(X: torch.Tensor, v0: torch.Tensor, t: int) -> torch.Tensor:
    """Eq. 2 for one (n, d) matrix, literally: un-normalised power iterations."""
    v = v0
    for _ in range(t):
        v = X.T @ X @ v
    return X - torch.outer(X @ v, v) / (v @ v)


def information_abundance(X: torch.Tensor) -> torch.Tensor:
    sigma = torch.linalg.svdvals(X)                                   # (*, min(n, d))
    return sigma.sum(dim=-1) / sigma.max(dim=-1).values


@pytest.mark.parametrize("t", [1, 2, 3, 5])
@pytest.mark.parametrize("n,d", [(6, 4), (3, 7), (39, 10)])
def test_equals_textbook_formula(t, n, d):
    gen = torch.Generator().manual_seed(n * 10 + d + t)
    X = torch.randn(4, n, d, generator=gen, dtype=torch.float64)
    v0 = torch.randn(4, d, generator=gen, dtype=torch.float64)
    out = rank_one_update(X, v0, t)
    for b in range(4):
        torch.testing.assert_close(out[b], textbook_rank_one_update(X[b], v0[b], t), rtol=1e-9, atol=1e-10)


def test_module_draws_one_start_vector_per_sample():
    X = torch.randn(3, 5, 4, dtype=torch.float64)
    norm = RankOneUpdateNorm(num_iterations=2).train()
    torch.manual_seed(0)
    out = norm(X)
    torch.manual_seed(0)
    v0 = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(out, rank_one_update(X, v0, 2))
    same_rows = X[:1].expand(3, 5, 4)
    out_same = norm(same_rows)
    # each sample gets its own v0; with t = 2 the directions differ slightly
    assert not torch.allclose(out_same[0], out_same[1])


def test_identity_in_eval_mode():
    norm = RankOneUpdateNorm(num_iterations=3).eval()
    X = torch.randn(2, 5, 4)
    assert norm(X) is X


def test_at_inference_applies_eq2_from_the_all_ones_start_in_eval_mode():
    """rank1_norm_at_inference: eval applies eq. 2 from v^(0) = 1, the same output on every call;
    training still draws a random start per sample."""
    X = torch.randn(3, 5, 4, dtype=torch.float64)
    norm = RankOneUpdateNorm(num_iterations=3, at_inference=True).eval()
    out = norm(X)
    torch.testing.assert_close(out, rank_one_update(X, torch.ones(3, 4, dtype=torch.float64), 3))
    torch.testing.assert_close(norm(X), out, rtol=0, atol=0)
    assert not torch.allclose(out, X)
    norm.train()
    torch.manual_seed(0)
    trained = norm(X)
    torch.manual_seed(0)
    torch.testing.assert_close(trained, rank_one_update(X, torch.randn(3, 4, dtype=torch.float64), 3))


def test_removes_top_direction():
    """X~ v = 0 for the final v: the estimated top direction is projected out of every row."""
    gen = torch.Generator().manual_seed(5)
    U, _ = torch.linalg.qr(torch.randn(2, 20, 6, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(2, 6, 6, generator=gen, dtype=torch.float64))
    sigma = torch.tensor([3.0, 2.0, 1.5, 1.0, 0.5, 0.2], dtype=torch.float64)
    X = U @ torch.diag(sigma) @ V.transpose(1, 2)                    # gap sigma_2 / sigma_1 = 2/3
    v0 = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    out = rank_one_update(X, v0, 50)
    _, _, Vh = torch.linalg.svd(X, full_matrices=False)
    top = Vh[:, 0, :]                                                # (B, d)
    torch.testing.assert_close(torch.einsum("bnd,bd->bn", out, top), torch.zeros(2, 20, dtype=torch.float64),
                               atol=1e-8, rtol=0)
    sigma_in = torch.linalg.svdvals(X)
    sigma_out = torch.linalg.svdvals(out)
    torch.testing.assert_close(sigma_out[:, :-1], sigma_in[:, 1:], rtol=1e-8, atol=1e-8)


def collapsed_matrix(n: int, d: int, seed: int) -> torch.Tensor:
    """A collapsed low-rank random matrix: X = A B + noise with rank(A B) = 3 and one dominant direction."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, 3, generator=gen)
    B = torch.randn(3, d, generator=gen) * torch.tensor([[30.0], [5.0], [3.0]])
    return A @ B + torch.randn(n, d, generator=gen)


@pytest.mark.parametrize("t", [1, 2])
def test_information_abundance_rises_figure_3(t):
    """Figure 3: n = 10,000, d = 10, one and two iterations. Proposition 4.1 is a statement
    in expectation over v0: the IA averaged over draws of v0, and the IA of the average X~,
    both exceed the IA of X."""
    X = collapsed_matrix(10_000, 10, seed=0)
    ia_before = information_abundance(X)
    draws = 16
    v0 = torch.randn(draws, 10, generator=torch.Generator().manual_seed(t))
    out = rank_one_update(X.expand(draws, -1, -1), v0, t)            # (draws, n, d)
    ia_after = information_abundance(out)                              # (draws,)
    assert ia_before < 1.3                                             # collapsed: one direction dominates
    assert ia_after.mean() > 1.3 * ia_before, (ia_before, ia_after)
    assert information_abundance(out.mean(dim=0)) > 1.3 * ia_before
    assert (ia_after <= 10.0).all()


def test_expected_spectrum_proposition_4_1():
    """E_v0[X~] = U diag((1 - lambda_i(t)) sigma_i) V^T, lambda_i(t) = E[(y_i s_i^2t)^2 / sum_l (y_l s_l^2t)^2]."""
    t, n, d, draws = 1, 12, 4, 40_000
    gen = torch.Generator().manual_seed(9)
    U, _ = torch.linalg.qr(torch.randn(n, d, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    sigma = torch.tensor([2.0, 1.5, 1.2, 1.0], dtype=torch.float64)
    X = U @ torch.diag(sigma) @ V.T
    v0 = torch.randn(draws, d, generator=gen, dtype=torch.float64)
    mean_out = rank_one_update(X.expand(draws, n, d), v0, t).mean(dim=0)
    y = v0 @ V                                                         # y = V^T v0 per draw
    weighted = (y * sigma ** (2 * t)) ** 2                             # (draws, d)
    lam = (weighted / weighted.sum(dim=1, keepdim=True)).mean(dim=0)   # lambda_i(t), Monte Carlo
    expected = U @ torch.diag((1 - lam) * sigma) @ V.T
    torch.testing.assert_close(mean_out, expected, atol=0.02, rtol=0)
    assert (lam[:-1] >= lam[1:]).all()                                 # larger sigma, larger shrinkage


@pytest.mark.parametrize("t", [1, 3, 6])
def test_no_overflow_with_singular_values_1e4(t):
    gen = torch.Generator().manual_seed(4)
    U, _ = torch.linalg.qr(torch.randn(39, 10, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64))
    sigma = torch.tensor([1e4, 9e3, 5e3, 1e3, 1e3, 1e2, 10.0, 1.0, 1.0, 0.1], dtype=torch.float64)
    X64 = (U @ torch.diag(sigma) @ V.T)[None]
    v0 = torch.randn(1, 10, generator=gen, dtype=torch.float64)
    out32 = rank_one_update(X64.float(), v0.float(), t)
    assert torch.isfinite(out32).all()
    reference = textbook_rank_one_update(X64[0], v0[0], t)             # float64 holds sigma^(4t)
    torch.testing.assert_close(out32[0].double(), reference, rtol=0, atol=1e-3 * 1e4)
    raw = v0.float()[0]
    for _ in range(t):
        raw = X64[0].float().T @ X64[0].float() @ raw
    if t >= 3:
        assert not torch.isfinite(raw @ raw)                           # the un-normalised iterate does overflow


def test_zero_matrix_is_unchanged_and_has_finite_gradient():
    X = torch.zeros(2, 5, 3, requires_grad=True)
    norm = RankOneUpdateNorm(3).train()
    out = norm(X)
    assert torch.equal(out, torch.zeros(2, 5, 3))
    out.sum().backward()
    assert torch.isfinite(X.grad).all()


def test_differentiable():
    X = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    v0 = torch.randn(2, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: rank_one_update(x, v0, 3), (X,))


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank1_iterations"):
        RankOneUpdateNorm(0)
    with pytest.raises(ValueError):
        rank_one_update(torch.randn(2, 5, 3), torch.randn(2, 5), 1)
    with pytest.raises(ValueError):
        rank_one_update(torch.randn(2, 5, 3), torch.randn(2, 3), 0)
