"""Memory of 1 and 2 loader processes on one machine: TensorDataLoader vs MappedDataLoader.

    python -m benchmarks.shared_loading --rows 500000 --batch-size 4096

Builds (once, in --workdir, with benchmarks.data_loading's dataset) a synthetic
Criteo-like training split of --rows rows, then for each loader and each process
count starts that many processes at once; each makes one full pass over the whole
training split (a torchrun rank would read its shard; the pass reads every row so
that every page is touched), then reports its rows/s, its peak RSS (VmHWM) and its PSS
(proportional set size: shared pages divided among the processes sharing them,
from /proc/self/smaps_rollup) while all processes are still alive. Printed per loader
and process count: the median over rounds of the per-round median rows/s, the
min rows/s of any process, the smallest sum of PSS over rounds and its ratio to
one process's, and the largest peak RSS. One torch thread per process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time

LOADERS = ("memory", "mapped")


def _proc_mb(path: str, key: str) -> float:
    with open(path) as fd:
        for line in fd:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} line in {path}")


def _one_pass(workdir: str, rows: int, loader: str, batch_size: int, barrier, queue) -> None:
    import torch
    from fuxictr.features import FeatureMap

    from benchmarks.data_loading import _params
    from fuxictr_ext.data import MappedDataLoader, TensorDataLoader

    torch.set_num_threads(1)
    params = _params(workdir, rows)
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    fmap = FeatureMap(params["dataset_id"], data_dir)
    fmap.load(os.path.join(data_dir, "feature_map.json"), {})
    loader_cls = TensorDataLoader if loader == "memory" else MappedDataLoader
    t0 = time.time()
    gen = loader_cls(fmap, os.path.join(data_dir, "train.parquet"), split="train", batch_size=batch_size,
                     shuffle=True, seed=1)
    setup = time.time() - t0
    t0 = time.time()
    n = sum(len(batch["label"]) for batch in gen)
    seconds = time.time() - t0
    pss = _proc_mb("/proc/self/smaps_rollup", "Pss")
    barrier.wait()  # every process measured while all are alive
    # VmHWM, not getrusage's ru_maxrss, which Linux carries over from the parent across exec
    queue.put({"rows_per_s": n / seconds, "setup_s": setup, "pss_mb": pss,
               "peak_rss_mb": _proc_mb("/proc/self/status", "VmHWM")})


def measure(workdir: str, rows: int, loader: str, processes: int, batch_size: int) -> dict:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_one_pass, args=(workdir, rows, loader, batch_size, barrier, queue))
             for _ in range(processes)]
    for p in procs:
        p.start()
    reports = [queue.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a {loader} process exited with {p.exitcode}")
    speeds = [r["rows_per_s"] for r in reports]
    return {"loader": loader, "processes": processes, "median_rows_per_s": statistics.median(speeds),
            "min_rows_per_s": min(speeds), "setup_s": max(r["setup_s"] for r in reports),
            "sum_pss_mb": sum(r["pss_mb"] for r in reports),
            "max_peak_rss_mb": max(r["peak_rss_mb"] for r in reports)}


def compare(workdir: str, rows: int, batch_size: int, repeats: int,
            configs=tuple((loader, processes) for processes in (1, 2) for loader in LOADERS)) -> list:
    """Measure every (loader, processes) of ``configs`` ``repeats`` times, alternating them
    in each round, after a warm-up pass of ``mapped`` (which writes its files); prints each
    measurement as a JSON line and returns them."""
    measure(workdir, rows, "mapped", 1, batch_size)
    results = []
    for _ in range(repeats):
        for loader, processes in configs:
            results.append(measure(workdir, rows, loader, processes, batch_size))
            print(json.dumps(results[-1]), flush=True)
    return results


def summary(results: list) -> str:
    """Per loader and process count: median rows/s, min rows/s, sum of PSS (smallest over
    rounds) and its ratio to one process's, peak RSS (largest)."""
    lines = [f"{'loader':<7} {'procs':>5} {'median rows/s':>14} {'min rows/s':>11} {'sum PSS MB':>11} "
             f"{'2p/1p PSS':>9} {'peak RSS MB':>12}"]
    for loader in LOADERS:
        one = [r["sum_pss_mb"] for r in results if r["loader"] == loader and r["processes"] == 1]
        for processes in (1, 2):
            rs = [r for r in results if r["loader"] == loader and r["processes"] == processes]
            if not rs:
                continue
            pss = min(r["sum_pss_mb"] for r in rs)
            ratio = f"{pss / min(one):>9.2f}" if one else f"{'-':>9}"
            lines.append(f"{loader:<7} {processes:>5} {statistics.median(r['median_rows_per_s'] for r in rs):>14,.0f} "
                         f"{min(r['min_rows_per_s'] for r in rs):>11,.0f} {pss:>11,.0f} {ratio} "
                         f"{max(r['max_peak_rss_mb'] for r in rs):>12,.0f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=500_000, help="training rows")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--workdir", default="./bench_data")
    parser.add_argument("--repeats", type=int, default=2, help="rounds, loaders alternating in each")
    args = parser.parse_args()
    from benchmarks.data_loading import prepare
    prepare(args.workdir, args.rows)
    results = compare(args.workdir, args.rows, args.batch_size, args.repeats)
    print(f"rows={args.rows} batch_size={args.batch_size} torch_threads=1 repeats={args.repeats}")
    print(summary(results))


if __name__ == "__main__":
    main()
