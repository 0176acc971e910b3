"""Is one DNN training epoch bound by data loading? Stock loader vs TensorDataLoader.

    python -m benchmarks.data_loading --rows 1000000 --batch-size 4096

Generates Criteo-like synthetic rows (``benchmarks.fixtures``, kept under --work-dir), builds the
FuxiCTR dataset once, then in a fresh subprocess per measurement (one torch
thread) reports:

* rows/s of one pass of fuxictr 2.3.10's ParquetDataLoader (Ray Data) and of
  this project's TensorDataLoader and MappedDataLoader;
* rows/s of one DNN training epoch fed by each loader, and of the same DNN on
  batches already in memory (the model's own ceiling);

each with the measuring process's own peak RSS (VmHWM). Measurements alternate
over --repeats rounds; written per measurement: median and min rows/s, median
seconds and set-up seconds, max peak RSS. (Ways of gathering shuffled batches:
``benchmarks.batch_gather``.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from benchmarks.fixtures import criteo_like_params, prepare_criteo_like, train_split
from benchmarks.harness import Harness, clock, peak_rss_mb

DNN_ARGS = {"embedding_dim": 10, "hidden_units": [400, 400, 400], "net_dropout": 0.1}


def measure(work_dir: str, rows: int, loader: str, mode: str, batch_size: int) -> dict:
    """One measurement (call it in a fresh process: its peak RSS is the process's)."""
    from fuxictr.pytorch.dataloaders import RankDataLoader

    from fuxictr_ext.data import MappedDataLoader, TensorDataLoader, load_feature_map
    from fuxictr_ext.training import Trainer
    from model_zoo.DNN import DNN

    params = criteo_like_params(work_dir, rows)
    fmap = load_feature_map(params)
    loaders = {"memory": TensorDataLoader, "mapped": MappedDataLoader, "fuxictr": None}
    with clock() as setup:
        gen, _ = RankDataLoader(fmap, stage="train", train_data=train_split(params), batch_size=batch_size,
                                shuffle=True, data_format="parquet", data_loader=loaders[loader])
    model = DNN(fmap, gpu=-1, verbose=0, model_root=os.path.join(work_dir, "ckpt"), metrics=["AUC"], **DNN_ARGS)
    trainer = Trainer(model)
    model.train()
    if mode == "model_only":
        batches = [b for _, b in zip(range(20), gen)]
        with clock() as t:
            for b in batches:
                trainer.train_step(b)
        n = sum(len(b["label"]) for b in batches)
    else:
        n = 0
        with clock() as t:
            for b in gen:
                if mode == "train":
                    trainer.train_step(b)
                n += len(b["label"])
    return {"loader": loader, "mode": mode, "rows": n, "seconds": round(t.wall_s, 2),
            "rows_per_s": round(n / t.wall_s), "setup_s": round(setup.wall_s, 2), "peak_rss_mb": round(peak_rss_mb())}


MEASUREMENTS = (("fuxictr", "load"), ("memory", "load"), ("mapped", "load"), ("fuxictr", "train"),
                ("memory", "train"), ("memory", "model_only"))


def main(argv=None) -> None:
    h = Harness("data_loading", __doc__.split("\n")[0])
    h.parser.add_argument("--rows", type=int, default=1_000_000, help="training rows")
    h.parser.add_argument("--batch-size", type=int, default=4096)
    h.parser.add_argument("--repeats", type=int, default=2, help="rounds, measurements alternating in each")
    h.parser.add_argument("--only", nargs="+", metavar="LOADER:MODE", help="measure only these (e.g. memory:load)")
    h.parser.add_argument("--measure", nargs=2, metavar=("LOADER", "MODE"), help=argparse.SUPPRESS)
    args = h.parse(argv)
    if args.measure:
        print(json.dumps(measure(args.work_dir, args.rows, *args.measure, args.batch_size)))
        return
    if args.tiny:  # no Ray Data start-up (the fuxictr loader) in a smoke run
        args.rows, args.batch_size, args.repeats = 2000, 256, 1
        args.only = args.only or ["mapped:train"]
    prepare_criteo_like(args.work_dir, args.rows)
    chosen = [tuple(m.split(":")) for m in args.only] if args.only else MEASUREMENTS
    results = []
    for _ in range(args.repeats):
        for loader, mode in chosen:
            out = subprocess.run([sys.executable, "-m", "benchmarks.data_loading", "--rows", str(args.rows),
                                  "--batch-size", str(args.batch_size), "--work-dir", args.work_dir,
                                  "--threads", str(args.threads), "--measure", loader, mode],
                                 capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    lines = [f"rows={args.rows} batch_size={args.batch_size} torch_threads={args.threads} repeats={args.repeats} "
             f"load_1min={os.getloadavg()[0]:.2f}", "",
             "| loader | mode | median rows/s | min rows/s | median s | setup s | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for loader, mode in chosen:
        rs = [r for r in results if (r["loader"], r["mode"]) == (loader, mode)]
        lines.append(f"| {loader} | {mode} | {statistics.median(r['rows_per_s'] for r in rs):,.0f} | "
                     f"{min(r['rows_per_s'] for r in rs):,} | {statistics.median(r['seconds'] for r in rs):.2f} | "
                     f"{statistics.median(r['setup_s'] for r in rs):.2f} | {max(r['peak_rss_mb'] for r in rs):,} |")
    h.write("\n".join(lines), results)


if __name__ == "__main__":
    main()
