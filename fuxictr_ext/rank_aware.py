"""Multi-target scoring: a trained model, R requests, N candidates each, N scores back.

Paper: Tkach, "Context Features Are Cheap: Rank-Aware Decomposition for
Efficient Feature Interaction in Recommender Systems".

Two paths score the same request with the same trained parameters:

* ``"vanilla"`` - broadcast each request's context to its candidates and run
  the model's own ``forward`` (the "standard approach" of section 3.2).
* ``"rank_aware"`` - context-only work once per request, target work per
  candidate, identity-equivalent to the vanilla scores (section 3):

  ========================  ==========================================================
  model class               rank-aware parts
  ========================  ==========================================================
  DLRM                      FM pairs (eqs. 4-6) + first FC layer on [FM_ctx; e_c] (eq. 12)
  DeepFM (FuxiCTR's)        LR + FM pairs + first FC layer of the DNN
  NFM                       LR + bi-interaction pairs + first FC layer
  DNN                       first FC layer (eq. 11)
  DCNv2 (single embedding)  cross layer 0 (eq. 14) + first layer of the parallel DNN
  AutoInt                   attention layer 0 (eqs. 17-18, block log-sum-exp softmax)
                            + first layer of its DNN + LR
  rDCN, rDCNNoContextStream,
  RankAwareAttention        the whole model (section 4): its own two-stream forward
  ========================  ==========================================================

  ``rank_aware_fc=False`` keeps the FC stack vanilla (Table 3's "FM" row).
  Any other model, or a structure these paths do not cover (multi-embedding,
  CrossNetMix, an MLP starting with batch norm), raises
  :class:`RankAwareUnsupportedError` instead of silently using the vanilla path.

Example:
    >>> batch = RequestBatch.from_requests(partition, requests)
    >>> scores = score_requests(model, batch, path="rank_aware")  # (C,)
    >>> per_request = batch.split(scores)                         # [(N_0,), (N_1,), ...]
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from fuxictr.pytorch.layers import (CrossNetV2, FactorizationMachine, FeatureEmbedding,
                                    InnerProductInteraction, LogisticRegression, MLP_Block)
from torch import nn

from .rank_aware_base import (FieldPartition, MultiTargetScorer, RankAwareUnsupportedError,
                              RequestBatch)
from .rank_aware_layers import (AbsentBranch, BroadcastMLP, FMPairs, MultiHeadSelfAttention, RankAwareCrossNetV2,
                                RankAwareFMPairs, RankAwareLogisticRegression, RankAwareMLP,
                                RankAwareSelfAttention, SumThenMLP, ZeroTerm, count_requests,
                                field_columns, field_embedding, fm_pair_columns, gather_requests,
                                table_width)

__all__ = ["FieldPartition", "RequestBatch", "RankAwareUnsupportedError", "MultiTargetScorer",
           "VanillaScorer", "PATHS", "build_scorer", "score_requests", "score_difference",
           "rank_aware_models", "export_scorer", "EXPORT_METHODS", "resolve_partition"]

PATHS = ("vanilla", "rank_aware")
_RANK_AWARE_PATHS: Dict[str, Callable] = {}


def _rank_aware_path(*class_names: str):
    """Register a scorer class as the rank-aware path of models named ``class_names``."""
    def register(scorer_cls):
        for name in class_names:
            _RANK_AWARE_PATHS[name] = scorer_cls
        return scorer_cls
    return register


def rank_aware_models() -> List[str]:
    """Names of the model classes that have a rank-aware path."""
    return sorted(_RANK_AWARE_PATHS)


def _require(model: nn.Module, attribute: str, kinds, what: str):
    """``model.<attribute>`` if it is one of ``kinds``; RankAwareUnsupportedError otherwise."""
    module = getattr(model, attribute, None)
    if not isinstance(module, kinds):
        found = "nothing" if module is None else type(module).__name__
        raise RankAwareUnsupportedError(
            f"{type(model).__name__}.{attribute} is {found}; the rank-aware path needs {what}")
    return module


class VanillaScorer(MultiTargetScorer):
    """The standard path: every candidate row carries its request's context; the model's own forward.

    Shapes: forward(context {f: (R, ...)}, candidates {f: (C, ...)}, request_index (C,)) -> (C,).
    """

    def __init__(self, model: nn.Module, partition: FieldPartition):
        super().__init__(model, partition)
        self.model = model

    def forward(self, context, candidates, request_index):
        rows = {f: gather_requests(v, request_index) for f, v in context.items()}  # broadcast, (C, ...)
        rows.update(candidates)
        return self.model(rows)["y_pred"].view(-1)


class _EmbeddingScorer(MultiTargetScorer):
    """Shared part of the rank-aware scorers: context embedded once per request, targets per candidate."""

    def __init__(self, model: nn.Module, partition: FieldPartition):
        super().__init__(model, partition)
        embedding_layer = _require(model, "embedding_layer", FeatureEmbedding,
                                   "a single fuxictr FeatureEmbedding (multi-embedding models are not covered)")
        self.embedding_dim = table_width(embedding_layer, partition.fields)
        self.context_embedding = field_embedding(embedding_layer, partition.context_fields, self.embedding_dim)
        self.target_embedding = field_embedding(embedding_layer, partition.target_fields, self.embedding_dim)
        self.output_activation = model.output_activation
        self.context_columns = field_columns(partition.context_positions, self.embedding_dim)
        self.target_columns = field_columns(partition.target_positions, self.embedding_dim)

    def embed(self, context, candidates, request_index):
        """(e_c (R, K, D), e_t (C, M, D))."""
        e_c = self.context_embedding(context, count_requests(context, request_index))  # once per request
        e_t = self.target_embedding(candidates, request_index.size(0))
        return e_c, e_t

    def split_mlp(self, mlp: MLP_Block, context_columns, target_columns, rank_aware_fc: bool) -> nn.Module:
        """The MLP with its first layer split (rank_aware_fc) or run per candidate in vanilla order."""
        if rank_aware_fc:
            return RankAwareMLP.from_mlp_block(mlp, context_columns, target_columns)
        return BroadcastMLP(mlp, context_columns, target_columns)


@_rank_aware_path("DLRM")
class DLRMScorer(_EmbeddingScorer):
    """DLRM-style FM + FC: FM_ctx once, FM_tgt per candidate, first FC layer split (eqs. 4-12).

    The first FC layer reads ``[FM pairs; flattened embeddings]`` (or the pairs
    alone); its kernel columns are split once here into W_c for ``[FM_ctx; e_c]``
    and W_t for ``[FM_tgt; e_t]``, so the vanilla pair order is kept without a
    per-candidate permutation.
    """

    def __init__(self, model: nn.Module, partition: FieldPartition, rank_aware_fc: bool = True):
        super().__init__(model, partition)
        _require(model, "interaction", FMPairs, "the FM pair vector (FMPairs)")
        mlp = _require(model, "mlp", MLP_Block, "an MLP_Block")
        self.interaction = RankAwareFMPairs(partition.num_context, partition.num_target)
        self.embedding_features = model.embedding_features
        context_pairs, target_pairs = fm_pair_columns(partition.context_positions, partition.target_positions)
        num_pairs = len(partition.fields) * (len(partition.fields) - 1) // 2
        context_columns, target_columns = context_pairs, target_pairs
        if model.concat_embeddings:
            context_columns = torch.cat([context_pairs, num_pairs + self.context_columns])
            target_columns = torch.cat([target_pairs, num_pairs + self.target_columns])
        self.fc = self.split_mlp(mlp, context_columns, target_columns, rank_aware_fc)

    def forward(self, context, candidates, request_index):
        e_c, e_t = self.embed(context, candidates, request_index)
        fm_ctx, fm_tgt = self.interaction(e_c, e_t, request_index)           # (R, Pc), (C, Pt)
        x_c = torch.cat([fm_ctx, self.embedding_features(e_c)], dim=1)       # (R, |x_c|)
        x_t = torch.cat([fm_tgt, self.embedding_features(e_t)], dim=1)       # (C, |x_t|)
        return self.output_activation(self.fc(x_c, x_t, request_index)).view(-1)


@_rank_aware_path("DeepFM")
class DeepFMScorer(_EmbeddingScorer):
    """FuxiCTR's DeepFM: LR and the FM pair sum with context parts once, DNN first layer split."""

    def __init__(self, model: nn.Module, partition: FieldPartition, rank_aware_fc: bool = True):
        super().__init__(model, partition)
        fm = _require(model, "fm", FactorizationMachine, "fuxictr's FactorizationMachine")
        mlp = _require(model, "mlp", MLP_Block, "an MLP_Block on the flattened embeddings")
        self.wide = RankAwareLogisticRegression(fm.lr_layer, partition.context_fields, partition.target_fields)
        self.interaction = RankAwareFMPairs(partition.num_context, partition.num_target)
        self.fc = self.split_mlp(mlp, self.context_columns, self.target_columns, rank_aware_fc)

    def forward(self, context, candidates, request_index):
        e_c, e_t = self.embed(context, candidates, request_index)
        fm_ctx, fm_tgt = self.interaction(e_c, e_t, request_index)
        fm = gather_requests(fm_ctx.sum(dim=1, keepdim=True), request_index) + fm_tgt.sum(dim=1, keepdim=True)
        logit = (self.wide(context, candidates, request_index) + fm
                 + self.fc(e_c.flatten(start_dim=1), e_t.flatten(start_dim=1), request_index))  # (C, 1)
        return self.output_activation(logit).view(-1)


@_rank_aware_path("NFM")
class NFMScorer(_EmbeddingScorer):
    """NFM: bi-interaction pooling split by rank, first FC layer split.

        f_BI = sum_{i<j in ctx} e_i*e_j   (once)  +  s_c * s_t + sum_{i<j in tgt} e_i*e_j
        h_1  = W f_BI + b = W f_BI^ctx (once) + W f_BI^tgt + b
    """

    def __init__(self, model: nn.Module, partition: FieldPartition, rank_aware_fc: bool = True):
        super().__init__(model, partition)
        _require(model, "lr_layer", LogisticRegression, "fuxictr's LogisticRegression")
        pooling = _require(model, "bi_pooling_layer", InnerProductInteraction, "bi-interaction pooling")
        if pooling._output_type != "bi_interaction":
            raise RankAwareUnsupportedError(f"NFM pooling output {pooling._output_type!r} is not bi_interaction")
        mlp = _require(model, "dnn", MLP_Block, "an MLP_Block (multi-embedding NFM is not covered)")
        self.wide = RankAwareLogisticRegression(model.lr_layer, partition.context_fields, partition.target_fields)
        every_column = torch.arange(self.embedding_dim)
        self.fc = RankAwareMLP.from_mlp_block(mlp, every_column, every_column) if rank_aware_fc else SumThenMLP(mlp)

    @staticmethod
    def _pairs(e: torch.Tensor) -> torch.Tensor:
        """sum_{i<j} e_i * e_j over the fields of e (rows, n, D) -> (rows, D)."""
        return 0.5 * (e.sum(dim=1) ** 2 - (e ** 2).sum(dim=1))

    def forward(self, context, candidates, request_index):
        e_c, e_t = self.embed(context, candidates, request_index)
        pooled_c = self._pairs(e_c)                                                  # (R, D) once
        pooled_t = gather_requests(e_c.sum(dim=1), request_index) * e_t.sum(dim=1) + self._pairs(e_t)  # (C, D)
        logit = self.wide(context, candidates, request_index) + self.fc(pooled_c, pooled_t, request_index)
        return self.output_activation(logit).view(-1)


@_rank_aware_path("DNN")
class DNNScorer(_EmbeddingScorer):
    """A plain DNN on flattened embeddings: first FC layer split (eq. 11)."""

    def __init__(self, model: nn.Module, partition: FieldPartition, rank_aware_fc: bool = True):
        super().__init__(model, partition)
        mlp = _require(model, "mlp", MLP_Block, "an MLP_Block on the flattened embeddings")
        self.fc = self.split_mlp(mlp, self.context_columns, self.target_columns, rank_aware_fc)
        if type(mlp.mlp[-1]) is type(model.output_activation):  # the MLP applies the output activation itself
            self.output_activation = nn.Identity()

    def forward(self, context, candidates, request_index):
        e_c, e_t = self.embed(context, candidates, request_index)
        logit = self.fc(e_c.flatten(start_dim=1), e_t.flatten(start_dim=1), request_index)
        return self.output_activation(logit).view(-1)


@_rank_aware_path("DCNv2")
class DCNv2Scorer(_EmbeddingScorer):
    """DCNv2 (single embedding): cross layer 0 split (eq. 14), parallel DNN's first layer split.

    The stacked DNN and the output layer read the rank-mixed cross output and
    run per candidate.
    """

    def __init__(self, model: nn.Module, partition: FieldPartition, rank_aware_fc: bool = True):
        super().__init__(model, partition)
        crossnet = _require(model, "crossnet", CrossNetV2,
                            "fuxictr's CrossNetV2 (CrossNetMix and multi-embedding cross networks are not covered)")
        self.crossnet = RankAwareCrossNetV2(crossnet, self.context_columns, self.target_columns)
        self.stacked_dnn = _require(model, "stacked_dnn", (MLP_Block, nn.Identity), "an MLP_Block or Identity")
        parallel = getattr(model, "parallel_dnn", None)
        if isinstance(parallel, MLP_Block):
            self.parallel_dnn = self.split_mlp(parallel, self.context_columns, self.target_columns, rank_aware_fc)
        elif type(parallel).__name__ == "AbsentBranch":
            self.parallel_dnn = AbsentBranch()
        else:
            raise RankAwareUnsupportedError(
                f"DCNv2.parallel_dnn is {type(parallel).__name__}; the rank-aware path needs an MLP_Block or none")
        self.fc = _require(model, "fc", nn.Linear, "a Linear output layer")

    def forward(self, context, candidates, request_index):
        e_c, e_t = self.embed(context, candidates, request_index)
        x_c, x_t = e_c.flatten(start_dim=1), e_t.flatten(start_dim=1)        # (R, d_c), (C, d_t)
        cross_out = self.crossnet(x_c, x_t, request_index)                   # (C, d)
        final_out = torch.cat([self.stacked_dnn(cross_out), self.parallel_dnn(x_c, x_t, request_index)], dim=-1)
        return self.output_activation(self.fc(final_out)).view(-1)


@_rank_aware_path("AutoInt")
class AutoIntScorer(_EmbeddingScorer):
    """AutoInt: attention layer 0 split with a block-wise log-sum-exp softmax; DNN first layer and LR split."""

    def __init__(self, model: nn.Module, partition: FieldPartition, rank_aware_fc: bool = True):
        super().__init__(model, partition)
        layers = _require(model, "self_attention", nn.Sequential, "a Sequential of MultiHeadSelfAttention")
        if not len(layers) or not all(isinstance(layer, MultiHeadSelfAttention) for layer in layers):
            raise RankAwareUnsupportedError("AutoInt.self_attention must hold MultiHeadSelfAttention layers")
        self.attention0 = RankAwareSelfAttention(layers[0], partition.vanilla_from_split)
        self.deeper_attention = nn.Sequential(*layers[1:])
        self.attention_fc = _require(model, "fc", nn.Linear, "a Linear layer on the attention output")
        self.dnn = (self.split_mlp(model.dnn, self.context_columns, self.target_columns, rank_aware_fc)
                    if isinstance(model.dnn, MLP_Block) else ZeroTerm())
        self.wide = (RankAwareLogisticRegression(model.lr_layer, partition.context_fields, partition.target_fields)
                     if isinstance(model.lr_layer, LogisticRegression) else ZeroTerm())

    def forward(self, context, candidates, request_index):
        e_c, e_t = self.embed(context, candidates, request_index)
        tokens = self.deeper_attention(self.attention0(e_c, e_t, request_index))   # (C, F, A)
        logit = (self.attention_fc(tokens.flatten(start_dim=1))
                 + self.dnn(e_c.flatten(start_dim=1), e_t.flatten(start_dim=1), request_index)
                 + self.wide(context, candidates, request_index))                 # (C, 1)
        return self.output_activation(logit).view(-1)


@_rank_aware_path("rDCN", "rDCNNoContextStream", "RankAwareAttention")
class TwoStreamScorer(MultiTargetScorer):
    """Models built rank-aware (section 4): their own ``score_candidates`` with R requests."""

    def __init__(self, model: nn.Module, partition: FieldPartition, rank_aware_fc: bool = True):
        super().__init__(model, partition)
        if not rank_aware_fc:
            raise ValueError(f"{type(model).__name__}'s FC head is rank-aware by construction; "
                             "rank_aware_fc=False does not apply")
        self.model = model

    def forward(self, context, candidates, request_index):
        return self.model.score_candidates(context, candidates, request_index).view(-1)


def resolve_partition(model: nn.Module, partition: Optional[FieldPartition] = None,
                      **partition_options) -> FieldPartition:
    """The field partition to score ``model`` with.

    Order of precedence: an explicit ``partition``; the model's own
    ``field_partition`` (two-stream models fix it at construction); else the
    FeatureMap's sources with the model's ``partition_options`` (its
    ``context_sources`` / ``target_sources`` / ``field_roles`` config keys)
    updated by ``partition_options``.
    """
    own = getattr(model, "field_partition", None)
    if partition is not None:
        if own is not None and partition != own:
            raise ValueError(f"{type(model).__name__} was built with the partition {own}; "
                             f"it cannot be scored with {partition}")
        return partition
    if own is not None:
        return own
    options = dict(getattr(model, "partition_options", {}))
    options.update({k: v for k, v in partition_options.items() if v is not None})
    return FieldPartition.from_feature_map(model.feature_map, **options)


def build_scorer(model: nn.Module, path: str = "rank_aware", partition: Optional[FieldPartition] = None,
                 rank_aware_fc: bool = True, **partition_options) -> MultiTargetScorer:
    """A scorer module for ``model`` (put in eval mode; the model too).

    Args:
        model: a trained model.
        path: ``"vanilla"`` or ``"rank_aware"``.
        partition: the context/target split; default from the FeatureMap's sources.
        rank_aware_fc: with ``path="rank_aware"``, also split the first FC layer.
        **partition_options: ``context_sources``, ``target_sources``, ``field_roles``.

    Raises:
        RankAwareUnsupportedError: ``path="rank_aware"`` for a model without a rank-aware path.
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    partition = resolve_partition(model, partition, **partition_options)
    if path == "vanilla":
        scorer = VanillaScorer(model, partition)
    else:
        name = type(model).__name__
        if name not in _RANK_AWARE_PATHS:
            raise RankAwareUnsupportedError(
                f"{name} has no rank-aware forward path (models with one: {', '.join(rank_aware_models())}); "
                "score it with path='vanilla'")
        scorer = _RANK_AWARE_PATHS[name](model, partition, rank_aware_fc=rank_aware_fc)
    return scorer.to(model.device).eval()


def score_requests(model: nn.Module, batch: RequestBatch, path: str = "rank_aware",
                   partition: Optional[FieldPartition] = None, rank_aware_fc: bool = True,
                   **partition_options) -> torch.Tensor:
    """(C,) scores of ``batch``'s candidates; ``batch.split(scores)`` cuts them per request."""
    return build_scorer(model, path, partition, rank_aware_fc, **partition_options).score(batch)


def score_difference(model: nn.Module, batch: RequestBatch, rank_aware_fc: bool = True,
                     partition: Optional[FieldPartition] = None, **partition_options) -> float:
    """max |rank-aware - vanilla| over ``batch``'s candidates: the identity-equivalence check."""
    vanilla = score_requests(model, batch, "vanilla", partition, **partition_options)
    rank_aware = score_requests(model, batch, "rank_aware", partition, rank_aware_fc, **partition_options)
    return float((rank_aware - vanilla).abs().max())


EXPORT_METHODS = ("torchscript", "torch.export")


def export_scorer(scorer: MultiTargetScorer, example: RequestBatch, method: str = "torchscript"):
    """A standalone form of ``scorer``, called as ``exported(context, candidates, request_index) -> (C,)``.

    Args:
        scorer: a scorer from :func:`build_scorer`.
        example: a request batch to trace with; later calls may differ in R,
            C and the ragged N, not in the fields.
        method: ``"torchscript"`` (``torch.jit.trace``: a ``ScriptModule``,
            ``torch.jit.save``-able, runs without Python between ops) or
            ``"torch.export"`` (an ``ExportedProgram`` with dynamic R and C,
            ``torch.export.save``-able; call ``.module()`` on it to run it). Its
            example needs R >= 2 and C >= 2: torch.export specialises sizes of 1.
    """
    if method not in EXPORT_METHODS:
        raise ValueError(f"method must be one of {EXPORT_METHODS}, got {method!r}")
    example.validate(scorer.partition)
    example = example.to(scorer.device)
    args = (example.context, example.candidates, example.request_index)
    scorer.eval()
    if method == "torchscript":
        with torch.no_grad():
            return torch.jit.trace(scorer, args, strict=False, check_trace=False)
    requests, candidates = torch.export.Dim("R", min=1), torch.export.Dim("C", min=1)
    dynamic_shapes = ({f: {0: requests} for f in example.context},
                      {f: {0: candidates} for f in example.candidates},
                      {0: candidates})
    return torch.export.export(scorer, args, dynamic_shapes=dynamic_shapes, strict=False)
