"""EmbeddingSetStack: S embedding sets -> L interaction layers over the sets -> MLP head.

The shared frame of DHEN and WuKong in the RoBlock paper's comparisons (single
embedding is one set of size s*k, multi-embedding s sets of size k). Subclasses
build their interaction layers; the embedding, the per-layer stage taps and the
prediction head are this class's.

    H_0 = [E_1(x); ...; E_S(x)]                                 # (B, F, S*D)
    H_l = layer_l(split_sets(H_{l-1}))                          # (B, n_l, S*D)
    y   = sigmoid(MLP(flatten(H_L)))                            # (B, 1)

Shapes: B batch, F fields, S embedding sets, D set size, n_l outputs of layer l.
"""

from __future__ import annotations

from typing import Sequence

from fuxictr.pytorch.layers import MLP_Block
from torch import nn

from ..base import ZooModel
from ..layers.multi_embedding import ConcatEmbeddingSets, MultiEmbedding


class EmbeddingSetStack(ZooModel):
    """Base of layered models over embedding sets (DHEN, WuKong).

    Subclasses call ``super().__init__`` (FuxiCTR's keyword arguments), then
    :meth:`build_embedding`, set ``self.layers`` (an ``nn.ModuleList`` whose layers map
    (B, S, n, D) -> (B, n', S*D)), call :meth:`build_head` and ``finalize_model``.

    Stage taps: ``layer_l_in`` (B, n_l, S*D) for every layer l.

    Example:
        >>> class Stack(EmbeddingSetStack):
        ...     def __init__(self, feature_map, **kwargs):
        ...         super().__init__(feature_map, model_id="Stack", **kwargs)
        ...         self.build_embedding(feature_map, set_dim=4, num_sets=2)
        ...         self.layers = nn.ModuleList()
        ...         self.build_head(feature_map.num_fields, [16], "ReLU", 0.0)
        ...         self.finalize_model()
    """

    def build_embedding(self, feature_map, set_dim: int, num_sets: int) -> None:
        """S embedding sets of size D (SE: one set of size s*k)."""
        self.num_sets, self.set_dim = num_sets, set_dim
        self.embedding_layer = MultiEmbedding(feature_map, set_dim, num_sets)
        self.concat_sets = ConcatEmbeddingSets()

    def build_head(self, num_outputs: int, mlp_hidden_units: Sequence[int], hidden_activations: str,
                   net_dropout: float) -> None:
        """The prediction MLP on the flattened last layer's n_L * S * D values."""
        self.mlp = MLP_Block(input_dim=num_outputs * self.num_sets * self.set_dim,
                             output_dim=1,
                             hidden_units=list(mlp_hidden_units),
                             hidden_activations=hidden_activations,
                             output_activation=self.output_activation,
                             dropout_rates=net_dropout)

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        H = self.concat_sets(self.embedding_layer(X))                     # (B, F, S*D)
        for l, layer in enumerate(self.layers):
            self.tap(f"layer_{l}_in", H)
            sets = H.unflatten(-1, (self.num_sets, self.set_dim)).transpose(1, 2)   # (B, S, n_l, D)
            H = layer(sets)                                                # (B, n_{l+1}, S*D)
        y_pred = self.mlp(H.flatten(start_dim=1))                          # (B, 1)
        return {"y_pred": y_pred}


__all__ = ["EmbeddingSetStack"]
