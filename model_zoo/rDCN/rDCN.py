"""rDCN: the rank-aware cross network (Tkach, "Context Features Are Cheap", section 4.2).

    c_0 = [e_c1; ...; e_cK]  (R, D_c),   T_0 = [e_t1; ...; e_tM]  (C, D_t)
    T_{l+1} = T_0 * (W_l^ct c_l (+) W_l^t T_l + b_l^t) + T_l       # eq. 19, W^ct c_l once per request
    c_{l+1} = c_0 * (W_l^c c_l + b_l^c) + c_l                       # eq. 20
    h = MLP([c_0; T_0])                                             # parallel DNN, first layer split
    y = sigmoid(w_c^T c_L (+) w_t^T [T_L; h] + b)                   # rank-aware output layer

rDCN** (``rDCNNoContextStream``) drops eq. 20: the target stream reads c_0 at
every layer (Table 3, last DCN row). Both share DCNv2's parallel structure
(cross network and DNN side by side on x_0, then one output layer), so
``DCNv2(model_structure="parallel")`` with the same widths is the same-shape baseline.
"""

from typing import Mapping, Optional, Sequence

import torch

from fuxictr_ext.config import check_positive_int
from fuxictr_ext.layers.common import AbsentBranch
from fuxictr_ext.layers.rank_aware import ContextTargetCrossNet, RankAwareMLP, RankSplitDense
from fuxictr_ext.backbones.two_stream import TwoStreamModel
from fuxictr_ext.registry import register_model
from fuxictr_ext.serving import TwoStreamServable


@register_model
class rDCN(TwoStreamModel, TwoStreamServable):
    """Two-stream cross network + parallel DNN, every layer rank-aware.

    Args:
        feature_map: FuxiCTR FeatureMap with context and target fields.
        embedding_dim: D; D_c = K*D, D_t = M*D.
        num_cross_layers: L.
        dnn_hidden_units: widths of the parallel DNN on [c_0; T_0] ([] for none).
        dnn_activations: its activation.
        net_dropout: dropout after every DNN hidden layer.
        batch_norm: batch normalization in the DNN.
        context_sources, target_sources, field_roles: the context/target split of
            the fields (``FieldPartition.from_feature_map``).

    Example:
        >>> model = rDCN(feature_map, embedding_dim=16, num_cross_layers=3, dnn_hidden_units=[256, 128])
        >>> model(batch)["y_pred"].shape                                # (B, 1)
        >>> model.score_candidates(context, candidates, request_index)  # (C, 1)

    Shapes: batch dict -> y_pred (B, 1). Stage taps ``context_embedding`` (B, K, D),
    ``target_embedding`` (B, M, D), ``context_stream`` (B, D_c), ``target_stream`` (B, D_t).
    """

    context_stream = True

    def __init__(self, feature_map, model_id: Optional[str] = None, gpu: int = -1,
                 embedding_dim: int = 16,
                 num_cross_layers: int = 3,
                 dnn_hidden_units: Sequence[int] = (256, 128),
                 dnn_activations: str = "ReLU",
                 net_dropout: float = 0.0,
                 batch_norm: bool = False,
                 context_sources: Optional[Sequence[str]] = None,
                 target_sources: Optional[Sequence[str]] = None,
                 field_roles: Optional[Mapping[str, str]] = None,
                 **kwargs):
        super().__init__(feature_map, model_id or type(self).__name__, gpu, embedding_dim,
                         context_sources, target_sources, field_roles, **kwargs)
        check_positive_int("num_cross_layers", num_cross_layers)
        context_dim = self.field_partition.num_context * embedding_dim   # D_c
        target_dim = self.field_partition.num_target * embedding_dim     # D_t
        self.crossnet = ContextTargetCrossNet(context_dim, target_dim, num_cross_layers,
                                              context_stream=self.context_stream)
        self.parallel_dnn = RankAwareMLP.build(context_dim, target_dim, dnn_hidden_units,
                                               hidden_activations=dnn_activations, dropout_rates=net_dropout,
                                               batch_norm=batch_norm) if dnn_hidden_units else AbsentBranch()
        dnn_dim = dnn_hidden_units[-1] if dnn_hidden_units else 0
        self.fc = RankSplitDense(context_dim, target_dim + dnn_dim, 1)
        self.finalize_model()

    def stream_logits(self, e_c: torch.Tensor, e_t: torch.Tensor, request_index: torch.Tensor) -> torch.Tensor:
        c_0, t_0 = e_c.flatten(start_dim=1), e_t.flatten(start_dim=1)   # (R, D_c), (C, D_t)
        c_L, t_L = self.crossnet(c_0, t_0, request_index)              # eqs. 19-20
        c_L, t_L = self.tap("context_stream", c_L), self.tap("target_stream", t_L)
        h = self.parallel_dnn(c_0, t_0, request_index)                 # (C, H) or (C, 0)
        return self.fc(c_L, torch.cat([t_L, h], dim=1), request_index)  # (C, 1)


@register_model
class rDCNNoContextStream(rDCN):
    """rDCN** of the paper: rDCN without the parallel context stream (c_l = c_0 at every layer).

    Same arguments as :class:`rDCN`; per layer only W^ct (D_c*D_t) and W^t, b^t (D_t^2 + D_t).
    """

    context_stream = False
