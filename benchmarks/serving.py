"""Scoring engines side by side: requests/s, latency and the CPU of every server process, against in-process scoring.

One trained DLRM (K context and M target fields, ``--context`` / ``--target``, default 24 and
4, D = 16, FC [256, 128], trained for one epoch on generated requests in the work dir) is
served by each contender, all started at once on 127.0.0.1 and measured in turn, contender
after contender, round after round (alternated), after a warm-up:

* ``litserve``  - the project's server (``python -m fuxictr_ext.serving.server``), LitServe
  with dynamic batching, 1 and 2 inference workers, rank-aware and vanilla paths, and the
  rank-aware scorer compiled ahead of time (``--compile``, AOTInductor), and with
  ``--max-batch-size 1`` (LitServe's unbatched loop: no batch window, no polling; ``--unbatched``);
* ``litserve-no-model`` - LitServe with the project's settings (workers, batch size and wait,
  timeout, the admission middleware) and an API that answers zeros without scoring
  (``--serve litserve-no-model``): the engine's own cost per request, its path column "no model";
* ``fastapi``   - the reference: a plain FastAPI/uvicorn app around the same scorer, one
  request per call, 1 and 2 uvicorn workers (``--serve fastapi``, below);
* ``rayserve``  - Ray Serve tuned as its documentation allows (``--serve rayserve``):
  ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``, ``@serve.batch`` with the same batch size and wait,
  2 replicas of 1 CPU, ``max_ongoing_requests`` / ``max_queued_requests`` set, its workers at
  the niceness of the rest (``RAY_worker_niceness=0``; Ray's default lowers them); measured through
  its HTTP proxy and through its gRPC proxy (a unary method taking the same JSON body as bytes);
  started and made ready before the others, after PyTriton (with every server starting at
  once on a loaded machine, its proxy actor's start timed out and Ray Serve killed it);
* ``pytriton``  - PyTriton (NVIDIA Triton Inference Server with Python models, ``--serve
  pytriton``): Triton's dynamic batcher with the same batch size, wait and queue size, one model
  instance per worker; KServe v2 HTTP requests carrying the JSON body as a BYTES tensor. It
  needs numpy < 2, so it runs in an environment of its own: ``--pytriton-python PATH``; it is
  started and made ready before the others (its second model instance waits only 1 s for the
  first one's handshake, which a machine busy starting the other servers misses);
* ``bentoml``   - BentoML (``bentoml serve benchmarks.serving:BentoScoring``), its adaptive
  batching with the same batch size, its ``traffic`` limits at the same queue size and timeout,
  1 and 2 workers; each worker is a process with its own HTTP server, batcher and scorer, so a
  request crosses no process boundary (its body is ``{"requests": [request]}``, ``BentoWire``);
* ``in process`` - ``scorer.score([json.loads(body)])`` in this process, one thread: the
  throughput every server is compared with (``throughput / in-process``).

Ray Serve, PyTriton and BentoML are not dependencies of the project: a contender whose engine is not
installed, or that fails to start, is left out and the results say why.

Each contender is measured alone: while one is measured (and while the in-process scorer is),
the other servers of the project's own kinds (LitServe, FastAPI) are paused, their whole
process trees stopped with SIGSTOP and resumed with SIGCONT (``--pause-idle``, the default;
``--no-pause-idle`` leaves them running). An idle LitServe server with batching is not idle:
each worker polls its queue every millisecond through LitServe's multiprocessing manager, and
before each run the benchmark records every server's idle CPU (cores, over ``--idle-s``
seconds with no requests). Ray Serve, PyTriton and BentoML keep running (their controllers and stubs
time each other out when stopped); their idle CPU is in the same record.

Clients: ``--concurrency`` threads on keep-alive connections run a closed loop for
``--duration`` seconds after ``--warmup``; every answer is checked against in-process scoring
(max |diff| <= 1e-5) and the run stops if one differs. CPU per request counts every process
of the server's process tree (``/proc/<pid>/stat`` of the server and all its descendants:
API server, workers, Ray's raylet, GCS, proxy and replicas, Triton's server and Python
stubs), over the measured window. The client threads run on the same 2-core machine and take
CPU from the servers; each figure is the median over ``--repeats`` rounds, min in brackets,
with the load average.

Rank-aware against vanilla: the 2-worker LitServe servers of both paths and both paths in
process, alternated in ``--ratio-rounds`` short rounds of their own; the ratio of CPU per
request (vanilla / rank-aware) is taken within each round and its median reported.

Then the overload test: ``--overload-clients`` connections at once (one asyncio client, so
that the client side stays cheap) against the project's server (``--max-queued``,
``--timeout-s``), each sending ``--overload-requests`` requests back to back: how many were
scored (their p50 / p99), how many got 503 (and how fast), any other status; beside them the
parts of the bound on an admitted request's latency: --timeout-s, Q = --max-queued requests
of work at the server's measured throughput X (Q / X), and the server's CPU per answer.

    python -m benchmarks.serving --work-dir /tmp/serving_bench --pytriton-python /work/venv-pytriton/bin/python
"""

import argparse
import asyncio
import http.client
import importlib.util
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import polars as pl
import torch
import yaml

from benchmarks.harness import REPO, Harness, clock
from fuxictr_ext.serving import RequestBatch, export_scorer

PATHS = ("vanilla", "rank_aware")
ENGINES = ("litserve-no-model", "fastapi", "rayserve", "pytriton", "bentoml")
NO_MODEL = "no model"      # the path column of a server that answers without scoring
EXPID = "DLRM_serving_bench"
TICKS = os.sysconf("SC_CLK_TCK")
GRPC_SERVICE, GRPC_METHOD = "fuxictr_zoo.Scoring", "Score"


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


# ----------------------------------------------------------------------------- wires: how a contender is called
class JsonWire:
    """``POST /score`` with the request's JSON body; the answer is the project's JSON answer."""
    score_path, health_path = "/score", "/health"

    @staticmethod
    def wrap(body: bytes) -> bytes:
        return body

    @staticmethod
    def unwrap(status: int, payload: bytes) -> Tuple[int, bytes]:
        return status, payload


class KServeWire:
    """Triton's KServe v2 HTTP inference: the JSON body as one BYTES element of input ``request``;
    outputs ``status`` (the HTTP status the project's server would answer) and ``answer`` (its body)."""
    score_path, health_path = "/v2/models/scoring/infer", "/v2/health/ready"

    @staticmethod
    def wrap(body: bytes) -> bytes:
        return json.dumps({"inputs": [{"name": "request", "shape": [1, 1], "datatype": "BYTES",
                                       "data": [body.decode()]}]}).encode()

    @staticmethod
    def unwrap(status: int, payload: bytes) -> Tuple[int, bytes]:
        if status != 200:
            return status, payload
        outputs = {o["name"]: o["data"][0] for o in json.loads(payload)["outputs"]}
        return int(outputs["status"]), outputs["answer"].encode()


class BentoWire:
    """BentoML's JSON API: the body is ``{"requests": [request]}`` (the batchable API's one argument,
    a list; BentoML's dispatcher joins the lists of concurrent requests into one batch and splits
    the answers back); the answer is a one-element list of [the HTTP status the project's server
    would answer, its body]."""
    score_path, health_path = "/score", "/readyz"

    @staticmethod
    def wrap(body: bytes) -> bytes:
        return b'{"requests": [' + body + b"]}"

    @staticmethod
    def unwrap(status: int, payload: bytes) -> Tuple[int, bytes]:
        if status != 200:
            return status, payload
        (code, answer), = json.loads(payload)
        return code, answer.encode()


class HttpSession:
    """One keep-alive HTTP connection to a contender."""

    def __init__(self, port: int, wire):
        self.port, self.wire = port, wire
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, body: bytes) -> Tuple[int, bytes]:
        """(status, the project's answer body) of one wrapped request."""
        self.connection.request("POST", self.wire.score_path, body, headers={"Content-Type": "application/json"})
        answer = self.connection.getresponse()
        return self.wire.unwrap(answer.status, answer.read())


class GrpcSession:
    """One gRPC channel to Ray Serve's gRPC proxy: unary ``/fuxictr_zoo.Scoring/Score``, bytes in and out."""

    def __init__(self, port: int, wire):
        import grpc
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.method = self.channel.unary_unary(f"/{GRPC_SERVICE}/{GRPC_METHOD}")

    def call(self, body: bytes) -> Tuple[int, bytes]:
        answer = self.method(body, metadata=(("application", "default"),), timeout=60)
        return (200 if answer.startswith(b'{"scores"') else 422), answer


@dataclass
class Contender:
    """A server to start (its command, port and wire), or a second door of another one's process
    (``host``: Ray Serve's gRPC proxy in the same Ray instance as its HTTP proxy)."""
    name: str
    engine: str
    path: str
    workers: int
    port: int
    command: Optional[List[str]]
    env: Dict[str, str] = field(default_factory=dict)
    wire: type = JsonWire
    session: type = HttpSession
    host: Optional["Contender"] = None
    scores: bool = True
    process: Optional[subprocess.Popen] = None
    log_path: str = ""
    launched_at: float = 0.0

    def start(self, log_dir: str) -> None:
        if self.host is not None:
            return
        self.log_path = os.path.join(log_dir, f"{self.name}.log")
        log = open(self.log_path, "w")
        self.launched_at = time.perf_counter()
        self.process = subprocess.Popen(self.command, env=dict(os.environ, PYTHONPATH=REPO, **self.env), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return (self.host or self).process.pid

    def log_tail(self, lines: int = 6) -> str:
        """The last lines of the server's log that say something (for a start that failed)."""
        with open((self.host or self).log_path, errors="replace") as fd:
            text = [line.strip() for line in fd if line.strip()]
        return " / ".join(text[-lines:])

    @property
    def pausable(self) -> bool:
        """Whether its process tree may be stopped between its windows (no timers between its processes)."""
        return self.engine in ("litserve", "litserve-no-model", "fastapi") and self.host is None

    def signal_tree(self, signum: int) -> None:
        for member in process_tree(self.pid):
            try:
                os.kill(member, signum)
            except ProcessLookupError:
                pass

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


def wait_ready(contender: Contender, body: bytes, timeout_s: float) -> float:
    """Seconds from the server's launch until the contender scores ``body`` (its health check
    first); RuntimeError with the end of its log if its server exits or is not ready ``timeout_s``
    after its launch."""
    owner = contender.host or contender
    while time.perf_counter() - owner.launched_at < timeout_s:
        if owner.process.poll() is not None:
            raise RuntimeError(f"exited with status {owner.process.returncode}: {contender.log_tail()}")
        try:
            if contender.host is None:
                connection = http.client.HTTPConnection("127.0.0.1", contender.port, timeout=5)
                connection.request("GET", contender.wire.health_path)
                if connection.getresponse().status != 200:
                    raise OSError("not ready")
            if contender.session(contender.port, contender.wire).call(contender.wire.wrap(body))[0] == 200:
                return time.perf_counter() - owner.launched_at
        except Exception:                            # not listening yet, or the engine's own error while it starts
            pass
        time.sleep(0.5)
    raise RuntimeError(f"not ready after {timeout_s:.0f} s: {contender.log_tail()}")


def run_alone(servers: Sequence[Contender], measured: Optional[Contender], pause: bool) -> None:
    """Resume ``measured`` (and the server it is a door of); stop every other pausable server when ``pause``."""
    owner = None if measured is None else (measured.host or measured)
    for server in servers:
        if server.pausable and server is not owner and pause:
            server.signal_tree(signal.SIGSTOP)
    if owner is not None and owner.pausable:
        owner.signal_tree(signal.SIGCONT)


def idle_cpu(servers: Sequence[Contender], seconds: float) -> Dict[str, float]:
    """CPU of each server's process tree with no requests, in cores (CPU seconds per second), all measured at once."""
    owners = [s for s in servers if s.host is None]
    before = {s.name: tree_cpu_seconds(s.pid) for s in owners}
    time.sleep(seconds)
    return {s.name: (tree_cpu_seconds(s.pid) - before[s.name]) / seconds for s in owners}


# ----------------------------------------------------------------------------- measuring
@dataclass
class Window:
    """One measured window: requests/s, latencies (s), CPU seconds per request, statuses."""
    rps: float
    latencies: List[float]
    cpu_per_request: float
    load: float
    refused: int = 0


def closed_loop(contender: Contender, bodies: Sequence[bytes], expected: Sequence[np.ndarray], concurrency: int,
                warmup: float, duration: float) -> Window:
    """``concurrency`` clients in a closed loop; CPU of the server's process tree over the window."""
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration
    latencies = [[] for _ in range(concurrency)]
    refused = [0] * concurrency
    errors = []
    wrapped = [contender.wire.wrap(body) for body in bodies]

    def client(c):
        session = contender.session(contender.port, contender.wire)
        i = c
        while time.perf_counter() < stop_at and not errors:
            sent = time.perf_counter()
            try:
                status, payload = session.call(wrapped[i % len(bodies)])
            except Exception as err:                 # the contender's own transport error: the run stops
                errors.append(f"{type(err).__name__}: {err}")
                return
            done = time.perf_counter()
            if status in (503, 504):          # refused or timed out on a loaded machine: counted
                refused[c] += 1
                i += concurrency
                continue
            if status != 200:
                errors.append(f"status {status}: {payload[:300]!r}")
                return
            scores = np.array(json.loads(payload)["scores"])
            offline = expected[i % len(bodies)] if contender.scores else scores
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
    cpu_before = tree_cpu_seconds(contender.pid)
    time.sleep(max(0.0, stop_at - time.perf_counter()))
    cpu_after = tree_cpu_seconds(contender.pid)
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{contender.name}: {errors[0]}")
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


async def post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> Tuple[int, bytes, bool]:
    """One ``POST /score`` on an open HTTP/1.1 connection: (status, body, whether the server closes it)."""
    writer.write(b"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, value = line.split(b":", 1)
        headers[name.strip().lower()] = value.strip().lower()
    payload = await reader.readexactly(int(headers.get(b"content-length", 0)))
    return status, payload, headers.get(b"connection") == b"close"


def overload(port: int, bodies: Sequence[bytes], clients: int, requests_per_client: int) -> dict:
    """``clients`` connections opened first, then all released at once, ``requests_per_client``
    requests each, back to back: statuses, latencies, and whether every refusal was a JSON error.

    One asyncio loop drives every connection (HTTP/1.1 over asyncio streams), so that the
    client side costs little CPU next to the server."""
    results: List[Tuple[object, float]] = []
    not_json: List[bytes] = []

    async def flood():
        go = asyncio.Event()

        async def client(c):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await go.wait()
            for i in range(requests_per_client):
                sent = time.perf_counter()
                try:
                    status, payload, close = await post(reader, writer, bodies[(c + i) % len(bodies)])
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    status, close = "connection error", True
                else:
                    if status != 200:
                        try:
                            json.loads(payload)["error"]
                        except (ValueError, KeyError, TypeError):
                            not_json.append(payload[:200])
                results.append((status, time.perf_counter() - sent))
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()

        tasks = [asyncio.create_task(client(c)) for c in range(clients)]
        await asyncio.sleep(0.5)                     # every connection open before the first request
        started = time.perf_counter()
        go.set()
        await asyncio.gather(*tasks)
        return time.perf_counter() - started

    cpu = time.process_time()
    wall = asyncio.run(flood())
    by_status: Dict[object, List[float]] = {}
    for status, latency in results:
        by_status.setdefault(status, []).append(latency)
    return {"wall_s": wall, "client_cpu_s": time.process_time() - cpu, "load": os.getloadavg()[0],
            "errors_not_json": len(not_json),
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

    from fuxictr_ext.serving.answers import answer_requests, load_experiment_scorer

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


if importlib.util.find_spec("litserve") is not None:      # the serving extra; LitServe's workers unpickle
    import litserve                                         # the API by its module-level name
    from fastapi.responses import Response

    class NoModelAPI(litserve.LitAPI):
        """Answers each request with one zero per candidate, without a model (batched)."""

        def decode_request(self, request: dict) -> int:
            return len(next(iter(request["candidates"].values())))

        def batch(self, sizes: List[int]) -> List[int]:
            return sizes

        def predict(self, sizes: List[int]) -> List[bytes]:
            return [json.dumps({"scores": [0.0] * n}).encode() for n in sizes]

        def unbatch(self, answers: List[bytes]) -> List[bytes]:
            return answers

        def encode_response(self, answer: bytes) -> Response:
            return Response(answer, media_type="application/json")


BENTOML_OPTIONS = "SERVING_BENCH_BENTOML"
"""The environment variable with the BentoML contender's settings (read when its service class is defined)."""

if importlib.util.find_spec("bentoml") is not None and BENTOML_OPTIONS in os.environ:   # the BentoML server
    import bentoml

    from fuxictr_ext.serving.answers import answer_requests, load_experiment_scorer

    BENTO = json.loads(os.environ[BENTOML_OPTIONS])

    @bentoml.service(workers=BENTO["workers"],
                     traffic={"timeout": BENTO["timeout_s"], "max_concurrency": BENTO["max_queued"]})
    class BentoScoring:
        """BentoML (``--engines bentoml``): ``workers`` processes, each with its own HTTP server, adaptive
        batcher (batches of at most ``max_batch_size``; a request that would wait past ``timeout_s`` is
        refused) and scorer; ``max_queued`` requests at once, the rest answered 503."""

        def __init__(self):
            torch.set_num_threads(1)
            self.scorer = load_experiment_scorer(**reference_options())

        @bentoml.api(batchable=True, max_batch_size=BENTO["max_batch_size"],
                     max_latency_ms=int(1000 * BENTO["timeout_s"]))
        def score(self, requests: list) -> list:
            return [[status, body.decode()] for status, body in answer_requests(self.scorer, requests)]


def serve_litserve_no_model(port: int, workers: int, max_batch_size: int, batch_wait_ms: float,
                            max_queued: int) -> None:
    """LitServe with no model (``--serve litserve-no-model``): the project's LitServer settings (workers,
    batching, timeout, the admission middleware), an API that answers every request with zeros, one per
    candidate: what LitServe's own hops cost a request."""
    from fuxictr_ext.serving.server import SCORE_PATH, AdmissionControl

    api = NoModelAPI(max_batch_size=max_batch_size, batch_timeout=batch_wait_ms / 1000.0, api_path=SCORE_PATH)
    litserve.LitServer(api, accelerator="cpu", devices=1, workers_per_device=workers, timeout=1.0, fast_queue=True,
                       middlewares=[(AdmissionControl, {"max_queued": max_queued, "max_body_bytes": 8 << 20})]).run(
        host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")


def serve_fastapi(port: int, workers: int) -> None:
    import uvicorn
    uvicorn.run("benchmarks.serving:fastapi_app", factory=True, host="127.0.0.1", port=port, workers=workers,
                log_level="warning", timeout_worker_healthcheck=600)   # workers load the model before they answer pings


class GrpcAnswer(bytes):
    """A replica's gRPC answer: the JSON body, handed to the proxy as serialized message bytes."""

    def SerializeToString(self) -> bytes:       # noqa: N802  (the protobuf message method Ray Serve calls)
        return bytes(self)


def add_ScoringServicer_to_server(servicer, server) -> None:    # noqa: N802  (the name Ray Serve's gRPC options expect)
    """Ray Serve's ``grpc_servicer_functions`` entry: the unary method ``/fuxictr_zoo.Scoring/Score`` with
    bytes in and out (no protobuf schema: the request is the same JSON body as ``POST /score``)."""
    import grpc
    handler = grpc.unary_unary_rpc_method_handler(servicer.Score)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GRPC_SERVICE, {GRPC_METHOD: handler}),))


def serve_rayserve(port: int, grpc_port: int, workers: int, max_batch_size: int, batch_wait_ms: float,
                   max_queued: int) -> None:
    """Ray Serve, tuned: throughput-optimized mode (set in the environment by the caller), batching,
    replicas; an HTTP proxy on ``port`` and a gRPC proxy on ``grpc_port``."""
    import ray
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    from ray import serve
    from ray.serve.config import gRPCOptions

    from fuxictr_ext.serving.answers import answer_requests, load_experiment_scorer

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

        async def Score(self, request: bytes) -> GrpcAnswer:       # noqa: N802  (the gRPC method's name)
            return GrpcAnswer((await self.score_batch(json.loads(request)))[1])

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_ms / 1000.0)
        async def score_batch(self, requests):
            return answer_requests(self.scorer, requests)

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                grpc_options=gRPCOptions(port=grpc_port,
                                         grpc_servicer_functions=["benchmarks.serving.add_ScoringServicer_to_server"]))
    serve.run(Scoring.bind(), blocking=True)


def serve_pytriton(port: int, workers: int, max_batch_size: int, batch_wait_ms: float, max_queued: int) -> None:
    """PyTriton: Triton's dynamic batcher (same batch size and wait, a queue of ``max_queued``) in
    front of ``workers`` model instances (each its own scorer, called on Triton's batches)."""
    import sysconfig
    # Triton's Python-backend stub links the system's libpython3.x; the interpreter's own comes
    # first so that the stub runs the same Python as the standard library it loads.
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [sysconfig.get_config_var("LIBDIR"),
                                                                  os.environ.get("LD_LIBRARY_PATH")]))
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, Tensor
    from pytriton.triton import Triton, TritonConfig

    from fuxictr_ext.serving.answers import answer_requests, load_experiment_scorer

    torch.set_num_threads(1)
    options = reference_options()

    def instance():
        scorer = load_experiment_scorer(**options)

        @batch
        def infer(request):                          # (b, 1) bytes: the JSON bodies
            answers = answer_requests(scorer, [json.loads(r[0]) for r in request])
            return {"status": np.array([[s] for s, _ in answers], dtype=np.int32),
                    "answer": np.array([[b] for _, b in answers], dtype=np.object_)}
        return infer

    config = ModelConfig(max_batch_size=max_batch_size, batcher=DynamicBatcher(
        max_queue_delay_microseconds=int(batch_wait_ms * 1000),
        default_queue_policy=QueuePolicy(max_queue_size=max_queued)))
    triton_config = TritonConfig(http_address="127.0.0.1", http_port=port, grpc_address="127.0.0.1",
                                 grpc_port=port + 1000, allow_metrics=False, log_verbose=0)
    with Triton(config=triton_config) as triton:
        triton.bind(model_name="scoring", infer_func=[instance() for _ in range(workers)],
                    inputs=[Tensor(name="request", dtype=bytes, shape=(1,))],
                    outputs=[Tensor(name="status", dtype=np.int32, shape=(1,)),
                             Tensor(name="answer", dtype=bytes, shape=(1,))],
                    config=config, strict=False)
        triton.serve()


# ----------------------------------------------------------------------------- the run
def contenders(args, config_dir: str) -> Tuple[List[Contender], Dict[str, str]]:
    """The servers to start, and the contenders left out with the reason."""
    base = [sys.executable, "-m", "fuxictr_ext.serving.server", "--config", config_dir, "--expid", EXPID,
            "--max-batch-size", str(args.max_batch_size), "--batch-wait-ms", str(args.batch_wait_ms),
            "--max-queued", str(args.max_queued), "--timeout-s", str(args.timeout_s), "--threads", str(args.threads)]
    port = iter(range(args.port, args.port + 100))
    chosen, skipped = [], {}
    for workers in args.workers:
        for path in PATHS if workers == max(args.workers) else ("rank_aware",):   # vanilla: for the CPU ratio
            p = next(port)
            chosen.append(Contender(f"litserve_{path}_{workers}w", "litserve", path, workers, p,
                                    base + ["--path", path, "--workers", str(workers), "--port", str(p)]))
    if args.compiled and args.workers:
        p, workers = next(port), max(args.workers)
        chosen.append(Contender(f"litserve_rank_aware_{workers}w_compiled", "litserve", "rank_aware", workers, p,
                                base + ["--path", "rank_aware", "--workers", str(workers), "--port", str(p),
                                        "--compile"]))
    if args.unbatched and args.workers and args.max_batch_size > 1:
        p, workers = next(port), max(args.workers)
        chosen.append(Contender(f"litserve_rank_aware_{workers}w_unbatched", "litserve", "rank_aware", workers, p,
                                base + ["--path", "rank_aware", "--workers", str(workers), "--port", str(p),
                                        "--max-batch-size", "1"]))
    env = {"SERVING_BENCH_OPTIONS": json.dumps(dict(workdir=args.work_dir, config_dir=config_dir, expid=EXPID,
                                                    checkpoint=None, path="rank_aware", dtype=None,
                                                    max_candidates=1024))}
    limits = ["--max-batch-size", str(args.max_batch_size), "--batch-wait-ms", str(args.batch_wait_ms),
              "--max-queued", str(args.max_queued)]
    for engine in args.engines:
        if engine == "rayserve" and importlib.util.find_spec("ray") is None:
            skipped["rayserve"] = "not run: Ray is not installed here (pip install 'ray[serve]')"
            continue
        if engine == "bentoml" and importlib.util.find_spec("bentoml") is None:
            skipped["bentoml"] = "not run: BentoML is not installed here (pip install bentoml)"
            continue
        if engine == "pytriton" and not args.pytriton_python:
            skipped["pytriton"] = ("not run: no --pytriton-python (PyTriton needs numpy < 2, so it runs in a "
                                   "Python environment of its own)")
            continue
        if engine == "litserve-no-model" and args.max_batch_size < 2:
            skipped[engine] = "not run: its API is written for batches (--max-batch-size of 2 or more)"
            continue
        python = args.pytriton_python if engine == "pytriton" else sys.executable
        both = engine in ("fastapi", "bentoml")              # measured with 1 and 2 workers
        for workers in args.workers if both else [max(args.workers)] if args.workers else []:
            p = next(port)
            command = [python, "-m", "benchmarks.serving", "--serve", engine, "--port", str(p),
                       "--serve-workers", str(workers), *limits]
            name = f"{engine}_rank_aware_{workers}w"
            if engine == "rayserve":
                g = next(port)
                http = Contender(name, engine, "rank_aware", workers, p, command + ["--grpc-port", str(g)],
                                 dict(env, RAY_SERVE_THROUGHPUT_OPTIMIZED="1", RAY_worker_niceness="0"))
                chosen += [http, Contender(f"{engine}_grpc_rank_aware_{workers}w", engine, "rank_aware", workers, g,
                                           None, session=GrpcSession, host=http)]
            elif engine == "bentoml":
                settings = dict(workers=workers, max_batch_size=args.max_batch_size, timeout_s=args.timeout_s,
                                max_queued=args.max_queued)
                chosen.append(Contender(name, engine, "rank_aware", workers, p,
                                        [python, "-m", "bentoml", "serve", "benchmarks.serving:BentoScoring",
                                         "--working-dir", REPO, "--host", "127.0.0.1", "--port", str(p)],
                                        dict(env, **{BENTOML_OPTIONS: json.dumps(settings),
                                                     "BENTOML_HOME": os.path.join(args.work_dir, "bentoml_home"),
                                                     "BENTOML_DO_NOT_TRACK": "True"}),
                                        wire=BentoWire))
            elif engine == "litserve-no-model":
                chosen.append(Contender(f"litserve_no_model_{workers}w", engine, NO_MODEL, workers, p, command,
                                        scores=False))
            else:
                chosen.append(Contender(name, engine, "rank_aware", workers, p, command, env,
                                        wire=KServeWire if engine == "pytriton" else JsonWire))
    return chosen, skipped


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--context", type=int, default=24, help="K context fields")
    parser.add_argument("--target", type=int, default=4, help="M target fields")
    parser.add_argument("--rows", type=int, default=20000, help="rows of the generated dataset")
    parser.add_argument("--candidates", type=int, default=128, help="N per request")
    parser.add_argument("--pool", type=int, default=64, help="distinct requests cycled by the clients")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes / replicas")
    parser.add_argument("--engines", nargs="*", default=list(ENGINES), choices=list(ENGINES),
                        help="contenders besides the project's server")
    parser.add_argument("--pytriton-python", default=None,
                        help="the python of an environment with nvidia-pytriton (and numpy < 2) and this project")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ratio-rounds", type=int, default=6,
                        help="alternated rounds of the rank-aware / vanilla CPU ratio (0: skip it)")
    parser.add_argument("--ratio-duration", type=float, default=2.0)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--max-queued", type=int, default=32)
    parser.add_argument("--timeout-s", type=float, default=1.0)
    parser.add_argument("--overload-clients", type=int, default=256)
    parser.add_argument("--overload-requests", type=int, default=4)
    parser.add_argument("--start-timeout-s", type=float, default=300)
    parser.add_argument("--compiled", action=argparse.BooleanOptionalAction, default=True,
                        help="also serve the rank-aware scorer compiled by AOTInductor (--compile)")
    parser.add_argument("--aot-rounds", type=int, default=3, help="rounds of the AOTInductor comparison (0: skip it)")
    parser.add_argument("--port", type=int, default=18900)
    parser.add_argument("--unbatched", action=argparse.BooleanOptionalAction, default=True,
                        help="also the project's server with --max-batch-size 1 (LitServe's unbatched loop)")
    parser.add_argument("--pause-idle", action=argparse.BooleanOptionalAction, default=True,
                        help="stop the project-kind servers (LitServe, FastAPI) that are not being measured")
    parser.add_argument("--idle-s", type=float, default=3.0, help="seconds over which idle CPU is measured")


def reference_server(argv) -> None:
    """``--serve fastapi|rayserve|pytriton``: one reference server, started by the benchmark as a process of its own."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving --serve")
    parser.add_argument("--serve", choices=["litserve-no-model", "fastapi", "rayserve", "pytriton"], required=True)
    parser.add_argument("--serve-workers", type=int, default=1)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=None)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--max-queued", type=int, default=32)
    args = parser.parse_args(argv)
    if args.serve == "litserve-no-model":
        serve_litserve_no_model(args.port, args.serve_workers, args.max_batch_size, args.batch_wait_ms,
                                args.max_queued)
    elif args.serve == "fastapi":
        serve_fastapi(args.port, args.serve_workers)
    elif args.serve == "rayserve":
        serve_rayserve(args.port, args.grpc_port, args.serve_workers, args.max_batch_size, args.batch_wait_ms,
                       args.max_queued)
    else:
        serve_pytriton(args.port, args.serve_workers, args.max_batch_size, args.batch_wait_ms, args.max_queued)


def interrupt(signum, frame):
    raise KeyboardInterrupt


def rank_aware_ratio(servers: Dict[str, Contender], everyone: Sequence[Contender], scorers, bodies, expected,
                     args) -> List[dict]:
    """Per concurrency and round: CPU per request of the two LitServe paths and of the two paths in
    process, measured back to back (the order flipped every round), each alone as in :func:`run_alone`
    among ``everyone``; the ratios within each round."""
    rounds = []
    for r in range(args.ratio_rounds):
        for concurrency in args.concurrency:
            order = PATHS if r % 2 == 0 else PATHS[::-1]
            cpu = {}
            run_alone(everyone, None, args.pause_idle)
            for path in order:
                cpu[("in process", path)] = in_process_loop(scorers[path], bodies, args.warmup,
                                                            args.ratio_duration).cpu_per_request
            for path in order:
                run_alone(everyone, servers[path], args.pause_idle)
                cpu[("served", path)] = closed_loop(servers[path], bodies, expected, concurrency, args.warmup,
                                                    args.ratio_duration).cpu_per_request
            served = cpu[("served", "vanilla")] / cpu[("served", "rank_aware")]
            in_process = cpu[("in process", "vanilla")] / cpu[("in process", "rank_aware")]
            rounds.append(dict(round=r, concurrency=concurrency, served=served, in_process=in_process,
                               load=os.getloadavg()[0], **{f"{k[0]} {k[1]} cpu_ms": 1e3 * v for k, v in cpu.items()}))
            print(f"ratio round {r} c{concurrency}: served x{served:.2f}, in process x{in_process:.2f}", flush=True)
    return rounds


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--serve" in argv:
        return reference_server(argv)
    h = Harness("serving", __doc__.split("\n")[0])
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
    launched, skipped = contenders(args, config_dir)
    servers = list(launched)
    log_dir = os.path.join(args.work_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    windows: Dict[tuple, List[Window]] = {}
    started, ratio_rounds, overload_result, idle = {}, [], {}, {}
    try:
        # started one engine at a time on a quieter machine, before the others: PyTriton's second model instance
        # waits 1 s for the first one's handshake, Ray Serve kills its proxy when the proxy is slow to start
        groups = [[s for s in servers if s.engine == engine] for engine in ("pytriton", "rayserve", "bentoml")]
        for group in [*groups, [s for s in servers if not any(s in g for g in groups)]]:
            for server in group:
                server.start(log_dir)
            for server in group:
                try:
                    started[server.name] = wait_ready(server, bodies[0], args.start_timeout_s)
                    print(f"{server.name} ready after {started[server.name]:.1f} s", flush=True)
                except RuntimeError as err:
                    skipped[server.name] = f"did not start: {err}"
                    print(f"{server.name} {skipped[server.name]}", flush=True)
                    servers.remove(server)
        idle = idle_cpu(servers, args.idle_s)
        print(f"idle CPU (cores): {idle}", flush=True)
        for repeat in range(args.repeats):
            for concurrency in args.concurrency:
                shift = repeat % max(len(servers), 1)
                order = servers[shift:] + servers[:shift]
                run_alone(servers, None, args.pause_idle)
                for path in PATHS:
                    key = ("in process", path, 1, concurrency)
                    windows.setdefault(key, []).append(in_process_loop(scorers[path], bodies, args.warmup,
                                                                       args.duration))
                for server in order:
                    run_alone(servers, server, args.pause_idle)
                    window = closed_loop(server, bodies, expected, concurrency, args.warmup, args.duration)
                    windows.setdefault((server.name, server.path, server.workers, concurrency), []).append(window)
                    print(f"round {repeat} c{concurrency} {server.name}: {window.rps:.0f} req/s, "
                          f"{1e3 * window.cpu_per_request:.2f} CPU ms/request, load {window.load:.1f}", flush=True)
        litserve = {s.path: s for s in servers if s.name in (f"litserve_{path}_{max(args.workers, default=0)}w"
                                                               for path in PATHS)}
        if len(litserve) == 2 and args.ratio_rounds:
            ratio_rounds = rank_aware_ratio(litserve, servers, scorers, bodies, expected, args)
        if "rank_aware" in litserve:
            overload_result = dict(server=litserve["rank_aware"].name, workers=litserve["rank_aware"].workers)
            run_alone(servers, litserve["rank_aware"], args.pause_idle)
            cpu_before = tree_cpu_seconds(litserve["rank_aware"].pid)
            overload_result.update(overload(litserve["rank_aware"].port, bodies, args.overload_clients,
                                            args.overload_requests))
            overload_result["server_cpu_s"] = tree_cpu_seconds(litserve["rank_aware"].pid) - cpu_before
            print(f"overload: {overload_result}", flush=True)
    finally:
        for server in launched:
            if server.process is not None and server.pausable:
                server.signal_tree(signal.SIGCONT)
            server.stop()
    body, records = results_markdown(args, windows, started, skipped, ratio_rounds, overload_result, aot, idle)
    h.write(body, records)


def summarise(windows: List[Window]) -> dict:
    rps = [w.rps for w in windows]
    cpu = [1e3 * w.cpu_per_request for w in windows]
    return dict(rps=statistics.median(rps), rps_min=min(rps),
                p50=statistics.median(1e3 * float(np.percentile(w.latencies, 50)) for w in windows),
                p99=statistics.median(1e3 * float(np.percentile(w.latencies, 99)) for w in windows),
                cpu_ms=statistics.median(cpu), cpu_ms_min=min(cpu), load=statistics.median(w.load for w in windows),
                refused=sum(w.refused for w in windows))


def little_bound_ms(args, summary: dict, overload_result: dict) -> Tuple[float, float]:
    """(X, Q / X in ms): the overloaded server's throughput at the highest concurrency measured
    (requests/s, median), and the time Q = --max-queued admitted requests take to go through it
    at that rate (Little's law)."""
    rps = summary[(overload_result["server"], "rank_aware", overload_result["workers"], max(args.concurrency))]["rps"]
    return rps, 1e3 * args.max_queued / rps


def results_markdown(args, windows, started, skipped, ratio_rounds, overload_result, aot, idle):
    """The results file's body and its records: the contenders' table, the contenders left out,
    the rank-aware ratio, the overload test and the AOTInductor comparison."""
    summary = {key: summarise(value) for key, value in windows.items()}
    lines = ["| contender | path | workers | concurrency | requests/s (median, min) | p50 ms | p99 ms | "
             "CPU ms / request, all server processes (median, min) | throughput / in-process | 503/504 answers | "
             "load average |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, path, workers, concurrency), s in summary.items():
        reference = summary.get(("in process", path, 1, concurrency))      # none for a server with no model
        ratio = f"{s['rps'] / reference['rps']:.2f}" if reference else "-"
        lines.append(f"| {name} | {path} | {workers} | {concurrency} | {s['rps']:.0f} ({s['rps_min']:.0f}) | "
                     f"{s['p50']:.2f} | {s['p99']:.1f} | {s['cpu_ms']:.2f} ({s['cpu_ms_min']:.2f}) | "
                     f"{ratio} | {s['refused']} | {s['load']:.1f} |")
    niceness = os.nice(0)
    body = [f"DLRM, K = {args.context} context and M = {args.target} target fields, N = {args.candidates} candidates "
            f"per request, D = 16, FC [256, 128]; {args.threads} torch thread(s) per worker; max batch "
            f"{args.max_batch_size}, batch wait {args.batch_wait_ms} ms; {args.repeats} rounds x {args.duration} s per "
            f"contender and concurrency, contenders alternated; CPU counted over every process of each server's "
            f"tree; the benchmark and its servers ran at niceness {niceness}; "
            + ("each LitServe and FastAPI server measured alone, the others of those paused (SIGSTOP), Ray Serve, "
               "PyTriton and BentoML left running. " if args.pause_idle
               else "every server left running while the others are measured. ")
            + "Start times: "
            + (", ".join(f"{k} {v:.0f} s" for k, v in started.items()) or "none (in process only)") + "."
            + (f" Idle CPU with no requests (cores, over {args.idle_s} s, all servers running): "
               + ", ".join(f"{k} {v:.2f}" for k, v in idle.items()) + "." if idle else ""), "", *lines]
    if skipped:
        body += ["", "Left out:", "", *[f"* `{name}`: {reason}" for name, reason in skipped.items()]]
    if ratio_rounds:
        body += ["", f"Rank-aware against vanilla, CPU per request (vanilla / rank-aware), LitServe with "
                     f"{max(args.workers)} workers and in process, {args.ratio_rounds} alternated rounds of "
                     f"{args.ratio_duration} s per path; median over the rounds of the ratio within a round "
                     f"(min, max):",
                 "", "| concurrency | served | in process | served / in process | load average |",
                 "|---|---|---|---|---|"]
        for concurrency in args.concurrency:
            rounds = [r for r in ratio_rounds if r["concurrency"] == concurrency]
            columns = [[r["served"] for r in rounds], [r["in_process"] for r in rounds],
                       [r["served"] / r["in_process"] for r in rounds]]
            cells = [f"x{statistics.median(c):.2f} ({min(c):.2f}, {max(c):.2f})" for c in columns]
            body.append(f"| {concurrency} | " + " | ".join(cells)
                        + f" | {statistics.median(r['load'] for r in rounds):.1f} |")
    if overload_result:
        o = overload_result
        rps, bound = little_bound_ms(args, summary, o)
        answers = sum(v["count"] for v in o["statuses"].values())
        refused_p50 = o["statuses"].get("503", {}).get("p50_ms", math.nan)
        body += ["", f"Overload: {args.overload_clients} connections at once (one asyncio client, "
                     f"{o['client_cpu_s']:.2f} CPU s in all) x {args.overload_requests} requests back to back "
                     f"against `{o['server']}` "
                     f"(--max-queued {args.max_queued} --max-batch-size {args.max_batch_size} --timeout-s "
                     f"{args.timeout_s}), wall {o['wall_s']:.2f} s, load {o['load']:.1f}; "
                     f"{o['errors_not_json']} refusals without a JSON error body:", "",
                 "| status | count | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|",
                 *[f"| {status} | {v['count']} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | {v['max_ms']:.1f} |"
                   for status, v in o["statuses"].items()],
                 "", f"Bound on an admitted request's latency: it waits in the queue at most --timeout-s "
                     f"({args.timeout_s} s; LitServe answers 504 past it), is scored in one batch, and waits for the "
                     f"API server to read it and write its answer. At most Q = {args.max_queued} are admitted, so at "
                     f"the server's throughput X the queue holds about Q / X = {args.max_queued} / {rps:.0f} = "
                     f"{bound:.0f} ms of work (X: requests/s at concurrency {max(args.concurrency)} above). Under the "
                     f"flood the API server's one event loop also answers every other connection in turn: a 503 waits "
                     f"for one pass over them (p50 {refused_p50:.0f} ms), an admitted request for several (read, hand "
                     f"to a worker, answer); the server's processes used {o['server_cpu_s']:.2f} CPU s for the "
                     f"{answers} answers ({1e3 * o['server_cpu_s'] / answers:.2f} ms each)."]
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
               "start_s": started, "skipped": skipped, "rank_aware_ratio_rounds": ratio_rounds,
               "overload": overload_result, "aot": aot, "niceness": niceness, "idle_cpu_cores": idle,
               "pause_idle": args.pause_idle}
    return "\n".join(body) + "\n", records


if __name__ == "__main__":
    main()
