"""RoBlock: wide and deep scaling of recommenders via embedding collapse mitigation.

Shapes: B batch, F fields (the paper's n), k base size, D = scale_factor * k
model width (the paper's d), M components (the paper's m), L blocks.

    E^(0)_i = Emb_i(x),  i = 1..M                            # (B, M, F, k)   M tables of size k
    X^(0)   = f^(0)([E^(0)_1, ..., E^(0)_M])                  # (B, F, D)      eq. 1, field-wise MLP
    for l = 1..L:                                             #                RoBlockLayer, eqs. 2-5
        X~    = RU_t(X^(l-1))                                 # eq. 2, training only (also eval: rank1_norm_at_inference)
        E     = decoupler(X~)                                 # (B, M, F, k)
        Z     = router(X^(l-1), E)                            # (B, M, F, k)   eq. 4
        X^(l) = X^(l-1) + f^(l)([I_1(Z_1), ..., I_M(Z_M)])    # (B, F, D)      eq. 5
    y = f*(mean_l X^(l))                                      # (B, 1)         eq. 6
    loss = BCE(y_true, y) + beta * sum_l HSIC(E^(l))          # eq. 6, eq. 3
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn
from fuxictr.pytorch.layers import MLP_Block

from fuxictr_ext.base import ZooModel
from fuxictr_ext.config import (check_arg, check_choice, check_non_negative, check_non_negative_int,
                                check_positive_int, check_positive_ints, check_probability)
from fuxictr_ext.layers.common import DropPath
from fuxictr_ext.layers.hsic import HSIC_NORMALIZATIONS, hsic_loss
from fuxictr_ext.layers.interactions import build_interaction
from fuxictr_ext.layers.multi_embedding import ConcatEmbeddingSets, MultiEmbedding
from fuxictr_ext.layers.rank1_norm import RankOneUpdateNorm
from fuxictr_ext.registry import register_model

from .layers import (ADDED_BLOCK_INITS, BLOCK_NORM_EPS, BLOCK_NORMS, HSIC_GRADIENTS, INTERACTION_ASSIGNMENTS, ROUTERS,
                     ComponentMLP, FieldwiseRouter, RoBlockLayer, assign_interactions, build_hsic_components,
                     build_router_gate)

_CHANNELWISE_ACTIVATIONS = ("prelu", "dice")


@register_model
class RoBlock(ZooModel):
    """RoBlock (rank-1 update normalization, HSIC decoupler, field-wise router, heterogeneous interactions).

    Args:
        feature_map: FuxiCTR FeatureMap.
        embedding_dim: k, the base size of every embedding table and component (10 in the paper).
        scale_factor: D = scale_factor * k, the model width d (1, 2, 3, 5, 10 in the paper);
            a fractional factor is accepted when D comes out whole (1.5 with k = 10: D = 15).
        num_components: m; ``None`` for the paper's default floor(D / k) + 1.
        extra_components: components added to m (Figure 6's "added components").
        num_blocks: L, the number of stacked RoBlocks.
        block_norm: ``"layer_norm"``: every block reads LayerNorm(X^(l-1)) (over D, per
            field row) in its rank-1 update normalization, decoupler and router; ``"none"``:
            the block reads X^(l-1) as eqs. 2-4 print it. The residual of eq. 5 is the
            same in both (README: why, and what each measured).
        residual_norm: ``"layer_norm"``: every block's output is LayerNorm(X^(l-1) + f(...))
            (over D, per field row; DHEN's Norm(Ensemble + X)); ``"none"``: eq. 5 as printed.
        rank1_norm: apply rank-1 update normalization (eq. 2) before every decoupler
            (the "RU" of the ablations).
        rank1_iterations: t, its power iterations (3 in the paper).
        rank1_norm_at_inference: also apply it in evaluation, from the fixed start v^(0) = 1;
            ``False`` (the paper: "applied only during training and omitted at inference").
        hsic_weight: beta of eq. 6; 0 switches the HSIC term off (the "HSIC" ablation).
        hsic_normalization: ``"none"``: eq. 3 as printed (linear kernel, grows with the fourth
            power of the components' scale); ``"variance"``: every pair divided by the two
            components' total variances (eq. 3 on unit-variance components, in [0, 1]);
            ``"cka"``: linear CKA (``fuxictr_ext.layers.hsic``; README: which is the default and why).
        hsic_gradient: where the HSIC term's gradient goes: ``"model"`` (eq. 6 optimised
            jointly: into the decoupler and everything upstream of it, the embeddings, f^(0) and
            the earlier blocks) or ``"decoupler"`` (eq. 3 regularises each block's decoupler only;
            same loss values; README "Depth": measured).
        added_block_hsic_normalization: ``hsic_normalization`` of blocks 2..L; ``None``: the same
            as the first block's.
        added_block_hsic_gradient: ``hsic_gradient`` of blocks 2..L; ``None``: the same as the
            first block's.
        added_block_init: ``"default"`` (every block initialised as FuxiCTR initialises any
            network) or ``"identity"``: blocks 2..L start as the identity (the last layer of
            their f^(l) zero-initialised), so that L blocks start as the first block alone does.
        added_block_drop_path: stochastic depth on blocks 2..L: in training each sample skips
            such a block's residual branch with this probability (``DropPath``); 0 switches it off.
        interaction_types: the interaction functions to choose from, names out of
            {"FM", "CIN", "DNN", "DCNv2"} (DHEN's modules, ``fuxictr_ext.layers.interactions``);
            one name makes every block homogeneous.
        interaction_assignment: ``"cycle"`` (component i gets type i mod len) or ``"sample"``
            (drawn without replacement, reshuffled when used up, with ``combination_seed``).
        seed: the experiment's seed (FuxiCTR seeds the initialisation with it).
        combination_seed: the seed of ``"sample"``; ``None`` uses ``seed``. Table 9 averages
            random interaction combinations: vary this one and keep ``seed`` to change the
            combination and not the initialisation.
        num_cross_layers: cross layers of every DCNv2 interaction.
        cin_hidden_units: feature maps of every CIN layer of every CIN interaction.
        dnn_hidden_units: hidden widths of every DNN interaction (on F*k inputs).
        reshape_hidden_units: hidden widths of f^(0) (M*k -> D, field-wise); ``None``: [D, D].
        decoupler_hidden_units: hidden widths of each decoupler MLP (D -> k); ``None``: [k, k]
            (its activations are (B, M, F, width): the widest tensors of a block).
        router: ``"shared"``: one gating MLP g for every field row; ``"per_field"``: every field
            has its own g (README: which is the default and why).
        router_hidden_units: hidden widths of the router's gating MLP g (D -> M*M); [64, 64] in the paper.
        fusion_hidden_units: hidden widths of f^(l) (M*k -> D); ``None``: [D, D].
        projection_hidden_units: hidden widths of f* (F*D -> 1).
        hidden_activations: activation of every hidden layer (element-wise ones only).
        net_dropout: dropout after every hidden layer of the networks that read the whole
            sample: the projection f* and the DNN interactions.
        fieldwise_dropout: dropout after every hidden layer of the field-wise MLPs that make
            the embeddings of the block: f^(0), the decoupler, the router's g and f^(l). The
            paper sets network dropout 0.1 and embedding dropout 0 without placing them
            inside the block; 0 here (README: measured, 0.1 kept RoBlock at the first-order
            level on the discriminating data).

    Example:
        >>> model = RoBlock(feature_map, embedding_dim=10, scale_factor=2, num_blocks=3,
        ...                 interaction_types=["DCNv2", "FM", "CIN", "DNN"],
        ...                 interaction_assignment="sample")
        >>> out = model(batch)
        >>> out["y_pred"].shape                     # (B, 1)
        >>> out["aux_losses"]["hsic"]               # beta * sum_l L_HSIC, training mode only

    Shapes: batch dict of (B,) tensors -> {"y_pred": (B, 1)[, "aux_losses": {"hsic": ()}]}.
    Stages: ``block_{l}_in`` is X^(l) (B, F, D), the input of block l (l = 0..L-1).
    """

    def __init__(self, feature_map, model_id: str = "RoBlock", gpu: int = -1,
                 embedding_dim: int = 10,
                 scale_factor: float = 1,
                 num_components: Optional[int] = None,
                 extra_components: int = 0,
                 num_blocks: int = 1,
                 block_norm: str = "none",
                 residual_norm: str = "none",
                 rank1_norm: bool = True,
                 rank1_iterations: int = 3,
                 rank1_norm_at_inference: bool = False,
                 hsic_weight: float = 1.0,
                 hsic_normalization: str = "none",
                 hsic_gradient: str = "model",
                 added_block_hsic_normalization: Optional[str] = None,
                 added_block_hsic_gradient: Optional[str] = None,
                 added_block_init: str = "default",
                 added_block_drop_path: float = 0.0,
                 interaction_types: Sequence[str] = ("DCNv2",),
                 interaction_assignment: str = "cycle",
                 seed: int = 2019,
                 combination_seed: Optional[int] = None,
                 num_cross_layers: int = 3,
                 cin_hidden_units: Sequence[int] = (16, 16),
                 dnn_hidden_units: Sequence[int] = (400, 400),
                 reshape_hidden_units: Optional[Sequence[int]] = None,
                 decoupler_hidden_units: Optional[Sequence[int]] = None,
                 router: str = "shared",
                 router_hidden_units: Sequence[int] = (64, 64),
                 fusion_hidden_units: Optional[Sequence[int]] = None,
                 projection_hidden_units: Sequence[int] = (400, 400),
                 hidden_activations: str = "ReLU",
                 net_dropout: float = 0.1,
                 fieldwise_dropout: float = 0.0,
                 **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **kwargs)
        check_positive_int("embedding_dim", embedding_dim)
        check_arg(scale_factor >= 1, "scale_factor", scale_factor, "a number >= 1")
        check_positive_int("num_components", num_components, optional=True)
        check_non_negative_int("extra_components", extra_components)
        check_positive_int("num_blocks", num_blocks)
        check_non_negative("hsic_weight", hsic_weight)
        hsic_normalization = check_choice("hsic_normalization", hsic_normalization, HSIC_NORMALIZATIONS)
        hsic_gradient = check_choice("hsic_gradient", hsic_gradient, HSIC_GRADIENTS)
        added_block_hsic_normalization = check_choice(
            "added_block_hsic_normalization", added_block_hsic_normalization or hsic_normalization,
            HSIC_NORMALIZATIONS)
        added_block_hsic_gradient = check_choice("added_block_hsic_gradient",
                                                 added_block_hsic_gradient or hsic_gradient, HSIC_GRADIENTS)
        added_block_init = check_choice("added_block_init", added_block_init, ADDED_BLOCK_INITS)
        check_arg(0 <= added_block_drop_path < 1, "added_block_drop_path", added_block_drop_path,
                  "a probability in [0, 1)")
        check_probability("net_dropout", net_dropout)
        check_probability("fieldwise_dropout", fieldwise_dropout)
        check_positive_int("num_cross_layers", num_cross_layers)
        check_positive_ints("cin_hidden_units", cin_hidden_units, min_length=1)
        check_arg(not isinstance(interaction_types, str), "interaction_types", interaction_types,
                  "a list of names, not a string")
        router = check_choice("router", router, ROUTERS)
        block_norm = check_choice("block_norm", block_norm, BLOCK_NORMS)
        residual_norm = check_choice("residual_norm", residual_norm, BLOCK_NORMS)
        interaction_assignment = check_choice("interaction_assignment", interaction_assignment,
                                              INTERACTION_ASSIGNMENTS)
        check_arg(str(hidden_activations).lower() not in _CHANNELWISE_ACTIVATIONS, "hidden_activations",
                  hidden_activations, "an element-wise activation (e.g. ReLU): RoBlock's MLPs run on field rows")
        num_fields = feature_map.num_fields
        check_arg(num_fields >= 2 or hsic_weight == 0, "hsic_weight", hsic_weight,
                  f"0 on a feature map of {num_fields} field: HSIC centres over fields and needs at least 2")

        model_dim = scale_factor * embedding_dim                                     # D
        check_arg(float(model_dim).is_integer(), "scale_factor", scale_factor,
                  f"such that scale_factor * embedding_dim (= {model_dim:g} with embedding_dim={embedding_dim}) "
                  "is a whole number, the model width d")
        model_dim = int(model_dim)
        base_components = model_dim // embedding_dim + 1 if num_components is None else num_components
        self.num_components = base_components + extra_components                    # M
        self.model_dim = model_dim
        self.hsic_weight = float(hsic_weight)
        self.hsic_normalizations = [hsic_normalization] + [added_block_hsic_normalization] * (num_blocks - 1)
        self.uses_hsic = self.hsic_weight > 0 and self.num_components >= 2
        self.interaction_plan = assign_interactions(list(interaction_types), num_blocks, self.num_components,
                                                    interaction_assignment,
                                                    seed if combination_seed is None else combination_seed)
        field_hidden = [model_dim, model_dim]
        decoupler_hidden = ([embedding_dim, embedding_dim] if decoupler_hidden_units is None
                            else list(decoupler_hidden_units))

        def mlp(input_dim: int, hidden_units: Optional[Sequence[int]], output_dim: int, dropout: float,
                **extra) -> MLP_Block:
            units = field_hidden if hidden_units is None else list(hidden_units)
            return MLP_Block(input_dim, units, hidden_activations=hidden_activations, output_dim=output_dim,
                             dropout_rates=dropout, **extra)

        self.embedding = MultiEmbedding(feature_map, embedding_dim, self.num_components)
        self.concat_sets = ConcatEmbeddingSets()
        self.reshape_mlp = mlp(self.num_components * embedding_dim, reshape_hidden_units, model_dim,
                               fieldwise_dropout)

        def layer_norm(choice: str) -> nn.Module:
            return nn.LayerNorm(model_dim, eps=BLOCK_NORM_EPS) if choice == "layer_norm" else nn.Identity()

        blocks = []
        for block_index, block_types in enumerate(self.interaction_plan):
            interactions = [build_interaction(name, num_fields, embedding_dim, cin_hidden_units=cin_hidden_units,
                                              dnn_hidden_units=dnn_hidden_units, num_cross_layers=num_cross_layers,
                                              hidden_activations=hidden_activations, dropout=net_dropout)
                            for name in block_types]
            blocks.append(RoBlockLayer(
                norm=layer_norm(block_norm),
                rank1_norm=(RankOneUpdateNorm(rank1_iterations, at_inference=rank1_norm_at_inference)
                            if rank1_norm else nn.Identity()),
                decoupler=ComponentMLP(self.num_components, model_dim, decoupler_hidden, embedding_dim,
                                       hidden_activations, fieldwise_dropout),
                router=FieldwiseRouter(self.num_components, build_router_gate(
                    router, num_fields, self.num_components, model_dim, list(router_hidden_units),
                    hidden_activations, fieldwise_dropout)),
                interactions=interactions,
                fusion=mlp(self.num_components * embedding_dim, fusion_hidden_units, model_dim,
                           fieldwise_dropout),
                out_norm=layer_norm(residual_norm),
                hsic_components=build_hsic_components(hsic_gradient if block_index == 0
                                                      else added_block_hsic_gradient),
                branch_drop=DropPath(added_block_drop_path) if block_index > 0 else nn.Identity(),
                start_as_identity=added_block_init == "identity" and block_index > 0))
        self.blocks = nn.ModuleList(blocks)
        self.projection = mlp(num_fields * model_dim, list(projection_hidden_units), 1, net_dropout,
                              output_activation=self.output_activation)
        self.finalize_model()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        embedding_sets = self.embedding(X)                                           # (B, M, F, k)
        x = self.reshape_mlp(self.concat_sets(embedding_sets))                       # (B, F, D)     eq. 1
        block_outputs: List[torch.Tensor] = []
        block_components: List[torch.Tensor] = []
        for index, block in enumerate(self.blocks):
            x = self.tap(f"block_{index}_in", x)
            x, components = block(x)                                                 # (B, F, D), (B, M, F, k)
            block_outputs.append(x)
            block_components.append(components)
        pooled = torch.stack(block_outputs).mean(dim=0)                              # (B, F, D)     eq. 6
        return_dict = {"y_pred": self.projection(pooled.flatten(start_dim=1))}       # (B, 1)
        if self.training and self.uses_hsic:
            hsic = torch.stack([hsic_loss(components, normalization) for components, normalization
                                in zip(block_components, self.hsic_normalizations)]).sum()
            return_dict["aux_losses"] = {"hsic": self.hsic_weight * hsic}
        return return_dict
