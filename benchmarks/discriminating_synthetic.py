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
of ``config/`` (``benchmarks.mlcc_scaling.write_config_dir``); contenders
alternate within each seed. After every point ``--out``.md is rewritten, so a
stopped run keeps its measured points.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from typing import Dict, List, Optional

import torch
import yaml

from benchmarks.mlcc_scaling import REPO, Point, ceiling_lines, run_within_budget, write_config_dir

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


def absolute_dataset_paths(config_dir: str) -> None:
    """Point the copied config's ``discriminating`` entry at the repository's data/ folder
    (generated there on first use, shared by later runs)."""
    path = os.path.join(config_dir, "dataset_config.yaml")
    with open(path) as fd:
        datasets = yaml.safe_load(fd)
    entry = datasets[DATASET]
    for key in ("data_root", "train_data", "valid_data", "test_data"):
        entry[key] = os.path.normpath(os.path.join(REPO, entry[key])) + ("/" if key == "data_root" else "")
    with open(path, "w") as fd:
        yaml.safe_dump(datasets, fd, sort_keys=False)


def markdown(rows: List[dict], command: str, header: str) -> str:
    lines = [header, "", f"Command: `{command}`", "",
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2019, 2020])
    parser.add_argument("--models", nargs="*", default=list(MODELS), help=f"names out of {list(MODELS)}")
    parser.add_argument("--extra", nargs="*", default=[], help=f"RoBlock variants out of {list(EXTRA)}")
    parser.add_argument("--budget-min", type=float, default=40.0, help="wall-clock budget of the run")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", default=os.path.join(REPO, "results", "discriminating_synthetic"),
                        help="output path without extension (.md is written)")
    parser.add_argument("--work-dir", default=None, help="folder for the generated config, logs, checkpoints")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        raise ValueError(f"--epochs {args.epochs}: must be at least 1")
    unknown = [name for name in args.models if name not in MODELS] + [n for n in args.extra if n not in EXTRA]
    if unknown:
        raise ValueError(f"--models / --extra: unknown {unknown}; choose from {list(MODELS)} / {list(EXTRA)}")

    torch.set_num_threads(args.threads)
    command = "python -m benchmarks.discriminating_synthetic " + shlex.join(sys.argv[1:] if argv is None else argv)
    points = sweep_points(args.models + args.extra, args.seeds)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="discriminating_synthetic_")
    os.makedirs(work_dir, exist_ok=True)
    config_dir = write_config_dir(points, args.epochs, work_dir)
    absolute_dataset_paths(config_dir)
    header = (f"Generated by benchmarks/discriminating_synthetic.py: dataset `{DATASET}` "
              f"(fuxictr_ext.data.synthetic.DiscriminatingSchema, 200k rows), at most {args.epochs} epoch(s) "
              f"per point, shared settings {SHARED}, embedding width {WIDTH} per field, CPU, "
              f"{args.threads} torch thread(s), torch {torch.__version__}.")
    rows: List[dict] = []
    os.chdir(work_dir)

    def record(point: Point, row: dict, seconds: float) -> None:
        rows.append(row)
        with open(args.out + ".md", "w") as fd:
            fd.write(markdown(rows, command, header))
        print(f"[discriminating_synthetic] {point.expid}: test AUC {row['test_AUC']:.4f}, {seconds:.0f} s",
              flush=True)

    run_within_budget(config_dir, points, args.budget_min, "discriminating_synthetic", record)


if __name__ == "__main__":
    main()
