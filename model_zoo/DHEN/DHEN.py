"""DHEN: Deep and Hierarchical Ensemble Network (Zhang et al., "DHEN: A Deep and
Hierarchical Ensemble Network for Large-Scale Click-Through Rate Prediction", 2022),
in the form the RoBlock paper uses it as a deep baseline (its appendix A.4.2).

Layer l maps X_l (F field embeddings of size D) to X_{l+1} of the same shape:

    M_j(X_l)    for the c interaction modules j of the layer, each (F, D)
                (FM, CIN, DNN, DCNv2: fuxictr_ext.layers.interactions, shared with RoBlock)
    g(X_l)      = softmax(GateMLP(flatten(X_l)))                  # (c,)  3 layers, 64 hidden
    X_{l+1}     = LN(sum_j g_j(X_l) M_j(X_l) + X_l)                # (F, D)

and y = sigmoid(MLP(flatten(X_L))). The c modules of every layer are a combination
drawn from the configured interaction types: all combinations of size c are
shuffled with the seed and dealt out to the layers in turn, without replacement
until a cycle is used up, then reshuffled.

Single embedding (SE) at scale s: one table of size s*k and one stack of width
D = s*k. Multi-embedding (ME, Guo et al. 2024): s tables of size k, each feeding
its own DHEN stack (D = k, with its own module combinations); the stacks'
outputs are concatenated before the final MLP.
"""

from __future__ import annotations

import itertools
import logging
import random
from typing import List, Sequence, Tuple

import torch
from torch import nn
from fuxictr.pytorch.layers import MLP_Block

from fuxictr_ext.config import check_arg, check_positive_int, check_positive_ints
from fuxictr_ext.backbones.embedding_sets import EmbeddingSetStack
from fuxictr_ext.layers.interactions import INTERACTION_TYPES, build_interaction
from fuxictr_ext.layers.multi_embedding import EmbeddingLayout, MultiEmbeddingInteraction
from fuxictr_ext.registry import register_model




def sample_interaction_combinations(interaction_types: Sequence[str], modules_per_layer: int,
                                    num_slots: int, seed: int) -> List[Tuple[str, ...]]:
    """Deal ``num_slots`` module combinations of size ``modules_per_layer``.

    All combinations (in the order of ``interaction_types``) are shuffled with
    ``random.Random(seed)`` and dealt in turn; when a cycle is used up the next one
    is a fresh shuffle, so no combination repeats before all have been used.

    Example:
        >>> sample_interaction_combinations(["FM", "CIN", "DNN", "DCNv2"], 2, 3, seed=2019)
        [('CIN', 'DCNv2'), ('FM', 'DCNv2'), ('FM', 'CIN')]
    """
    combinations = list(itertools.combinations(interaction_types, modules_per_layer))
    rng = random.Random(seed)
    dealt: List[Tuple[str, ...]] = []
    while len(dealt) < num_slots:
        cycle = list(combinations)
        rng.shuffle(cycle)
        dealt.extend(cycle)
    return dealt[:num_slots]


class DHENLayer(nn.Module):
    """X_out = LN(sum_j softmax(gate(flatten X))_j * M_j(X) + X).

    Args:
        interactions: the layer's c modules, each (B, F, D) -> (B, F, D).
        gate: (B, F*D) -> (B, c) logits.
        embedding_dim: D, the axis the LayerNorm normalizes.

    Shapes: (B, F, D) -> (B, F, D).
    """

    def __init__(self, interactions: Sequence[nn.Module], gate: nn.Module, embedding_dim: int):
        super().__init__()
        self.interactions = nn.ModuleList(interactions)
        self.gate = gate
        self.norm = nn.LayerNorm(embedding_dim)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([module(X) for module in self.interactions], dim=1)   # (B, c, F, D)
        weights = torch.softmax(self.gate(X.flatten(start_dim=1)), dim=-1)         # (B, c)
        ensemble = torch.einsum("bc,bcfd->bfd", weights, outputs)                  # (B, F, D)
        return self.norm(ensemble + X)


@register_model
class DHEN(EmbeddingSetStack):
    """DHEN with gated heterogeneous ensembles on single (SE) or multi-embedding (ME) input.

    Args:
        feature_map: FuxiCTR FeatureMap.
        embedding_dim: k, the base embedding size (10 in the RoBlock paper).
        num_embeddings: s, the scale factor: SE embeds into one table of size s*k
            and runs one stack of width D = s*k; ME embeds into s tables of size k
            and runs s stacks of width D = k, one per table.
        embedding_mode: ``"single"`` (SE) or ``"multi"`` (ME).
        num_layers: L, stacked DHEN layers.
        interaction_types: the module pool, distinct names among FM, CIN, DNN, DCNv2.
        modules_per_layer: c, modules ensembled in every layer (1..len(pool)).
        gate_hidden_units: hidden widths of every gating MLP (paper: 3 layers, 64 hidden).
        dnn_hidden_units: hidden widths of the DNN module.
        cin_hidden_units: layer widths of the CIN module.
        num_cross_layers: cross layers of the DCNv2 module.
        mlp_hidden_units: hidden widths of the final MLP.
        hidden_activations: activation of every MLP.
        net_dropout: dropout after the hidden layers of the DNN module and the final MLP.
        seed: draws the module combinations (the experiment's seed).

    Example:
        >>> model = DHEN(feature_map, embedding_dim=10, num_embeddings=2, embedding_mode="multi",
        ...              num_layers=3, modules_per_layer=2)
        >>> model(batch)["y_pred"].shape          # (B, 1)
        >>> model.interaction_combinations        # per layer, per stack
        [[('CIN', 'DCNv2'), ('FM', 'DCNv2')], [('FM', 'CIN'), ...], [...]]

    Shapes: batch dict of (B,) tensors -> y_pred (B, 1). Stages ``layer_{l}_in``,
    l = 0..L-1: (B, F, s*k), the input of layer l with the ME stacks' embedding
    sets concatenated per field.
    """

    def __init__(self, feature_map, model_id: str = "DHEN", gpu: int = -1,
                 embedding_dim: int = 10,
                 num_embeddings: int = 1,
                 embedding_mode: str = "single",
                 num_layers: int = 2,
                 interaction_types: Sequence[str] = INTERACTION_TYPES,
                 modules_per_layer: int = 2,
                 gate_hidden_units: Sequence[int] = (64, 64),
                 dnn_hidden_units: Sequence[int] = (400, 400),
                 cin_hidden_units: Sequence[int] = (16, 16),
                 num_cross_layers: int = 2,
                 mlp_hidden_units: Sequence[int] = (400, 400),
                 hidden_activations: str = "ReLU",
                 net_dropout: float = 0.0,
                 seed: int = 2019,
                 **kwargs):
        layout = EmbeddingLayout(embedding_dim, num_embeddings, embedding_mode)
        unknown = [name for name in interaction_types if name not in INTERACTION_TYPES]
        check_arg(not unknown and interaction_types and len(set(interaction_types)) == len(interaction_types),
                  "interaction_types", interaction_types, f"distinct names from {list(INTERACTION_TYPES)}")
        check_arg(1 <= modules_per_layer <= len(interaction_types), "modules_per_layer", modules_per_layer,
                  f"in [1, {len(interaction_types)}] (the size of interaction_types)")
        check_positive_int("num_layers", num_layers)
        check_positive_int("num_cross_layers", num_cross_layers)
        check_positive_ints("cin_hidden_units", cin_hidden_units, min_length=1)
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        num_fields = feature_map.num_fields
        self.build_embedding(feature_map, layout.set_dim, layout.num_sets)
        dealt = sample_interaction_combinations(interaction_types, modules_per_layer,
                                                num_layers * self.num_sets, seed)
        self.interaction_combinations = [dealt[l * self.num_sets:(l + 1) * self.num_sets]
                                         for l in range(num_layers)]
        logging.info(f"DHEN module combinations per layer and stack: {self.interaction_combinations}")
        # Stacks run one after another: their ensembles differ (dealt without replacement).
        self.layers = nn.ModuleList(
            MultiEmbeddingInteraction(
                [DHENLayer([build_interaction(name, num_fields, self.set_dim, cin_hidden_units=cin_hidden_units,
                                             dnn_hidden_units=dnn_hidden_units, num_cross_layers=num_cross_layers,
                                             hidden_activations=hidden_activations, dropout=net_dropout)
                            for name in combination],
                           MLP_Block(input_dim=num_fields * self.set_dim,
                                     output_dim=modules_per_layer,
                                     hidden_units=list(gate_hidden_units),
                                     hidden_activations=hidden_activations),
                           self.set_dim)
                 for combination in layer_combinations],
                vectorize=False)
            for layer_combinations in self.interaction_combinations)
        self.build_head(num_fields, mlp_hidden_units, hidden_activations, net_dropout)
        self.finalize_model()
