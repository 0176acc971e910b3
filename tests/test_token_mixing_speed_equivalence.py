"""The per-token layers run token by token on CPU: same function, same gradients, same checkpoints.

Each rewritten layer of fuxictr_ext.layers.token_mixing is compared in float32 with
(a) its previous batched formulation, written out here (one einsum over the token
axis, the GLU's fused projection split after the product), which is also what the
layer's ``batched`` form (the GPU path) computes, and (b) a loop over tokens with
explicit per-token matrices.
"""

import itertools

import pytest
import torch
from torch import nn

from fuxictr_ext.layers.token_mixing import (PerTokenFFN, PerTokenGLU, PerTokenLinear, PerTokenRMSNorm,
                                             PerTokenTiedGLU)

TOLERANCE = dict(rtol=1e-6, atol=1e-6)
# Parameter gradients sum over the batch in a different order in each form: float32 rounding
# of that sum (seen up to 1.1e-6 on entries of size 0.07 with the release's RMSNorm eps 1e-12).
GRADIENT_TOLERANCE = dict(rtol=1e-5, atol=1e-6)


def _randomize(module: nn.Module, seed: int = 1) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return module


# --------------------------------------------------------------------------- the previous formulation
def _old_linear(layer: PerTokenLinear, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bti,tio->bto", x, layer.weight) + layer.bias


def _old_rmsnorm(layer: PerTokenRMSNorm, x: torch.Tensor) -> torch.Tensor:
    return layer.norm(x) * layer.weight


def _old_glu(layer: PerTokenGLU, x: torch.Tensor) -> torch.Tensor:
    gate, value, lift, residual = _old_linear(layer.in_proj, x).split(layer.split_sizes, dim=-1)
    return _old_linear(layer.down_proj, (lift + layer.activation(gate)) * value) + residual


def _old_layer(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    old = {PerTokenLinear: _old_linear, PerTokenRMSNorm: _old_rmsnorm, PerTokenGLU: _old_glu}
    return old[type(layer)](layer, x) if type(layer) in old else layer(x)


def _old_ffn(ffn: PerTokenFFN, x: torch.Tensor) -> torch.Tensor:
    h = x
    for layer in ffn.net:
        h = _old_layer(layer, h)
    return x + h


# --------------------------------------------------------------------------- a loop over tokens
def _loop_glu(layer: PerTokenGLU, t: int, x: torch.Tensor) -> torch.Tensor:
    h = layer.hidden
    W, b = layer.in_proj.weight[t], layer.in_proj.bias[t]
    gate = torch.nn.functional.gelu(x @ W[:, :h] + b[:h])
    inner = (x @ W[:, 2 * h:3 * h] + b[2 * h:3 * h] + gate) * (x @ W[:, h:2 * h] + b[h:2 * h])
    return inner @ layer.down_proj.weight[t] + layer.down_proj.bias[t] + x @ W[:, 3 * h:] + b[3 * h:]


def _loop_layer(layer: nn.Module, t: int, x: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, PerTokenLinear):
        return x @ layer.weight[t] + layer.bias[t]
    if isinstance(layer, PerTokenRMSNorm):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps) * layer.weight[t]
    if isinstance(layer, PerTokenGLU):
        return _loop_glu(layer, t, x)
    return layer(x)


def _loop(layers, x: torch.Tensor, residual: bool) -> torch.Tensor:
    outs = []
    for t in range(x.shape[1]):
        h = x[:, t]
        for layer in layers:
            h = _loop_layer(layer, t, h)
        outs.append(x[:, t] + h if residual else h)
    return torch.stack(outs, dim=1)


# --------------------------------------------------------------------------- helpers
def _outputs_and_gradients(module: nn.Module, forward, x: torch.Tensor):
    """forward(x), and the gradients of sum(out * probe) w.r.t. x and every parameter."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = forward(x)
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    (out * probe).sum().backward()
    grads = {name: p.grad.detach().clone() for name, p in module.named_parameters()}
    return out.detach(), x.grad.detach().clone(), grads


def _assert_same(module: nn.Module, reference, x: torch.Tensor) -> None:
    out, x_grad, grads = _outputs_and_gradients(module, module, x)
    ref_out, ref_x_grad, ref_grads = _outputs_and_gradients(module, reference, x)
    torch.testing.assert_close(out, ref_out, **TOLERANCE)
    torch.testing.assert_close(x_grad, ref_x_grad, **TOLERANCE)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], **GRADIENT_TOLERANCE,
                                   msg=lambda m: f"{name}: {m}")


LAYERS = {  # name: (layer factory, T, d_in)
    "linear": (lambda: PerTokenLinear(5, 6, 7), 5, 6),
    "linear_split_init": (lambda: PerTokenLinear(3, 4, 9, init_splits=[6, 3]), 3, 4),
    "rmsnorm": (lambda: PerTokenRMSNorm(5, 6), 5, 6),
    "glu_r3": (lambda: PerTokenGLU(5, 6, 3.0), 5, 6),
    "glu_r1.5": (lambda: PerTokenGLU(3, 4, 1.5), 3, 4),
}
FFNS = {
    "glu_two_widths_norm": lambda: PerTokenFFN(5, 6, [8, 8], activation="GLU", expansion_rate=3.0, inner_norm=True),
    "glu_one_width": lambda: PerTokenFFN(4, 6, [6], activation="GLU", expansion_rate=2.0),
    "gelu_two_widths": lambda: PerTokenFFN(5, 6, [12, 10], activation="GELU"),
    "relu_norm": lambda: PerTokenFFN(3, 4, [7], activation="ReLU", inner_norm=True),
}


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_token_by_token_layer_equals_previous_batched_form_and_loop(name):
    torch.manual_seed(0)
    factory, tokens, dim = LAYERS[name]
    layer = _randomize(factory())
    x = torch.randn(9, tokens, dim)
    _assert_same(layer, lambda v: _old_layer(layer, v), x)
    _assert_same(layer, lambda v: _loop([layer], v, residual=False), x)
    _assert_same(layer, layer.batched, x)


@pytest.mark.parametrize("name", sorted(FFNS))
def test_token_by_token_ffn_equals_previous_batched_form_and_loop(name):
    torch.manual_seed(0)
    ffn = _randomize(FFNS[name]())
    tokens, dim = ffn.net[-1].weight.shape[0], ffn.net[-1].out_features
    x = torch.randn(9, tokens, dim)
    assert ffn.runs_token_by_token()
    _assert_same(ffn, lambda v: _old_ffn(ffn, v), x)
    _assert_same(ffn, lambda v: _loop(ffn.net, v, residual=True), x)


def test_ffn_runs_each_token_through_the_whole_network_before_the_next():
    torch.manual_seed(0)
    ffn = PerTokenFFN(3, 4, [6, 6], activation="GELU")
    order = []
    for index, layer in enumerate(ffn.net):
        layer.register_forward_hook(lambda module, args, out, index=index: order.append(index))
    ffn(torch.randn(2, 3, 4))
    # The activations (indices 1 and 3) are called once per token, in network order.
    assert order == [1, 3] * 3


def test_ffn_with_a_layer_that_cannot_run_per_token_falls_back_to_the_batched_form():
    class TokenMixer(nn.Module):  # mixes the tokens: not token-wise, and it has parameters
        def __init__(self, tokens):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(tokens, tokens))

        def forward(self, x):
            return torch.einsum("st,btd->bsd", self.weight, x)

    torch.manual_seed(0)
    ffn = _randomize(PerTokenFFN(3, 4, [5], activation="GELU"))
    ffn.net.insert(1, TokenMixer(3))
    assert not ffn.runs_token_by_token()
    x = torch.randn(6, 3, 4)
    torch.testing.assert_close(ffn(x), x + ffn.net(x), rtol=0, atol=0)
    torch.testing.assert_close(ffn(x), _old_ffn(ffn, x), **TOLERANCE)


def test_token_by_token_forward_rejects_a_wrong_number_of_tokens():
    ffn = PerTokenFFN(3, 4, [5], activation="GLU")
    with pytest.raises(ValueError):
        ffn(torch.randn(2, 4, 4))
    with pytest.raises(ValueError):
        PerTokenLinear(3, 4, 5)(torch.randn(2, 2, 4))


def test_dropout_is_token_wise_in_the_token_loop():
    torch.manual_seed(0)
    ffn = PerTokenFFN(3, 4, [8], activation="GELU", dropout=0.5)
    x = torch.randn(64, 3, 4)
    ffn.eval()
    torch.testing.assert_close(ffn(x), _old_ffn(ffn, x), **TOLERANCE)
    ffn.train()
    assert not torch.allclose(ffn(x), ffn(x))


def test_checkpoint_in_the_previous_layout_loads_and_computes_the_same_function():
    """The parameter layout is unchanged: a state dict with the previous keys and shapes loads strictly."""
    tokens, dim, width, rate = 4, 6, 8, 3.0
    hidden = int(dim * rate)
    previous_layout = {  # PerTokenFFN(4, 6, [8, 8], GLU, r = 3, inner_norm) before the token loop
        "net.0.weight": (tokens, dim),
        "net.1.in_proj.weight": (tokens, dim, 3 * hidden + dim), "net.1.in_proj.bias": (tokens, 3 * hidden + dim),
        "net.1.down_proj.weight": (tokens, hidden, dim), "net.1.down_proj.bias": (tokens, dim),
        "net.2.weight": (tokens, dim, width), "net.2.bias": (tokens, width),
        "net.3.weight": (tokens, width),
        "net.4.in_proj.weight": (tokens, width, 3 * 3 * width + width),
        "net.4.in_proj.bias": (tokens, 3 * 3 * width + width),
        "net.4.down_proj.weight": (tokens, 3 * width, width), "net.4.down_proj.bias": (tokens, width),
        "net.5.weight": (tokens, width, dim), "net.5.bias": (tokens, dim),
    }
    gen = torch.Generator().manual_seed(3)
    state = {key: torch.randn(shape, generator=gen) * 0.3 for key, shape in previous_layout.items()}
    ffn = PerTokenFFN(tokens, dim, [width, width], activation="GLU", expansion_rate=rate, inner_norm=True)
    ffn.load_state_dict(state, strict=True)
    assert {key: tuple(v.shape) for key, v in ffn.state_dict().items()} == previous_layout
    x = torch.randn(5, tokens, dim)
    torch.testing.assert_close(ffn(x), _old_ffn(ffn, x), **TOLERANCE)


def test_parameters_are_shared_between_the_two_forms():
    """The token functions read views of the stacked weights: an update is seen by both forms."""
    torch.manual_seed(0)
    layer = PerTokenLinear(3, 4, 5)
    x = torch.randn(2, 3, 4)
    with torch.no_grad():
        layer.weight[1].add_(1.0)
    torch.testing.assert_close(layer(x), layer.batched(x), **TOLERANCE)
    views = list(itertools.islice(layer.token_functions(), 3))
    assert all(f.keywords["weight"].data_ptr() == layer.weight[t].data_ptr() for t, f in enumerate(views))


def test_tied_glu_token_by_token_equals_batched_form_and_loop():
    """The release's r = 1 GLU: (R x + GELU(W_1 x)) * (W_2 x) + R x per token, written out."""
    torch.manual_seed(0)
    layer = _randomize(PerTokenTiedGLU(4, 5))
    x = torch.randn(7, 4, 5)

    def loop(v):
        outputs = []
        for t in range(4):
            weight, bias = layer.in_proj.weight[t], layer.in_proj.bias[t]        # (d, 3d), (3d,)
            h = v[:, t] @ weight + bias
            gate, value, residual = h[:, :5], h[:, 5:10], h[:, 10:]
            outputs.append((residual + torch.nn.functional.gelu(gate)) * value + residual)
        return torch.stack(outputs, dim=1)

    _assert_same(layer, loop, x)
    _assert_same(layer, layer.batched, x)
    ffn = PerTokenFFN(4, 5, [5], activation="GLU", expansion_rate=1.0, glu_form="release")
    assert ffn.runs_token_by_token()
