"""Table 3 of "Context Features Are Cheap": Delta FLOPs (interaction / FC / total), counted and closed-form.

For one request of N candidates, FLOPs are counted with torch.utils.flop_counter
on the modules the models and scorers run, and set beside this code's closed
forms (``fuxictr_ext.serving.flops``) and the paper's eqs. 7, 8, 11, 12, 15.
Delta is relative to each family's vanilla baseline (DCNv2 + FC, or DLRM FM + FC
served the vanilla way).

DCN family (the paper's shape: K = 26, M = 16, d_c = 514, d_t = 577, L = 4), all
with DCNv2's parallel structure (cross network and FC stack side by side on x_0,
one output layer), FC hidden widths ``--dcn-hidden``:
  DCNv2 + FC   - cross layer 0 split (eq. 14) + FC first layer split
  rDCN + FC    - rDCN streams (eqs. 19-20) + FC first layer and output layer split
  rDCN** + FC  - rDCN without the context stream
DLRM family (K = 27, M = 4, D = 128: d_c = 3456, d_t = 512), FC ``--dlrm-hidden``:
  FM           - FM pairs split (eqs. 4-6), FC stack vanilla
  FM + FC      - and the first FC layer split (eq. 12)

    python -m benchmarks.rank_aware_flops --candidates 100
"""

from __future__ import annotations

import sys
import tempfile
from math import comb

import torch
from fuxictr.pytorch.layers import CrossNetV2, MLP_Block
from torch import nn


from benchmarks.harness import Harness
from fuxictr_ext.serving import FieldPartition, RequestBatch, build_scorer
from fuxictr_ext.cost import flops_by_module
from fuxictr_ext.serving.flops import (cross_layer0_macs, eq7_fm_savings,
                                          eq8_fm_savings_fraction, eq11_fc_savings, eq12_fm_fc_savings,
                                          eq15_cross_layer0_savings_fraction, fc_first_layer_macs, fm_macs,
                                          rdcn_cross_macs)
from fuxictr_ext.layers.rank_aware import ContextTargetCrossNet, RankAwareMLP, RankSplitDense
from fuxictr_ext.serving.layers import RankAwareCrossNetV2
from fuxictr_ext.testing import make_feature_map, unit_model_kwargs
from model_zoo.DLRM import DLRM

PAPER = {"DCNv2 + FC": (-18, -36, -20), "rDCN + FC": (-72, -36, -67), "rDCN** + FC": (-72, -36, -67),
         "FM": (-87, 0, -17), "FM + FC": (-87, -69, -73)}


def dcn_family(N: int, d_c: int, d_t: int, layers: int, hidden):
    """Counted {variant: (interaction, fc)} FLOPs of one request for the DCN family."""
    torch.manual_seed(0)
    d = d_c + d_t
    x_c, x_t = torch.randn(1, d_c), torch.randn(N, d_t)
    request_index = torch.zeros(N, dtype=torch.long)
    x_0 = torch.cat([x_c.expand(N, d_c), x_t], dim=1)
    context_columns, target_columns = torch.arange(d_c), d_c + torch.arange(d_t)
    crossnet = CrossNetV2(d, layers)
    dnn = MLP_Block(d, list(hidden))
    fc = nn.Linear(d + hidden[-1], 1)

    def fc_flops(run_dnn, run_fc):
        return flops_by_module(run_dnn)["total"] + flops_by_module(run_fc)["total"]

    vanilla_cross = flops_by_module(crossnet, x_0)["total"]
    vanilla_fc = fc_flops(lambda: dnn(x_0), lambda: fc(torch.randn(N, d + hidden[-1])))
    split_dnn = RankAwareMLP.from_mlp_block(dnn, context_columns, target_columns)
    dcnv2 = (flops_by_module(RankAwareCrossNetV2(crossnet, context_columns, target_columns), x_c, x_t,
                         request_index)["total"],
             fc_flops(lambda: split_dnn(x_c, x_t, request_index), lambda: fc(torch.randn(N, d + hidden[-1]))))
    rows = {"DCNv2 (vanilla) + FC": (vanilla_cross, vanilla_fc), "DCNv2 + FC": dcnv2}
    rdcn_dnn = RankAwareMLP.build(d_c, d_t, hidden)
    rdcn_fc = RankSplitDense(d_c, d_t + hidden[-1], 1)
    for name, context_stream in (("rDCN + FC", True), ("rDCN** + FC", False)):
        streams = ContextTargetCrossNet(d_c, d_t, layers, context_stream=context_stream)
        rows[name] = (flops_by_module(streams, x_c, x_t, request_index)["total"],
                      fc_flops(lambda: rdcn_dnn(x_c, x_t, request_index),
                               lambda: rdcn_fc(x_c, torch.randn(N, d_t + hidden[-1]), request_index)))
    return rows


def dlrm_family(N: int, K: int, M: int, D: int, hidden):
    """Counted {variant: (interaction, fc)} FLOPs of one request for the DLRM family."""
    feature_map = make_feature_map(num_numeric=0, num_categorical=K + M, vocab_size=50,
                                   sources=["user"] * K + ["item"] * M)
    partition = FieldPartition.from_feature_map(feature_map)
    batch = RequestBatch({f: torch.ones(1, dtype=torch.long) for f in partition.context_fields},
                         {f: torch.randint(1, 50, (N,)) for f in partition.target_fields}, [N])
    args = (batch.context, batch.candidates, batch.request_index)
    with tempfile.TemporaryDirectory() as workdir:
        model = DLRM(feature_map, embedding_dim=D, hidden_units=list(hidden), **unit_model_kwargs(workdir))
        vanilla = flops_by_module(build_scorer(model, "vanilla"), *args)
        fm = flops_by_module(build_scorer(model, "rank_aware", rank_aware_fc=False), *args)
        fm_fc = flops_by_module(build_scorer(model, "rank_aware"), *args)
    return {"FM + FC (vanilla)": (vanilla["model.interaction"], vanilla["model.mlp"]),
            "FM": (fm["interaction"], fm["fc"]), "FM + FC": (fm_fc["interaction"], fm_fc["fc"])}


def delta(new: float, old: float) -> str:
    return f"{100 * (new - old) / old:+.0f}%"


def report(args) -> tuple:
    """(markdown, records: the counted FLOPs of every variant)."""
    N = args.candidates
    K_dcn, M_dcn, d_c, d_t, L = 26, 16, 514, 577, 4
    K, M, D = 27, 4, 128
    dcn = dcn_family(N, d_c, d_t, L, args.dcn_hidden)
    dlrm = dlrm_family(N, K, M, D, args.dlrm_hidden)
    lines = [f"One request, N = {N} candidates; counted FLOPs (torch.utils.flop_counter, 2 per multiply-add). "
             f"DCN family: K = {K_dcn}, M = {M_dcn}, d_c = {d_c}, d_t = {d_t}, L = {L}, FC {args.dcn_hidden} "
             f"(parallel structure). DLRM family: K = {K}, M = {M}, D = {D} (d_c = {K * D}, d_t = {M * D}), "
             f"FC input [FM pairs; embeddings], FC {args.dlrm_hidden}.", "",
             "| variant | interaction GFLOPs | FC GFLOPs | total GFLOPs | Delta int. | Delta FC | Delta total "
             "| paper Delta int. / FC / total |",
             "|---|---|---|---|---|---|---|---|"]
    for family, base in ((dcn, "DCNv2 (vanilla) + FC"), (dlrm, "FM + FC (vanilla)")):
        base_int, base_fc = family[base]
        for name, (inter, fc) in family.items():
            paper = "/".join(f"{v:+d}%" for v in PAPER[name]) if name in PAPER else "baseline"
            lines.append(f"| {name} | {inter / 1e9:.4f} | {fc / 1e9:.4f} | {(inter + fc) / 1e9:.4f} | "
                         f"{delta(inter, base_int)} | {delta(fc, base_fc)} | {delta(inter + fc, base_int + base_fc)} "
                         f"| {paper} |")

    fm_v, fm_r = fm_macs(K, M, N, D)
    context_width = comb(K, 2) + K * D
    target_width = comb(K + M, 2) - comb(K, 2) + M * D
    fc_v, fc_r = fc_first_layer_macs(N, context_width, target_width, args.dlrm_hidden[0])
    l0_v, l0_r = cross_layer0_macs(N, d_c, d_t)
    d = d_c + d_t
    lines += ["", "Closed forms (multiply-adds; counted FLOPs are twice these, which the tests check):", "",
              "| quantity | paper formula | value | this code's exact form | value |",
              "|---|---|---|---|---|",
              f"| Delta FM (DLRM family) | eq. 7: (N-1) C(K,2) D | {eq7_fm_savings(K, M, N, D):,} | "
              f"N F^2 D - (K^2 D + N M F D) | {fm_v - fm_r:,} |",
              f"| Delta FM / FM | eq. 8 | {eq8_fm_savings_fraction(K, M, N):.1%} | same, dense Gram blocks | "
              f"{(fm_v - fm_r) / fm_v:.1%} |",
              f"| Delta FC, first layer | eq. 11: (N-1) x_c U, x_c = C(K,2) + K D | "
              f"{eq11_fc_savings(N, context_width, args.dlrm_hidden[0]):,} | same | {fc_v - fc_r:,} |",
              f"| Delta FC, pairs part | eq. 12: (N-1) C(K,2) U | "
              f"{eq12_fm_fc_savings(K, N, args.dlrm_hidden[0]):,} | included above | - |",
              f"| DCNv2 layer 0 saved share | eq. 15: d_c^2 / d^2 | {eq15_cross_layer0_savings_fraction(d_c, d_t):.1%} "
              f"| (N-1)/N d_c / d (W_cc and W_tc once) | {(l0_v - l0_r) / l0_v:.1%} |",
              f"| rDCN cross, L layers | section 4.2: L (d_c^2 + d_c d_t + N d_t^2) | "
              f"{rdcn_cross_macs(N, d_c, d_t, L):,} | same | {dcn['rDCN + FC'][0] // 2:,} |",
              f"| DCNv2 cross, L layers, vanilla | L N d^2 | {L * N * d * d:,} | same | "
              f"{dcn['DCNv2 (vanilla) + FC'][0] // 2:,} |"]
    records = [{"variant": name, "interaction_flops": inter, "fc_flops": fc}
               for family in (dcn, dlrm) for name, (inter, fc) in family.items()]
    return "\n".join(lines) + "\n", records


def main(argv=None) -> int:
    h = Harness("rank_aware_flops", __doc__.split("\n")[0])
    h.parser.add_argument("--candidates", type=int, default=100, help="N per request")
    h.parser.add_argument("--dcn-hidden", type=int, nargs="+", default=[512, 256])
    h.parser.add_argument("--dlrm-hidden", type=int, nargs="+", default=[512, 256])
    args = h.parse(argv)
    if args.tiny:
        args.candidates = 4
    h.write(*report(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
