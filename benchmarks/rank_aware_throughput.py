"""Serving throughput of vanilla vs rank-aware DLRM-style models (section 5.2, Figure 2).

Synthetic DLRM-style models (FM pairs + FC stack, ``model_zoo.DLRM``) are built
for each (K context, M target) point and served twice from one process: the
vanilla path (context broadcast to every candidate, the model's own forward)
and the rank-aware FM + FC path (FM_ctx and the first FC layer's context part
once per request). A closed loop keeps ``--concurrency`` requests of
``--candidates`` candidates in flight: each client sends its next request as
soon as the last one is answered. Both paths are exported with torch.export
(``--backend export``, a graph module of aten ops; ``--backend eager`` runs the scorers as they are).

Servers (``--server``):
  batching - one server thread takes every queued request and scores them in one
             ragged call (``RequestBatch.concat``) using all intra-op threads, as a
             batching model server does (default);
  threads  - every client thread calls the scorer itself, one intra-op thread each.

Experiment A: K = 8..24 with M = 4. Experiment B: M = 4..24 with K = 8.
Requests/s are normalised to the vanilla (K = 8, M = 4) model. Beside wall-clock
requests/s, requests per CPU-second of the serving process are reported: on a
machine shared with other jobs they are far less disturbed by time slicing. The FLOP-ratio
bound of a point is counted vanilla FLOPs / counted rank-aware FLOPs of one
request (torch.utils.flop_counter): the speed-up if time were proportional to
matmul FLOPs.

    python -m benchmarks.rank_aware_throughput --concurrency 8 --candidates 128 \
        --duration 2 --repeats 3 --threads 2

writes rank_aware_throughput.md (table), .json (every measurement) and .png (Figure 2)
under ``--out``. ``--threads`` is the intra-op threads of the batching server (give the
machine's CPU count there) and of each client with ``--server threads`` (give 1).
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from typing import Dict, List

import torch

from benchmarks.harness import Harness, clock, now
from fuxictr_ext.serving import FieldPartition, RequestBatch, build_scorer, export_scorer
from fuxictr_ext.cost import flops_by_module
from fuxictr_ext.testing.serving import random_requests
from fuxictr_ext.testing import make_feature_map, unit_model_kwargs
from model_zoo.DLRM import DLRM

PATH_NAMES = {"vanilla": "vanilla", "rank_aware": "rank-aware FM + FC"}


def build_point(K: int, M: int, args, workdir: str):
    """Model, scorers (as served) and a pool of requests for one (K, M) point."""
    feature_map = make_feature_map(num_numeric=0, num_categorical=K + M, vocab_size=args.vocab,
                                   sources=["user"] * K + ["item"] * M)
    partition = FieldPartition.from_feature_map(feature_map)
    torch.manual_seed(K * 100 + M)
    model = DLRM(feature_map, embedding_dim=args.embedding_dim, hidden_units=args.hidden_units,
                 concat_embeddings=not args.pairs_only, **unit_model_kwargs(workdir)).eval()
    pool = [random_requests(feature_map, partition, [args.candidates], seed=i) for i in range(args.pool)]
    one = pool[0]
    scorers, flops = {}, {}
    for path in PATH_NAMES:
        scorer = build_scorer(model, path)
        flops[path] = flops_by_module(scorer, one.context, one.candidates, one.request_index)["total"]
        scorers[path] = (export_scorer(scorer, RequestBatch.concat(pool[:2])).module() if args.backend == "export"
                         else scorer)
    return scorers, pool, flops


def cpu_seconds_of_window(measure_from: float, stop_at: float) -> float:
    """CPU seconds this process spends between two ``perf_counter`` instants (called from the main thread)."""
    time.sleep(max(0.0, measure_from - now()))
    with clock() as window:
        time.sleep(max(0.0, stop_at - now()))
    return window.cpu_s


def summarize(latencies: List[float], duration: float, cpu_seconds: float) -> Dict[str, float]:
    """Requests/s (wall), requests per CPU-second of the serving process, latency percentiles."""
    done = sorted(latencies)
    if not done:
        raise RuntimeError("no request completed inside the measuring window; raise --duration")
    return {"rps": len(done) / duration,
            "rps_per_cpu_s": len(done) / cpu_seconds,
            "p50_ms": 1e3 * done[len(done) // 2],
            "p99_ms": 1e3 * done[min(len(done) - 1, int(0.99 * len(done)))],
            "requests": len(done)}


def closed_loop(scorer, pool, concurrency: int, duration: float, warmup: float) -> Dict[str, float]:
    """Requests/s and latency percentiles of ``concurrency`` clients in a closed loop."""
    latencies: List[List[float]] = [[] for _ in range(concurrency)]
    start = now()
    measure_from, stop_at = start + warmup, start + warmup + duration

    def client(slot: int):
        i = slot
        with torch.no_grad():
            while True:
                request = pool[i % len(pool)]
                sent = now()
                if sent >= stop_at:
                    return
                scorer(request.context, request.candidates, request.request_index)
                done = now()
                if sent >= measure_from and done <= stop_at:
                    latencies[slot].append(done - sent)
                i += concurrency

    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(concurrency)]
    for thread in threads:
        thread.start()
    cpu_seconds = cpu_seconds_of_window(measure_from, stop_at)
    for thread in threads:
        thread.join()
    return summarize([x for per_client in latencies for x in per_client], duration, cpu_seconds)


def batching_loop(scorer, pool, concurrency: int, duration: float, warmup: float) -> Dict[str, float]:
    """Requests/s and latency percentiles of ``concurrency`` clients served by one batching server.

    Clients queue their request and wait; the server thread takes every queued
    request (at most ``concurrency``), scores them in one ragged call
    (``RequestBatch.concat``) with all intra-op threads, and answers each client.
    """
    queue: List[tuple] = []
    ready = threading.Condition()
    answers = [threading.Event() for _ in range(concurrency)]
    latencies: List[float] = []
    start = now()
    measure_from, stop_at = start + warmup, start + warmup + duration
    stopped = threading.Event()

    def client(slot: int):
        i = slot
        while True:
            sent = now()
            if sent >= stop_at:
                return
            with ready:
                queue.append((slot, pool[i % len(pool)]))
                ready.notify()
            answers[slot].wait()
            answers[slot].clear()
            done = now()
            if sent >= measure_from and done <= stop_at:
                latencies.append(done - sent)
            i += concurrency

    def server():
        with torch.no_grad():
            while not stopped.is_set():
                with ready:
                    while not queue and not stopped.is_set():
                        ready.wait(timeout=0.05)
                    taken, queue[:] = list(queue), []
                if not taken:
                    continue
                batch = RequestBatch.concat([request for _, request in taken])
                scorer(batch.context, batch.candidates, batch.request_index)
                for slot, _ in taken:
                    answers[slot].set()

    serving = threading.Thread(target=server)
    serving.start()
    clients = [threading.Thread(target=client, args=(slot,)) for slot in range(concurrency)]
    for thread in clients:
        thread.start()
    cpu_seconds = cpu_seconds_of_window(measure_from, stop_at)
    for thread in clients:
        thread.join()
    stopped.set()
    serving.join()
    return summarize(latencies, duration, cpu_seconds)


SERVERS = {"batching": batching_loop, "threads": closed_loop}


def measure(args) -> List[dict]:
    points = [("A", K, 4) for K in args.context_counts] + [("B", 8, M) for M in args.target_counts]
    rows, cache = [], {}
    for experiment, K, M in points:
        if (K, M) not in cache:
            scorers, pool, flops = build_point(K, M, args, args.work_dir)
            runs = {path: [] for path in PATH_NAMES}
            for _ in range(args.repeats):  # alternate the paths so that drifting load hits both alike
                for path in PATH_NAMES:
                    runs[path].append(SERVERS[args.server](scorers[path], pool, args.concurrency,
                                                           args.duration, args.warmup))
            cache[(K, M)] = (runs, flops)
        runs, flops = cache[(K, M)]
        for path in PATH_NAMES:
            best = statistics.median(r["rps"] for r in runs[path])
            run = min(runs[path], key=lambda r: abs(r["rps"] - best))
            rows.append({"experiment": experiment, "K": K, "M": M, "path": path, "rps": best,
                         "rps_per_cpu_s": statistics.median(r["rps_per_cpu_s"] for r in runs[path]),
                         "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"], "flops": flops[path],
                         "runs": runs[path]})
        vanilla, ranked = rows[-2], rows[-1]
        print(f"[{experiment}] K={K:2d} M={M:2d}  vanilla {vanilla['rps']:8.1f} req/s  rank-aware "
              f"{ranked['rps']:8.1f} req/s  x{ranked['rps'] / vanilla['rps']:.2f}  per CPU-s "
              f"x{ranked['rps_per_cpu_s'] / vanilla['rps_per_cpu_s']:.2f}  "
              f"(FLOP bound x{vanilla['flops'] / ranked['flops']:.2f})", flush=True)
    base = next(r for r in rows if (r["K"], r["M"], r["path"]) == (8, 4, "vanilla"))
    for row in rows:
        row["normalized_rps"] = row["rps"] / base["rps"]
        row["normalized_rps_per_cpu_s"] = row["rps_per_cpu_s"] / base["rps_per_cpu_s"]
    return rows


def markdown(rows: List[dict], args) -> str:
    lines = [f"Candidates per request N = {args.candidates}, {args.concurrency} requests in flight "
             f"({args.server} server), "
             f"D = {args.embedding_dim}, FC {args.hidden_units}, FC input "
             f"{'FM pairs' if args.pairs_only else '[FM pairs; embeddings]'}, backend {args.backend}, "
             f"torch threads per request {args.threads}, {args.repeats} x {args.duration:g} s per path and point "
             "(median), machine: " + args.machine, "",
             "| exp | K | M | vanilla norm. RPS | rank-aware norm. RPS | speed-up | speed-up per CPU-s | "
             "FLOP-ratio bound | speed-up / bound | vanilla p50 / p99 ms | rank-aware p50 / p99 ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for vanilla, ranked in zip(rows[0::2], rows[1::2]):
        speedup, bound = ranked["rps"] / vanilla["rps"], vanilla["flops"] / ranked["flops"]
        per_cpu = ranked["rps_per_cpu_s"] / vanilla["rps_per_cpu_s"]
        lines.append(f"| {vanilla['experiment']} | {vanilla['K']} | {vanilla['M']} | "
                     f"{vanilla['normalized_rps']:.2f} | {ranked['normalized_rps']:.2f} | {speedup:.2f}x | "
                     f"{per_cpu:.2f}x | {bound:.2f}x | {speedup / bound:.0%} | "
                     f"{vanilla['p50_ms']:.2f} / {vanilla['p99_ms']:.2f} | "
                     f"{ranked['p50_ms']:.2f} / {ranked['p99_ms']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows: List[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, experiment, key, title in ((axes[0], "A", "K", "(a) context fields K, M = 4"),
                                       (axes[1], "B", "M", "(b) target fields M, K = 8")):
        for scoring_path, style in (("vanilla", "o-"), ("rank_aware", "s-")):
            points = [r for r in rows if r["experiment"] == experiment and r["path"] == scoring_path]
            ax.plot([r[key] for r in points], [r["normalized_rps"] for r in points], style,
                    label=PATH_NAMES[scoring_path])
        ax.set_xlabel(key)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("RPS / RPS of vanilla (K = 8, M = 4)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    h = Harness("rank_aware_throughput", __doc__.split("\n")[0])
    h.parser.add_argument("--context-counts", type=int, nargs="+", default=[8, 12, 16, 20, 24])
    h.parser.add_argument("--target-counts", type=int, nargs="+", default=[4, 8, 12, 16, 20, 24])
    h.parser.add_argument("--candidates", type=int, default=128, help="N per request")
    h.parser.add_argument("--embedding-dim", type=int, default=16)
    h.parser.add_argument("--hidden-units", type=int, nargs="+", default=[256, 128])
    h.parser.add_argument("--pairs-only", action="store_true", help="FC input = FM pairs alone (eq. 12)")
    h.parser.add_argument("--vocab", type=int, default=1000)
    h.parser.add_argument("--pool", type=int, default=16, help="distinct requests cycled by the clients")
    h.parser.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    h.parser.add_argument("--server", choices=list(SERVERS), default="batching",
                          help="batching: one server thread scores all queued requests in one ragged call; "
                               "threads: every client thread calls the scorer itself")
    h.parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per path and repeat")
    h.parser.add_argument("--warmup", type=float, default=0.5)
    h.parser.add_argument("--repeats", type=int, default=3)
    h.parser.add_argument("--backend", choices=["export", "eager"], default="export")
    h.parser.add_argument("--machine", type=str, default=f"{os.cpu_count()} CPUs")
    args = h.parse(argv)
    if args.tiny:
        args.context_counts, args.target_counts, args.candidates, args.pool = [8], [4], 8, 2
        args.duration, args.warmup, args.repeats = 0.2, 0.05, 1
    rows = measure(args)
    h.write(markdown(rows, args), rows)
    plot(rows, h.output_path("rank_aware_throughput.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
