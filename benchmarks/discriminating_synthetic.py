"""Test AUC of the headline models on the ``discriminating`` synthetic data (issue 21).

    python -m benchmarks.discriminating_synthetic --epochs 3 --seeds 2019 2020

The ``discriminating`` dataset (``fuxictr_ext.data.synthetic.DiscriminatingSchema``:
10 fields of 100 values, labels from an FM over planted factor vectors) is an
instrument: an interaction model that works lands clearly above a DNN, one that
has lost its interaction signal lands at the DNN's level.

Every model starts from its committed ``*_criteo`` experiment id (the
paper-sized architectures) with only the shared settings changed (``SHARED``:
dataset, batch size, learning rate, epochs, early stopping) and the same total
embedding width ``WIDTH`` = 16 per field: DNN, DCNv2 and RankMixer one table of
size 16, DHEN ME and WuKong ME 2 tables of size 8, RoBlock 2x
(``RoBlock_criteo_2x``) ``embedding_dim`` 8 with ``scale_factor`` 2 (D = 16, M = 3). ``--extra`` adds
RoBlock variants (the diagnosis of model_zoo/RoBlock/README.md) by name.

The points go through ``fuxictr_ext.runner.run_experiment`` on a generated copy
of ``config/`` (``benchmarks.fixtures.write_config_dir``); contenders
alternate within each seed. After every point the results file is rewritten, so a
stopped run keeps its measured points.
"""

from __future__ import annotations

import os
import statistics
from typing import Dict, List, Optional

from benchmarks.fixtures import (TINY_ROWS, Point, add_jobs_option, ceiling_lines, run_within_budget,
                                 write_config_dir)
from benchmarks.harness import Harness

DATASET = "discriminating"
WIDTH = 16
SHARED = {"dataset_id": DATASET, "batch_size": 512, "learning_rate": 1e-3, "early_stop_patience": 1}

MODELS: Dict[str, tuple] = {
    "DNN": ("DNN_criteo", {"embedding_dim": WIDTH}),
    "DCNv2": ("DCNv2_criteo", {"embedding_dim": WIDTH}),
    "DHEN ME": ("DHEN_ME_criteo", {"embedding_dim": WIDTH // 2, "num_embeddings": 2}),
    "WuKong ME": ("WuKong_ME_criteo", {"embedding_dim": WIDTH // 2, "num_embeddings": 2}),
    "RankMixer": ("RankMixer_criteo", {"embedding_dim": WIDTH}),
    "RoBlock 2x": ("RoBlock_criteo_2x", {"embedding_dim": WIDTH // 2}),
}

# RoBlock variants for the diagnosis (model_zoo/RoBlock/README.md), added with --extra NAME.
WIDE_INITIALIZER = "partial(nn.init.normal_, std=1e-2)"
# Not the paper's prescription (its MLPs have three layers, its RU runs in training only): one linear
# layer for f^(0), the decoupler and f^(l), the block reading LayerNorm(X^(l-1)), RU in evaluation too.
LINEAR_FIELD_MLPS = {"reshape_hidden_units": [], "decoupler_hidden_units": [], "fusion_hidden_units": [],
                     "block_norm": "layer_norm", "rank1_norm_at_inference": True}
EXTRA: Dict[str, tuple] = {
    "RoBlock 2x, FM only": ("RoBlock_criteo_2x", {"embedding_dim": WIDTH // 2, "interaction_types": ["FM"]}),
    "RoBlock 2x, embeddings std 1e-2": ("RoBlock_criteo_2x", {"embedding_dim": WIDTH // 2,
                                                             "embedding_initializer": WIDE_INITIALIZER}),
    "RoBlock 2x, block_norm layer_norm": ("RoBlock_criteo_2x", {"embedding_dim": WIDTH // 2,
                                                               "block_norm": "layer_norm"}),
    "RoBlock 2x, fieldwise_dropout 0.1": ("RoBlock_criteo_2x", {"embedding_dim": WIDTH // 2,
                                                               "fieldwise_dropout": 0.1}),
    "RoBlock 2x, linear field MLPs": ("RoBlock_criteo_2x", {"embedding_dim": WIDTH // 2, **LINEAR_FIELD_MLPS}),
    "RoBlock 2x, linear field MLPs, FM only": ("RoBlock_criteo_2x", {"embedding_dim": WIDTH // 2,
                                                                    "interaction_types": ["FM"],
                                                                    **LINEAR_FIELD_MLPS}),
}


def sweep_points(models: List[str], seeds: List[int]) -> List[Point]:
    """One point per (seed, model), the models alternating within every seed."""
    points = []
    for seed in seeds:
        for name in models:
            base, overrides = {**MODELS, **EXTRA}[name]
            expid = "disc_" + name.replace(" ", "_").replace("/", "_") + f"_s{seed}"
            points.append(Point(expid, name, base, {**overrides, **SHARED, "seed": seed}))
    return points


def markdown(rows: List[dict], header: str) -> str:
    lines = [header, "",
             "| model | base expid | seed | test AUC | test logloss | embedding params | dense params | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['family']} | `{row['base_expid']}` | {row['overrides']['seed']} | "
                     f"{row['test_AUC']:.4f} | {row['test_logloss']:.4f} | {row['embedding_params']:,} | "
                     f"{row['dense_params']:,} | {row['train_seconds']:.0f} |")
    by_model: Dict[str, List[float]] = {}
    for row in rows:
        by_model.setdefault(row["family"], []).append(row["test_AUC"])
    lines += ["", "| model | seeds | mean test AUC | min | max |", "|---|---|---|---|---|"]
    for name, aucs in by_model.items():
        lines.append(f"| {name} | {len(aucs)} | {statistics.mean(aucs):.4f} | {min(aucs):.4f} | {max(aucs):.4f} |")
    lines += ceiling_lines(rows)
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    h = Harness("discriminating_synthetic", "Test AUC of the headline models on the discriminating synthetic data.")
    add_jobs_option(h.parser)
    h.parser.add_argument("--epochs", type=int, default=3)
    h.parser.add_argument("--models", nargs="*", default=list(MODELS), help=f"names out of {list(MODELS)}")
    h.parser.add_argument("--extra", nargs="*", default=[], help=f"RoBlock variants out of {list(EXTRA)}")
    h.parser.set_defaults(seeds=[2019, 2020], budget_s=2400.0)
    args = h.parse(argv)
    if args.epochs < 1:
        h.parser.error(f"--epochs {args.epochs}: must be at least 1")
    unknown = [name for name in args.models if name not in MODELS] + [n for n in args.extra if n not in EXTRA]
    if unknown:
        h.parser.error(f"--models / --extra: unknown {unknown}; choose from {list(MODELS)} / {list(EXTRA)}")

    points = sweep_points(args.models + args.extra, args.seeds)
    if args.tiny:
        points = points[:1]
    config_dir = write_config_dir(points, args.epochs, args.work_dir, datasets=(DATASET,),
                                  rows=TINY_ROWS if args.tiny else None)
    rows_note = f"{TINY_ROWS} rows" if args.tiny else "200k rows"
    header = (f"Dataset `{DATASET}` (fuxictr_ext.data.synthetic.DiscriminatingSchema, {rows_note}), at most "
              f"{args.epochs} epoch(s) per point, shared settings {SHARED}, embedding width {WIDTH} per field, "
              f"CPU, {args.threads} torch thread(s).")
    rows: List[dict] = []
    os.chdir(args.work_dir)

    def record(point: Point, row: dict, seconds: float) -> None:
        rows.append(row)
        h.write(markdown(rows, header), rows)
        print(f"[discriminating_synthetic] {point.expid}: test AUC {row['test_AUC']:.4f}, {seconds:.0f} s",
              flush=True)

    run_within_budget(config_dir, points, h.budget_left_s(), "discriminating_synthetic", record,

                      jobs=args.jobs, threads=args.threads)


if __name__ == "__main__":
    main()
