"""RoBlock, WuKong ME and DHEN ME over depth and width on the ``discriminating`` synthetic data
or on MovieLens-100K (RoBlock paper, Table 3 and Figures 1, 5 and 6: gains that grow with depth
and width).

    python -m benchmarks.roblock_scaling --budget-s 3600 --work-dir checkpoints/roblock_scaling
    python -m benchmarks.roblock_scaling --dataset movielens_100k --epochs 30 --widths 2 \
        --out results/roblock_scaling_ml100k --work-dir checkpoints/roblock_scaling_ml100k

Cells: depth L in ``--depths`` (1, 2, 3, 5) x width scale s in ``--widths`` (1, 2, 4), every
model, every seed of ``--seeds`` (2019, 2020). Every model starts from its committed
experiment id with the shared settings of ``benchmarks.discriminating_synthetic`` (batch 512,
Adam 1e-3, early stopping with patience 1) and base size k = ``K`` = 8:

* RoBlock: ``RoBlock_criteo_2x`` (the measured formulation of every committed id, with its
  keys for blocks 2..L; heterogeneous interactions) with ``scale_factor`` s (D = s k,
  M = s + 1) and ``num_blocks`` L;
* WuKong ME: ``WuKong_ME_criteo`` with s tables of size k (``num_embeddings``) and ``num_layers`` L;
* DHEN ME: ``DHEN_ME_criteo`` with s tables of size k and ``num_layers`` L.

With ``--dataset movielens_100k`` the bases are ``RoBlock_ml100k_2x``, ``WuKong_ME_ml100k`` and
``DHEN_ME_ml100k`` with their own settings (batch 1024, early stopping with patience 2), k = 16;
width s = 2 is the ids' own width (D = 32 for RoBlock, two tables for the ME models).

Order: the most informative cells first (``CELL_ORDER``: L = 1, 2, 3 at width 1, then
width 2, then L = 5 and width 4), seeds and models alternating within a cell. A point is
not started once the time spent plus the longest point so far would pass ``--budget-s``.
Resumable: every finished run appends its record (``fuxictr_ext.results``) to
``<work dir>/benchmark_config.jsonl`` (named after the generated config folder); a rerun with
the same ``--work-dir`` and ``--epochs`` skips the points that have one and rewrites the report
from all records (``--report-only`` rewrites it and runs nothing). The report
(``<out>/roblock_scaling.md`` and its JSON twin) names which cells ran and which did not, mean and spread per cell, every run, and the information abundance of
every layer input (the paper's Figures 1 and 5) for the L = 3 runs that finished (the models'
``spectrum_callbacks``, on 5 validation batches, after the best checkpoint is reloaded);
``<out>/roblock_scaling.png`` plots test AUC against depth and width per model. ``--tiny``:
the first cell (L = 1, s = 1) of the first seed, one epoch, on a few thousand rows.
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from benchmarks.discriminating_synthetic import DATASET, SHARED
from benchmarks.real_data import DATASET as ML100K
from benchmarks.real_data import dataset_entry, read_split
from benchmarks.fixtures import TINY_ROWS, Point, add_jobs_option, run_within_budget, write_config_dir
from benchmarks.harness import Harness
from fuxictr_ext.results import read_records

K = 8
# Each model's keys at depth L and width scale s (added to its base id's).
MODELS: Dict[str, Callable[[int, int], dict]] = {
    "RoBlock": lambda depth, width: {"scale_factor": width, "num_blocks": depth},
    "WuKong ME": lambda depth, width: {"num_embeddings": width, "num_layers": depth},
    "DHEN ME": lambda depth, width: {"num_embeddings": width, "num_layers": depth},
}


@dataclass(frozen=True)
class Setting:
    """Where the grid runs: the dataset, each model's base experiment id on it, the base size k,
    the settings every point shares, and the prefix of the run ids."""
    dataset: str
    base_expids: Dict[str, str]
    base_size: int
    shared: dict
    prefix: str
    note: str


SETTINGS = {
    DATASET: Setting(DATASET, {"RoBlock": "RoBlock_criteo_2x", "WuKong ME": "WuKong_ME_criteo",
                               "DHEN ME": "DHEN_ME_criteo"}, K, SHARED, "scaling",
                     f"Dataset `{DATASET}` (fuxictr_ext.data.synthetic.DiscriminatingSchema, 200k rows; planted "
                     f"first-order part alone AUC 0.586, planted model 0.8785), base size k = {K}, shared settings "
                     f"{SHARED}"),
    ML100K: Setting(ML100K, {"RoBlock": "RoBlock_ml100k_2x", "WuKong ME": "WuKong_ME_ml100k",
                             "DHEN ME": "DHEN_ME_ml100k"}, 16, {}, "scaling_ml100k",
                    f"Dataset `{ML100K}` (`python -m data_prep.prepare {ML100K}`), every model from its "
                    "`<Model>_ml100k` id (embedding 16, batch 1024, early stop after 2 epochs without a better "
                    "validation AUC, best epoch restored), base size k = 16"),
}
COLOURS = {"RoBlock": "tab:red", "WuKong ME": "tab:purple", "DHEN ME": "tab:blue"}
CELL_ORDER = [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (3, 2), (5, 1), (5, 2), (1, 4), (2, 4), (3, 4), (5, 4)]
IA_DEPTH = 3
SPECTRUM = [{"metric": ["IA"], "layers": "auto", "every": "epoch", "split": "valid", "max_batches": 5}]


def expid(model: str, depth: int, width: int, seed: int, epochs: int, prefix: str = "scaling") -> str:
    """The point's run id; the epoch limit is part of it, so records of another limit are not reused."""
    return f"{prefix}_{model.replace(' ', '_')}_L{depth}_s{width}_seed{seed}_e{epochs}"


def sweep_points(models: List[str], depths: List[int], widths: List[int], seeds: List[int],
                 epochs: int, prefix: Optional[str] = None, setting: Setting = SETTINGS[DATASET]) -> List[Point]:
    """The points of the requested cells on ``setting``, most informative cells first; the
    L = ``IA_DEPTH`` points log the IA of every layer input (``SPECTRUM``). ``prefix`` starts
    every run id (default the setting's; ``tiny`` for ``--tiny`` runs, whose records must not
    pass for full-size ones)."""
    prefix = setting.prefix if prefix is None else prefix
    cells = [cell for cell in CELL_ORDER if cell[0] in depths and cell[1] in widths]
    cells += [(d, w) for w in widths for d in depths if (d, w) not in cells]
    points = []
    for depth, width in cells:
        for seed in seeds:
            for model in models:
                overrides = {"embedding_dim": setting.base_size, **MODELS[model](depth, width), **setting.shared,
                             "seed": seed}
                if depth == IA_DEPTH:
                    overrides["spectrum_callbacks"] = SPECTRUM
                points.append(Point(expid(model, depth, width, seed, epochs, prefix), model,
                                    setting.base_expids[model], overrides,
                                    dim=depth, channels=width))
    return points


def finished(records: List[dict]) -> Dict[str, dict]:
    """The last successful record of every experiment id."""
    return {record["expid"]: record for record in records if record.get("status") == "ok"}


def ia_per_layer(work_dir: str, run: str) -> Optional[List[float]]:
    """IA of every tapped layer input (stage order) of the run's end-of-training record."""
    paths = glob.glob(os.path.join(work_dir, "checkpoints", "**", f"{run}.spectrum.json"), recursive=True)
    if not paths:
        return None
    with open(paths[0]) as fd:
        records = json.load(fd)["records"]
    end = [r for r in records if r["epoch"] == "end" and r["metric"] == "IA"]
    return [r["mean"] for r in sorted(end, key=lambda r: r["stage_index"])] or None


def spread(values: List[float]) -> str:
    return f"{statistics.mean(values):.4f} | {max(values) - min(values):.4f}"


def markdown(points: List[Point], done: Dict[str, dict], work_dir: str, note: str) -> str:
    """The report's body: ``note`` (the setting), test AUC per cell and per run, IA per layer
    input at L = ``IA_DEPTH``, and the points not run."""
    models = list(dict.fromkeys(p.family for p in points))
    cells = list(dict.fromkeys((p.dim, p.channels) for p in points))
    lines = [note, ""]
    lines += ["Test AUC per cell: mean over the seeds that ran, spread = max - min, (n) seeds run; "
              "`-` not run.", "",
              "| L | s | " + " | ".join(f"{m} mean | {m} spread" for m in models) + " | seeds run |",
              "|---|---|" + "---|---|" * len(models) + "---|"]
    not_run = []
    for depth, width in cells:
        row, seeds_run = [], []
        for model in models:
            cell_points = [p for p in points if (p.dim, p.channels, p.family) == (depth, width, model)]
            aucs = [done[p.expid]["test"]["AUC"] for p in cell_points if p.expid in done]
            not_run += [p.expid for p in cell_points if p.expid not in done]
            row.append(spread(aucs) + f" ({len(aucs)})" if aucs else "- | -")
            seeds_run.append(str(len(aucs)))
        lines.append(f"| {depth} | {width} | " + " | ".join(row) + f" | {'/'.join(seeds_run)} |")
    lines += ["", "Every run (test AUC, test logloss, dense parameters, epochs' train seconds):", "",
              "| run | model | L | s | seed | test AUC | test logloss | dense params | train s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        if p.expid in done:
            r = done[p.expid]
            lines.append(f"| {p.expid} | {p.family} | {p.dim} | {p.channels} | {p.overrides['seed']} | "
                         f"{r['test']['AUC']:.4f} | {r['test']['logloss']:.4f} | {r['params']['dense']:,} | "
                         f"{r['train_seconds']:.0f} |")
    ia_rows = [(p, ia_per_layer(work_dir, p.expid)) for p in points if p.dim == IA_DEPTH and p.expid in done]
    ia_rows = [(p, ia) for p, ia in ia_rows if ia]
    if ia_rows:
        lines += ["", f"Information abundance of every layer input at L = {IA_DEPTH} (paper Figures 1 and 5; "
                  "5 validation batches, best checkpoint; layer 0 is the first layer's input):", "",
                  "| run | " + " | ".join(f"layer {i}" for i in range(max(len(ia) for _, ia in ia_rows))) + " |",
                  "|---|" + "---|" * max(len(ia) for _, ia in ia_rows)]
        for p, ia in ia_rows:
            lines.append(f"| {p.expid} | " + " | ".join(f"{v:.3f}" for v in ia) + " |")
    lines += ["", "Not run (budget): " + (", ".join(f"`{e}`" for e in not_run) if not_run else "none") + "."]
    return "\n".join(lines) + "\n"


def plot(points: List[Point], done: Dict[str, dict], work_dir: str, path: str) -> None:
    """Three panels: test AUC vs depth (one line per model and width), vs width (one line per
    model and depth), IA per layer input at L = IA_DEPTH."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    models = list(dict.fromkeys(p.family for p in points))
    styles = ["-", "--", ":", "-."]

    def mean_auc(model, depth, width):
        aucs = [done[p.expid]["test"]["AUC"] for p in points
                if (p.family, p.dim, p.channels) == (model, depth, width) and p.expid in done]
        return statistics.mean(aucs) if aucs else None

    for model in models:
        widths = sorted({p.channels for p in points if p.family == model})
        depths = sorted({p.dim for p in points if p.family == model})
        for i, width in enumerate(widths):
            xy = [(d, mean_auc(model, d, width)) for d in depths]
            xy = [(x, y) for x, y in xy if y is not None]
            if xy:
                axes[0].plot(*zip(*xy), styles[i % 4], marker="o", color=COLOURS[model], label=f"{model}, s={width}")
        for i, depth in enumerate(depths):
            xy = [(w, mean_auc(model, depth, w)) for w in widths]
            xy = [(x, y) for x, y in xy if y is not None]
            if xy:
                axes[1].plot(*zip(*xy), styles[i % 4], marker="o", color=COLOURS[model], label=f"{model}, L={depth}")
        for i, p in enumerate(p for p in points if p.family == model and p.dim == IA_DEPTH and p.expid in done):
            ia = ia_per_layer(work_dir, p.expid)
            if ia:
                axes[2].plot(range(len(ia)), ia, styles[i % 4], marker="o", color=COLOURS[model],
                             label=f"{model}, s={p.channels}, seed {p.overrides['seed']}")
    for ax, xlabel, title in ((axes[0], "depth L", "test AUC vs depth"), (axes[1], "width scale s", "test AUC vs width"),
                              (axes[2], "layer input", f"information abundance, L = {IA_DEPTH}")):
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        if ax.lines:
            ax.legend(fontsize=7)
    axes[0].set_ylabel("test AUC (mean over seeds)")
    axes[2].set_ylabel("IA")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)




def run_records(points: List[Point], done: Dict[str, dict], work_dir: str) -> List[dict]:
    """One record per point for the JSON twin: its cell, seed and status, and where it ran its
    test metrics, dense parameters, training seconds and IA per layer input."""
    records = []
    for p in points:
        record = {"expid": p.expid, "model": p.family, "depth": p.dim, "width": p.channels,
                  "seed": p.overrides["seed"], "status": "ok" if p.expid in done else "not run"}
        if p.expid in done:
            r = done[p.expid]
            record.update({"test_AUC": r["test"]["AUC"], "test_logloss": r["test"]["logloss"],
                           "dense_params": r["params"]["dense"], "train_seconds": r["train_seconds"],
                           "IA_per_layer": ia_per_layer(work_dir, p.expid)})
        records.append(record)
    return records


def main(argv: Optional[List[str]] = None) -> int:
    h = Harness("roblock_scaling", "RoBlock, WuKong ME and DHEN ME over depth and width")
    add_jobs_option(h.parser)
    h.parser.add_argument("--dataset", choices=list(SETTINGS), default=DATASET,
                          help=f"where the grid runs (default {DATASET}); {ML100K} needs "
                               f"`python -m data_prep.prepare {ML100K}` first")
    h.parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 5])
    h.parser.add_argument("--widths", type=int, nargs="+", default=[1, 2, 4])
    h.parser.add_argument("--models", nargs="+", default=list(MODELS), help=f"names out of {list(MODELS)}")
    h.parser.add_argument("--epochs", type=int, default=4, help="at most this many epochs per point")
    h.parser.add_argument("--report-only", action="store_true",
                          help="write the report of the requested cells from the work dir's records, run nothing")
    h.parser.set_defaults(seeds=[2019, 2020], budget_s=3600.0)
    args = h.parse(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        h.parser.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")
    if args.epochs < 1 or min(args.depths) < 1 or min(args.widths) < 1:
        h.parser.error("--epochs, --depths and --widths must be >= 1")
    if args.tiny and args.dataset != DATASET:
        h.parser.error(f"--tiny runs on {DATASET} only (a few thousand synthetic rows)")
    setting = SETTINGS[args.dataset]

    if args.tiny:  # the first cell of the first seed, one epoch, on a few thousand rows
        args.epochs = 1
    points = sweep_points(args.models, args.depths, args.widths, args.seeds, args.epochs,
                          prefix="tiny" if args.tiny else None, setting=setting)
    if args.tiny:
        points = [p for p in points if (p.dim, p.channels, p.overrides["seed"])
                  == (points[0].dim, points[0].channels, args.seeds[0])]
    work_dir = os.path.abspath(args.work_dir)
    args.out = os.path.abspath(args.out)           # the runs below work in work_dir
    config_dir = write_config_dir(points, args.epochs, work_dir, datasets=(setting.dataset,),
                                  rows=TINY_ROWS if args.tiny else None)
    if setting.dataset == ML100K and read_split(dataset_entry(config_dir)) is None and not args.report_only:
        print(f"roblock_scaling: error: no prepared {ML100K} data: run python -m data_prep.prepare {ML100K} first",
              file=sys.stderr)
        return 2
    records_path = os.path.join(work_dir, os.path.basename(config_dir) + ".jsonl")
    note = (f"{setting.note if not args.tiny else f'Dataset `{DATASET}`, {TINY_ROWS} rows'}, at most "
            f"{args.epochs} epoch(s) per point, CPU.")
    os.chdir(work_dir)

    def report(*_) -> None:
        done = finished(read_records(records_path))
        h.write(markdown(points, done, work_dir, note), run_records(points, done, work_dir))
        plot(points, done, work_dir, h.output_path("roblock_scaling.png"))

    if not args.report_only:
        pending = [p for p in points if p.expid not in finished(read_records(records_path))]
        run_within_budget(config_dir, pending, h.budget_left_s(), "roblock_scaling", report,
                          jobs=args.jobs, threads=args.threads)
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
