"""Layers of the shared token-transformation backbone (fuxictr_ext.layers.token_mixing)."""

import pytest
import torch
from torch import nn

from fuxictr_ext.layers.token_mixing import (BlockTransposeMixing, FullMixing, KroneckerMixing, PerTokenFFN,
                                             PerTokenGLU, PerTokenLinear, PerTokenRMSNorm, PerTokenTiedGLU,
                                             TokenMeanHead, Tokenizer, make_norm, row_chunked)
from fuxictr_ext.layers.common import RandomBitsDropout
from fuxictr_ext.spectrum.metrics import entropy_effective_rank


def _seed(seed=0):
    torch.manual_seed(seed)


def _randomize(module: nn.Module, seed=1):
    """Non-trivial values for every parameter (biases and gains included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * 0.3)
    return module


# --------------------------------------------------------------------------- block transpose
@pytest.mark.parametrize("T,D,H", [(4, 8, None), (3, 6, 3), (26, 26, None), (26, 30, 30), (26, 30, 15), (4, 8, 2)])
def test_block_transpose_is_a_permutation_of_coordinates(T, D, H):
    mix = BlockTransposeMixing(T, D, H)
    x = torch.arange(2 * T * D, dtype=torch.float64).view(2, T, D)
    permuted = mix.permute(x)
    assert permuted.shape == (2, T, D)
    for b in range(2):
        assert torch.equal(permuted[b].flatten().sort().values, x[b].flatten())


@pytest.mark.parametrize("T,D", [(4, 8), (3, 9), (6, 6), (2, 10)])
def test_block_transpose_with_h_equal_t_is_an_involution(T, D):
    mix = BlockTransposeMixing(T, D)
    x = torch.randn(5, T, D)
    assert not torch.equal(mix.permute(x), x)
    assert torch.equal(mix.permute(mix.permute(x)), x)


@pytest.mark.parametrize("T,D", [(4, 8), (3, 6)])
def test_block_transpose_matches_rankmixer_definition(T, D):
    """Output token h = concat over tokens t of head h of token t (H = T)."""
    mix = BlockTransposeMixing(T, D)
    x = torch.randn(3, T, D)
    head = D // T
    expected = torch.stack([torch.cat([x[:, t, h * head:(h + 1) * head] for t in range(T)], dim=-1)
                            for h in range(T)], dim=1)
    assert torch.equal(mix.permute(x), expected)
    assert torch.allclose(mix(x), x + expected)
    assert sum(p.numel() for p in mix.parameters()) == 0


def test_block_transpose_rejects_heads_not_dividing_token_dim():
    with pytest.raises(ValueError, match="num_heads=26.*token_dim=30"):
        BlockTransposeMixing(26, 30)
    with pytest.raises(ValueError, match="num_heads=7"):
        BlockTransposeMixing(4, 8, 7)


# --------------------------------------------------------------------------- full mixing
def test_full_mixing_with_zero_w_mix_is_identity():
    mix = FullMixing(5, 6)
    with torch.no_grad():
        mix.mix.weight.zero_()
        mix.mix.bias.zero_()
    x = torch.randn(4, 5, 6)
    assert torch.equal(mix(x), x)


def test_full_mixing_matches_equation_3():
    _seed()
    T, D = 3, 4
    mix = _randomize(FullMixing(T, D))
    x = torch.randn(7, T, D, dtype=torch.float64)
    mix = mix.double()
    flat = x.reshape(7, T * D)
    normed = flat / torch.sqrt(flat.pow(2).mean(-1, keepdim=True) + torch.finfo(torch.float64).eps) * mix.norm.weight
    expected = x + (normed @ mix.mix.weight.T + mix.mix.bias).view(7, T, D)
    assert torch.allclose(mix(x), expected, atol=1e-10)


def test_full_mixing_couples_every_coordinate():
    """Theorem 3.1's finest grid: the Jacobian of W_mix's path is dense across tokens."""
    _seed()
    mix = FullMixing(3, 4)
    x = torch.randn(1, 3, 4)
    jac = torch.autograd.functional.jacobian(lambda v: mix(v), x).reshape(12, 12)
    assert (jac.abs() > 0).all()


# --------------------------------------------------------------------------- per-token layers
def test_per_token_linear_equals_loop_over_tokens():
    _seed()
    layer = _randomize(PerTokenLinear(5, 3, 4))
    x = torch.randn(6, 5, 3)
    loop = torch.stack([x[:, t] @ layer.weight[t] + layer.bias[t] for t in range(5)], dim=1)
    assert torch.allclose(layer(x), loop, atol=1e-6)


def test_per_token_linear_init_is_xavier_normal_per_split():
    torch.manual_seed(0)
    layer = PerTokenLinear(64, 32, 96 + 32, init_splits=[96, 32])
    first, second = layer.weight.split([96, 32], dim=-1)
    assert first.std().item() == pytest.approx((2 / (32 + 96)) ** 0.5, rel=0.05)
    assert second.std().item() == pytest.approx((2 / (32 + 32)) ** 0.5, rel=0.05)
    assert torch.count_nonzero(layer.bias) == 0
    with pytest.raises(ValueError, match="init_splits"):
        PerTokenLinear(2, 3, 4, init_splits=[1, 2])


def test_per_token_rmsnorm_has_a_gain_per_token():
    norm = _randomize(PerTokenRMSNorm(3, 4))
    x = torch.randn(2, 3, 4)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps) * norm.weight
    assert torch.allclose(norm(x), expected, atol=1e-6)


def _glu_reference(glu: PerTokenGLU, x: torch.Tensor) -> torch.Tensor:
    """Eq. 4 written out with one explicit set of matrices per token (slow reference)."""
    h, d = glu.hidden, glu.dim
    W, b = glu.in_proj.weight, glu.in_proj.bias
    outs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        W1, W2, S, R = W[t, :, :h], W[t, :, h:2 * h], W[t, :, 2 * h:3 * h], W[t, :, 3 * h:]
        b1, b2, bS, bR = b[t, :h], b[t, h:2 * h], b[t, 2 * h:3 * h], b[t, 3 * h:]
        gate = torch.nn.functional.gelu(xt @ W1 + b1)
        inner = (xt @ S + bS + gate) * (xt @ W2 + b2)
        outs.append(inner @ glu.down_proj.weight[t] + glu.down_proj.bias[t] + xt @ R + bR)
    assert R.shape == (d, d)
    return torch.stack(outs, dim=1)


@pytest.mark.parametrize("T,d,r", [(1, 4, 3.0), (3, 5, 3.0), (4, 8, 1.5), (2, 6, 1.0)])
def test_glu_matches_reference_computation(T, d, r):
    _seed(T)
    glu = _randomize(PerTokenGLU(T, d, r)).double()
    x = torch.randn(5, T, d, dtype=torch.float64)
    assert glu.hidden == int(d * r)
    assert torch.allclose(glu(x), _glu_reference(glu, x), atol=1e-10)


def _tied_glu_reference(glu: PerTokenTiedGLU, x: torch.Tensor) -> torch.Tensor:
    """The release's SwiGLU at r = 1: (R x + GELU(W_1 x)) * (W_2 x) + R x, per token."""
    d = glu.dim
    W, b = glu.in_proj.weight, glu.in_proj.bias
    outs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        gate = torch.nn.functional.gelu(xt @ W[t, :, :d] + b[t, :d])
        value = xt @ W[t, :, d:2 * d] + b[t, d:2 * d]
        residual = xt @ W[t, :, 2 * d:] + b[t, 2 * d:]
        outs.append((residual + gate) * value + residual)
    return torch.stack(outs, dim=1)


def test_tied_glu_at_rate_one_matches_the_release_form():
    _seed()
    glu = _randomize(PerTokenTiedGLU(3, 5)).double()
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    assert torch.allclose(glu(x), _tied_glu_reference(glu, x), atol=1e-10)
    assert sum(p.numel() for p in glu.parameters()) == 3 * (5 * 15 + 15)  # W_1, W_2, R; no W_down, no S


@pytest.mark.parametrize("glu_form,rate,kind", [("release", 1.0, PerTokenTiedGLU), ("paper", 1.0, PerTokenGLU),
                                                ("release", 1.5, PerTokenGLU), ("paper", 3.0, PerTokenGLU)])
def test_glu_form_chooses_the_layer_at_rate_one(glu_form, rate, kind):
    ffn = PerTokenFFN(2, 4, [4], activation="GLU", expansion_rate=rate, glu_form=glu_form)
    assert [type(m) for m in ffn.net if "GLU" in type(m).__name__] == [kind]


def test_glu_rejects_empty_lift():
    with pytest.raises(ValueError, match="expansion_rate"):
        PerTokenGLU(2, 4, 0.1)


def _token_reference(layer: nn.Module, t: int, xt: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, PerTokenLinear):
        return xt @ layer.weight[t] + layer.bias[t]
    if isinstance(layer, PerTokenRMSNorm):
        return xt / torch.sqrt(xt.pow(2).mean(-1, keepdim=True) + 1e-12) * layer.weight[t]
    if isinstance(layer, PerTokenGLU):
        return _glu_reference(layer, xt.unsqueeze(1).expand(-1, layer.in_proj.num_tokens, -1))[:, t]
    if isinstance(layer, PerTokenTiedGLU):
        return _tied_glu_reference(layer, xt.unsqueeze(1).expand(-1, layer.in_proj.num_tokens, -1))[:, t]
    return layer(xt)


def _ffn_loop(ffn: PerTokenFFN, x: torch.Tensor) -> torch.Tensor:
    """What the batched P-FFN replaces: T separate networks, one token at a time."""
    outs = []
    for t in range(x.shape[1]):
        h = x[:, t]
        for layer in ffn.net:
            h = _token_reference(layer, t, h)
        outs.append(x[:, t] + h)
    return torch.stack(outs, dim=1)


@pytest.mark.parametrize("activation,hidden,inner_norm", [
    ("GLU", [8, 8], True), ("GLU", [6], False), ("GELU", [12], False),
    ("ReLU", [7, 9], True), ("gelu", [10, 10], True)])
def test_batched_per_token_ffn_equals_token_loop(activation, hidden, inner_norm):
    _seed()
    ffn = _randomize(PerTokenFFN(4, 6, hidden, activation=activation, expansion_rate=2.0,
                                 inner_norm=inner_norm)).double()
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    assert torch.allclose(ffn(x), _ffn_loop(ffn, x), atol=1e-10)


def test_per_token_ffn_keeps_tokens_independent():
    _seed()
    ffn = PerTokenFFN(5, 4, [8], activation="GLU")
    x = torch.randn(2, 5, 4)
    bumped = x.clone()
    bumped[:, 2] += 1.0
    changed = (ffn(bumped) - ffn(x)).abs().sum(dim=(0, 2))
    assert changed[2] > 0
    assert torch.count_nonzero(changed[[0, 1, 3, 4]]) == 0


def test_per_token_ffn_layout_follows_released_code():
    ffn = PerTokenFFN(26, 30, [64, 64], activation="GLU", expansion_rate=3.0, inner_norm=True)
    kinds = [type(m).__name__ for m in ffn.net]
    assert kinds == ["PerTokenRMSNorm", "PerTokenGLU", "PerTokenLinear",
                     "PerTokenRMSNorm", "PerTokenGLU", "PerTokenLinear"]
    assert ffn.net[1].hidden == 90 and ffn.net[4].hidden == 192
    assert ffn.net[-1].in_features == 64 and ffn.net[-1].out_features == 30


@pytest.mark.parametrize("kwargs,match", [
    ({"hidden_units": []}, "ffn_hidden_units"),
    ({"hidden_units": [4], "activation": "swish"}, "ffn_activation"),
    ({"hidden_units": [4], "glu_form": "tied"}, "glu_form='tied'"),
])
def test_per_token_ffn_errors_name_the_config_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PerTokenFFN(2, 4, **kwargs)


def test_per_token_ffn_gradients_reach_every_parameter():
    _seed()
    ffn = PerTokenFFN(3, 4, [6, 6], activation="GLU", inner_norm=True)
    ffn(torch.randn(5, 3, 4)).pow(2).sum().backward()
    for name, param in ffn.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- tokenizer
def test_matrix_tokenizer_shares_one_mlp_over_chunks():
    _seed()
    tok = Tokenizer(num_fields=6, embedding_dim=4, num_tokens=3, token_dim=5, mode="matrix", hidden_units=[7])
    emb = torch.randn(2, 6, 4)
    tokens = tok(emb)
    assert tokens.shape == (2, 3, 5)
    flat = tok.input_norm(emb.flatten(1))
    expected = torch.stack([tok.project(flat[:, 8 * t:8 * (t + 1)]) for t in range(3)], dim=1)
    assert torch.allclose(tokens, expected, atol=1e-6)


def test_matrix_tokenizer_zero_pads_when_chunks_do_not_divide():
    _seed()
    tok = Tokenizer(num_fields=5, embedding_dim=2, num_tokens=4, token_dim=3, mode="matrix", hidden_units=[])
    assert tok.padding == 2  # 10 coordinates -> 4 chunks of 3
    emb = torch.randn(2, 5, 2)
    flat = torch.nn.functional.pad(tok.input_norm(emb.flatten(1)), (0, 2))
    expected = tok.project(flat.view(2, 4, 3))
    assert torch.allclose(tok(emb), expected, atol=1e-6)


def test_vector_tokenizer_projects_the_whole_vector():
    _seed()
    tok = Tokenizer(num_fields=4, embedding_dim=3, num_tokens=5, token_dim=2, mode="vector",
                    hidden_units=[16], hidden_norm=True, dropout=0.1)
    tok.eval()
    emb = torch.randn(3, 4, 3)
    expected = tok.project(tok.input_norm(emb.flatten(1))).view(3, 5, 2)
    assert torch.allclose(tok(emb), expected, atol=1e-6)
    kinds = [type(m).__name__ for m in tok.project]
    assert kinds == ["Linear", "RMSNorm", "ReLU", "RandomBitsDropout", "Linear"]


@pytest.mark.parametrize("mode,hidden", [("matrix", [7]), ("vector", [16, 9])])
def test_tokenizer_in_row_chunks_equals_one_call_with_gradients(mode, hidden):
    """On CPU the projection MLP runs over chunks of rows: outputs and gradients equal one call's."""
    _seed()
    tok = _randomize(Tokenizer(num_fields=6, embedding_dim=4, num_tokens=3, token_dim=5, mode=mode,
                               hidden_units=hidden, hidden_norm=True, dropout=0.0))
    emb = torch.randn(7, 6, 4)
    results = []
    for rows in (2, 10 ** 6):  # 7 * 3 matrix rows in 11 chunks (7 vector rows in 4); one chunk
        tok.chunk_rows = rows
        tok.zero_grad()
        x = emb.clone().requires_grad_()
        y = tok(x)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results.append((y.detach(), x.grad, [p.grad.clone() for p in tok.parameters()]))
    flat = tok.input_norm(emb.flatten(1))
    one_call = tok.project(flat.view(7, tok.groups, -1)).reshape(7, 3, 5)
    (chunked, x_grad, grads), (whole, whole_x_grad, whole_grads) = results
    assert torch.allclose(chunked, one_call, atol=1e-6) and torch.allclose(whole, one_call, atol=1e-6)
    assert torch.allclose(x_grad, whole_x_grad, atol=1e-6)
    for grad, whole_grad in zip(grads, whole_grads):
        assert torch.allclose(grad, whole_grad, atol=1e-5)


def test_row_chunked_keeps_leading_dimensions():
    net = nn.Linear(4, 3)
    x = torch.randn(5, 2, 4)
    assert torch.allclose(row_chunked(net, x, rows=3), net(x), atol=1e-6)
    assert row_chunked(net, x, rows=3).shape == (5, 2, 3)


# --------------------------------------------------------------------------- random-bits dropout
def test_random_bits_dropout_rate_scale_and_gradient():
    """Dropped at rate p (within 5 standard deviations), kept entries scaled by 1/(1-p), the
    gradient the same mask and scale, identity in eval mode."""
    _seed()
    p, n = 0.1, 2_000_000
    drop = RandomBitsDropout(p).train()
    x = (torch.rand(n) + 0.5).requires_grad_()  # no zeros: a zero output is a dropped entry
    y = drop(x)
    dropped = y == 0
    assert abs(dropped.double().mean().item() - p) < 5 * (p * (1 - p) / n) ** 0.5
    assert torch.equal(y[~dropped], x.detach()[~dropped] * (1 / (1 - p)))
    y.backward(torch.full_like(y, 2.0))
    assert torch.equal(x.grad, (~dropped).float() * 2.0 * (1 / (1 - p)))
    assert not torch.equal(drop(x), y)  # a fresh mask per call
    drop.eval()
    assert drop(x) is x or torch.equal(drop(x), x)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_random_bits_dropout_edges_and_dtype(p):
    drop = RandomBitsDropout(p).train()
    x = torch.rand(100_000, dtype=torch.bfloat16) + 1
    y = drop(x)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    if p == 0.0:
        assert torch.equal(y, x)
    elif p == 1.0:
        assert torch.equal(y, torch.zeros_like(x))
    else:
        assert abs((y == 0).float().mean().item() - 0.5) < 0.01


def test_random_bits_dropout_is_seeded_by_torch():
    drop = RandomBitsDropout(0.3).train()
    x = torch.ones(1000)
    torch.manual_seed(5)
    first = drop(x)
    torch.manual_seed(5)
    assert torch.equal(drop(x), first)


@pytest.mark.parametrize("mode", [None, "none", "None"])
def test_no_tokenizer_reshapes_normalised_embeddings(mode):
    tok = Tokenizer(num_fields=6, embedding_dim=4, num_tokens=3, token_dim=8, mode=mode)
    emb = torch.randn(2, 6, 4)
    assert torch.allclose(tok(emb), tok.input_norm(emb.flatten(1)).view(2, 3, 8))
    assert sum(p.numel() for p in tok.parameters()) == 24  # only the input RMSNorm gain


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "none", "num_tokens": 5, "token_dim": 5}, r"tokenizer='none'.*num_fields \* embedding_dim"),
    ({"mode": "matrix", "num_tokens": 25, "token_dim": 5}, "num_tokens=25"),
    ({"mode": "chunks", "num_tokens": 2, "token_dim": 5}, "tokenizer='chunks'"),
    ({"mode": "vector", "num_tokens": 0, "token_dim": 5}, "num_tokens=0"),
])
def test_tokenizer_errors_name_the_config_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Tokenizer(num_fields=6, embedding_dim=4, **kwargs)


# --------------------------------------------------------------------------- small pieces
def test_make_norm_and_mean_head():
    assert isinstance(make_norm("layernorm", 4, "mixing_norm"), nn.LayerNorm)
    assert make_norm("layernorm", 4, "mixing_norm").eps == 1e-5  # torch's, as the release's nn.LayerNorm
    assert isinstance(make_norm("RMSNorm", 4, "mixing_norm"), nn.RMSNorm)
    assert make_norm("RMSNorm", 4, "mixing_norm").eps == 1e-12
    assert make_norm("RMSNorm", 4, "mixing_norm", eps=None).eps is None
    assert isinstance(make_norm(None, 4, "ffn_norm"), nn.Identity)
    with pytest.raises(ValueError, match="ffn_norm='BatchNorm'"):
        make_norm("BatchNorm", 4, "ffn_norm")
    x = torch.randn(3, 2, 5)
    assert torch.allclose(TokenMeanHead()(x), x.mean(dim=(1, 2)).view(3, 1))


# --------------------------------------------------------------------------- RMSNorm epsilon
def test_rmsnorms_do_not_damp_embeddings_at_fuxictrs_init_scale():
    """At FuxiCTR's embedding init (std 1e-4) the release's eps 1e-12 still gives unit RMS.

    With the float32 default eps (1.19e-7) the mean square 1e-8 is swamped and the
    normalised vector has RMS about 0.28 instead of 1.
    """
    _seed()
    emb = torch.randn(64, 6, 4) * 1e-4
    tok = Tokenizer(num_fields=6, embedding_dim=4, num_tokens=3, token_dim=8, mode="none")
    rms = tok(emb).pow(2).mean(dim=(1, 2)).sqrt()
    assert torch.allclose(rms, torch.ones_like(rms), atol=1e-3)
    x = torch.randn(8, 3, 5) * 1e-4
    for norm in (PerTokenRMSNorm(3, 5), make_norm("RMSNorm", 5, "token_norm")):
        assert torch.allclose(norm(x).pow(2).mean(-1).sqrt(), torch.ones(8, 3), atol=1e-3)


# --------------------------------------------------------------------------- Kronecker block mixing
def test_kronecker_mixing_applies_one_map_to_every_block():
    _seed()
    mix = _randomize(KroneckerMixing(num_tokens=4, token_dim=6, num_blocks=3)).double()
    x = torch.randn(5, 4, 6, dtype=torch.float64)
    flat = x.flatten(1)
    normed = flat / torch.sqrt(flat.pow(2).mean(-1, keepdim=True) + 1e-12) * mix.norm.weight
    W = mix.mix.weight
    blocks = [normed[:, 8 * g:8 * (g + 1)] @ W.T for g in range(3)]
    assert torch.allclose(mix(x), x + torch.cat(blocks, dim=-1).view(5, 4, 6), atol=1e-12)
    assert mix.mix.bias is None and W.shape == (8, 8)


def test_kronecker_mixing_with_one_block_is_bias_free_full_mixing():
    _seed()
    kron = KroneckerMixing(num_tokens=3, token_dim=4, num_blocks=1)
    full = FullMixing(num_tokens=3, token_dim=4, bias=False)
    full.mix.weight.data.copy_(kron.mix.weight.data)
    x = torch.randn(2, 3, 4)
    assert torch.allclose(kron(x), full(x), atol=1e-6)


@pytest.mark.parametrize("blocks", [5, 0, None, 2.0])
def test_kronecker_mixing_rejects_blocks_not_dividing_the_coordinates(blocks):
    with pytest.raises(ValueError, match="kronecker_blocks"):
        KroneckerMixing(num_tokens=4, token_dim=6, num_blocks=blocks)


# --------------------------------------------------------------------------- the papers' spectral statements
def _rank(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_rank(x.double(), rtol=1e-9)


def _rank_one_tokens(batch: int, T: int, D: int, positive: bool = False) -> torch.Tensor:
    u = torch.randn(batch, T, 1, dtype=torch.float64)
    v = torch.randn(batch, 1, D, dtype=torch.float64)
    return (u.abs() if positive else u) * v  # (B, T, D), every sample of algebraic rank 1


def test_block_transpose_expansion_is_bounded_theorem_2_1():
    """Theorem 2.1 / Appendix A: P maps a rank-1 X to rank <= D/H, so X + P(X) has rank <= 1 + D/H,
    while full mixing at initialisation lifts the same inputs to full rank min(T, D)."""
    _seed()
    T, D, H = 8, 16, 8
    x = _rank_one_tokens(32, T, D)
    block = BlockTransposeMixing(T, D, H).double()
    full = FullMixing(T, D).double()
    assert (_rank(block.permute(x)) <= D // H).all()
    assert (_rank(block(x)) <= 1 + D // H).all()
    assert (_rank(full(x)) == min(T, D)).all()
    assert (entropy_effective_rank(full(x)) > entropy_effective_rank(block(x))).all()


def test_kronecker_updates_stay_in_the_span_of_the_input_blocks_theorem_3_1():
    """Theorem 3.1 / C.1: with G blocks, every block of the update lies in W span{x_g}; an input whose
    blocks are multiples of one vector gets a rank-1 (G, T*D/G) update. Full mixing is not so confined."""
    _seed()
    T, D, G = 4, 6, 4
    block_len = T * D // G
    coeff = torch.randn(16, G, 1, dtype=torch.float64)
    x = (coeff * torch.randn(16, 1, block_len, dtype=torch.float64)).reshape(16, T, D)
    kron = KroneckerMixing(T, D, G).double()
    full = FullMixing(T, D).double()
    kron_update = (kron(x) - x).reshape(16, G, block_len)
    full_update = (full(x) - x).reshape(16, G, block_len)
    assert (_rank(kron_update) == 1).all()
    assert (_rank(full_update) == min(G, block_len)).all()


def _shared_token_weights(module: nn.Module) -> nn.Module:
    """Make every token use token 0's weights and zero biases: one per-row map, as in the theorems."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, PerTokenLinear):
                layer.weight.copy_(layer.weight[:1].expand_as(layer.weight))
                if layer.bias is not None:
                    layer.bias.zero_()
    return module


def test_relu_ffn_collapses_rank_one_input_and_glu_lifts_it_theorems_2_2_and_3_2():
    """Theorem 2.2 / B.1: a positively homogeneous per-row FFN maps a rank-1 X to rank <= 2
    (rank 1 when every row has the same sign). Theorem 3.2: the GLU's multiplicative term adds
    degree-2 interactions, so the same inputs come out with algebraic rank above 2 and a higher
    mean effective rank."""
    _seed()
    T, D = 12, 8
    relu = _shared_token_weights(PerTokenFFN(T, D, [32], activation="ReLU")).double()
    glu = _shared_token_weights(PerTokenGLU(T, D, expansion_rate=3.0)).double()
    signed, positive = _rank_one_tokens(16, T, D), _rank_one_tokens(16, T, D, positive=True)
    assert (_rank(relu.net(signed)) <= 2).all()
    assert (_rank(relu.net(positive)) == 1).all()
    assert (_rank(glu(signed)) > 2).all()
    assert entropy_effective_rank(glu(signed)).mean() > entropy_effective_rank(relu.net(signed)).mean()
