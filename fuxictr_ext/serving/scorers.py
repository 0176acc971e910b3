"""Multi-target scoring: a trained model, R requests, N candidates each, N scores back.

Paper: Tkach, "Context Features Are Cheap: Rank-Aware Decomposition for
Efficient Feature Interaction in Recommender Systems".

Two paths score the same request with the same trained parameters:

* ``"vanilla"`` - broadcast each request's context to its candidates and run
  the model's own ``forward`` (the "standard approach" of section 3.2).
* ``"rank_aware"`` - context-only work once per request, target work per
  candidate, identity-equivalent to the vanilla scores (section 3):

  Each servable model declares its own decomposition
  (:class:`~fuxictr_ext.serving.servable.RankAwareServable`, in its model folder):

  ========================  ==========================================================
  model class               rank-aware parts
  ========================  ==========================================================
  DLRM                      FM pairs (eqs. 4-6) + first FC layer on [FM_ctx; e_c] (eq. 12)
  DeepFM (FuxiCTR's)        LR + FM pairs + first FC layer of the DNN (:class:`DeepFMScorer`,
                            attached with ``register_scorer(DeepFM, DeepFMScorer)``)
  NFM                       LR + bi-interaction pairs + first FC layer
  DNN                       first FC layer (eq. 11)
  DCNv2 (single embedding)  cross layer 0 (eq. 14) + first layer of the parallel DNN
  AutoInt                   attention layer 0 (eqs. 17-18, block log-sum-exp softmax)
                            + first layer of its DNN + LR
  rDCN, rDCNNoContextStream,
  RankAwareAttention        the whole model (section 4): its own two-stream forward
                            (:class:`TwoStreamServable`)
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

import weakref
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Type

import torch
from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbeddingDict, MLP_Block
from torch import nn

from ..layers.rank_aware import FieldPartition, RankAwareUnsupportedError, gather_requests
from ..registry import get_model_class, list_models
from .layers import RankAwareFMPairs, RankAwareLogisticRegression
from .requests import MultiTargetScorer, RequestBatch
from .servable import EmbeddingScorer, RankAwareServable

__all__ = ["FieldPartition", "RequestBatch", "RankAwareUnsupportedError", "MultiTargetScorer",
           "RankAwareServable", "EmbeddingScorer", "VanillaScorer", "TwoStreamScorer", "TwoStreamServable",
           "DeepFMScorer", "PATHS", "register_scorer", "build_scorer", "cached_scorer", "cast_model", "Scorer", "score_requests", "score_difference",
           "rank_aware_models", "export_scorer", "EXPORT_METHODS", "resolve_partition"]

PATHS = ("vanilla", "rank_aware")
_EXTERNAL_SCORERS: Dict[type, Type[MultiTargetScorer]] = {}


def register_scorer(model_class: type, scorer_class: Type[MultiTargetScorer]) -> None:
    """Attach a rank-aware scorer to a model class this project does not own (e.g. FuxiCTR's DeepFM).

    Zoo models declare theirs with :class:`RankAwareServable`; this is for the rest.
    ``scorer_class(model, partition, rank_aware_fc=...)`` must equal the model's forward.
    """
    if isinstance(model_class, type) and issubclass(model_class, RankAwareServable):
        raise ValueError(f"{model_class.__name__} declares its own rank_aware_scorer; do not register another")
    _EXTERNAL_SCORERS[model_class] = scorer_class


def _external_scorer(model: nn.Module) -> Optional[Type[MultiTargetScorer]]:
    for cls in type(model).__mro__:
        if cls in _EXTERNAL_SCORERS:
            return _EXTERNAL_SCORERS[cls]
    return None


def rank_aware_models() -> List[str]:
    """Names of the model classes that have a rank-aware path (zoo models and registered ones)."""
    zoo = [name for name in list_models() if issubclass(get_model_class(name), RankAwareServable)]
    return sorted(set(zoo) | {cls.__name__ for cls in _EXTERNAL_SCORERS})


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


class TwoStreamScorer(MultiTargetScorer):
    """Models built rank-aware (section 4): their own ``score_candidates`` with R requests."""

    def __init__(self, model: nn.Module, partition: FieldPartition, rank_aware_fc: bool = True):
        super().__init__(model, partition)
        if not rank_aware_fc:
            raise ValueError(f"{model.__class__.__name__}'s FC head is rank-aware by construction; "
                             "rank_aware_fc=False does not apply")
        self.model = model

    def forward(self, context, candidates, request_index):
        return self.model.score_candidates(context, candidates, request_index).view(-1)


class TwoStreamServable(RankAwareServable):
    """The serving contract of a model built rank-aware
    (:class:`~fuxictr_ext.backbones.two_stream.TwoStreamModel`): its own ``score_candidates``
    with the ``field_partition`` it was built with.

    Example (in a model's own file)::

        class rDCN(TwoStreamModel, TwoStreamServable): ...
    """

    def serving_partition(self, partition: Optional[FieldPartition] = None, **overrides) -> FieldPartition:
        """The partition the model was built with; another one is refused."""
        if partition is not None and partition != self.field_partition:
            raise ValueError(f"{self.__class__.__name__} was built with the partition {self.field_partition}; "
                             f"it cannot be scored with {partition}")
        return self.field_partition

    def rank_aware_scorer(self, partition: FieldPartition, rank_aware_fc: bool = True) -> TwoStreamScorer:
        return TwoStreamScorer(self, partition, rank_aware_fc)


class DeepFMScorer(EmbeddingScorer):
    """FuxiCTR's DeepFM (``embedding_layer``, ``fm``, ``mlp``): LR and the FM pair sum with
    context parts once, DNN first layer split.

    Example:
        >>> register_scorer(DeepFM, DeepFMScorer)   # DeepFM from FuxiCTR's model_zoo
        >>> build_scorer(deepfm_model)
    """

    def __init__(self, model: nn.Module, partition: FieldPartition, rank_aware_fc: bool = True):
        super().__init__(model, partition, model.embedding_layer)
        if not isinstance(model.fm, FactorizationMachine) or not isinstance(model.mlp, MLP_Block):
            raise RankAwareUnsupportedError("DeepFMScorer needs fuxictr's FactorizationMachine `fm` and "
                                            "an MLP_Block `mlp` on the flattened embeddings")
        self.wide = RankAwareLogisticRegression(model.fm.lr_layer, partition.context_fields, partition.target_fields)
        self.interaction = RankAwareFMPairs(partition.num_context, partition.num_target)
        self.fc = self.split_mlp(model.mlp, self.context_columns, self.target_columns, rank_aware_fc)

    def forward(self, context, candidates, request_index):
        e_c, e_t = self.embed(context, candidates, request_index)
        fm_ctx, fm_tgt = self.interaction(e_c, e_t, request_index)
        fm = gather_requests(fm_ctx.sum(dim=1, keepdim=True), request_index) + fm_tgt.sum(dim=1, keepdim=True)
        logit = (self.wide(context, candidates, request_index) + fm
                 + self.fc(e_c.flatten(start_dim=1), e_t.flatten(start_dim=1), request_index))  # (C, 1)
        return self.output_activation(logit).view(-1)


_CAST_MODULES: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


class _FollowDtype:
    """Hooks that keep a fuxictr embedding's tensors in the dtype of ``reference``'s parameters."""

    def __init__(self, reference: nn.Module):
        self.reference = reference

    def dtype(self) -> torch.dtype:
        return next(self.reference.parameters()).dtype

    def inputs(self, module: nn.Module, args: tuple) -> tuple:
        return (args[0].to(self.dtype()),) + tuple(args[1:])

    def output(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output.to(self.dtype())


def cast_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model.to(dtype)`` (float64, bfloat16, float16, ...) such that its forward, and any scorer, runs.

    fuxictr's ``FeatureEmbeddingDict`` feeds numeric fields to their ``nn.Linear`` tables as
    float32 (``.float()``), and its sequence poolings return float32 (a float32 mask); the
    numeric tables get a forward pre-hook casting their input, the feature encoders a
    forward hook casting their output, to the embedding's own dtype (no-ops in float32).
    Parameter names and values are unchanged.

    Example:
        >>> cast_model(model, torch.float64)
        >>> Scorer(model).score_batch(batch).dtype       # torch.float64
    """
    model.to(dtype)
    for embedding in model.modules():
        if isinstance(embedding, FeatureEmbeddingDict) and embedding not in _CAST_MODULES:
            follow = _FollowDtype(embedding)
            for table in embedding.embedding_layers.values():
                if isinstance(table, nn.Linear):
                    table.register_forward_pre_hook(follow.inputs)
            for encoder in embedding.feature_encoders.values():
                encoder.register_forward_hook(follow.output)
            _CAST_MODULES.add(embedding)
    return model


def resolve_partition(model: nn.Module, partition: Optional[FieldPartition] = None,
                      **partition_options) -> FieldPartition:
    """The field partition to score ``model`` with.

    A servable model decides (:meth:`RankAwareServable.serving_partition`: two-stream
    models keep the partition they were built with; others read the FeatureMap's
    sources with their ``context_sources`` / ``target_sources`` / ``field_roles``
    keys updated by ``partition_options``). Any other model: an explicit
    ``partition``, else the FeatureMap's sources with ``partition_options``.
    """
    if isinstance(model, RankAwareServable):
        return model.serving_partition(partition, **partition_options)
    if partition is not None:
        return partition
    options = {k: v for k, v in partition_options.items() if v is not None}
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
    elif isinstance(model, RankAwareServable):
        scorer = model.rank_aware_scorer(partition, rank_aware_fc=rank_aware_fc)
    elif _external_scorer(model) is not None:
        scorer = _external_scorer(model)(model, partition, rank_aware_fc=rank_aware_fc)
    else:
        raise RankAwareUnsupportedError(
            f"{model.__class__.__name__} has no rank-aware forward path (models with one: "
            f"{', '.join(rank_aware_models())}); score it with path='vanilla'")
    return scorer.to(model.device).eval()


SCORER_CACHE_SIZE = 8
_SCORER_CACHE: "OrderedDict[tuple, Tuple[tuple, MultiTargetScorer]]" = OrderedDict()


def parameter_state(model: nn.Module) -> tuple:
    """What a built scorer depends on: each parameter's storage, dtype, device and version counter.

    An optimizer step, ``load_state_dict`` or ``model.to(...)`` changes it, so a cached
    scorer (whose split layers hold copies of weights) is never used with stale weights.
    """
    return tuple((p.data_ptr(), p.dtype, p.device, p._version) for p in model.parameters())


def cached_scorer(model: nn.Module, path: str = "rank_aware", partition: Optional[FieldPartition] = None,
                  rank_aware_fc: bool = True, **partition_options) -> MultiTargetScorer:
    """:func:`build_scorer`, built once per model and options and rebuilt only when the weights change.

    The last ``SCORER_CACHE_SIZE`` scorers are kept (each holds its model: the id in the key
    cannot be reused while the entry lives).
    """
    key = (id(model), path, partition, rank_aware_fc,
           tuple(sorted((k, repr(v)) for k, v in partition_options.items())))
    state = parameter_state(model)
    if key not in _SCORER_CACHE or _SCORER_CACHE[key][0] != state:
        _SCORER_CACHE[key] = (state, build_scorer(model, path, partition, rank_aware_fc, **partition_options))
    _SCORER_CACHE.move_to_end(key)
    while len(_SCORER_CACHE) > SCORER_CACHE_SIZE:
        _SCORER_CACHE.popitem(last=False)
    scorer = _SCORER_CACHE[key][1]
    if model.training:              # model.train() since: the shared layers are back in training mode
        scorer.eval()
    return scorer


def score_requests(model: nn.Module, batch: RequestBatch, path: str = "rank_aware",
                   partition: Optional[FieldPartition] = None, rank_aware_fc: bool = True,
                   **partition_options) -> torch.Tensor:
    """(C,) scores of ``batch``'s candidates; ``batch.split(scores)`` cuts them per request.

    The scorer is built on the first call and reused while the model's weights are
    unchanged (:func:`cached_scorer`); a serving loop holds a :class:`Scorer` instead.
    """
    return cached_scorer(model, path, partition, rank_aware_fc, **partition_options).score(batch)


class Scorer:
    """A trained model ready to serve: requests in, one score per candidate out, the scorer module built once.

    Args:
        model: the trained model.
        path: ``"vanilla"`` or ``"rank_aware"``.
        encoder: a :class:`~fuxictr_ext.serving.encoding.RawFeatureEncoder` for raw
            requests (:func:`~fuxictr_ext.serving.load.load_scorer` attaches the dataset's).
        partition, rank_aware_fc, **partition_options: as :func:`build_scorer`.

    Example:
        >>> scorer = Scorer(model, path="rank_aware")
        >>> scores = scorer.score_batch(batch)        # (C,) for a RequestBatch of encoded ids
        >>> scorer.score(raw_requests)                # [[N_0 floats], [N_1 floats], ...] with an encoder
    """

    def __init__(self, model: nn.Module, path: str = "rank_aware", encoder=None,
                 partition: Optional[FieldPartition] = None, rank_aware_fc: bool = True, **partition_options):
        self.model = model.eval()
        self.path = path
        self.module = build_scorer(model, path, partition, rank_aware_fc, **partition_options)
        self.partition = self.module.partition
        self.encoder = encoder
        self.compiled = None

    def score_batch(self, batch: RequestBatch) -> torch.Tensor:
        """(C,) scores of an encoded RequestBatch (by the compiled program after :meth:`use_compiled`)."""
        if self.compiled is None:
            return self.module.score(batch)
        batch.validate(self.partition)
        return self.compiled(batch.context, batch.candidates, batch.request_index)

    def compile(self, example: RequestBatch, package_path: str) -> str:
        """Compile the scorer module ahead of time: its :func:`export_scorer` program through
        AOTInductor (``torch._inductor.aoti_compile_and_package``) into ``package_path``; returns the path.

        Load it with :meth:`use_compiled` (in this process or another one holding the same weights).
        """
        program = export_scorer(self.module, example)
        return torch._inductor.aoti_compile_and_package(program, package_path=package_path)

    def use_compiled(self, package_path: str, example: RequestBatch, tolerance: float = 1e-5) -> None:
        """Score with the AOTInductor package ``package_path`` from now on, after checking that it
        gives this scorer's scores on ``example`` within ``tolerance``.

        Raises:
            ValueError: the package's scores differ (a package of other weights or another model).
        """
        compiled = torch._inductor.aoti_load_package(package_path)
        expected = self.module.score(example)
        scores = compiled(example.context, example.candidates, example.request_index)
        difference = float((scores - expected).abs().max())
        if not difference <= tolerance:
            raise ValueError(f"{package_path}: its scores differ from the model's by {difference:.3g} "
                             f"(> {tolerance}); it was compiled from other weights or another model")
        self.compiled = compiled

    def encode(self, requests: Sequence[Mapping]) -> RequestBatch:
        """Raw requests to one RequestBatch (RequestError on a bad request)."""
        if self.encoder is None:
            raise ValueError("this Scorer has no RawFeatureEncoder; score encoded RequestBatches with score_batch")
        return self.encoder.request_batch(requests)

    def score(self, requests: Sequence[Mapping]) -> List[List[float]]:
        """Raw requests to their candidates' scores, one list per request in candidate order."""
        batch = self.encode(requests)
        return [s.tolist() for s in batch.split(self.score_batch(batch).double())]


def score_difference(model: nn.Module, batch: RequestBatch, rank_aware_fc: bool = True,
                     partition: Optional[FieldPartition] = None, **partition_options) -> float:
    """max |rank-aware - vanilla| over ``batch``'s candidates: the identity-equivalence check."""
    vanilla = score_requests(model, batch, "vanilla", partition, **partition_options)
    rank_aware = score_requests(model, batch, "rank_aware", partition, rank_aware_fc, **partition_options)
    return float((rank_aware - vanilla).abs().max())


EXPORT_METHODS = ("torch.export",)


def export_scorer(scorer, example: RequestBatch, method: str = "torch.export"):
    """An ``ExportedProgram`` of ``scorer`` (``torch.export``), dynamic in R, C and the ragged N.

    Run it as ``program.module()(context, candidates, request_index) -> (C,)``; save and
    load it with ``torch.export.save`` / ``torch.export.load``. (TorchScript is not
    offered: ``torch.jit.trace`` / ``script`` are deprecated in torch 2.13.)

    Args:
        scorer: a :class:`Scorer` (what :func:`~fuxictr_ext.serving.load.load_scorer` returns) or a
            scorer module from :func:`build_scorer`.
        example: a request batch to trace with, R >= 2 requests and C >= 2 candidates
            (torch.export specialises sizes of 1); later calls may differ in R, C and N
            (R = 1 and C = 1 included), not in the fields.
        method: ``"torch.export"``.

    Raises:
        ValueError: another method, a too small example, or a partition without context
            fields (R then is no input size; its requests cannot be counted in the graph).
            Without target fields (M = 0) the export works: C comes from ``request_index``.
    """
    if method not in EXPORT_METHODS:
        raise ValueError(f"method must be one of {EXPORT_METHODS}, got {method!r}")
    if isinstance(scorer, Scorer):
        scorer = scorer.module
    if not scorer.partition.context_fields:
        raise ValueError("export_scorer needs at least one context field: with none, the number of requests is "
                         "not the size of any input; score such a model with the Scorer itself")
    example.validate(scorer.partition)
    if example.num_requests < 2 or example.total_candidates < 2:
        raise ValueError(f"the export example needs R >= 2 requests and C >= 2 candidates (torch.export "
                         f"specialises sizes of 1), got R = {example.num_requests}, C = {example.total_candidates}")
    example = example.to(scorer.device)
    args = (example.context, example.candidates, example.request_index)
    scorer.eval()
    requests, candidates = torch.export.Dim("R", min=1), torch.export.Dim("C", min=1)
    dynamic_shapes = ({f: {0: requests} for f in example.context},
                      {f: {0: candidates} for f in example.candidates},
                      {0: candidates})
    with torch.no_grad():
        return torch.export.export(scorer, args, dynamic_shapes=dynamic_shapes, strict=False)
