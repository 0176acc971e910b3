"""Counted FLOPs of the vanilla and rank-aware paths against the closed forms (eqs. 7, 8, 11, 12, 15)."""

from math import comb

import pytest
import torch
from fuxictr.pytorch.layers import CrossNetV2

from fuxictr_ext.serving import FieldPartition, RequestBatch, build_scorer
from fuxictr_ext.cost import flops_by_module
from fuxictr_ext.serving.flops import (attention_layer0_macs, cross_layer0_macs,
                                          dcnv2_cross_macs, eq7_fm_savings, eq8_fm_savings_fraction,
                                          eq11_fc_savings, eq12_fm_fc_savings,
                                          eq15_cross_layer0_savings_fraction, fc_first_layer_macs, fm_macs,
                                          group_flops, mlp_macs, rdcn_cross_macs)
from fuxictr_ext.layers.rank_aware import ContextTargetCrossNet
from fuxictr_ext.serving.layers import RankAwareCrossNetV2
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.testing import make_feature_map, unit_model_kwargs

SHAPES = [(5, 3, 9), (8, 4, 16), (2, 6, 1)]  # (K, M, N)


def one_request(K, M, N):
    feature_map = make_feature_map(num_numeric=0, num_categorical=K + M, sources=["user"] * K + ["item"] * M)
    partition = FieldPartition.from_feature_map(feature_map)
    batch = RequestBatch({f: torch.ones(1, dtype=torch.long) for f in partition.context_fields},
                         {f: torch.arange(1, N + 1) for f in partition.target_fields}, [N])
    return feature_map, batch


def counted(scorer, batch):
    return flops_by_module(scorer, batch.context, batch.candidates, batch.request_index)


@pytest.mark.parametrize("concat_embeddings", [True, False])
@pytest.mark.parametrize("K, M, N", SHAPES)
def test_dlrm_flops_match_closed_forms(K, M, N, concat_embeddings, tmp_path):
    D, units = 8, [16, 4]
    feature_map, batch = one_request(K, M, N)
    model = get_model_class("DLRM")(feature_map, embedding_dim=D, hidden_units=units,
                                    concat_embeddings=concat_embeddings, **unit_model_kwargs(tmp_path))
    vanilla = counted(build_scorer(model, "vanilla"), batch)
    fm_only = counted(build_scorer(model, "rank_aware", rank_aware_fc=False), batch)
    fm_fc = counted(build_scorer(model, "rank_aware"), batch)
    fm_vanilla, fm_rank_aware = fm_macs(K, M, N, D)
    assert vanilla["model.interaction"] == 2 * fm_vanilla
    assert fm_only["interaction"] == fm_fc["interaction"] == 2 * fm_rank_aware
    # The dense Gram blocks compute eq. 7's pairs twice, plus the diagonal and the K*M cross block.
    assert fm_vanilla - fm_rank_aware == 2 * eq7_fm_savings(K, M, N, D) + (N - 1) * K * D + N * K * M * D

    pairs, context_pairs = comb(K + M, 2), comb(K, 2)
    context_width = context_pairs + (K * D if concat_embeddings else 0)
    target_width = pairs - context_pairs + (M * D if concat_embeddings else 0)
    fc_vanilla, fc_rank_aware = fc_first_layer_macs(N, context_width, target_width, units[0])
    deeper = N * mlp_macs(units[0], units[1:], output_dim=1)
    assert vanilla["model.mlp"] == fm_only["fc"] == 2 * (fc_vanilla + deeper)
    assert fm_fc["fc"] == 2 * (fc_rank_aware + deeper)
    assert fc_vanilla - fc_rank_aware == eq11_fc_savings(N, context_width, units[0])
    if not concat_embeddings:
        assert fc_vanilla - fc_rank_aware == eq12_fm_fc_savings(K, N, units[0])
    assert vanilla["total"] == vanilla["model.interaction"] + vanilla["model.mlp"]
    assert fm_fc["total"] == fm_fc["interaction"] + fm_fc["fc"]


@pytest.mark.parametrize("K, M, N", SHAPES)
def test_attention_layer0_flops_match_closed_form(K, M, N, tmp_path):
    D, A = 6, 8
    feature_map, batch = one_request(K, M, N)
    model = get_model_class("AutoInt")(feature_map, embedding_dim=D, attention_dim=A, num_heads=2,
                                       attention_layers=2, **unit_model_kwargs(tmp_path))
    vanilla = counted(build_scorer(model, "vanilla"), batch)
    rank_aware = counted(build_scorer(model, "rank_aware"), batch)
    layer_vanilla, layer_rank_aware = attention_layer0_macs(N, K, M, D, A, residual_projection=True)
    assert vanilla["model.self_attention.0"] == 2 * layer_vanilla
    assert rank_aware["attention0"] == 2 * layer_rank_aware
    assert rank_aware["deeper_attention"] == vanilla["model.self_attention.1"]
    projections = 4 * D * A
    assert layer_vanilla - layer_rank_aware == (N - 1) * (K * projections + 2 * K * K * A)


@pytest.mark.parametrize("d_c, d_t, N", [(6, 10, 7), (12, 4, 3), (5, 5, 1)])
def test_cross_network_flops_match_closed_forms(d_c, d_t, N):
    L = 3
    crossnet = CrossNetV2(d_c + d_t, L)
    x_c, x_t, request_index = torch.randn(1, d_c), torch.randn(N, d_t), torch.zeros(N, dtype=torch.long)
    vanilla = flops_by_module(crossnet, torch.randn(N, d_c + d_t))["total"]
    split = RankAwareCrossNetV2(crossnet, torch.arange(d_c), d_c + torch.arange(d_t))
    assert vanilla == 2 * dcnv2_cross_macs(N, d_c, d_t, L, rank_aware=False)
    assert flops_by_module(split, x_c, x_t, request_index)["total"] == 2 * dcnv2_cross_macs(N, d_c, d_t, L, rank_aware=True)
    layer0_vanilla, layer0_split = cross_layer0_macs(N, d_c, d_t)
    if N > 1:  # eq. 15 as printed counts W_cc alone; the split also moves W_tc out of the N loop
        saved = (layer0_vanilla - layer0_split) / layer0_vanilla
        assert saved == pytest.approx((N - 1) / N * d_c / (d_c + d_t))
        assert saved > (N - 1) / N * eq15_cross_layer0_savings_fraction(d_c, d_t)
    for context_stream in (True, False):
        streams = ContextTargetCrossNet(d_c, d_t, L, context_stream=context_stream)
        flops = flops_by_module(streams, x_c, x_t, request_index)["total"]
        assert flops == 2 * rdcn_cross_macs(N, d_c, d_t, L, context_stream=context_stream)


def test_closed_forms_by_hand():
    assert eq7_fm_savings(K=4, M=2, N=10, D=8) == 9 * 6 * 8
    assert eq8_fm_savings_fraction(K=4, M=2, N=10) == pytest.approx(9 * 4 * 3 / (10 * 6 * 5))
    assert eq8_fm_savings_fraction(K=24, M=4, N=10 ** 9) > eq8_fm_savings_fraction(K=8, M=4, N=10 ** 9)
    assert eq11_fc_savings(N=5, context_width=7, units=3) == 4 * 7 * 3
    assert eq12_fm_fc_savings(K=5, N=3, units=2) == 2 * 10 * 2
    assert eq15_cross_layer0_savings_fraction(514, 577) == pytest.approx(514 ** 2 / 1091 ** 2)
    assert fm_macs(K=3, M=2, N=4, D=1) == (4 * 25, 9 + 4 * 2 * 5)
    assert rdcn_cross_macs(N=2, d_c=3, d_t=4, num_layers=1) == 9 + 12 + 2 * 16
    assert group_flops({"a": 2, "b": 3, "a.x": 2}, ("a", "b")) == 5
