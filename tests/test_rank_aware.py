"""Multi-target scoring: rank-aware paths equal the vanilla forward; inputs, errors, export."""

import warnings

import pytest
import torch
from fuxictr.pytorch.layers import (CrossNetV2, FactorizationMachine, FeatureEmbedding,
                                    InnerProductInteraction, MLP_Block)
from torch import nn

from fuxictr_ext.base import ZooModel
from fuxictr_ext.serving import (DeepFMScorer, FieldPartition, RankAwareUnsupportedError, RequestBatch, Scorer,
                                 build_scorer, export_scorer, rank_aware_models, register_scorer, score_difference,
                                 score_requests)
from fuxictr_ext.layers.common import FMPairs, MultiHeadSelfAttention
from fuxictr_ext.layers.rank_aware import RankSplitDense
from fuxictr_ext.serving.layers import RankAwareCrossNetV2, RankAwareFMPairs, RankAwareSelfAttention, field_columns
from fuxictr_ext.testing.serving import perturb_parameters, random_requests, train_steps
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.testing import make_feature_map, random_batch, unit_model_kwargs

TOL = 1e-5
# I1 I2 | C1 .. C6 | S1: context and target fields interleaved, a user-history sequence field.
SOURCES = ["user", "item", "user", "item", "context", "item", "user", "item", "user"]


class DeepFM(ZooModel):
    """FuxiCTR's DeepFM (model_zoo/DeepFM): LR + FM sum + DNN on flattened embeddings."""

    def __init__(self, feature_map, embedding_dim=8, hidden_units=(16,), **kwargs):
        super().__init__(feature_map, model_id="DeepFM", **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.fm = FactorizationMachine(feature_map)
        self.mlp = MLP_Block(feature_map.num_fields * embedding_dim, output_dim=1, hidden_units=list(hidden_units))
        self.finalize_model()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)
        y_pred = self.fm(X, feature_emb) + self.mlp(feature_emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(y_pred)}


register_scorer(DeepFM, DeepFMScorer)  # a model outside the zoo gets its rank-aware path by registration


class WideOnly(ZooModel):
    """A model no rank-aware path knows."""

    def __init__(self, feature_map, **kwargs):
        super().__init__(feature_map, model_id="WideOnly", **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, 1)
        self.finalize_model()

    def forward(self, inputs):
        return {"y_pred": self.output_activation(self.embedding_layer(self.get_inputs(inputs)).sum(dim=1))}


MODELS = {
    "DLRM": ("DLRM", dict(embedding_dim=8, hidden_units=[32, 16])),
    "DLRM_pairs_only": ("DLRM", dict(embedding_dim=8, hidden_units=[32], concat_embeddings=False)),
    "DeepFM": (DeepFM, dict(embedding_dim=8, hidden_units=[16])),
    "NFM": ("NFM", dict(embedding_dim=8, hidden_units=[16, 8])),
    "DNN": ("DNN", dict(embedding_dim=8, hidden_units=[16])),
    "DCNv2_parallel": ("DCNv2", dict(embedding_dim=8, model_structure="parallel", parallel_dnn_hidden_units=[16],
                                     num_cross_layers=2)),
    "DCNv2_stacked_parallel": ("DCNv2", dict(embedding_dim=8, model_structure="stacked_parallel",
                                             stacked_dnn_hidden_units=[16], parallel_dnn_hidden_units=[8])),
    "DCNv2_crossnet_only": ("DCNv2", dict(embedding_dim=8, model_structure="crossnet_only", num_cross_layers=1)),
    "AutoInt": ("AutoInt", dict(embedding_dim=8, attention_dim=8, num_heads=2, dnn_hidden_units=[16],
                                use_wide=True)),
    "AutoInt_scaled_ln": ("AutoInt", dict(embedding_dim=6, attention_dim=8, num_heads=2, attention_layers=3,
                                          use_scale=True, layer_norm=True)),
    "rDCN": ("rDCN", dict(embedding_dim=8, num_cross_layers=2, dnn_hidden_units=[16])),
    "rDCN**": ("rDCNNoContextStream", dict(embedding_dim=8, num_cross_layers=2, dnn_hidden_units=[])),
    "RankAwareAttention": ("RankAwareAttention", dict(embedding_dim=8, attention_dim=8, num_heads=2)),
    "RankAwareAttention_shared": ("RankAwareAttention", dict(embedding_dim=6, attention_dim=8, layer_norm=True,
                                                             share_context_kv=True, dnn_hidden_units=[])),
}
TWO_STREAM = {"rDCN", "rDCN**", "RankAwareAttention", "RankAwareAttention_shared"}
N_CASES = {"N=1": [1], "N=7": [7], "ragged": [3, 1, 7, 2]}


def feature_map_with(sources):
    return make_feature_map(num_numeric=2, num_categorical=6, num_sequence=1, sources=sources)


def build(key, feature_map, tmp_path, seed=0):
    cls, kwargs = MODELS[key]
    cls = get_model_class(cls) if isinstance(cls, str) else cls
    torch.manual_seed(seed)
    return perturb_parameters(cls(feature_map, **kwargs, **unit_model_kwargs(tmp_path)), seed=seed).eval()


@pytest.fixture(scope="module")
def feature_map():
    return feature_map_with(SOURCES)


@pytest.fixture(scope="module")
def partition(feature_map):
    return FieldPartition.from_feature_map(feature_map)


# ---------------------------------------------------------------- partition and requests
def test_partition_follows_sources(partition):
    assert partition.context_fields == ("I1", "C1", "C3", "C5", "S1")
    assert partition.target_fields == ("I2", "C2", "C4", "C6")
    assert partition.context_positions.tolist() == [0, 2, 4, 6, 8]
    split = list(partition.context_fields) + list(partition.target_fields)
    assert [split[i] for i in partition.vanilla_from_split] == list(partition.fields)


def test_partition_overrides(feature_map):
    part = FieldPartition.from_feature_map(feature_map, context_sources=["user"], target_sources=["item", "context"],
                                           field_roles={"S1": "target"})
    assert part.context_fields == ("I1", "C1", "C5")
    assert part.target_fields == ("I2", "C2", "C3", "C4", "C6", "S1")


@pytest.mark.parametrize("kwargs, message", [
    (dict(context_sources=["usr"]), "no feature of the FeatureMap has"),
    (dict(target_sources=["user", "item"]), "in both context_sources and target_sources"),
    (dict(field_roles={"C9": "target"}), "not a field"),
    (dict(field_roles={"C1": "candidate"}), "must be 'context' or 'target'"),
    (dict(target_sources=["item", "context"], context_sources=["context"]), "in both"),
])
def test_partition_rejects_bad_options(feature_map, kwargs, message):
    with pytest.raises(ValueError, match=message):
        FieldPartition.from_feature_map(feature_map, **kwargs)


def test_partition_rejects_unknown_feature_source():
    fmap = feature_map_with(SOURCES[:-1] + ["session"])
    with pytest.raises(ValueError, match="'S1' has source 'session'"):
        FieldPartition.from_feature_map(fmap)
    assert FieldPartition.from_feature_map(fmap, field_roles={"S1": "context"}).num_context == 5


def test_request_batch_rejects_bad_requests(feature_map, partition):
    batch = random_requests(feature_map, partition, [2, 3])
    with pytest.raises(ValueError, match="N >= 1"):
        RequestBatch(batch.context, batch.candidates, [2, 0, 3])
    with pytest.raises(ValueError, match="at least one request"):
        RequestBatch({}, {}, [])
    missing = dict(batch.candidates)
    del missing["C2"]
    with pytest.raises(ValueError, match="lack field"):
        RequestBatch(batch.context, missing, [2, 3]).validate(partition)
    swapped = dict(batch.context, C2=batch.context["C1"])
    with pytest.raises(ValueError, match="belong to the other side"):
        RequestBatch(swapped, batch.candidates, [2, 3]).validate(partition)
    with pytest.raises(ValueError, match="rows, expected 6"):
        RequestBatch(batch.context, batch.candidates, [2, 4]).validate(partition)
    with pytest.raises(ValueError, match="disagree on N"):
        RequestBatch.from_requests(partition, [{"context": {}, "candidates": {"C2": [1, 2], "C4": [1]}}])


def test_from_requests_and_split(feature_map, partition, tmp_path):
    model = build("DLRM", feature_map, tmp_path)
    reference = random_requests(feature_map, partition, [3, 1, 2], seed=4)
    offsets = [0, 3, 4, 6]
    requests = [{"context": {f: v[r] for f, v in reference.context.items()},
                 "candidates": {f: v[offsets[r]:offsets[r + 1]] for f, v in reference.candidates.items()}}
                for r in range(3)]
    batch = RequestBatch.from_requests(partition, requests)
    assert batch.request_index.tolist() == [0, 0, 0, 1, 2, 2]
    scores = score_requests(model, batch)
    assert torch.equal(scores, score_requests(model, reference))
    assert [s.shape[0] for s in batch.split(scores)] == [3, 1, 2]
    merged = RequestBatch.concat([random_requests(feature_map, partition, [2], seed=5), reference])
    assert merged.num_candidates.tolist() == [2, 3, 1, 2]
    assert torch.allclose(score_requests(model, merged)[2:], scores, atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        RequestBatch.concat([])


def test_from_flat_groups_rows_and_checks_context(feature_map, partition, tmp_path):
    model = build("AutoInt", feature_map, tmp_path)
    requests = random_requests(feature_map, partition, [2, 4, 3], seed=1)
    rows = requests.broadcast()
    shuffle = torch.randperm(requests.total_candidates, generator=torch.Generator().manual_seed(0))
    rows = {f: v[shuffle] for f, v in rows.items()}
    ids = (requests.request_index * 10 + 5)[shuffle]
    batch = RequestBatch.from_flat(partition, rows, ids)
    scores = score_requests(model, batch)
    with torch.no_grad():
        direct = model(rows)["y_pred"].view(-1)
    assert torch.allclose(scores, direct[batch.source_rows], atol=TOL)
    rows["C3"] = rows["C3"].clone()
    rows["C3"][int(torch.nonzero(ids == 15)[0])] += 1
    with pytest.raises(ValueError, match="request 15: context field 'C3' differs"):
        RequestBatch.from_flat(partition, rows, ids)
    RequestBatch.from_flat(partition, rows, ids, check_context=False)


# ---------------------------------------------------------------- identity equivalence
# Two-stream models have a rank-aware FC head by construction: no interaction-only case.
EQUIVALENCE_CASES = [(key, n_case, rank_aware_fc) for key in MODELS
                     for n_case, rank_aware_fc in [(n, True) for n in N_CASES] + [("ragged", False)]
                     if rank_aware_fc or key not in TWO_STREAM]


@pytest.mark.parametrize("key, n_case, rank_aware_fc", EQUIVALENCE_CASES,
                         ids=[f"{k}-{n}-{'FM+FC' if fc else 'interaction_only'}" for k, n, fc in EQUIVALENCE_CASES])
def test_rank_aware_equals_vanilla(key, n_case, rank_aware_fc, feature_map, partition, tmp_path):
    model = build(key, feature_map, tmp_path)
    batch = random_requests(feature_map, partition, N_CASES[n_case], seed=7)
    vanilla = score_requests(model, batch, "vanilla")
    rank_aware = score_requests(model, batch, "rank_aware", rank_aware_fc=rank_aware_fc)
    assert vanilla.shape == (batch.total_candidates,) and vanilla.dtype == torch.float32
    if batch.total_candidates > 2:
        assert vanilla.std() > 1e-3, "scores must depend on the inputs for the check to mean anything"
    assert (rank_aware - vanilla).abs().max() <= TOL


@pytest.mark.parametrize("key", ["DLRM", "DeepFM", "NFM", "DCNv2_parallel", "AutoInt", "rDCN", "RankAwareAttention"])
def test_rank_aware_equals_vanilla_after_training(key, feature_map, partition, tmp_path):
    model = build(key, feature_map, tmp_path, seed=3)
    losses = train_steps(model, [random_batch(feature_map, 32, seed=step % 2) for step in range(6)])
    assert losses[-1] < losses[0]
    requests = random_requests(feature_map, partition, [5, 1, 9], seed=11)
    assert score_difference(model.eval(), requests) <= TOL


@pytest.mark.parametrize("sources, side", [(["user"] * 9, "M=0"), (["item"] * 9, "K=0")])
@pytest.mark.parametrize("key", list(MODELS))
def test_no_context_or_no_target_fields(key, sources, side, tmp_path):
    fmap = feature_map_with(sources)
    part = FieldPartition.from_feature_map(fmap)
    if key in TWO_STREAM:
        with pytest.raises(ValueError, match="needs context and target fields"):
            build(key, fmap, tmp_path)
        return
    model = build(key, fmap, tmp_path)
    batch = random_requests(fmap, part, [3, 1, 4], seed=2)
    if side == "M=0":
        assert not batch.candidates
    assert score_difference(model, batch) <= TOL


def test_unsupported_structures_refuse_clearly(feature_map, partition, tmp_path):
    batch = random_requests(feature_map, partition, [2])
    with pytest.raises(RankAwareUnsupportedError, match="WideOnly has no rank-aware forward path.*path='vanilla'"):
        score_requests(WideOnly(feature_map, **unit_model_kwargs(tmp_path)), batch)
    score_requests(WideOnly(feature_map, **unit_model_kwargs(tmp_path)), batch, "vanilla")
    multi = get_model_class("DCNv2")(feature_map, embedding_dim=4, num_embeddings=2, embedding_mode="multi",
                                     parallel_dnn_hidden_units=[8], **unit_model_kwargs(tmp_path))
    with pytest.raises(RankAwareUnsupportedError, match="single fuxictr FeatureEmbedding"):
        build_scorer(multi)
    with pytest.raises(ValueError, match="rank-aware by construction"):
        build_scorer(build("rDCN", feature_map, tmp_path), rank_aware_fc=False)
    with pytest.raises(ValueError, match="path must be one of"):
        build_scorer(build("DLRM", feature_map, tmp_path), path="fast")
    assert {"DLRM", "DeepFM", "NFM", "DCNv2", "AutoInt", "rDCN", "rDCNNoContextStream",
            "RankAwareAttention"} <= set(rank_aware_models())


def test_two_stream_model_keeps_its_partition(feature_map, tmp_path):
    model = build("rDCN", feature_map, tmp_path)
    other = FieldPartition.from_feature_map(feature_map, context_sources=["user"], target_sources=["item", "context"])
    with pytest.raises(ValueError, match="was built with the partition"):
        build_scorer(model, partition=other)


# ---------------------------------------------------------------- layers against the layers they split
def _random_split(num_columns, num_context, seed):
    order = torch.randperm(num_columns, generator=torch.Generator().manual_seed(seed))
    return torch.sort(order[:num_context]).values, torch.sort(order[num_context:]).values


@pytest.mark.parametrize("d_c, d_t", [(5, 7), (1, 9), (0, 6), (6, 0)])
def test_rank_aware_crossnetv2_matches_crossnetv2(d_c, d_t):
    torch.manual_seed(0)
    crossnet = CrossNetV2(d_c + d_t, num_layers=3)
    context_columns, target_columns = _random_split(d_c + d_t, d_c, seed=d_c)
    x_c, x_t = torch.randn(3, d_c), torch.randn(8, d_t)
    request_index = torch.tensor([0, 0, 1, 2, 2, 2, 2, 1])
    x_0 = torch.zeros(8, d_c + d_t)
    x_0[:, context_columns], x_0[:, target_columns] = x_c[request_index], x_t
    split = RankAwareCrossNetV2(crossnet, context_columns, target_columns)
    assert torch.allclose(split(x_c, x_t, request_index), crossnet(x_0), atol=TOL)


@pytest.mark.parametrize("K, M", [(4, 3), (1, 5), (0, 4), (5, 0)])
@pytest.mark.parametrize("use_residual, layer_norm", [(True, False), (False, True)])
def test_rank_aware_attention_layer0_matches_self_attention(K, M, use_residual, layer_norm):
    torch.manual_seed(1)
    attention = MultiHeadSelfAttention(6, attention_dim=8, num_heads=2, use_residual=use_residual,
                                       use_scale=True, layer_norm=layer_norm).eval()
    nn.init.normal_(attention.W_q.weight, std=1.0)  # large scores: the log-sum-exp merge must be stable
    vanilla_from_split = torch.randperm(K + M, generator=torch.Generator().manual_seed(K))
    e_c, e_t = torch.randn(2, K, 6), torch.randn(5, M, 6)
    request_index = torch.tensor([1, 0, 1, 1, 0])
    tokens = torch.cat([e_c[request_index], e_t], dim=1)[:, vanilla_from_split]
    split = RankAwareSelfAttention(attention, vanilla_from_split)
    assert torch.allclose(split(e_c, e_t, request_index), attention(tokens), atol=TOL)


@pytest.mark.parametrize("K, M", [(4, 3), (2, 1), (0, 3), (3, 0)])
def test_rank_aware_fm_pairs_match_inner_products(K, M):
    from fuxictr_ext.serving.layers import fm_pair_columns

    vanilla_from_split = torch.randperm(K + M, generator=torch.Generator().manual_seed(M))
    positions = torch.argsort(vanilla_from_split)  # split index -> vanilla position
    e_c, e_t = torch.randn(2, K, 4), torch.randn(6, M, 4)
    request_index = torch.tensor([0, 1, 1, 0, 1, 1])
    vanilla = InnerProductInteraction(K + M, output="inner_product")(
        torch.cat([e_c[request_index], e_t], dim=1)[:, vanilla_from_split]) if K + M > 1 else torch.zeros(6, 0)
    if K + M > 1:
        tokens = torch.cat([e_c[request_index], e_t], dim=1)[:, vanilla_from_split]
        assert torch.allclose(FMPairs(K + M)(tokens), vanilla, atol=TOL)
    fm_ctx, fm_tgt = RankAwareFMPairs(K, M)(e_c, e_t, request_index)
    context_pairs, target_pairs = fm_pair_columns(positions[:K], positions[K:])
    assert fm_ctx.shape == (2, K * (K - 1) // 2) and fm_tgt.shape == (6, K * M + M * (M - 1) // 2)
    assert torch.allclose(vanilla[:, context_pairs], fm_ctx[request_index], atol=TOL)
    assert torch.allclose(vanilla[:, target_pairs], fm_tgt, atol=TOL)


def test_rank_split_dense_matches_linear():
    torch.manual_seed(2)
    linear = nn.Linear(10, 4)
    context_columns, target_columns = _random_split(10, 6, seed=3)
    x = torch.randn(5, 10)
    x[:, context_columns] = torch.randn(1, 6).expand(5, 6)
    split = RankSplitDense.from_linear(linear, context_columns, target_columns)
    out = split(x[:1, context_columns], x[:, target_columns], torch.zeros(5, dtype=torch.long))
    assert torch.allclose(out, linear(x), atol=TOL)
    assert field_columns(torch.tensor([2, 0]), 3).tolist() == [6, 7, 8, 0, 1, 2]


# ---------------------------------------------------------------- export
@pytest.mark.parametrize("key", list(MODELS))
def test_exported_program_gives_the_same_scores(key, feature_map, partition, tmp_path):
    model = build(key, feature_map, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # no deprecation on the export path
        program = export_scorer(build_scorer(model), random_requests(feature_map, partition, [2, 3], seed=1))
    torch.export.save(program, str(tmp_path / "scorer.pt2"))
    loaded = torch.export.load(str(tmp_path / "scorer.pt2")).module()
    for num_candidates in ([4, 1, 6, 2], [1], [9, 1]):              # ragged, one request of one candidate
        batch = random_requests(feature_map, partition, num_candidates, seed=9)
        expected = score_requests(model, batch, "vanilla")
        with torch.no_grad():
            for module in (program.module(), loaded):
                scores = module(batch.context, batch.candidates, batch.request_index)
                assert scores.shape == expected.shape
                assert (scores - expected).abs().max() <= TOL


@pytest.mark.parametrize("key", ["DLRM", "AutoInt", "DCNv2_parallel", "NFM"])
def test_export_with_an_empty_side(key, tmp_path):
    no_target = feature_map_with(["user"] * 9)                       # M = 0: exported, C from request_index
    part = FieldPartition.from_feature_map(no_target)
    model = build(key, no_target, tmp_path)
    program = export_scorer(build_scorer(model), random_requests(no_target, part, [2, 3], seed=1)).module()
    batch = random_requests(no_target, part, [3, 1, 5], seed=2)
    with torch.no_grad():
        scores = program(batch.context, batch.candidates, batch.request_index)
    assert (scores - score_requests(model, batch, "vanilla")).abs().max() <= TOL
    no_context = feature_map_with(["item"] * 9)                      # K = 0: refused, naming why
    part = FieldPartition.from_feature_map(no_context)
    with pytest.raises(ValueError, match="needs at least one context field"):
        export_scorer(build_scorer(build(key, no_context, tmp_path)), random_requests(no_context, part, [2, 3]))


def test_export_refuses_bad_arguments(feature_map, partition, tmp_path):
    scorer = build_scorer(build("DLRM_pairs_only", feature_map, tmp_path))
    with pytest.raises(ValueError, match="method must be one of"):
        export_scorer(scorer, random_requests(feature_map, partition, [2, 3]), method="torchscript")
    with pytest.raises(ValueError, match="R >= 2 requests and C >= 2"):
        export_scorer(scorer, random_requests(feature_map, partition, [3]))


def test_export_takes_the_scorer_that_load_scorer_returns(feature_map, partition, tmp_path):
    model = build("DLRM", feature_map, tmp_path)
    held = Scorer(model, path="rank_aware")                        # what load_scorer returns
    program = export_scorer(held, random_requests(feature_map, partition, [2, 3], seed=1)).module()
    batch = random_requests(feature_map, partition, [4, 1, 3], seed=5)
    with torch.no_grad():
        scores = program(batch.context, batch.candidates, batch.request_index)
    assert (scores - held.score_batch(batch)).abs().max() <= TOL


def test_a_scorer_compiled_ahead_of_time_gives_its_scores_and_refuses_other_weights(feature_map, partition,
                                                                                   tmp_path):
    model = build("DLRM", feature_map, tmp_path)
    held = Scorer(model, path="rank_aware")
    example = random_requests(feature_map, partition, [2, 3], seed=1)
    package = held.compile(example, str(tmp_path / "scorer.pt2"))            # AOTInductor, dynamic R and C
    compiled = Scorer(model, path="rank_aware")
    compiled.use_compiled(package, example)
    for num_candidates in ([4, 1, 6, 2], [1], [9, 1]):
        batch = random_requests(feature_map, partition, num_candidates, seed=9)
        assert (compiled.score_batch(batch) - held.score_batch(batch)).abs().max() <= TOL
    other = build("DLRM", feature_map, tmp_path, seed=3)
    with pytest.raises(ValueError, match="compiled from other weights"):
        Scorer(other, path="rank_aware").use_compiled(package, example)
