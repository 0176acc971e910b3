"""Requests/s and latency of the Ray Serve scoring server: vanilla vs rank-aware, against concurrency.

One Ray Serve instance runs the trained experiment twice, ``/vanilla`` and ``/rank_aware``
(one replica each, ``--threads`` intra-op threads). For every concurrency level and
repeat the two paths are measured alternately: ``--concurrency`` client threads on
keep-alive HTTP connections run a closed loop (each sends its next request when the
last is answered) for ``--duration`` seconds after ``--warmup``. A request is one
request of the test split's raw rows: its context and ``--candidates`` candidate rows
drawn from the split. Every answer is compared with offline scoring (the in-process
vanilla Scorer on the same raw request); the script stops if one differs by more than 1e-5.

Reported per path and concurrency (median over repeats, min in brackets): requests/s,
p50 / p99 latency in ms, and the replica's CPU milliseconds per request (its
``process_time`` read from ``/health`` before and after a window). On a machine shared
with other jobs wall-clock figures are noisy; the rank-aware speed-up is reported as the
ratio of replica CPU time per request, measured side by side in the same run, next to the
same ratio for the scorers alone in this process (``score_batch`` on encoded requests).

    python -m benchmarks.serving_server --config config --expid DLRM_demo_request \\
        --concurrency 1 4 16 --candidates 128 --duration 5 --repeats 3
"""

import http.client
import json
import os
import statistics
import threading
import time

import numpy as np
import polars as pl

from benchmarks.fixtures import TINY_ROWS, Point, write_config_dir
from benchmarks.harness import Harness, clock, now
from fuxictr_ext.config import load_params
from fuxictr_ext.runner import run_experiment
from fuxictr_ext.serving import server
from fuxictr_ext.serving.load import load_scorer

PATHS = ("vanilla", "rank_aware")


def make_requests(raw: pl.DataFrame, encoder, count: int, candidates: int, seed: int):
    """``count`` raw requests: request r's context, ``candidates`` candidate rows drawn from the split."""
    rng = np.random.default_rng(seed)
    ids = raw["request_id"].to_numpy()
    first_rows = np.unique(ids, return_index=True)[1]
    requests = []
    for r in range(count):
        context_row = raw.row(int(first_rows[r % first_rows.size]), named=True)
        rows = raw[rng.integers(0, raw.height, candidates)]
        requests.append({"context": {c: context_row[c] for c in encoder.context_columns},
                         "candidates": {c: rows[c].to_list() for c in encoder.target_columns}})
    return requests


def health(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", f"/{path}/health")
    return json.loads(connection.getresponse().read())


def closed_loop(port: int, path: str, bodies, expected, concurrency: int, warmup: float, duration: float):
    """(requests/s, latencies in s, replica CPU s per request) of one measured window."""
    start = now()
    measure_from, stop_at = start + warmup, start + warmup + duration
    latencies = [[] for _ in range(concurrency)]
    errors = []

    def client(c):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = c
        while True:
            sent = now()
            if sent >= stop_at:
                return
            connection.request("POST", f"/{path}/score", bodies[i % len(bodies)],
                               headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            payload = json.loads(answer.read())
            done = now()
            if answer.status != 200 or np.abs(np.array(payload["scores"]) - expected[i % len(bodies)]).max() > 1e-5:
                errors.append((answer.status, payload))
                return
            if sent >= measure_from:
                latencies[c].append(done - sent)
            i += concurrency

    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, measure_from - now()))
    cpu_before = health(port, path)["cpu_seconds"]
    time.sleep(max(0.0, stop_at - now()))
    cpu_after = health(port, path)["cpu_seconds"]
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"{path}: an answer differs from offline scoring or failed: {errors[0]}")
    done = [x for per_client in latencies for x in per_client]
    return len(done) / duration, done, (cpu_after - cpu_before) / max(len(done), 1)


def in_process_cpu(scorers, batches, rounds: int):
    """Median CPU ms per request of ``score_batch`` alone (no HTTP, no encoding), paths alternated."""
    times = {path: [] for path in scorers}
    for _ in range(rounds + 1):                       # the first round is the warm-up
        for path, scorer in scorers.items():
            with clock() as t:
                for batch in batches:
                    scorer.score_batch(batch)
            times[path].append(t.cpu_s / len(batches) * 1e3)
    return {path: statistics.median(values[1:]) for path, values in times.items()}


def tiny_experiment(args) -> None:
    """Train ``--expid`` for one epoch on a tiny copy of its dataset in the work dir; point
    ``args.config`` and ``args.expid`` at it."""
    params, _ = load_params(args.config, args.expid)
    point = Point(f"tiny_{args.expid}", params["model"], args.expid)
    args.config = write_config_dir([point], 1, args.work_dir, datasets=(params["dataset_id"],), rows=TINY_ROWS)
    os.chdir(args.work_dir)  # the runner's results lines go to the work dir
    run_experiment(args.config, point.expid, gpu=-1)
    args.expid = point.expid


def main(argv=None):
    h = Harness("serving_server", __doc__.split("\n")[0])
    h.parser.add_argument("--config", default="./config/")
    h.parser.add_argument("--expid", default="DLRM_demo_request")
    h.parser.add_argument("--checkpoint", default=None)
    h.parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    h.parser.add_argument("--candidates", type=int, default=128)
    h.parser.add_argument("--pool", type=int, default=64, help="distinct requests cycled by the clients")
    h.parser.add_argument("--duration", type=float, default=5.0)
    h.parser.add_argument("--warmup", type=float, default=1.0)
    h.parser.add_argument("--repeats", type=int, default=3)
    h.parser.add_argument("--max-batch-size", type=int, default=32)
    h.parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    h.parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    h.parser.add_argument("--port", type=int, default=8765)
    args = h.parse(argv)  # --threads: torch intra-op threads per replica
    if args.tiny:
        args.candidates, args.pool, args.repeats = 8, 4, 1
        tiny_experiment(args)

    params, _ = load_params(args.config, args.expid)
    offline = load_scorer(args.config, args.expid, args.checkpoint, path="vanilla")
    raw = pl.read_parquet(params["test_data"])
    requests = make_requests(raw, offline.encoder, args.pool, args.candidates, seed=0)
    bodies = [json.dumps(r) for r in requests]
    expected = [np.array(s) for s in offline.score(requests)]

    in_process = {path: load_scorer(args.config, args.expid, args.checkpoint, path=path) for path in PATHS}
    model_cpu = in_process_cpu(in_process, [in_process["vanilla"].encode([r]) for r in requests], args.repeats)
    with clock() as t:
        for _ in range(5):
            for r in requests:
                offline.encode([r])
    encode_ms = t.cpu_s / (5 * len(requests)) * 1e3
    lines = [f"{args.expid}: N = {args.candidates} candidates per request, {args.threads} torch thread(s) per replica, "
             f"max batch {args.max_batch_size}, batch wait {args.batch_wait_ms} ms, {args.repeats} x {args.duration} s "
             f"per path and concurrency, local Ray with {args.num_cpus} CPUs (this machine is shared: wall-clock "
             "figures are noisy)", "",
             "in process, score_batch alone: " + ", ".join(f"{path} {ms:.3f} ms/request" for path, ms in model_cpu.items())
             + f"; rank-aware speed-up x{model_cpu['vanilla'] / model_cpu['rank_aware']:.2f}; raw-value encoding "
             f"{encode_ms:.3f} ms/request"]
    records = {"in_process_cpu_ms": model_cpu, "encode_ms": encode_ms, "server": []}
    if args.tiny:
        h.write("\n".join(lines + ["", "(--tiny: the server part is not run)"]), records)
        return
    for path in PATHS:
        server.start(server.scoring_app(args.config, args.expid, args.checkpoint, path, max_candidates=args.candidates,
                                        max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
                                        torch_threads=args.threads),
                     port=args.port, num_cpus=args.num_cpus, name=path, route_prefix=f"/{path}")
    print("\n".join(lines), flush=True)
    before = health(args.port, "vanilla")["cpu_seconds"]
    for _ in range(100):
        health(args.port, "vanilla")
    lines += ["", f"replica CPU of one GET /health (Ray Serve's per-request work, no model): "
                  f"{(health(args.port, 'vanilla')['cpu_seconds'] - before) / 101 * 1e3:.3f} ms"]
    print(lines[-1], flush=True)
    rows = []
    try:
        for concurrency in args.concurrency:
            runs = {path: [] for path in PATHS}
            for _ in range(args.repeats):
                for path in PATHS:                      # alternate the contenders
                    runs[path].append(closed_loop(args.port, path, bodies, expected, concurrency, args.warmup,
                                                  args.duration))
            summary = {}
            for path in PATHS:
                rps = [r[0] for r in runs[path]]
                p50 = [1e3 * float(np.percentile(r[1], 50)) for r in runs[path]]
                p99 = [1e3 * float(np.percentile(r[1], 99)) for r in runs[path]]
                cpu = [1e3 * r[2] for r in runs[path]]
                summary[path] = dict(rps=statistics.median(rps), rps_min=min(rps), p50=statistics.median(p50),
                                     p99=statistics.median(p99), cpu=statistics.median(cpu), cpu_min=min(cpu))
            ratio = summary["vanilla"]["cpu"] / summary["rank_aware"]["cpu"]
            rows.append((concurrency, summary, ratio))
            for path in PATHS:
                s = summary[path]
                print(f"concurrency {concurrency:3d}  {path:10s}  {s['rps']:8.1f} req/s (min {s['rps_min']:.1f})  "
                      f"p50 {s['p50']:7.2f} ms  p99 {s['p99']:7.2f} ms  replica CPU {s['cpu']:.3f} ms/request "
                      f"(min {s['cpu_min']:.3f})", flush=True)
            print(f"concurrency {concurrency:3d}  rank-aware speed-up in replica CPU time per request: x{ratio:.2f}",
                  flush=True)
        for path in PATHS:
            state = health(args.port, path)
            lines += ["", f"{path}: {state['requests']} requests in {state['batches']} batches, largest batch "
                          f"{state['largest_batch']} requests"]
    finally:
        server.stop()
    lines += ["", "| concurrency | path | requests/s (median, min) | p50 ms | p99 ms | replica CPU ms / request |",
              "|---|---|---|---|---|---|"]
    for concurrency, summary, ratio in rows:
        for path in PATHS:
            s = summary[path]
            lines.append(f"| {concurrency} | {path} | {s['rps']:.1f} ({s['rps_min']:.1f}) | {s['p50']:.2f} | "
                         f"{s['p99']:.2f} | {s['cpu']:.3f} |")
        lines.append(f"| {concurrency} | CPU-time speed-up | | | | x{ratio:.2f} |")
        records["server"].append({"concurrency": concurrency, "summary": summary, "cpu_speedup": ratio})
    h.write("\n".join(lines), records)


if __name__ == "__main__":
    main()
