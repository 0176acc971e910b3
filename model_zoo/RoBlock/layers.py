"""The parts of one RoBlock layer (RoBlock paper, sections 3.1-3.3).

Shapes: B batch, F fields (the paper's n), k base size, D model width (the
paper's d), M components (the paper's m).

* :class:`ComponentMLP` - the embedding decoupler's M parallel MLPs, batched
  over stacked weights.
* :class:`FieldwiseRouter` - the field-wise multi-head router of eq. 4, its gate
  shared by all fields or per field (:class:`FieldMLP`, :func:`build_router_gate`).
* the interaction functions I_i are DHEN's (``fuxictr_ext.layers.interactions``),
  each (B, F, k) -> (B, F, k).
* :func:`assign_interactions` - which function each component of each block gets.
* :class:`RoBlockLayer` - eqs. 2-5 for one block.
"""

from __future__ import annotations

import random
from typing import List, Sequence

import torch
from torch import nn
from fuxictr.pytorch.layers import MLP_Block
from fuxictr.pytorch.torch_utils import get_activation

from fuxictr_ext.layers.interactions import INTERACTION_TYPES
from fuxictr_ext.layers.multi_embedding import MultiEmbeddingInteraction

INTERACTION_ASSIGNMENTS = ("cycle", "sample")
BLOCK_NORMS = ("none", "layer_norm")
HSIC_GRADIENTS = ("model", "decoupler")
ADDED_BLOCK_INITS = ("default", "identity")
ROUTERS = ("shared", "per_field")
# FuxiCTR's embedding initialisation (std 1e-4) gives X^(0) rows of variance ~1e-9; with
# torch's default eps (1e-5) a LayerNorm would scale them by ~300 instead of normalising.
BLOCK_NORM_EPS = 1e-12


class GroupedMLP(nn.Module):
    """G independent MLPs with stacked weights (G, fan_in, fan_out) per layer; the
    subclass's ``forward`` says which axis the G groups run over.

    Xavier-normal per group (what BaseModel gives every nn.Linear), zero biases.

    Args:
        num_groups: G.
        input_dim, hidden_units, output_dim: the widths (the same for every group).
        hidden_activations: activation after every hidden layer.
        dropout_rates: dropout after every hidden layer.
        bias_shape: the shape of a layer's bias for ``fan_out`` outputs.
    """

    def __init__(self, num_groups: int, input_dim: int, hidden_units: Sequence[int], output_dim: int,
                 hidden_activations: str, dropout_rates: float, bias_shape):
        super().__init__()
        dims = [input_dim] + list(hidden_units) + [output_dim]
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(num_groups, fan_in, fan_out))
                                        for fan_in, fan_out in zip(dims[:-1], dims[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(bias_shape(fan_out))) for fan_out in dims[1:])
        self.hidden = nn.ModuleList(
            nn.Sequential(get_activation(hidden_activations), nn.Dropout(dropout_rates))
            for _ in hidden_units)
        self.init_weights()

    def init_weights(self) -> None:
        for weight, bias in zip(self.weights, self.biases):
            fan_in, fan_out = weight.shape[1:]
            nn.init.normal_(weight, std=(2.0 / (fan_in + fan_out)) ** 0.5)
            nn.init.zeros_(bias)


class ComponentMLP(GroupedMLP):
    """M independent MLPs on the same field-wise input, computed as one batched einsum per layer.

    The embedding decoupler of section 3.2: E_i = MLP_i(X~) for i = 1..M, each MLP
    applied to every field row with its own weights.

    Args:
        num_components: M.
        input_dim: D, the width of the shared input rows.
        hidden_units: hidden widths (the same for every component).
        output_dim: k, the width of every component.
        hidden_activations: activation after every hidden layer.
        dropout_rates: dropout after every hidden layer.

    Shapes: (B, F, D) -> (B, M, F, k).

    Example:
        >>> decoupler = ComponentMLP(4, input_dim=30, hidden_units=[30, 30], output_dim=10)
        >>> decoupler(torch.randn(8, 39, 30)).shape
        torch.Size([8, 4, 39, 10])
    """

    def __init__(self, num_components: int, input_dim: int, hidden_units: Sequence[int], output_dim: int,
                 hidden_activations: str = "ReLU", dropout_rates: float = 0.0):
        super().__init__(num_components, input_dim, hidden_units, output_dim, hidden_activations, dropout_rates,
                         bias_shape=lambda fan_out: (num_components, 1, fan_out))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        h = torch.einsum("bfd,mdh->bmfh", X, self.weights[0]) + self.biases[0]       # (B, M, F, h)
        for hidden, weight, bias in zip(self.hidden, self.weights[1:], self.biases[1:]):
            h = torch.einsum("bmfh,mhg->bmfg", hidden(h), weight) + bias             # (B, M, F, g)
        return h                                                                     # (B, M, F, k)


class FieldMLP(GroupedMLP):
    """F independent MLPs, MLP_f applied to field row f only, as one batched einsum per layer.

    Args:
        num_fields: F.
        input_dim: width of every field row.
        hidden_units: hidden widths (the same for every field).
        output_dim: output width of every field.
        hidden_activations: activation after every hidden layer.
        dropout_rates: dropout after every hidden layer.

    Shapes: (B, F, input_dim) -> (B, F, output_dim).

    Example:
        >>> mlp = FieldMLP(39, input_dim=30, hidden_units=[64, 64], output_dim=16)
        >>> mlp(torch.randn(8, 39, 30)).shape
        torch.Size([8, 39, 16])
    """

    def __init__(self, num_fields: int, input_dim: int, hidden_units: Sequence[int], output_dim: int,
                 hidden_activations: str = "ReLU", dropout_rates: float = 0.0):
        super().__init__(num_fields, input_dim, hidden_units, output_dim, hidden_activations, dropout_rates,
                         bias_shape=lambda fan_out: (num_fields, fan_out))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        h = torch.einsum("bfd,fdh->bfh", X, self.weights[0]) + self.biases[0]        # (B, F, h)
        for hidden, weight, bias in zip(self.hidden, self.weights[1:], self.biases[1:]):
            h = torch.einsum("bfh,fhg->bfg", hidden(h), weight) + bias              # (B, F, g)
        return h


class FieldwiseRouter(nn.Module):
    """Field-wise multi-head router (eq. 4): regenerate M embeddings from the M components.

        Theta = softmax_j(g(X))                      # (B, F, M_source, M_target), positive
        Z_i   = sum_j diag(Theta[:, :, j, i]) E_j    # (B, F, k) per target head i

    The gating MLP g maps every field row x_f of X to that field's M x M weights:
    with ``gate = MLP_Block(D, ..., M*M)`` one MLP is shared by all fields (the
    ``router: shared`` reading), with ``gate = FieldMLP(F, D, ..., M*M)`` every field
    has its own parameters (``router: per_field``, the paper's "tensorized MLP" read
    as field-specific). The softmax over the source component keeps every weight
    positive, as Proposition 4.3 requires.

    Args:
        num_components: M.
        gate: the gating MLP g, (B, F, D) -> (B, F, M*M).

    Shapes: forward(X (B, F, D), components (B, M, F, k)) -> Z (B, M, F, k).

    Example:
        >>> router = FieldwiseRouter(3, MLP_Block(16, [64, 64], output_dim=9))
        >>> router(torch.randn(8, 39, 16), torch.randn(8, 3, 39, 10)).shape
        torch.Size([8, 3, 39, 10])
    """

    def __init__(self, num_components: int, gate: nn.Module):
        super().__init__()
        self.num_components = num_components
        self.gate = gate

    def weights(self, X: torch.Tensor) -> torch.Tensor:
        """Theta: (B, F, D) -> (B, F, M_source, M_target), summing to 1 over the source axis."""
        logits = self.gate(X).unflatten(-1, (self.num_components, self.num_components))  # (B, F, M, M)
        return logits.softmax(dim=-2)

    def forward(self, X: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
        theta = self.weights(X)                                                      # (B, F, M, M)
        return torch.einsum("bfji,bjfk->bifk", theta, components)                    # (B, M, F, k)


def build_router_gate(router: str, num_fields: int, num_components: int, input_dim: int,
                      hidden_units: Sequence[int], hidden_activations: str, dropout_rates: float) -> nn.Module:
    """The gating MLP g of eq. 4 by its config name (one of ROUTERS), D -> M*M per field row."""
    if router == "shared":
        return MLP_Block(input_dim, list(hidden_units), hidden_activations=hidden_activations,
                         output_dim=num_components * num_components, dropout_rates=dropout_rates)
    if router == "per_field":
        return FieldMLP(num_fields, input_dim, hidden_units, num_components * num_components,
                        hidden_activations, dropout_rates)
    raise ValueError(f"router must be one of {ROUTERS}, got {router!r}")


def assign_interactions(interaction_types: Sequence[str], num_blocks: int, num_components: int,
                        assignment: str, seed: int) -> List[List[str]]:
    """The interaction function of every component of every block.

    ``"cycle"``: component i of every block gets ``interaction_types[i % len]``.
    ``"sample"``: the types are drawn without replacement, a fresh shuffle of the
    list (by ``random.Random(seed)``) whenever it is used up, and the draws run
    on across components and blocks, so consecutive blocks get different
    combinations (DHEN's sampling, RoBlock appendix A.4.2).

    Returns:
        num_blocks lists of num_components type names.

    Example:
        >>> assign_interactions(["DCNv2", "FM"], 2, 3, "cycle", seed=0)
        [['DCNv2', 'FM', 'DCNv2'], ['DCNv2', 'FM', 'DCNv2']]
    """
    if not interaction_types:
        raise ValueError("interaction_types must name at least one interaction")
    unknown = [name for name in interaction_types if name not in INTERACTION_TYPES]
    if unknown:
        raise ValueError(f"interaction_types: unknown interaction(s) {unknown}; choose from {list(INTERACTION_TYPES)}")
    if assignment == "cycle":
        row = [interaction_types[i % len(interaction_types)] for i in range(num_components)]
        return [list(row) for _ in range(num_blocks)]
    if assignment == "sample":
        rng = random.Random(seed)
        pool: List[str] = []
        blocks = []
        for _ in range(num_blocks):
            row = []
            for _ in range(num_components):
                if not pool:
                    pool = rng.sample(list(interaction_types), len(interaction_types))
                row.append(pool.pop())
            blocks.append(row)
        return blocks
    raise ValueError(f"interaction_assignment must be one of {INTERACTION_ASSIGNMENTS}, got {assignment!r}")


class SharedHSICComponents(nn.Module):
    """What HSIC reads: the decoupler's components themselves (``hsic_gradient: model``), so the
    HSIC term's gradient reaches every parameter upstream of them (eq. 6 optimised jointly)."""

    def forward(self, x_tilde: torch.Tensor, components: torch.Tensor, decoupler: nn.Module) -> torch.Tensor:
        return components                                                            # (B, M, F, k)


class DecouplerHSICComponents(nn.Module):
    """What HSIC reads with ``hsic_gradient: decoupler``: the same components, recomputed in
    training from the detached decoupler input, so that the HSIC term (eq. 3) regularises the
    decoupler of its block only and sends no gradient into the embeddings, f^(0) or earlier
    blocks. Equal values; in evaluation the components themselves (no second pass)."""

    def forward(self, x_tilde: torch.Tensor, components: torch.Tensor, decoupler: nn.Module) -> torch.Tensor:
        return decoupler(x_tilde.detach()) if self.training else components         # (B, M, F, k)


def build_hsic_components(hsic_gradient: str) -> nn.Module:
    """The module that gives HSIC its components, by the config name (one of HSIC_GRADIENTS)."""
    if hsic_gradient == "model":
        return SharedHSICComponents()
    if hsic_gradient == "decoupler":
        return DecouplerHSICComponents()
    raise ValueError(f"hsic_gradient must be one of {HSIC_GRADIENTS}, got {hsic_gradient!r}")


class RoBlockLayer(nn.Module):
    """One RoBlock (eqs. 2-5): X^(l-1) (B, F, D) -> X^(l) (B, F, D), plus the decoupled components.

        N    = norm(X^(l-1))                                 # LayerNorm over D per field row, or identity
        X~   = RU(N)                                         # eq. 2 (rank1_norm): training only, or also eval (at_inference)
        E    = decoupler(X~)                                 # (B, M, F, k), HSIC-regularised (eq. 3)
        E_h  = hsic_components(X~, E, decoupler)             # what HSIC reads: E, or E from a detached X~
        Z    = router(N, E)                                  # eq. 4, (B, M, F, k)
        X^(l) = out_norm(X^(l-1) + drop(f([I_1(Z_1), ..., I_M(Z_M)])))   # eq. 5, f field-wise to D

    The paper writes no normalisation inside the block (with ``nn.Identity()`` for
    both norms the block is eqs. 2-5 as printed); ``norm`` normalises what the block
    reads, ``out_norm`` the residual stream it writes (DHEN's Norm(Ensemble + X)).

    Args:
        norm: ``nn.LayerNorm(D, eps=BLOCK_NORM_EPS)`` or ``nn.Identity()``, applied to X^(l-1) before
            the rank-1 update normalization and the router.
        rank1_norm: the module applied before the decoupler
            (``RankOneUpdateNorm`` or ``nn.Identity()`` to switch it off).
        decoupler: ``ComponentMLP`` (B, F, D) -> (B, M, F, k).
        router: ``FieldwiseRouter``.
        interactions: the M interaction functions, one per component, each
            (B, F, k) -> (B, F, k). They run through
            ``MultiEmbeddingInteraction``: identical copies (a homogeneous block)
            in one vmapped call, mixed types one after another (a Python loop
            over M modules of different types).
        fusion: f^(l), a field-wise MLP M*k -> D.
        out_norm: ``nn.LayerNorm(D, eps=BLOCK_NORM_EPS)`` or ``nn.Identity()``, applied to the
            block's output X^(l-1) + f(...).

        hsic_components: ``SharedHSICComponents()`` (the HSIC gradient reaches everything upstream)
            or ``DecouplerHSICComponents()`` (it reaches this block's decoupler only).
        branch_drop: ``DropPath(p)`` (stochastic depth on the block's residual branch
            f(...), ``added_block_drop_path``) or ``nn.Identity()``.
        start_as_identity: zero the last linear layer of ``fusion`` whenever the model's weights
            are initialised (FuxiCTR's ``reset_parameters`` calls ``init_weights``), so that the
            block starts as X^(l) = out_norm(X^(l-1)) (``added_block_init: identity``).

    Shapes: forward(X) -> (X^(l) (B, F, D), E_h (B, M, F, k)).
    """

    def __init__(self, norm: nn.Module, rank1_norm: nn.Module, decoupler: nn.Module, router: nn.Module,
                 interactions: Sequence[nn.Module], fusion: nn.Module, out_norm: nn.Module,
                 hsic_components: nn.Module, branch_drop: nn.Module, start_as_identity: bool = False):
        super().__init__()
        self.norm = norm
        self.rank1_norm = rank1_norm
        self.decoupler = decoupler
        self.router = router
        self.interactions = MultiEmbeddingInteraction(list(interactions))
        self.fusion = fusion
        self.out_norm = out_norm
        self.hsic_components = hsic_components
        self.branch_drop = branch_drop
        self.start_as_identity = start_as_identity

    def init_weights(self) -> None:
        """Zero f^(l)'s output layer when the block starts as the identity (called by FuxiCTR's
        ``reset_parameters`` after its default initialisation)."""
        if self.start_as_identity:
            output_layer = [module for module in self.fusion.modules() if isinstance(module, nn.Linear)][-1]
            nn.init.zeros_(output_layer.weight)
            nn.init.zeros_(output_layer.bias)

    @property
    def interaction_names(self) -> List[str]:
        return [type(module).__name__ for module in self.interactions.interactions]

    def forward(self, X: torch.Tensor):
        normed = self.norm(X)                                                        # (B, F, D)
        x_tilde = self.rank1_norm(normed)                                            # (B, F, D)
        components = self.decoupler(x_tilde)                                         # (B, M, F, k)
        Z = self.router(normed, components)                                          # (B, M, F, k)
        interacted = self.interactions(Z)                                            # (B, F, M*k)
        hsic_components = self.hsic_components(x_tilde, components, self.decoupler)  # (B, M, F, k)
        branch = self.branch_drop(self.fusion(interacted))                          # (B, F, D)
        return self.out_norm(X + branch), hsic_components                            # (B, F, D)

