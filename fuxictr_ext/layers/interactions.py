"""The interaction modules of the heterogeneous-ensemble models (DHEN, RoBlock).

The RoBlock paper (appendix A.4.2) runs DHEN with FM, CIN, DNN and DCNv2 modules
that "follow the FuxiCTR implementations", and gives RoBlock's scaled variants
"the same set of interaction functions as DHEN". Both models build them here.
Every module maps field embeddings to field embeddings of the same shape, so an
ensemble can sum them (DHEN) or concatenate them per field (RoBlock):

* :class:`FMInteraction` - the F(F-1)/2 inner products <e_i, e_j>, projected to F*D.
* :class:`CINInteraction` - fuxictr's ``CompressedInteractionNet`` with output F*D.
* :class:`DNNInteraction` - fuxictr's ``MLP_Block`` F*D -> F*D.
* :class:`CrossInteraction` - fuxictr's ``CrossNetV2`` on the flattened fields (DCNv2).
* :func:`build_interaction` - one of them by its config name (``INTERACTION_TYPES``).

Shapes: B batch, F fields, D the width of a field embedding; every module
(B, F, D) -> (B, F, D).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from fuxictr.pytorch.layers import CompressedInteractionNet, CrossNetV2, MLP_Block

from .common import ROW_CHUNK, FMPairs, row_chunked
from ..config import check_choice, check_positive_ints

INTERACTION_TYPES = ("FM", "CIN", "DNN", "DCNv2")


class FMInteraction(nn.Module):
    """FM: the pairwise inner products, linearly projected back to F embeddings.

        p = [<e_i, e_j>]_{i<j}                      # fuxictr InnerProductInteraction(output="inner_product")
        I(E) = unvec(W p + b)                       # (F, D)

    The pairs are read with an index gather (:class:`FMPairs`, the same values in the
    same order as fuxictr's boolean mask), which ``torch.func.vmap`` can trace, so a
    block of identical FM copies runs in one vmapped call. Checkpoints that hold
    fuxictr's mask (``inner_product.triu_mask``, a constant) load: the key is dropped.

    Args:
        num_fields: F (at least 2).
        embedding_dim: D.

    Example:
        >>> FMInteraction(num_fields=39, embedding_dim=10)(torch.randn(8, 39, 10)).shape
        torch.Size([8, 39, 10])
    """

    def __init__(self, num_fields: int, embedding_dim: int):
        super().__init__()
        if num_fields < 2:
            raise ValueError(f"the FM interaction needs at least 2 fields, the feature map has {num_fields}")
        self.num_fields = num_fields
        self.embedding_dim = embedding_dim
        self.inner_product = FMPairs(num_fields)
        self.projection = nn.Linear(num_fields * (num_fields - 1) // 2, num_fields * embedding_dim)
        self._register_load_state_dict_pre_hook(self._drop_fuxictr_mask)

    @staticmethod
    def _drop_fuxictr_mask(state_dict, prefix, *args) -> None:
        state_dict.pop(prefix + "inner_product.triu_mask", None)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        pairs = self.inner_product(X)                                                # (B, F(F-1)/2)
        return self.projection(pairs).unflatten(-1, (self.num_fields, self.embedding_dim))   # (B, F, D)


class CINInteraction(nn.Module):
    """CIN (xDeepFM): fuxictr's ``CompressedInteractionNet`` with its output layer sized F*D.

        X^{h+1}[c] = sum_{f, g} W^h[c, f, g] (X^0[f] * X^h[g]),  p = [sum_D X^1, ..., sum_D X^H]
        I(E) = unvec(W p + b)                                                  # (F, D)

    The parameters are fuxictr's module's (``cin.cin_layer.layer_<h>`` Conv1d, ``cin.fc``), so
    its checkpoints load; the forward computes the same function without the (B, F * F_h, D)
    Hadamard tensor that fuxictr's einsum + Conv1d builds: each embedding coordinate d is a row
    (X^0[:, d], X^h[:, d]), Z = X^h[:, d] W^h (one matrix product to (C, F)), then
    X^{h+1}[c, d] = sum_f Z[c, f] X^0[f, d]; the rows go through in chunks
    (:func:`~fuxictr_ext.layers.common.row_chunked`).

    Args:
        num_fields: F.
        embedding_dim: D.
        cin_hidden_units: the number of feature maps of every CIN layer.

    Example:
        >>> CINInteraction(39, 10, cin_hidden_units=[16, 16])(torch.randn(8, 39, 10)).shape
        torch.Size([8, 39, 10])
    """

    def __init__(self, num_fields: int, embedding_dim: int, cin_hidden_units: Sequence[int]):
        super().__init__()
        check_positive_ints("cin_hidden_units", cin_hidden_units, min_length=1)
        self.num_fields = num_fields
        self.embedding_dim = embedding_dim
        self.cin = CompressedInteractionNet(num_fields, list(cin_hidden_units), output_dim=num_fields * embedding_dim)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        rows = X.transpose(1, 2)                                                     # (B, D, F)
        maps = row_chunked(self.feature_maps, rows, ROW_CHUNK)                       # (B, D, sum C_h)
        return self.cin.fc(maps.sum(dim=1)).unflatten(-1, (self.num_fields, self.embedding_dim))  # (B, F, D)

    def feature_maps(self, x0: torch.Tensor) -> torch.Tensor:
        """[X^1, ..., X^H] of rows x0 (one embedding coordinate of one sample each): (N, F) -> (N, sum C_h)."""
        x, maps = x0, []
        for conv in self.cin.cin_layer.values():
            weight = conv.weight.view(conv.out_channels * self.num_fields, -1)       # (C*F, F_h): W^h[c, f, g]
            z = torch.mm(x, weight.t()).view(-1, conv.out_channels, self.num_fields)  # (N, C, F)
            x = (z * x0.unsqueeze(1)).sum(dim=-1) + conv.bias                          # (N, C)
            maps.append(x)
        return torch.cat(maps, dim=-1)                                               # (N, sum C_h)


class DNNInteraction(nn.Module):
    """DNN: fuxictr's ``MLP_Block`` from the flattened fields back to F*D.

    Args:
        num_fields: F.
        embedding_dim: D.
        hidden_units: the MLP's hidden widths.
        hidden_activations: its activation.
        dropout: dropout after every hidden layer.

    Example:
        >>> DNNInteraction(39, 10, hidden_units=[400, 400])(torch.randn(8, 39, 10)).shape
        torch.Size([8, 39, 10])
    """

    def __init__(self, num_fields: int, embedding_dim: int, hidden_units: Sequence[int],
                 hidden_activations: str = "ReLU", dropout: float = 0.0):
        super().__init__()
        self.num_fields = num_fields
        self.embedding_dim = embedding_dim
        self.mlp = MLP_Block(input_dim=num_fields * embedding_dim, output_dim=num_fields * embedding_dim,
                             hidden_units=list(hidden_units), hidden_activations=hidden_activations,
                             dropout_rates=dropout)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.mlp(X.flatten(start_dim=-2)).unflatten(-1, (self.num_fields, self.embedding_dim))  # (B, F, D)


class CrossInteraction(nn.Module):
    """DCNv2: fuxictr's ``CrossNetV2`` on the flattened fields, x_{l+1} = x_0 * (W_l x_l + b_l) + x_l.

    Its output has the F*D entries of its input, each at the (field, dim) position of
    the x_0 entry it multiplies.

    Args:
        num_fields: F.
        embedding_dim: D.
        num_cross_layers: the cross layers.

    Example:
        >>> CrossInteraction(39, 10, num_cross_layers=3)(torch.randn(8, 39, 10)).shape
        torch.Size([8, 39, 10])
    """

    def __init__(self, num_fields: int, embedding_dim: int, num_cross_layers: int):
        super().__init__()
        self.num_fields = num_fields
        self.embedding_dim = embedding_dim
        self.cross_net = CrossNetV2(num_fields * embedding_dim, num_cross_layers)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.cross_net(X.flatten(start_dim=-2)).unflatten(-1, (self.num_fields, self.embedding_dim))


def build_interaction(name: str, num_fields: int, embedding_dim: int, *, cin_hidden_units: Sequence[int],
                      dnn_hidden_units: Sequence[int], num_cross_layers: int, hidden_activations: str,
                      dropout: float) -> nn.Module:
    """One interaction module, (B, F, D) -> (B, F, D), by its config name (one of INTERACTION_TYPES).

    ``dropout`` applies to the DNN module's hidden layers (the only module with any).
    """
    name = check_choice("interaction_types", name, INTERACTION_TYPES)
    if name == "FM":
        return FMInteraction(num_fields, embedding_dim)
    if name == "CIN":
        return CINInteraction(num_fields, embedding_dim, cin_hidden_units)
    if name == "DNN":
        return DNNInteraction(num_fields, embedding_dim, dnn_hidden_units, hidden_activations, dropout)
    return CrossInteraction(num_fields, embedding_dim, num_cross_layers)
