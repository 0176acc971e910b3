"""The interaction modules DHEN and RoBlock share: each against fuxictr's module or a
brute-force loop, vmapped copies against one-by-one, old checkpoints, bad names."""

import itertools

import pytest
import torch
from fuxictr.pytorch.layers import CompressedInteractionNet, CrossNetV2, InnerProductInteraction, MLP_Block

from fuxictr_ext.layers.interactions import (INTERACTION_TYPES, CINInteraction, CrossInteraction, DNNInteraction,
                                             FMInteraction, build_interaction)
from fuxictr_ext.layers.multi_embedding import MultiEmbeddingInteraction

B, F, D = 4, 5, 3
SIZES = dict(cin_hidden_units=[4, 3], dnn_hidden_units=[8], num_cross_layers=2, hidden_activations="ReLU",
             dropout=0.0)


def test_fm_projects_every_pairwise_inner_product():
    torch.manual_seed(0)
    fm = FMInteraction(num_fields=F, embedding_dim=D)
    X = torch.randn(B, F, D)
    pairs = torch.stack([torch.stack([torch.dot(X[b, i], X[b, j]) for i, j in itertools.combinations(range(F), 2)])
                         for b in range(B)])                                        # (B, F(F-1)/2)
    torch.testing.assert_close(pairs, InnerProductInteraction(F, output="inner_product")(X))
    torch.testing.assert_close(fm(X), fm.projection(pairs).view(B, F, D), rtol=1e-5, atol=1e-5)


def test_fm_loads_a_checkpoint_holding_fuxictrs_mask():
    """DHEN checkpoints from when the FM module held fuxictr's InnerProductInteraction
    carry its constant ``triu_mask``; they load into the gather form."""
    torch.manual_seed(1)
    fm = FMInteraction(F, D)
    old = dict(fm.state_dict())
    old["inner_product.triu_mask"] = InnerProductInteraction(F, output="inner_product").triu_mask.detach()
    fresh = FMInteraction(F, D)
    fresh.load_state_dict(old)
    X = torch.randn(B, F, D)
    torch.testing.assert_close(fresh(X), fm(X), rtol=0, atol=0)


def test_fm_needs_two_fields():
    with pytest.raises(ValueError, match="at least 2 fields"):
        FMInteraction(1, D)


def test_cin_is_fuxictrs_cin_sized_to_the_fields():
    torch.manual_seed(2)
    cin = CINInteraction(F, D, cin_hidden_units=[4, 3])
    reference = CompressedInteractionNet(F, [4, 3], output_dim=F * D)
    reference.load_state_dict(cin.cin.state_dict())
    X = torch.randn(B, F, D)
    torch.testing.assert_close(cin(X), reference(X).view(B, F, D))


@pytest.mark.parametrize("rows", [3, 1024])
def test_cin_without_the_hadamard_tensor_has_fuxictrs_outputs_and_gradients(rows, monkeypatch):
    """The row form (in chunks of ``rows`` embedding coordinates) against fuxictr's einsum + Conv1d
    on the same non-trivial weights: outputs, input and parameter gradients."""
    import fuxictr_ext.layers.interactions as interactions
    monkeypatch.setattr(interactions, "ROW_CHUNK", rows)
    torch.manual_seed(5)
    cin = CINInteraction(F, D, cin_hidden_units=[4, 3])
    with torch.no_grad():
        for param in cin.parameters():
            param.normal_(0.0, 0.3)
    reference = CompressedInteractionNet(F, [4, 3], output_dim=F * D)
    reference.load_state_dict(cin.cin.state_dict())
    X = torch.randn(B, F, D)
    weights = torch.randn(B, F, D)
    grads = []
    for module, forward in ((cin, cin), (reference, lambda x: reference(x).view(B, F, D))):
        x = X.clone().requires_grad_()
        y = forward(x)
        (y * weights).sum().backward()
        grads.append((y.detach(), x.grad, {name: p.grad for name, p in module.named_parameters()}))
    (y, x_grad, param_grads), (y_ref, x_grad_ref, param_grads_ref) = grads
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_grad, x_grad_ref, rtol=1e-5, atol=1e-5)
    for name, grad in param_grads_ref.items():
        torch.testing.assert_close(param_grads["cin." + name], grad, rtol=1e-5, atol=1e-5)


def test_dnn_and_cross_are_fuxictrs_modules_on_the_flattened_fields():
    torch.manual_seed(3)
    X = torch.randn(B, F, D)
    dnn = DNNInteraction(F, D, hidden_units=[8])
    mlp = MLP_Block(F * D, [8], output_dim=F * D)
    mlp.load_state_dict(dnn.mlp.state_dict())
    torch.testing.assert_close(dnn(X), mlp(X.flatten(1)).view(B, F, D))
    cross = CrossInteraction(F, D, num_cross_layers=2)
    net = CrossNetV2(F * D, 2)
    net.load_state_dict(cross.cross_net.state_dict())
    torch.testing.assert_close(cross(X), net(X.flatten(1)).view(B, F, D))


@pytest.mark.parametrize("name", INTERACTION_TYPES)
def test_copies_vectorised_equal_one_by_one(name):
    """Identical copies run in one vmapped call (a homogeneous RoBlock block): same values
    as one after another, for batches of several rows and of one."""
    torch.manual_seed(4)
    M = 3
    copies = [build_interaction(name, F, D, **SIZES) for _ in range(M)]
    layer = MultiEmbeddingInteraction(copies)
    assert layer.vectorized
    for rows in (B, 1):
        Z = torch.randn(rows, M, F, D)
        expected = torch.cat([module(Z[:, i]) for i, module in enumerate(copies)], dim=-1)
        out = layer(Z)
        assert out.shape == (rows, F, M * D)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_unknown_name_names_the_config_key():
    with pytest.raises(ValueError, match="interaction_types"):
        build_interaction("CrossNetV2", F, D, **SIZES)


def test_cin_needs_a_layer():
    with pytest.raises(ValueError, match="cin_hidden_units"):
        build_interaction("CIN", F, D, **dict(SIZES, cin_hidden_units=[]))
