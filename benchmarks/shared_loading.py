"""Memory of 1 and 2 loader processes on one machine: TensorDataLoader vs MappedDataLoader.

    python -m benchmarks.shared_loading --rows 500000 --batch-size 4096

Builds (once, in --work-dir, ``benchmarks.fixtures.prepare_criteo_like``) a synthetic
Criteo-like training split of --rows rows, then for each loader and each process
count starts that many processes at once; each makes one full pass over the whole
training split (a torchrun rank would read its shard; the pass reads every row so
that every page is touched), then reports its rows/s, its peak RSS (VmHWM) and its PSS
(proportional set size: shared pages divided among the processes sharing them,
from /proc/self/smaps_rollup) while all processes are still alive. Printed per loader
and process count: the median over rounds of the per-round median rows/s, the
min rows/s of any process, the smallest sum of PSS over rounds and its ratio to
one process's, and the largest peak RSS. --threads torch threads per process.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics

from benchmarks.fixtures import criteo_like_params, prepare_criteo_like, train_split
from benchmarks.harness import Harness, clock, peak_rss_mb, proportional_set_mb

LOADERS = ("memory", "mapped")


def _one_pass(work_dir: str, rows: int, loader: str, batch_size: int, threads: int, barrier, queue) -> None:
    import torch

    from fuxictr_ext.data import MappedDataLoader, TensorDataLoader, load_feature_map

    torch.set_num_threads(threads)
    params = criteo_like_params(work_dir, rows)
    fmap = load_feature_map(params)
    loader_cls = TensorDataLoader if loader == "memory" else MappedDataLoader
    with clock() as setup:
        gen = loader_cls(fmap, train_split(params), split="train", batch_size=batch_size, shuffle=True, seed=1)
    with clock() as t:
        n = sum(len(batch["label"]) for batch in gen)
    pss = proportional_set_mb()
    barrier.wait()  # every process measured while all are alive
    queue.put({"rows_per_s": n / t.wall_s, "setup_s": setup.wall_s, "pss_mb": pss, "peak_rss_mb": peak_rss_mb()})


def measure(work_dir: str, rows: int, loader: str, processes: int, batch_size: int, threads: int = 1) -> dict:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_one_pass, args=(work_dir, rows, loader, batch_size, threads, barrier, queue))
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


def compare(work_dir: str, rows: int, batch_size: int, repeats: int,
            configs=tuple((loader, processes) for processes in (1, 2) for loader in LOADERS), threads: int = 1) -> list:
    """Measure every (loader, processes) of ``configs`` ``repeats`` times, alternating them
    in each round, after a warm-up pass of ``mapped`` (which writes its files); prints each
    measurement as a JSON line and returns them."""
    measure(work_dir, rows, "mapped", 1, batch_size, threads)
    results = []
    for _ in range(repeats):
        for loader, processes in configs:
            results.append(measure(work_dir, rows, loader, processes, batch_size, threads))
            print(json.dumps(results[-1]), flush=True)
    return results


def summary(results: list) -> str:
    """Per loader and process count (a markdown table): median rows/s, min rows/s, sum of PSS
    (smallest over rounds) and its ratio to one process's, peak RSS (largest)."""
    lines = ["| loader | procs | median rows/s | min rows/s | sum PSS MB | 2p/1p PSS | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for loader in LOADERS:
        one = [r["sum_pss_mb"] for r in results if r["loader"] == loader and r["processes"] == 1]
        for processes in (1, 2):
            rs = [r for r in results if r["loader"] == loader and r["processes"] == processes]
            if not rs:
                continue
            pss = min(r["sum_pss_mb"] for r in rs)
            ratio = f"{pss / min(one):.2f}" if one else "-"
            lines.append(f"| {loader} | {processes} | {statistics.median(r['median_rows_per_s'] for r in rs):,.0f} | "
                         f"{min(r['min_rows_per_s'] for r in rs):,.0f} | {pss:,.0f} | {ratio} | "
                         f"{max(r['max_peak_rss_mb'] for r in rs):,.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    h = Harness("shared_loading", __doc__.split("\n")[0])
    h.parser.add_argument("--rows", type=int, default=500_000, help="training rows")
    h.parser.add_argument("--batch-size", type=int, default=4096)
    h.parser.add_argument("--repeats", type=int, default=2, help="rounds, loaders alternating in each")
    args = h.parse(argv)
    if args.tiny:
        args.rows, args.batch_size, args.repeats = 2000, 256, 1
    prepare_criteo_like(args.work_dir, args.rows)
    configs = (("memory", 1),) if args.tiny else \
        tuple((loader, processes) for processes in (1, 2) for loader in LOADERS)
    results = compare(args.work_dir, args.rows, args.batch_size, args.repeats, configs, args.threads)
    h.write(f"rows={args.rows} batch_size={args.batch_size} torch_threads={args.threads} repeats={args.repeats}\n\n"
            + summary(results), results)


if __name__ == "__main__":
    main()
