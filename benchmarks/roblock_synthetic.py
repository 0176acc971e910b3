"""Test AUC and layer-wise information abundance of RoBlock against DCNv2, xDeepFM,
DHEN and WuKong on the synthetic Criteo-like data (RoBlock paper, Tables 1-3 and
Figures 4-5, at demo size).

    python -m benchmarks.roblock_synthetic --epochs 1 --budget-s 960

Every model uses the base size k = 4 (the demo configs' smallest embedding size) and
starts from its committed ``*_demo`` experiment id. Scale s means s embedding tables
of size k (ME, ``embedding_mode: multi``), one table of size s*k (SE), or for RoBlock
``scale_factor`` s (D = s*k, M = s + 1 components). Points, in the order they run
(a point is not started once the elapsed time plus the longest point so far would
pass ``--budget-s``):

1. base (s = 1): RoBlock L = 1 (CrossNetV2 components) against DCNv2 (at s = 1 SE and
   ME are the same model);
2. RoBlock L = 2 at s = 2 (heterogeneous, as ``RoBlock_demo``) and its ablations:
   w/o rank-1 update normalization (RU), w/o HSIC (beta = 0), w/o both;
3. DHEN ME and WuKong ME with 2 layers at s = 2;
4. 5x: RoBlock L = 1 (heterogeneous) against DCNv2 SE / ME and xDeepFM SE / ME at s = 5,
   and xDeepFM at s = 1;
5. RoBlock L = 5 against DHEN ME and WuKong ME with 5 layers, s = 2.

Rerun with the same ``--work-dir`` to go on: points already in its ``results.jsonl``
are loaded, not trained again, and the budget counts from the new start.

The points go through ``fuxictr_ext.runner.run_experiment`` on a generated copy of
``config/`` (``benchmarks.fixtures.write_config_dir``), with a spectrum callback
recording the IA of every tapped stage on 2 validation batches after each epoch.
The IA curves are overlaid with ``fuxictr_ext.spectrum.plot`` into one PNG.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Dict, List, Optional

from benchmarks.fixtures import (TINY_ROWS, Point, add_jobs_option, ceiling_lines, run_within_budget,
                                 write_config_dir)
from benchmarks.harness import Harness
from fuxictr_ext.spectrum.plot import load_spectrum, select_records
from fuxictr_ext.spectrum.plot import main as plot_main

BASE_SIZE = 4
HETERO = {"interaction_types": ["DCNv2", "FM", "CIN", "DNN"], "interaction_assignment": "sample"}
IA_CALLBACK = [{"metric": ["IA"], "layers": "auto", "every": "epoch", "split": "valid", "max_batches": 2}]


def roblock(scale: int, blocks: int, **extra) -> Dict[str, object]:
    types = HETERO if scale > 1 else {"interaction_types": ["DCNv2"], "interaction_assignment": "cycle"}
    return {"embedding_dim": BASE_SIZE, "scale_factor": scale, "num_blocks": blocks, **types, **extra}


def multi_embedding(scale: int, mode: str, **extra) -> Dict[str, object]:
    return {"embedding_dim": BASE_SIZE, "num_embeddings": scale, "embedding_mode": mode, **extra}


def sweep_points() -> List[Point]:
    """The points in priority order (see the module docstring)."""
    return [
        Point("rb_RoBlock_s1_L1", "RoBlock", "RoBlock_demo", roblock(1, 1)),
        Point("rb_DCNv2_s1", "DCNv2 (SE = ME)", "DCNv2_demo", multi_embedding(1, "single")),
        Point("rb_RoBlock_s2_L2", "RoBlock", "RoBlock_demo", roblock(2, 2)),
        Point("rb_RoBlock_s2_L2_noRU", "RoBlock w/o RU", "RoBlock_demo", roblock(2, 2, rank1_norm=False)),
        Point("rb_RoBlock_s2_L2_noHSIC", "RoBlock w/o HSIC", "RoBlock_demo", roblock(2, 2, hsic_weight=0)),
        Point("rb_RoBlock_s2_L2_noRU_noHSIC", "RoBlock w/o both", "RoBlock_demo",
              roblock(2, 2, rank1_norm=False, hsic_weight=0)),
        Point("rb_DHEN_ME_s2_L2", "DHEN ME", "DHEN_demo", multi_embedding(2, "multi", num_layers=2)),
        Point("rb_WuKong_ME_s2_L2", "WuKong ME", "WuKong_demo", multi_embedding(2, "multi", num_layers=2)),
        Point("rb_RoBlock_s5_L1", "RoBlock", "RoBlock_demo", roblock(5, 1)),
        Point("rb_DCNv2_SE_s5", "DCNv2 SE", "DCNv2_demo", multi_embedding(5, "single")),
        Point("rb_DCNv2_ME_s5", "DCNv2 ME", "DCNv2_demo", multi_embedding(5, "multi")),
        Point("rb_xDeepFM_ME_s5", "xDeepFM ME", "xDeepFM_demo", multi_embedding(5, "multi")),
        Point("rb_xDeepFM_s1", "xDeepFM (SE = ME)", "xDeepFM_demo", multi_embedding(1, "single")),
        Point("rb_xDeepFM_SE_s5", "xDeepFM SE", "xDeepFM_demo", multi_embedding(5, "single")),
        Point("rb_RoBlock_s2_L5", "RoBlock", "RoBlock_demo", roblock(2, 5)),
        Point("rb_DHEN_ME_s2_L5", "DHEN ME", "DHEN_demo", multi_embedding(2, "multi", num_layers=5)),
        Point("rb_WuKong_ME_s2_L5", "WuKong ME", "WuKong_demo", multi_embedding(2, "multi", num_layers=5)),
    ]


def spectrum_file(work_dir: str, expid: str) -> Optional[str]:
    found = glob.glob(os.path.join(work_dir, "checkpoints", "**", f"{expid}.spectrum.json"), recursive=True)
    return found[0] if found else None


def ia_per_stage(path: str) -> List[tuple]:
    rows = select_records(load_spectrum(path)["records"], "IA")
    return [(str(r["stage"]), float(r["mean"])) for r in rows]


def _setting(point_overrides: dict) -> str:
    if "scale_factor" in point_overrides:
        text = f"s = {point_overrides['scale_factor']}, L = {point_overrides['num_blocks']}"
        if point_overrides.get("rank1_norm") is False:
            text += ", rank1_norm off"
        if point_overrides.get("hsic_weight") == 0:
            text += ", beta = 0"
        return text
    text = f"s = {point_overrides['num_embeddings']} ({point_overrides['embedding_mode']})"
    if "num_layers" in point_overrides:
        text += f", L = {point_overrides['num_layers']}"
    return text


def markdown(rows: List[dict], ia: Dict[str, List[tuple]], header: str) -> str:
    lines = [header, "",
             "| expid | model | setting | test AUC | test logloss | embedding params | dense params "
             "| MFLOPs / sample | train s | IA per tapped stage (valid, mean) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        stages = ", ".join(f"{stage} {value:.2f}" for stage, value in ia.get(row["expid"], []))
        lines.append(f"| {row['expid']} | {row['family']} | {_setting(row['overrides'])} | {row['test_AUC']:.4f} | "
                     f"{row['test_logloss']:.4f} | {row['embedding_params']:,} | {row['dense_params']:,} | "
                     f"{row['flops_per_sample'] / 1e6:.3f} | {row['train_seconds']:.0f} | {stages or '-'} |")
    lines += ceiling_lines(rows)
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    h = Harness("roblock_synthetic", __doc__.split("\n\n")[0].replace("\n", " "))
    add_jobs_option(h.parser)
    h.parser.add_argument("--epochs", type=int, default=1)
    h.parser.set_defaults(budget_s=960.0)
    args = h.parse(argv)
    if args.epochs < 1:
        h.parser.error(f"--epochs {args.epochs}: must be at least 1")

    points = sweep_points()[:1] if args.tiny else sweep_points()
    work_dir = args.work_dir
    config_dir = write_config_dir(points, args.epochs, work_dir, rows=TINY_ROWS if args.tiny else None,
                                  extra={"spectrum_callbacks": IA_CALLBACK})
    rows_note = f"{TINY_ROWS} rows" if args.tiny else "200k rows"
    header = (f"Dataset `demo` (synthetic Criteo-like, {rows_note}), {args.epochs} epoch(s) per point, "
              f"base size k = {BASE_SIZE}, CPU, {args.threads} torch thread(s).")

    results_file = os.path.join(work_dir, "results.jsonl")
    rows: List[dict] = []
    ia: Dict[str, List[tuple]] = {}
    spectra: Dict[str, str] = {}
    if os.path.isfile(results_file):
        with open(results_file) as fd:
            for line in fd:
                row = json.loads(line)
                rows.append(row)
                ia[row["expid"]] = [tuple(stage) for stage in row["IA"] or []]
                path = spectrum_file(work_dir, row["expid"])
                if path:
                    spectra[row["expid"]] = path
        print(f"[roblock_synthetic] loaded {len(rows)} measured points from {results_file}", flush=True)
    done = {row["expid"] for row in rows}
    points = [point for point in points if point.expid not in done]
    os.chdir(work_dir)

    def record(point: Point, row: dict, seconds: float) -> None:
        rows.append(row)
        path = spectrum_file(work_dir, point.expid)
        if path:
            spectra[point.expid] = path
            ia[point.expid] = ia_per_stage(path)
        with open(results_file, "a") as fd:
            fd.write(json.dumps({**row, "IA": ia.get(point.expid)}) + "\n")
        h.write(markdown(rows, ia, header), [{**row, "IA": ia.get(row["expid"])} for row in rows])
        print(f"[roblock_synthetic] {point.expid}: test AUC {row['test_AUC']:.4f}, {seconds:.0f} s", flush=True)

    with h.clock() as t:
        run_within_budget(config_dir, points, h.budget_left_s(), "roblock_synthetic", record,
                          jobs=args.jobs, threads=args.threads)
    if spectra:
        plot_main(list(spectra.values()) + ["--metric", "IA", "--out", h.output_path("roblock_ia_per_layer.png"),
                                            "--labels", *spectra])
    print(f"[roblock_synthetic] {len(rows)} of {len(done) + len(points)} points measured, "
          f"{t.wall_s / 60:.1f} min in this run; work dir {work_dir}", flush=True)


if __name__ == "__main__":
    main()
