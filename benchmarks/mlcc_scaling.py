"""AUC, parameters and FLOPs of DNN, MLCC and MC-MLCC over the embedding size on the
synthetic Criteo-like data (Yu et al. 2026, *Compress, Cross and Scale*, Table 8 and
Figure 2), with DCNv2, WuKong and RankMixer at their demo settings for reference.

    python -m benchmarks.mlcc_scaling --epochs 1 --budget-s 2700

Points (trained one after the other through ``fuxictr_ext.runner.run_experiment``):

* MLCC over E (``config/tuner/mlcc_synthetic_embedding.yaml``, base ``MLCC_synthetic``),
* MC-MLCC over S = E*S / 16 at E = 16 (``mlcc_synthetic_channels.yaml``, base ``MCMLCC_synthetic``),
* DNN with MLCC's DNN head over E (``mlcc_synthetic_dnn_embedding.yaml``, base ``DNN_demo``),
* ``DCNv2_demo``, ``WuKong_demo``, ``RankMixer_demo`` unchanged (``--no-baselines`` leaves them out).

Each sweep takes the fixed keys of its tuner grid and the values of its swept key
given by ``--dims`` (effective dimension E*S; each must be in the grid); ``--epochs``
overrides every point's epochs. The script copies ``config/`` into a temporary
folder, makes the dataset paths absolute, writes the generated experiment ids into
one extra ``model_config`` file there (checkpoints and logs go to that folder too)
and runs from that folder, so neither the committed configs nor the repository's
working tree change. Spectrum callbacks of the demo configs are dropped (they only
measure). A point is not started once the elapsed time plus the longest point so far
would pass ``--budget-s`` (default 45 minutes). After every point the markdown table and the
AUC-vs-GFLOPs plot are rewritten, so a stopped sweep still leaves its measured points.

FLOPs per sample and the parameter split come from ``fuxictr_ext.cost.model_cost``
(torch.utils.flop_counter over one eval-mode forward, 2 FLOPs per multiply-add).
A cost table (no training) covers DNN, MLCC and MC-MLCC at every effective dimension
of the tuner grids (``--cost-dims``); ``--cost-only`` writes just that table.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional

import yaml

from benchmarks.fixtures import (TINY_ROWS, Point, add_jobs_option, ceiling_lines, planted_ceilings, run_within_budget,
                                 write_config_dir)
from benchmarks.harness import REPO, Harness
from fuxictr_ext.cost import model_cost
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.config import load_params
from fuxictr_ext.runner import prepare_data
from fuxictr_ext.testing import random_batch

CHANNEL_DIM = 16
FAMILY_COLOURS = {"DNN": "tab:gray", "MLCC": "tab:blue", "MC-MLCC": "tab:red",
                  "DCNv2": "tab:green", "WuKong": "tab:purple", "RankMixer": "tab:orange"}


def grid_point_overrides(tuner_file: str, swept_key: str, value) -> tuple:
    """(base_expid, overrides) of one value of ``swept_key`` in a FuxiCTR tuner grid.

    Fixed keys of the grid (scalars or one-element lists) are kept; the swept key
    must be a list that holds ``value``.
    """
    with open(os.path.join(REPO, "config", "tuner", tuner_file)) as fd:
        grid = yaml.safe_load(fd)
    space = grid["tuner_space"]
    if swept_key not in space or not isinstance(space[swept_key], list):
        raise ValueError(f"{tuner_file}: tuner_space has no grid for {swept_key!r}")
    if value not in space[swept_key]:
        raise ValueError(f"--dims: {swept_key}={value} is not in the grid of {tuner_file} ({space[swept_key]})")
    overrides = {}
    for key, values in space.items():
        if key == swept_key:
            overrides[key] = value
        elif isinstance(values, list):
            if len(values) != 1:
                raise ValueError(f"{tuner_file}: {key!r} is a second swept key ({values}); "
                                 "this script sweeps one key per grid")
            overrides[key] = values[0]
        else:
            overrides[key] = values
    return grid["base_expid"], overrides


def channels_grid_point(dim: int) -> tuple:
    """(base_expid, overrides) of MC-MLCC at effective dimension ``dim`` = S * 16."""
    base, overrides = grid_point_overrides("mlcc_synthetic_channels.yaml", "embedding_dim", dim)
    if overrides.get("channel_dim") != CHANNEL_DIM:
        raise ValueError(f"mlcc_synthetic_channels.yaml: channel_dim={overrides.get('channel_dim')!r}, "
                         f"this script reads S = E*S / {CHANNEL_DIM}")
    return base, overrides


def sweep_points(dims: List[int], extra_seeds: List[int], baselines: bool = True) -> List[Point]:
    """The points in the order they run: the MLCC / MC-MLCC pairs first (the claim under
    test), then DNN, the reference baselines (unless ``baselines`` is False), MC-MLCC at
    S = 1 (equal to MLCC at E = 16) and the repeated seeds of MLCC and MC-MLCC at the
    largest dimension."""
    points: List[Point] = []
    for dim in dims:
        if dim % CHANNEL_DIM:
            raise ValueError(f"--dims: {dim} is not a multiple of the channel dimension {CHANNEL_DIM}")
        base, over = grid_point_overrides("mlcc_synthetic_embedding.yaml", "embedding_dim", dim)
        points.append(Point(f"scaling_MLCC_E{dim}", "MLCC", base, over, dim, 1))
        if dim > CHANNEL_DIM:
            base, over = channels_grid_point(dim)
            points.append(Point(f"scaling_MCMLCC_S{dim // CHANNEL_DIM}", "MC-MLCC", base, over,
                                dim, dim // CHANNEL_DIM))
    for dim in dims:
        base, over = grid_point_overrides("mlcc_synthetic_dnn_embedding.yaml", "embedding_dim", dim)
        points.append(Point(f"scaling_DNN_E{dim}", "DNN", base, over, dim))
    for name in ("DCNv2", "WuKong", "RankMixer") if baselines else ():
        points.append(Point(f"scaling_{name}_demo", name, f"{name}_demo"))
    if CHANNEL_DIM in dims:
        base, over = channels_grid_point(CHANNEL_DIM)
        points.append(Point("scaling_MCMLCC_S1", "MC-MLCC", base, over, CHANNEL_DIM, 1))
    top = max(dims)
    for seed in extra_seeds:
        base, over = grid_point_overrides("mlcc_synthetic_embedding.yaml", "embedding_dim", top)
        points.append(Point(f"scaling_MLCC_E{top}_seed{seed}", "MLCC", base, {**over, "seed": seed}, top, 1))
        if top > CHANNEL_DIM:
            base, over = channels_grid_point(top)
            points.append(Point(f"scaling_MCMLCC_S{top // CHANNEL_DIM}_seed{seed}", "MC-MLCC", base,
                                {**over, "seed": seed}, top, top // CHANNEL_DIM))
    return points


def cost_points(dims: List[int]) -> List[Point]:
    """DNN, MLCC and MC-MLCC at each effective dimension, for the cost table (no training)."""
    points: List[Point] = []
    for dim in dims:
        if dim % CHANNEL_DIM:
            raise ValueError(f"--cost-dims: {dim} is not a multiple of the channel dimension {CHANNEL_DIM}")
        base, over = grid_point_overrides("mlcc_synthetic_dnn_embedding.yaml", "embedding_dim", dim)
        points.append(Point(f"cost_DNN_E{dim}", "DNN", base, over, dim))
        base, over = grid_point_overrides("mlcc_synthetic_embedding.yaml", "embedding_dim", dim)
        points.append(Point(f"cost_MLCC_E{dim}", "MLCC", base, over, dim, 1))
        base, over = channels_grid_point(dim)
        points.append(Point(f"cost_MCMLCC_S{dim // CHANNEL_DIM}", "MC-MLCC", base, over, dim, dim // CHANNEL_DIM))
    return points


def measure_cost(config_dir: str, point: Point, batch_size: int = 64) -> dict:
    """Parameters and forward FLOPs per sample of one point, built on the demo feature
    map (the dataset generated and built when missing) and evaluated on a random batch (the counts do not depend on the values)."""
    params, _ = load_params(config_dir, point.expid)
    feature_map, _ = prepare_data(params, None)
    params["gpu"] = -1
    model = get_model_class(params["model"])(feature_map, **params)
    cost = model_cost(model, random_batch(feature_map, batch_size, seed=0))
    return {"family": point.family, "dim": point.dim, "channels": point.channels,
            "embedding_params": cost.embedding_params, "dense_params": cost.dense_params,
            "flops_per_sample": cost.flops_per_sample}


def cost_markdown(rows: List[dict]) -> str:
    """Table 8's cost columns at every effective dimension of the tuner grids."""
    by_key = {(row["family"], row["dim"]): row for row in rows}
    lines = ["Forward cost over the whole Table 8 grid (models built on the demo feature map, "
             "no training; dense parameters / MFLOPs per sample):", "",
             "| E*S | embedding params | DNN dense | DNN MFLOPs | MLCC dense | MLCC MFLOPs | MC-MLCC S "
             "| MC-MLCC dense | MC-MLCC MFLOPs | MLCC / MC-MLCC FLOPs |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for dim in sorted({row["dim"] for row in rows}):
        dnn, mlcc, mc = (by_key.get((family, dim)) for family in ("DNN", "MLCC", "MC-MLCC"))
        embedding = sorted({row["embedding_params"] for row in rows if row["dim"] == dim})
        cells = [str(dim), " / ".join(f"{count:,}" for count in embedding)]
        for row in (dnn, mlcc):
            cells += ([f"{row['dense_params']:,}", f"{row['flops_per_sample'] / 1e6:.3f}"] if row else ["-", "-"])
        cells += ([str(mc["channels"]), f"{mc['dense_params']:,}", f"{mc['flops_per_sample'] / 1e6:.3f}"]
                  if mc else ["-", "-", "-"])
        cells.append(f"{mlcc['flops_per_sample'] / mc['flops_per_sample']:.2f}x" if mlcc and mc else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _setting(row: dict) -> str:
    over = row["overrides"]
    if row["family"] == "MC-MLCC":
        text = f"S = {row['channels']} x E = {CHANNEL_DIM}"
    elif row["family"] in ("MLCC", "DNN"):
        text = f"E = {row['dim']}"
    else:
        text = f"`{row['base_expid']}`"
    if "seed" in over:
        text += f", seed {over['seed']}"
    return text


def markdown(rows: List[dict], header: str) -> str:
    lines = [header, "",
             "| model | setting | E*S | test AUC | test logloss | embedding params | dense params "
             "| MFLOPs / sample | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        dim = row["dim"] if row["dim"] is not None else "-"
        lines.append(f"| {row['family']} | {_setting(row)} | {dim} | {row['test_AUC']:.4f} | "
                     f"{row['test_logloss']:.4f} | {row['embedding_params']:,} | {row['dense_params']:,} | "
                     f"{row['flops_per_sample'] / 1e6:.3f} | {row['train_seconds']:.0f} |")
    lines += ceiling_lines(rows)
    lines += ["", "Matched E*S, MLCC against MC-MLCC (seed 2019):", "",
              "| E*S | MLCC MFLOPs | MC-MLCC MFLOPs | MLCC / MC-MLCC FLOPs | MLCC AUC | MC-MLCC AUC "
              "| AUC(MC-MLCC) - AUC(MLCC) |",
              "|---|---|---|---|---|---|---|"]
    first_seed = [row for row in rows if "seed" not in row["overrides"]]
    by_key = {(row["family"], row["dim"]): row for row in first_seed}
    for dim in sorted({row["dim"] for row in first_seed if row["family"] == "MC-MLCC" and row["channels"] > 1}):
        mlcc, mc = by_key.get(("MLCC", dim)), by_key.get(("MC-MLCC", dim))
        if mlcc is None or mc is None:
            continue
        lines.append(f"| {dim} | {mlcc['flops_per_sample'] / 1e6:.3f} | {mc['flops_per_sample'] / 1e6:.3f} | "
                     f"{mlcc['flops_per_sample'] / mc['flops_per_sample']:.2f}x | {mlcc['test_AUC']:.4f} | "
                     f"{mc['test_AUC']:.4f} | {mc['test_AUC'] - mlcc['test_AUC']:+.4f} |")
    return "\n".join(lines) + "\n"


def plot(rows: List[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    first_seed = [row for row in rows if "seed" not in row["overrides"]]
    for family, colour in FAMILY_COLOURS.items():
        members = [row for row in first_seed if row["family"] == family]
        if not members:
            continue
        members.sort(key=lambda row: row["flops_per_sample"])
        gflops = [row["flops_per_sample"] / 1e9 for row in members]
        auc = [row["test_AUC"] for row in members]
        swept = family in ("DNN", "MLCC", "MC-MLCC")
        ax.plot(gflops, auc, marker="o" if swept else "s", linestyle="-" if swept else "none",
                color=colour, label=family)
        for row, x, y in zip(members, gflops, auc):
            if swept:
                label = f"S={row['channels']}" if family == "MC-MLCC" else f"E={row['dim']}"
                offset = (4, -11) if family == "MC-MLCC" else (4, 4)
                ax.annotate(label, (x, y), textcoords="offset points", xytext=offset, fontsize=8, color=colour)
    repeats = [row for row in rows if "seed" in row["overrides"]]
    for row in repeats:
        ax.plot(row["flops_per_sample"] / 1e9, row["test_AUC"], marker="x", linestyle="none",
                color=FAMILY_COLOURS[row["family"]])
    if repeats:
        seeds = ", ".join(sorted({str(row["overrides"]["seed"]) for row in repeats}))
        ax.plot([], [], marker="x", linestyle="none", color="black", label=f"seed {seeds} (same E*S)")
    ax.set_xscale("log")
    ax.set_xlabel("forward GFLOPs per sample (log scale)")
    ax.set_ylabel("test AUC")
    ceilings = planted_ceilings(rows)
    if ceilings:
        title += "\n(planted model, the best possible: test AUC " + ", ".join(f"{c:.4f}" for c in ceilings) + ")"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> None:
    h = Harness("mlcc_scaling", __doc__.split("\n\n")[0].replace("\n", " "))
    add_jobs_option(h.parser)
    h.parser.add_argument("--dims", type=int, nargs="+", default=[16, 32, 64],
                          help="effective embedding dimensions E*S (multiples of 16)")
    h.parser.add_argument("--epochs", type=int, default=1)
    h.parser.add_argument("--extra-seeds", type=int, nargs="*", default=[2020],
                          help="seeds rerunning MLCC and MC-MLCC at the largest dimension")
    h.parser.add_argument("--no-baselines", action="store_true",
                          help="leave out DCNv2, WuKong and RankMixer")
    h.parser.add_argument("--cost-dims", type=int, nargs="*", default=[16, 32, 48, 64, 96, 128, 160, 192, 256],
                          help="effective dimensions of the cost table (built, not trained)")
    h.parser.add_argument("--cost-only", action="store_true", help="write the cost table only, train nothing")
    h.parser.set_defaults(budget_s=2700.0)
    args = h.parse(argv)
    if args.epochs < 1:
        h.parser.error(f"--epochs {args.epochs}: must be at least 1")

    points = [] if args.cost_only else sweep_points(sorted(set(args.dims)), args.extra_seeds,
                                                    baselines=not args.no_baselines)
    costed = cost_points(sorted(set(args.cost_dims)))
    if args.tiny:  # one trained point and one cost column, on a few thousand rows
        points, costed = points[:1], costed[:3]
    config_dir = write_config_dir(points + costed, args.epochs, args.work_dir,
                                  rows=TINY_ROWS if args.tiny else None)
    cost_rows = [measure_cost(config_dir, point) for point in costed]
    cost_table = cost_markdown(cost_rows) if costed else ""
    if args.cost_only:
        h.write(cost_table, {"cost": cost_rows})
        return
    rows_note = f"{TINY_ROWS} rows" if args.tiny else "200k rows"
    header = (f"Dataset `demo` (synthetic Criteo-like, {rows_note}), {args.epochs} epoch(s) per point, "
              f"CPU, {args.threads} torch thread(s).")
    title = f"synthetic Criteo-like data (demo), {args.epochs} epoch(s), test AUC vs forward FLOPs"

    rows: List[dict] = []
    results_file = os.path.join(args.work_dir, "results.jsonl")
    os.chdir(args.work_dir)

    def record(point: Point, row: dict, seconds: float) -> None:
        rows.append(row)
        with open(results_file, "a") as fd:
            fd.write(json.dumps(row) + "\n")
        h.write(markdown(rows, header) + ("\n" + cost_table if cost_table else ""), {"points": rows, "cost": cost_rows})
        plot(rows, h.output_path("mlcc_scaling.png"), title)
        print(f"[mlcc_scaling] {point.expid}: test AUC {row['test_AUC']:.4f}, "
              f"{row['flops_per_sample'] / 1e6:.3f} MFLOPs/sample, {seconds:.0f} s", flush=True)

    with h.clock() as t:
        run_within_budget(config_dir, points, h.budget_left_s(), "mlcc_scaling", record,
                          jobs=args.jobs, threads=args.threads)
    print(f"[mlcc_scaling] {len(rows)} of {len(points)} points in {t.wall_s / 60:.1f} min; "
          f"work dir {args.work_dir}", flush=True)


if __name__ == "__main__":
    main()
