"""Scoring engines side by side: requests/s, latency and the CPU of every server process, against in-process scoring.

One trained DLRM (K context and M target fields, ``--context`` / ``--target``, default 24 and
4, D = 16, FC [256, 128], trained for one epoch on generated requests in the work dir) is
served by each contender, all started at once on 127.0.0.1 and measured in turn, contender
after contender, round after round (alternated), after a warm-up:

* ``litserve``  - the project's server (``python -m fuxictr_ext.serving.server``), LitServe
  with dynamic batching, 1 and 2 inference workers, rank-aware and vanilla paths, and the
  rank-aware scorer compiled ahead of time (``--compile``, AOTInductor);
* ``fastapi``   - the reference: a plain FastAPI/uvicorn app around the same scorer, one
  request per call, 1 and 2 uvicorn workers (``--serve fastapi``, below);
* ``rayserve``  - Ray Serve tuned as its documentation allows (``--serve rayserve``):
  ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``, ``@serve.batch`` with the same batch size and wait,
  2 replicas of 1 CPU, ``max_ongoing_requests`` / ``max_queued_requests`` set;
* ``in process`` - ``scorer.score([json.loads(body)])`` in this process, one thread: the
  throughput every server is compared with (``throughput / in-process``).

Clients: ``--concurrency`` threads on keep-alive HTTP connections run a closed loop for
``--duration`` seconds after ``--warmup``; every answer is checked against in-process scoring
(max |diff| <= 1e-5) and the run stops if one differs. CPU per request counts every process
of the server's process tree (``/proc/<pid>/stat`` of the server and all its descendants:
API server, workers, Ray's raylet, GCS, proxy and replicas), over the measured window.
The client threads run on the same 2-core machine and take CPU from the servers; each
figure is the median over ``--repeats`` rounds, min in brackets, with the load average.

Then the overload test: ``--overload-clients`` clients at once against the project's server
(``--max-queued``, ``--timeout-s``), each sending ``--overload-requests`` requests: how many
were scored (their p50 / p99), how many got 503 (and how fast), any other status.

    python -m benchmarks.serving_server --work-dir /tmp/serving_bench --repeats 3      # results/serving_server.md
"""

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import polars as pl
import torch
import yaml

from benchmarks.harness import Harness, clock
from fuxictr_ext.serving import RequestBatch, export_scorer

PATHS = ("vanilla", "rank_aware")
EXPID = "DLRM_serving_bench"
TICKS = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- the experiment
def write_experiment(work_dir: str, context: int, target: int, rows: int, candidates: int = 16,
                     vocab: int = 200, seed: int = 0) -> str:
    """A request-layout dataset (K context fields of source user, M target fields of source item,
    ``candidates`` rows per request_id) and a DLRM experiment ``EXPID`` on it; returns the config dir."""
    rng = np.random.default_rng(seed)
    context_fields, target_fields = [f"c{k}" for k in range(context)], [f"t{m}" for m in range(target)]
    requests = rows // candidates
    columns = {"request_id": np.repeat(np.arange(requests), candidates)}
    for name in context_fields:
        columns[name] = np.repeat(rng.integers(0, vocab, requests), candidates).astype(str)
    for name in target_fields:
        columns[name] = rng.integers(0, vocab, requests * candidates).astype(str)
    weights = rng.normal(size=vocab)
    logit = sum(weights[columns[f].astype(int)] for f in context_fields[:2] + target_fields[:2])
    columns["click"] = (rng.random(logit.size) < 1 / (1 + np.exp(-logit))).astype(float)
    frame = pl.DataFrame(columns)
    raw_dir = os.path.join(work_dir, "data", "raw", "serving_bench")
    os.makedirs(raw_dir, exist_ok=True)
    cuts = [0, int(requests * 0.8) * candidates, int(requests * 0.9) * candidates, requests * candidates]
    for split, start, stop in zip(("train", "valid", "test"), cuts[:-1], cuts[1:]):
        frame[start:stop].write_parquet(os.path.join(raw_dir, f"{split}.parquet"))
    config_dir = os.path.join(work_dir, "config")
    os.makedirs(config_dir, exist_ok=True)
    dataset = {"serving_bench": {
        "data_root": os.path.join(work_dir, "data"), "data_format": "parquet", "min_categr_count": 1,
        **{f"{split}_data": os.path.join(raw_dir, f"{split}.parquet") for split in ("train", "valid", "test")},
        "feature_cols": [{"name": "request_id", "active": True, "dtype": "int", "type": "meta", "remap": False},
                         {"name": context_fields, "active": True, "dtype": "str", "type": "categorical",
                          "source": "user"},
                         {"name": target_fields, "active": True, "dtype": "str", "type": "categorical",
                          "source": "item"}],
        "label_col": {"name": "click", "dtype": "float"}}}
    model = {EXPID: {
        "model": "DLRM", "dataset_id": "serving_bench", "loss": "binary_crossentropy", "metrics": ["logloss", "AUC"],
        "task": "binary_classification", "optimizer": "adam", "learning_rate": 1.0e-3, "embedding_regularizer": 0,
        "net_regularizer": 0, "batch_size": 1024, "epochs": 1, "shuffle": True, "seed": 2019, "monitor": "AUC",
        "monitor_mode": "max", "embedding_dim": 16, "hidden_units": [256, 128], "hidden_activations": "ReLU",
        "net_dropout": 0, "batch_norm": False, "model_root": os.path.join(work_dir, "checkpoints")}}
    for name, content in (("dataset_config.yaml", dataset), ("model_config.yaml", model)):
        with open(os.path.join(config_dir, name), "w") as fd:
            yaml.safe_dump(content, fd, sort_keys=False)
    return config_dir


def make_requests(raw: pl.DataFrame, encoder, count: int, candidates: int, seed: int) -> List[dict]:
    """``count`` raw requests: a test row's context and ``candidates`` candidate rows drawn from the split."""
    rng = np.random.default_rng(seed)
    requests = []
    for _ in range(count):
        context_row = raw.row(int(rng.integers(0, raw.height)), named=True)
        rows = raw[rng.integers(0, raw.height, candidates)]
        requests.append({"context": {c: context_row[c] for c in encoder.context_columns},
                         "candidates": {c: rows[c].to_list() for c in encoder.target_columns}})
    return requests


# ----------------------------------------------------------------------------- server processes
def process_tree(pid: int) -> List[int]:
    """``pid`` and all its descendants (``/proc/<pid>/task/*/children``)."""
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fd:
                for child in fd.read().split():
                    pids += process_tree(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return pids


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid``'s process tree (processes alive now)."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/stat") as fd:
                fields = fd.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / TICKS


@dataclass
class Contender:
    """A server to start: its command, its port, its HTTP path, and once started its process."""
    name: str
    engine: str
    path: str
    workers: int
    port: int
    command: List[str]
    env: Dict[str, str] = field(default_factory=dict)
    process: Optional[subprocess.Popen] = None

    def start(self, log_dir: str) -> None:
        log = open(os.path.join(log_dir, f"{self.name}.log"), "w")
        self.process = subprocess.Popen(self.command, env=dict(os.environ, **self.env), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        """SIGTERM to the server (each contender shuts its workers down on it), then SIGKILL to
        whatever of its process group is left."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)


def wait_ready(contender: Contender, timeout_s: float) -> float:
    """Seconds until ``GET /health`` answers 200; SystemExit if the server exits or takes too long."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if contender.process.poll() is not None:
            raise SystemExit(f"{contender.name} exited with {contender.process.returncode} before it was ready")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", contender.port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{contender.name} was not ready after {timeout_s:.0f} s")


# ----------------------------------------------------------------------------- measuring
@dataclass
class Window:
    """One measured window: requests/s, latencies (s), CPU seconds per request, statuses."""
    rps: float
    latencies: List[float]
    cpu_per_request: float
    load: float
    refused: int = 0


def closed_loop(port: int, bodies: Sequence[bytes], expected: Sequence[np.ndarray], concurrency: int,
                warmup: float, duration: float, server_pid: int) -> Window:
    """``concurrency`` clients in a closed loop; CPU of the server's process tree over the window."""
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration
    latencies = [[] for _ in range(concurrency)]
    refused = [0] * concurrency
    errors = []

    def client(c):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = c
        while time.perf_counter() < stop_at and not errors:
            sent = time.perf_counter()
            connection.request("POST", "/score", bodies[i % len(bodies)], headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            payload = answer.read()
            done = time.perf_counter()
            if answer.status in (503, 504):          # refused or timed out on a loaded machine: counted
                refused[c] += 1
                i += concurrency
                continue
            if answer.status != 200:
                errors.append(f"status {answer.status}: {payload[:300]!r}")
                return
            scores, offline = np.array(json.loads(payload)["scores"]), expected[i % len(bodies)]
            if scores.shape != offline.shape or np.abs(scores - offline).max() > 1e-5:
                errors.append(f"scores differ from in-process scoring: {scores[:4]} against {offline[:4]}")
                return
            if sent >= measure_from:
                latencies[c].append(done - sent)
            i += concurrency

    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, measure_from - time.perf_counter()))
    cpu_before = tree_cpu_seconds(server_pid)
    time.sleep(max(0.0, stop_at - time.perf_counter()))
    cpu_after = tree_cpu_seconds(server_pid)
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"port {port}: {errors[0]}")
    done = [x for per_client in latencies for x in per_client]
    return Window(len(done) / duration, done, (cpu_after - cpu_before) / max(len(done), 1), os.getloadavg()[0],
                  sum(refused))


def in_process_loop(scorer, bodies: Sequence[bytes], warmup: float, duration: float) -> Window:
    """``scorer.score([json.loads(body)])`` back to back in this process (one thread)."""
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration
    latencies, i, cpu_before = [], 0, None
    while True:
        sent = time.perf_counter()
        if sent >= stop_at:
            break
        if cpu_before is None and sent >= measure_from:
            cpu_before = time.process_time()
        scorer.score([json.loads(bodies[i % len(bodies)])])
        if sent >= measure_from:
            latencies.append(time.perf_counter() - sent)
        i += 1
    return Window(len(latencies) / duration, latencies, (time.process_time() - cpu_before) / max(len(latencies), 1),
                  os.getloadavg()[0])


def aot_comparison(scorers, requests: Sequence[dict], rounds: int, package_dir: str) -> dict:
    """Per path: the scorer eager, its ``torch.export`` program, and that program compiled ahead of
    time by AOTInductor (``torch._inductor.aoti_compile_and_package``), on one encoded request at a
    time: compile seconds, max |score - eager| over the requests, CPU ms per call (median, min over
    ``rounds`` rounds, the three alternated)."""
    results = {}
    for path, scorer in scorers.items():
        batches = [scorer.encode([r]) for r in requests]
        program = export_scorer(scorer, RequestBatch.concat(batches[:2]))
        with clock() as compile_time:
            package = torch._inductor.aoti_compile_and_package(
                program, package_path=os.path.join(package_dir, f"scorer_{path}.pt2"))
        runners = {"eager": lambda b: scorer.score_batch(b),
                   "torch.export": program.module(),
                   "AOTInductor": torch._inductor.aoti_load_package(package)}
        calls = {"eager": runners["eager"],
                 "torch.export": lambda b: runners["torch.export"](b.context, b.candidates, b.request_index),
                 "AOTInductor": lambda b: runners["AOTInductor"](b.context, b.candidates, b.request_index)}
        difference = {}
        with torch.no_grad():
            for name, call in calls.items():
                difference[name] = max(float((call(b) - scorer.score_batch(b)).abs().max()) for b in batches)
            times = {name: [] for name in calls}
            for _ in range(rounds + 1):                  # the first round is the warm-up
                for name, call in calls.items():
                    start = time.process_time()
                    for b in batches:
                        call(b)
                    times[name].append(1e3 * (time.process_time() - start) / len(batches))
        results[path] = {"compile_s": compile_time.wall_s, "max_abs_difference": difference,
                         "cpu_ms": {n: statistics.median(v[1:]) for n, v in times.items()},
                         "cpu_ms_min": {n: min(v[1:]) for n, v in times.items()}}
    return results


def summarise(windows: List[Window]) -> dict:
    rps = [w.rps for w in windows]
    cpu = [1e3 * w.cpu_per_request for w in windows]
    return dict(rps=statistics.median(rps), rps_min=min(rps),
                p50=statistics.median(1e3 * float(np.percentile(w.latencies, 50)) for w in windows),
                p99=statistics.median(1e3 * float(np.percentile(w.latencies, 99)) for w in windows),
                cpu_ms=statistics.median(cpu), cpu_ms_min=min(cpu), load=statistics.median(w.load for w in windows),
                refused=sum(w.refused for w in windows))


def overload(port: int, bodies: Sequence[bytes], clients: int, requests_per_client: int) -> dict:
    """``clients`` clients at once, ``requests_per_client`` requests each: statuses and latencies."""
    results, lock, barrier = [], threading.Lock(), threading.Barrier(clients)

    def client(c):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []
        barrier.wait()
        for i in range(requests_per_client):
            sent = time.perf_counter()
            try:
                connection.request("POST", "/score", bodies[(c + i) % len(bodies)],
                                   headers={"Content-Type": "application/json"})
                answer = connection.getresponse()
                payload = answer.read()
                status = answer.status
                if status != 200:
                    json.loads(payload)["error"]        # every refusal is a JSON error
            except (OSError, http.client.HTTPException):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                status = "connection error"
            mine.append((status, time.perf_counter() - sent))
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    by_status: Dict[object, List[float]] = {}
    for status, latency in results:
        by_status.setdefault(status, []).append(latency)
    return {"wall_s": wall, "load": os.getloadavg()[0],
            "statuses": {str(s): {"count": len(v), "p50_ms": 1e3 * float(np.percentile(v, 50)),
                                  "p99_ms": 1e3 * float(np.percentile(v, 99)), "max_ms": 1e3 * max(v)}
                         for s, v in sorted(by_status.items(), key=lambda kv: str(kv[0]))}}


# ----------------------------------------------------------------------------- reference servers
def reference_options() -> dict:
    return json.loads(os.environ["SERVING_BENCH_OPTIONS"])


def fastapi_app():
    """The plain FastAPI reference (``uvicorn --factory``): one request per call, no batching."""
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    from fuxictr_ext.serving.server import answer_requests, load_experiment_scorer

    options = reference_options()
    torch.set_num_threads(1)
    scorer = load_experiment_scorer(**options)
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/score")
    async def score(request: Request):
        status, body = answer_requests(scorer, [json.loads(await request.body())])[0]
        return Response(body, status_code=status, media_type="application/json")

    return app


def serve_fastapi(port: int, workers: int) -> None:
    import uvicorn
    uvicorn.run("benchmarks.serving_server:fastapi_app", factory=True, host="127.0.0.1", port=port, workers=workers,
                log_level="warning", timeout_worker_healthcheck=600)   # workers load the model before they answer pings


def serve_rayserve(port: int, workers: int, max_batch_size: int, batch_wait_ms: float, max_queued: int) -> None:
    """Ray Serve, tuned: throughput-optimized mode (set in the environment by the caller), batching, replicas."""
    import ray
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    from ray import serve

    from fuxictr_ext.serving.server import answer_requests, load_experiment_scorer

    options = reference_options()
    app = FastAPI()

    @serve.deployment(num_replicas=workers, max_ongoing_requests=2 * max_batch_size, max_queued_requests=max_queued,
                      ray_actor_options={"num_cpus": 1})
    @serve.ingress(app)
    class Scoring:
        def __init__(self):
            torch.set_num_threads(1)
            self.scorer = load_experiment_scorer(**options)

        @app.get("/health")
        def health(self):
            return {"status": "ok"}

        @app.post("/score")
        async def score(self, request: Request):
            status, body = await self.score_batch(json.loads(await request.body()))
            return Response(body, status_code=status, media_type="application/json")

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_ms / 1000.0)
        async def score_batch(self, requests):
            return answer_requests(self.scorer, requests)

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Scoring.bind(), blocking=True)


# ----------------------------------------------------------------------------- the run
def contenders(args, config_dir: str) -> List[Contender]:
    base = [sys.executable, "-m", "fuxictr_ext.serving.server", "--config", config_dir, "--expid", EXPID,
            "--max-batch-size", str(args.max_batch_size), "--batch-wait-ms", str(args.batch_wait_ms),
            "--max-queued", str(args.max_queued), "--timeout-s", str(args.timeout_s), "--threads", str(args.threads)]
    port = iter(range(args.port, args.port + 100))
    chosen = []
    for workers in args.workers:
        for path in PATHS if workers == max(args.workers) else ("rank_aware",):   # vanilla: for the CPU ratio
            p = next(port)
            chosen.append(Contender(f"litserve_{path}_{workers}w", "litserve", path, workers, p,
                                    base + ["--path", path, "--workers", str(workers), "--port", str(p)]))
    if args.compiled:
        p, workers = next(port), max(args.workers)
        chosen.append(Contender(f"litserve_rank_aware_{workers}w_compiled", "litserve", "rank_aware", workers, p,
                                base + ["--path", "rank_aware", "--workers", str(workers), "--port", str(p),
                                        "--compile"]))
    reference = []
    for engine in args.engines:
        for workers in args.workers:
            p = next(port)
            env = {"SERVING_BENCH_OPTIONS": json.dumps(dict(workdir=args.work_dir, config_dir=config_dir, expid=EXPID,
                                                            checkpoint=None, path="rank_aware", dtype=None,
                                                            max_candidates=1024))}
            if engine == "rayserve":
                if workers < 2:
                    continue
                env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
            command = [sys.executable, "-m", "benchmarks.serving_server", "--serve", engine, "--port", str(p),
                       "--serve-workers", str(workers), "--max-batch-size", str(args.max_batch_size),
                       "--batch-wait-ms", str(args.batch_wait_ms), "--max-queued", str(args.max_queued)]
            reference.append(Contender(f"{engine}_rank_aware_{workers}w", engine, "rank_aware", workers, p, command,
                                       env))
    return chosen + reference


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--context", type=int, default=24, help="K context fields")
    parser.add_argument("--target", type=int, default=4, help="M target fields")
    parser.add_argument("--rows", type=int, default=20000, help="rows of the generated dataset")
    parser.add_argument("--candidates", type=int, default=128, help="N per request")
    parser.add_argument("--pool", type=int, default=64, help="distinct requests cycled by the clients")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes / replicas")
    parser.add_argument("--engines", nargs="*", default=["fastapi", "rayserve"], help="contenders besides LitServe")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--max-queued", type=int, default=32)
    parser.add_argument("--timeout-s", type=float, default=1.0)
    parser.add_argument("--overload-clients", type=int, default=256)
    parser.add_argument("--overload-requests", type=int, default=4)
    parser.add_argument("--start-timeout-s", type=float, default=300)
    parser.add_argument("--compiled", action=argparse.BooleanOptionalAction, default=True,
                        help="also serve the rank-aware scorer compiled by AOTInductor (--compile)")
    parser.add_argument("--aot-rounds", type=int, default=5, help="rounds of the AOTInductor comparison (0: skip it)")
    parser.add_argument("--port", type=int, default=18900)


def reference_server(argv) -> None:
    """``--serve fastapi|rayserve``: one reference server, started by the benchmark as a process of its own."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving_server --serve")
    parser.add_argument("--serve", choices=["fastapi", "rayserve"], required=True)
    parser.add_argument("--serve-workers", type=int, default=1)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--max-queued", type=int, default=32)
    args = parser.parse_args(argv)
    if args.serve == "fastapi":
        serve_fastapi(args.port, args.serve_workers)
    else:
        serve_rayserve(args.port, args.serve_workers, args.max_batch_size, args.batch_wait_ms, args.max_queued)


def interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--serve" in argv:
        return reference_server(argv)
    h = Harness("serving_server", __doc__.split("\n")[0])
    add_options(h.parser)
    args = h.parse(argv)                  # --threads: torch intra-op threads here and per worker
    if args.tiny:                         # in process only: the servers take minutes to start
        args.rows, args.candidates, args.pool, args.repeats = 2000, 8, 4, 1
        args.duration, args.warmup, args.aot_rounds, args.workers, args.engines = 0.5, 0.2, 0, [], []
        args.compiled = False
    signal.signal(signal.SIGTERM, interrupt)          # the servers are stopped on the way out
    from fuxictr_ext.runner import run_experiment
    from fuxictr_ext.serving.load import load_scorer

    args.work_dir = os.path.abspath(args.work_dir)
    config_dir = write_experiment(args.work_dir, args.context, args.target, args.rows)
    cwd = os.getcwd()
    os.chdir(args.work_dir)
    run_experiment(config_dir, EXPID)
    scorers = {path: load_scorer(config_dir, EXPID, path=path) for path in PATHS}
    os.chdir(cwd)
    raw = pl.read_parquet(os.path.join(args.work_dir, "data", "raw", "serving_bench", "test.parquet"))
    requests = make_requests(raw, scorers["vanilla"].encoder, args.pool, args.candidates, seed=0)
    bodies = [json.dumps(r).encode() for r in requests]
    expected = [np.array(s) for s in scorers["vanilla"].score(requests)]

    aot = aot_comparison(scorers, requests[:16], args.aot_rounds, args.work_dir) if args.aot_rounds else {}
    print(f"AOTInductor: {aot}", flush=True)
    servers = contenders(args, config_dir)
    log_dir = os.path.join(args.work_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    windows: Dict[tuple, List[Window]] = {}
    started = {}
    try:
        for server in servers:
            server.start(log_dir)
        for server in servers:
            started[server.name] = wait_ready(server, args.start_timeout_s)
            print(f"{server.name} ready after {started[server.name]:.1f} s", flush=True)
        for repeat in range(args.repeats):
            for concurrency in args.concurrency:
                shift = repeat % max(len(servers), 1)
                order = servers[shift:] + servers[:shift]
                for path in PATHS:
                    key = ("in process", path, 1, concurrency)
                    windows.setdefault(key, []).append(in_process_loop(scorers[path], bodies, args.warmup,
                                                                       args.duration))
                for server in order:
                    window = closed_loop(server.port, bodies, expected, concurrency, args.warmup, args.duration,
                                         server.process.pid)
                    windows.setdefault((server.name, server.path, server.workers, concurrency), []).append(window)
                    print(f"round {repeat} c{concurrency} {server.name}: {window.rps:.0f} req/s, "
                          f"{1e3 * window.cpu_per_request:.2f} CPU ms/request, load {window.load:.1f}", flush=True)
        overload_result = {}
        if servers:
            chosen = next(s for s in servers if s.engine == "litserve" and s.path == "rank_aware"
                          and s.workers == max(args.workers))
            overload_result = dict(overload(chosen.port, bodies, args.overload_clients, args.overload_requests),
                                   server=chosen.name)
            print(f"overload: {overload_result}", flush=True)
    finally:
        for server in servers:
            server.stop()
    body, records = results_markdown(args, windows, started, overload_result, aot)
    h.write(body, records)


def results_markdown(args, windows, started, overload_result, aot):
    """The results file's body and its records: the contenders' table, the rank-aware ratio,
    the overload test and the AOTInductor comparison."""
    summary = {key: summarise(value) for key, value in windows.items()}
    lines = ["| contender | path | workers | concurrency | requests/s (median, min) | p50 ms | p99 ms | "
             "CPU ms / request, all server processes (median, min) | throughput / in-process | 503/504 answers | "
             "load average |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, path, workers, concurrency), s in summary.items():
        reference = summary[("in process", path, 1, concurrency)]["rps"]
        lines.append(f"| {name} | {path} | {workers} | {concurrency} | {s['rps']:.0f} ({s['rps_min']:.0f}) | "
                     f"{s['p50']:.2f} | {s['p99']:.1f} | {s['cpu_ms']:.2f} ({s['cpu_ms_min']:.2f}) | "
                     f"{s['rps'] / reference:.2f} | {s['refused']} | {s['load']:.1f} |")
    body = [f"DLRM, K = {args.context} context and M = {args.target} target fields, N = {args.candidates} candidates "
            f"per request, D = 16, FC [256, 128]; {args.threads} torch thread(s) per worker; max batch "
            f"{args.max_batch_size}, batch wait {args.batch_wait_ms} ms; {args.repeats} rounds x {args.duration} s per "
            f"contender and concurrency, contenders alternated; CPU counted over every process of each server's "
            f"tree. Start times: " + (", ".join(f"{k} {v:.0f} s" for k, v in started.items()) or "none (--tiny: "
                                      "in process only)") + ".", "", *lines]
    in_process_ratio = summary[("in process", "vanilla", 1, args.concurrency[0])]["cpu_ms"] / \
        summary[("in process", "rank_aware", 1, args.concurrency[0])]["cpu_ms"]
    ratio_lines = []
    for workers in args.workers:
        for concurrency in args.concurrency:
            vanilla = summary.get((f"litserve_vanilla_{workers}w", "vanilla", workers, concurrency))
            rank_aware = summary.get((f"litserve_rank_aware_{workers}w", "rank_aware", workers, concurrency))
            if vanilla and rank_aware:
                served = vanilla["cpu_ms"] / rank_aware["cpu_ms"]
                ratio_lines.append(f"| LitServe, {workers} worker(s) | {concurrency} | x{served:.2f} | "
                                   f"x{in_process_ratio:.2f} | {served / in_process_ratio:.2f} |")
    if ratio_lines:
        body += ["", "Rank-aware against vanilla, CPU per request (vanilla / rank-aware):", "",
                 "| server | concurrency | served | in process | served / in process |", "|---|---|---|---|---|",
                 *ratio_lines]
    if overload_result:
        body += ["", f"Overload: {args.overload_clients} clients at once (threads of this process) x "
                     f"{args.overload_requests} requests against `{overload_result['server']}` (--max-queued "
                     f"{args.max_queued} --timeout-s {args.timeout_s}) (wall {overload_result['wall_s']:.1f} s, load "
                     f"{overload_result['load']:.1f}):", "",
                 "| status | count | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|",
                 *[f"| {status} | {v['count']} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | {v['max_ms']:.1f} |"
                   for status, v in overload_result["statuses"].items()]]
    if aot:
        body += ["", "In process, the model call alone on one encoded request at a time: eager, its `torch.export` "
                 "program, and that program compiled by AOTInductor (`torch._inductor.aoti_compile_and_package`); "
                 "CPU ms per call (median, min), max |score - eager|, compile seconds:", "",
                 "| path | eager | torch.export | AOTInductor | eager / AOTInductor | max diff export, AOT | "
                 "compile s |", "|---|---|---|---|---|---|---|"]
        for path, r in aot.items():
            ms, low, diff = r["cpu_ms"], r["cpu_ms_min"], r["max_abs_difference"]
            body.append(f"| {path} | {ms['eager']:.3f} ({low['eager']:.3f}) | {ms['torch.export']:.3f} "
                        f"({low['torch.export']:.3f}) | {ms['AOTInductor']:.3f} ({low['AOTInductor']:.3f}) | "
                        f"x{ms['eager'] / ms['AOTInductor']:.2f} | {diff['torch.export']:.1e}, "
                        f"{diff['AOTInductor']:.1e} | {r['compile_s']:.0f} |")
    records = {"contenders": [dict(name=k[0], path=k[1], workers=k[2], concurrency=k[3], **v)
                              for k, v in summary.items()],
               "start_s": started, "overload": overload_result, "aot": aot}
    return "\n".join(body) + "\n", records


if __name__ == "__main__":
    main()
