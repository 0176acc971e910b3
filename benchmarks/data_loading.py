"""Is one DNN training epoch bound by data loading? Stock loader vs TensorDataLoader.

    python -m benchmarks.data_loading --rows 1000000 --batch-size 4096

Generates Criteo-like synthetic rows (cached under --workdir), builds the
FuxiCTR dataset once, then in a fresh subprocess per measurement (one torch
thread) reports:

* rows/s of one pass of fuxictr 2.3.10's ParquetDataLoader (Ray Data) and of
  this project's TensorDataLoader and MappedDataLoader;
* rows/s of one DNN training epoch fed by each loader, and of the same DNN on
  batches already in memory (the model's own ceiling);

each with the measuring process's own peak RSS (VmHWM). Measurements alternate
over --repeats rounds; printed per measurement: median and min rows/s, median
seconds and set-up seconds, max peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

DNN_ARGS = {"embedding_dim": 10, "hidden_units": [400, 400, 400], "net_dropout": 0.1}


def _params(workdir: str, rows: int) -> dict:
    raw = os.path.join(workdir, "raw")
    return {"dataset_id": f"bench_{rows}", "data_root": os.path.join(workdir, "data"), "data_format": "parquet",
            "train_data": os.path.join(raw, "train.parquet"), "valid_data": os.path.join(raw, "valid.parquet"),
            "test_data": os.path.join(raw, "test.parquet"), "min_categr_count": 2,
            "feature_cols": [{"name": [f"I{i}" for i in range(1, 14)], "active": True, "dtype": "float", "type": "numeric"},
                             {"name": [f"C{i}" for i in range(1, 27)], "active": True, "dtype": "str", "type": "categorical"}],
            "label_col": {"name": "label", "dtype": "float"}}


def raw_rows(rows: int) -> int:
    """Rows generated for ``rows`` training rows (train / valid / test = 80 / 10 / 10)."""
    return rows * 5 // 4


def generate_raw(workdir: str, rows: int) -> None:
    """The raw synthetic Criteo-like files for ``rows`` training rows in ``<workdir>/raw``
    (seed 7), generated unless there already."""
    from fuxictr_ext.data.synthetic import write
    planted = os.path.join(workdir, "raw", "planted.json")
    if os.path.isfile(planted):
        with open(planted) as fd:
            if json.load(fd)["rows"] == raw_rows(rows):
                return
    t = time.time()
    write("criteo", raw_rows(rows), os.path.join(workdir, "raw"), seed=7)
    print(f"generated {raw_rows(rows)} rows in {time.time() - t:.1f}s")


def prepare(workdir: str, rows: int) -> dict:
    from fuxictr_ext.data import build_dataset, is_built
    params = _params(workdir, rows)
    if not is_built(params):
        generate_raw(workdir, rows)
        t = time.time()
        build_dataset(params)
        print(f"built the dataset in {time.time() - t:.1f}s (in-process, no Ray)")
    return params


def measure(workdir: str, rows: int, loader: str, mode: str, batch_size: int) -> dict:
    import torch
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from benchmarks.shared_loading import _proc_mb
    from fuxictr_ext.data import MappedDataLoader, TensorDataLoader
    from fuxictr_ext.training import Trainer
    from model_zoo.DNN import DNN

    torch.set_num_threads(1)
    params = _params(workdir, rows)
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    fmap = FeatureMap(params["dataset_id"], data_dir)
    fmap.load(os.path.join(data_dir, "feature_map.json"), {})
    train_path = os.path.join(data_dir, "train.parquet")
    t0 = time.time()
    loaders = {"memory": TensorDataLoader, "mapped": MappedDataLoader, "fuxictr": None}
    gen, _ = RankDataLoader(fmap, stage="train", train_data=train_path, batch_size=batch_size, shuffle=True,
                            data_format="parquet", data_loader=loaders[loader])
    setup = time.time() - t0
    model = DNN(fmap, gpu=-1, verbose=0, model_root=os.path.join(workdir, "ckpt"), metrics=["AUC"], **DNN_ARGS)
    trainer = Trainer(model)
    model.train()
    if mode == "model_only":
        batches = [b for _, b in zip(range(20), gen)]
        t0 = time.time()
        for b in batches:
            trainer.train_step(b)
        seconds, n = time.time() - t0, sum(len(b["label"]) for b in batches)
    else:
        t0 = time.time()
        n = 0
        for b in gen:
            if mode == "train":
                trainer.train_step(b)
            n += len(b["label"])
        seconds = time.time() - t0
    peak_mb = _proc_mb("/proc/self/status", "VmHWM")  # this process's own (ru_maxrss counts the parent's)
    return {"loader": loader, "mode": mode, "rows": n, "seconds": round(seconds, 2),
            "rows_per_s": round(n / seconds), "setup_s": round(setup, 2), "peak_rss_mb": round(peak_mb)}


def gather_profile(rows: int, batch_size: int, repeats: int) -> None:
    """Where a shuffled pass's time goes: rows/s of gathering batches of a Criteo-like split
    (26 int64 and 14 float64 columns of ``rows`` rows, random permutation) four ways, at 1
    and 2 torch threads, alternating, ``repeats`` rounds of 100 batches; prints the median
    and min rows/s of each. Building the batch dict from the gathered parts is included."""
    import numpy as np
    import torch

    ints = [torch.randint(0, 1000, (rows,)) for _ in range(26)]
    floats = [torch.rand(rows, dtype=torch.float64) for _ in range(14)]
    int_rows, float_rows = torch.stack(ints, 1), torch.stack(floats, 1)  # (rows, 26), (rows, 14)
    columns = ints + floats
    order = torch.randperm(rows)

    def by_column_indexing(idx):
        return {i: c[idx] for i, c in enumerate(columns)}

    def by_column_index_select(idx):
        return {i: c.index_select(0, idx) for i, c in enumerate(columns)}

    def row_major_index_select(idx):
        parts = [m.index_select(0, idx).t().contiguous() for m in (int_rows, float_rows)]
        return dict(enumerate([*parts[0], *parts[1]]))

    def row_major_numpy_take(idx):
        parts = [np.ascontiguousarray(np.take(m, idx.numpy(), axis=0).T)
                 for m in (int_rows.numpy(), float_rows.numpy())]
        return dict(enumerate(torch.from_numpy(c) for part in parts for c in part))

    ways = [by_column_indexing, by_column_index_select, row_major_index_select, row_major_numpy_take]
    speeds = {(way.__name__, threads): [] for way in ways for threads in (1, 2)}
    for _ in range(repeats):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for way in ways:
                t0 = time.perf_counter()
                for start in range(0, 100 * batch_size, batch_size):
                    way(order[start:start + batch_size])
                speeds[(way.__name__, threads)].append(100 * batch_size / (time.perf_counter() - t0))
    print(f"rows={rows} batch_size={batch_size} repeats={repeats} load_1min={os.getloadavg()[0]:.2f}")
    print(f"{'gather':<24} {'threads':>7} {'median rows/s':>14} {'min rows/s':>11}")
    for (name, threads), values in speeds.items():
        print(f"{name:<24} {threads:>7} {statistics.median(values):>14,.0f} {min(values):>11,.0f}")


MEASUREMENTS = (("fuxictr", "load"), ("memory", "load"), ("mapped", "load"), ("fuxictr", "train"),
                ("memory", "train"), ("memory", "model_only"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="training rows")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--workdir", default="./bench_data")
    parser.add_argument("--repeats", type=int, default=2, help="rounds, measurements alternating in each")
    parser.add_argument("--only", nargs="+", metavar="LOADER:MODE", help="measure only these (e.g. memory:load)")
    parser.add_argument("--gather-profile", action="store_true",
                        help="only profile ways of gathering shuffled batches (no data files)")
    parser.add_argument("--measure", nargs=2, metavar=("LOADER", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gather_profile:
        gather_profile(args.rows, args.batch_size, args.repeats)
        return
    if args.measure:
        print(json.dumps(measure(args.workdir, args.rows, *args.measure, args.batch_size)))
        return
    prepare(args.workdir, args.rows)
    chosen = [tuple(m.split(":")) for m in args.only] if args.only else MEASUREMENTS
    results = []
    for _ in range(args.repeats):
        for loader, mode in chosen:
            out = subprocess.run([sys.executable, "-m", "benchmarks.data_loading", "--rows", str(args.rows),
                                  "--batch-size", str(args.batch_size), "--workdir", args.workdir,
                                  "--measure", loader, mode], capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    print(f"rows={args.rows} batch_size={args.batch_size} torch_threads=1 repeats={args.repeats} "
          f"load_1min={os.getloadavg()[0]:.2f}")
    print(f"{'loader':<8} {'mode':<10} {'median rows/s':>14} {'min rows/s':>11} {'median s':>9} {'setup s':>8} "
          f"{'peak RSS MB':>12}")
    for loader, mode in chosen:
        rs = [r for r in results if (r["loader"], r["mode"]) == (loader, mode)]
        print(f"{loader:<8} {mode:<10} {statistics.median(r['rows_per_s'] for r in rs):>14,.0f} "
              f"{min(r['rows_per_s'] for r in rs):>11,} {statistics.median(r['seconds'] for r in rs):>9.2f} "
              f"{statistics.median(r['setup_s'] for r in rs):>8.2f} {max(r['peak_rss_mb'] for r in rs):>12,}")


if __name__ == "__main__":
    main()
