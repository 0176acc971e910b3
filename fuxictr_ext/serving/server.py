"""An HTTP scoring server for a trained model, on LitServe (``pip install .[serve]``).

LitServe is the engine: its API server (FastAPI/uvicorn) takes the HTTP requests and hands
them to ``--workers`` inference worker processes, each holding the scorer, with dynamic
batching: requests that arrive within ``--batch-wait-ms`` of each other, up to
``--max-batch-size`` of them, are encoded in one vectorised call of the raw-value encoder
and scored in one ragged call (rank-aware or vanilla). The engine was chosen by measurement
against Ray Serve, PyTriton, BentoML and a plain FastAPI app (``benchmarks/serving.py``,
``results/serving.md``).

Endpoints:

* ``POST /score`` - body: one request, the raw feature values as in the training data::

      {"context": {"user_id": "17", "hour": "13", ...},
       "candidates": {"item_id": ["3", "8", "5"], "category": ["1", "1", "4"], ...}}

  (``"num_candidates": N`` too when no field is a target). Answer ``{"scores": [N floats]}``
  in candidate order (header ``X-Batch-Size``: how many requests were scored in the same
  call). Every error is ``{"error": "<what is wrong>"}``: 400 (the body is not a JSON object:
  not JSON, not UTF-8, nested too deep), 413 (a body over ``--max-body-mb``, or more than
  ``--max-candidates`` candidates), 422 (a missing or unknown field, zero candidates, a value
  of the wrong type), 503 (``--max-queued`` requests already in flight: retry later), 504
  (the request waited longer than ``--timeout-s`` in the queue).
* ``GET /health`` - ``ok`` once a worker is ready; ``GET /info`` - the experiment, the path,
  the request fields and the server's limits.

Command::

    python -m fuxictr_ext.serving.server --config config --expid DLRM_demo_request --port 8000
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
from typing import List, Optional, Tuple

import torch

try:
    import litserve
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from starlette.exceptions import HTTPException
except ImportError as err:   # the optional extra
    raise ImportError(f"the scoring server needs LitServe: pip install 'fuxictr-zoo[serve]' "
                      f"(or pip install -e '.[serve]' in a clone); {err}") from err

from ..runner import ConfigError
from .answers import answer_requests, json_body, load_experiment_scorer, null_example
from .encoding import RequestError
from .load import DTYPES
from .scorers import PATHS, Scorer

SCORE_PATH = "/score"
JSON = "application/json"


def error_response(status: int, message: str, headers: Optional[dict] = None) -> Response:
    return Response(json_body({"error": message}), status_code=status, media_type=JSON, headers=headers)


class ScoringAPI(litserve.LitAPI):
    """LitServe's worker side: loads the experiment's scorer once per worker, scores batches.

    Args:
        workdir: the folder ``run_expid.py`` ran in (the config's relative ``data_root`` and
            ``model_root`` are read from there).
        config_dir, expid, checkpoint, path, dtype, max_candidates: as :func:`load_scorer`.
        max_batch_size: the most HTTP requests scored in one call.
        batch_wait_ms: how long the first queued request waits for others.
        torch_threads: intra-op threads of each worker.
    """

    def __init__(self, workdir: str, config_dir: str, expid: str, checkpoint: Optional[str] = None,
                 path: str = "rank_aware", dtype: Optional[str] = None, max_candidates: int = 1024,
                 max_batch_size: int = 32, batch_wait_ms: float = 2.0, torch_threads: int = 1,
                 package: Optional[str] = None):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_wait_ms / 1000.0, api_path=SCORE_PATH)
        self.options = dict(workdir=workdir, config_dir=config_dir, expid=expid, checkpoint=checkpoint, path=path,
                            dtype=dtype, max_candidates=max_candidates, torch_threads=torch_threads)
        self.package = package
        self.scorer: Optional[Scorer] = None

    def setup(self, device) -> None:
        torch.set_num_threads(self.options["torch_threads"])
        self.scorer = load_experiment_scorer(**self.options)
        if self.package is not None:
            self.scorer.use_compiled(self.package, null_example(self.scorer))

    def decode_request(self, request: dict) -> dict:
        return request        # FastAPI parsed the body into an object (else 400); the encoder checks the rest

    def batch(self, requests: List[object]) -> List[object]:
        return requests

    def predict(self, requests: List[object]) -> List[Tuple[int, bytes, int]]:
        return [(status, body, len(requests)) for status, body in answer_requests(self.scorer, requests)]

    def unbatch(self, answers: List[Tuple[int, bytes, int]]) -> List[Tuple[int, bytes, int]]:
        return answers

    def encode_response(self, answer: Tuple[int, bytes, int]) -> Response:
        status, body, batch_size = answer
        return Response(body, status_code=status, media_type=JSON, headers={"X-Batch-Size": str(batch_size)})


class UnbatchedScoringAPI(ScoringAPI):
    """:class:`ScoringAPI` for ``max_batch_size=1`` (``--max-batch-size 1``): LitServe then runs its
    unbatched loop, which hands each request to ``predict`` alone (no ``batch`` / ``unbatch``);
    here it is scored as a batch of one. That loop waits for a request in a blocking read of the
    queue, where the batched loop polls it every millisecond (idle workers use CPU) and holds a
    request for the rest of its ``--batch-wait-ms`` window.

    Example:
        >>> scoring_server("config", "DLRM_demo_request", max_batch_size=1)   # doctest: +SKIP
    """

    def decode_request(self, request: dict) -> List[object]:
        return [request]

    def encode_response(self, answers: List[Tuple[int, bytes, int]]) -> Response:
        return super().encode_response(answers[0])


class AdmissionControl:
    """ASGI middleware in front of ``POST /score``: a bounded queue and a body-size limit.

    A request that finds ``max_queued`` requests of this API server in flight (queued or being
    scored) is answered 503 at once; a body over ``max_body_bytes`` (its Content-Length, or the
    bytes read so far when it has none) is answered 413 without being parsed.
    """

    def __init__(self, app, max_queued: int, max_body_bytes: int):
        self.app, self.max_queued, self.max_body_bytes = app, max_queued, max_body_bytes
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != SCORE_PATH:
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return await error_response(413, f"the body is {length.decode('latin-1')} bytes, more than the "
                                             f"server's limit of {self.max_body_bytes}")(scope, receive, send)
        if self.in_flight >= self.max_queued:
            return await error_response(503, f"the server is busy ({self.in_flight} requests in flight, the "
                                             f"limit is {self.max_queued}); retry later",
                                        {"Retry-After": "1"})(scope, receive, send)
        received = 0

        async def bounded_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise HTTPException(413, f"the body is more than the server's limit of {self.max_body_bytes} bytes")
            return message

        self.in_flight += 1
        try:
            await self.app(scope, bounded_receive, send)
        finally:
            self.in_flight -= 1


async def http_error(request, err: HTTPException) -> Response:
    """Every HTTP error as ``{"error": ...}``; a body FastAPI could not parse names the cause
    (not UTF-8, nested too deep)."""
    cause = err.__cause__ or err.__context__
    detail = f"{err.detail}: {cause!r}" if err.status_code == 400 and cause else str(err.detail)
    return error_response(err.status_code, detail, getattr(err, "headers", None))


async def body_error(request, err: RequestValidationError) -> Response:
    """FastAPI's check of the body: not JSON, or JSON that is not an object."""
    problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in err.errors())
    return error_response(400, f"the body must be one JSON object (a request): {problems}")


def scoring_server(config_dir: str, expid: str, checkpoint: Optional[str] = None, path: str = "rank_aware",
                   dtype: Optional[str] = None, max_candidates: int = 1024, max_batch_size: int = 32,
                   batch_wait_ms: float = 2.0, torch_threads: int = 1, workers: int = 1, max_queued: int = 32,
                   timeout_s: float = 1.0, max_body_bytes: int = 8 << 20, package: Optional[str] = None,
                   workdir: Optional[str] = None) -> litserve.LitServer:
    """The LitServe server of :class:`ScoringAPI` (``scoring_server(...).run(host=, port=)``).

    Args:
        config_dir, expid, checkpoint, path, dtype, max_candidates: as :func:`load_scorer`.
        max_batch_size, batch_wait_ms, torch_threads: as :class:`ScoringAPI`.
        workers: inference worker processes (each loads the model; use one per core).
        max_queued: requests in flight per API server beyond which a request gets 503.
        timeout_s: a request still queued after this long gets 504.
        max_body_bytes: bodies larger than this get 413.
        package: an AOTInductor package of the scorer (:meth:`Scorer.compile`) the workers score with.
        workdir: the folder paths are resolved against (default the current folder).

    Raises:
        ValueError: an unknown path or dtype, or a limit below 1.
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    for name, value in (("workers", workers), ("max_queued", max_queued), ("max_batch_size", max_batch_size),
                        ("max_body_bytes", max_body_bytes), ("max_candidates", max_candidates)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if timeout_s <= batch_wait_ms / 1000.0:
        raise ValueError(f"timeout_s={timeout_s} must be longer than the batch wait ({batch_wait_ms} ms)")
    workdir = os.path.abspath(workdir or os.getcwd())
    api_class = ScoringAPI if max_batch_size > 1 else UnbatchedScoringAPI
    api = api_class(workdir, os.path.join(workdir, config_dir), expid,
                    os.path.join(workdir, checkpoint) if checkpoint else None, path, dtype, max_candidates,
                    max_batch_size, batch_wait_ms, torch_threads, package)
    server = litserve.LitServer(
        api, accelerator="cpu", devices=1, workers_per_device=workers, timeout=timeout_s,
        # fast_queue (ZeroMQ answers) is inert in LitServe 0.2.19, whose LitServer drops it (upstream
        # issue Lightning-AI/LitServe#751): requests and answers go through multiprocessing-manager queues.
        fast_queue=True, middlewares=[(AdmissionControl, {"max_queued": max_queued, "max_body_bytes": max_body_bytes})],
        model_metadata={"expid": expid, "path": path, "max_candidates": max_candidates,
                        "max_batch_size": max_batch_size, "workers": workers, "max_queued": max_queued,
                        "timeout_s": timeout_s, "max_body_bytes": max_body_bytes, "compiled": package is not None})
    server.app.add_exception_handler(HTTPException, http_error)
    server.app.add_exception_handler(RequestValidationError, body_error)
    return server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fuxictr_ext.serving.server", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="./config/")
    parser.add_argument("--expid", required=True)
    parser.add_argument("--checkpoint", default=None, help="default: the one run_expid.py wrote")
    parser.add_argument("--path", choices=PATHS, default="rank_aware")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=None,
                        help="inference worker processes (default: one per core this process may use, less the "
                             "one the API server and the queue manager take; at least 1)")
    parser.add_argument("--api-servers", type=int, default=1, help="HTTP server processes in front of the workers")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per worker")
    parser.add_argument("--max-candidates", type=int, default=1024)
    parser.add_argument("--max-batch-size", type=int, default=32, help="HTTP requests scored in one call")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--max-queued", type=int, default=32,
                        help="requests in flight per API server beyond which a request gets 503")
    parser.add_argument("--timeout-s", type=float, default=1.0, help="a request queued longer gets 504")
    parser.add_argument("--max-body-mb", type=float, default=8.0, help="larger bodies get 413")
    parser.add_argument("--compile", action="store_true",
                        help="score with the scorer compiled ahead of time by AOTInductor (compiled once at start)")
    return parser


def default_workers() -> int:
    """One inference worker per core this process may run on, less one core for the API server and
    LitServe's queue manager; at least 1. On 2 cores that is 1 worker, which measured ahead of 2
    at concurrency 8 and level or ahead at 1 (``results/serving.md``, README "Serving")."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    """``fuxictr-zoo serve`` (``python -m fuxictr_ext.serving.server``): serve until SIGTERM or Ctrl-C;
    2 (with the cause) when the server cannot start."""
    args = build_parser().parse_args(argv)
    if args.workers is None:
        args.workers = default_workers()
    package_dir = tempfile.mkdtemp(prefix="fuxictr_zoo_scorer_") if args.compile else None
    try:
        cwd = os.getcwd()
        try:                                 # fail here, in seconds, rather than in the spawned workers
            scorer = load_experiment_scorer(cwd, args.config, args.expid, args.checkpoint, args.path, args.dtype,
                                            args.max_candidates)
            package = scorer.compile(null_example(scorer), os.path.join(package_dir, "scorer.pt2")) \
                if args.compile else None
        finally:
            os.chdir(cwd)
        server = scoring_server(args.config, args.expid, args.checkpoint, args.path, args.dtype, args.max_candidates,
                                args.max_batch_size, args.batch_wait_ms, args.threads, args.workers, args.max_queued,
                                args.timeout_s, int(args.max_body_mb * (1 << 20)), package)
        print(f"serving {args.expid} ({args.path}{', compiled' if args.compile else ''}) on "
              f"http://{args.host}:{args.port} with {args.workers} worker(s)  (POST /score, GET /health, GET /info)",
              flush=True)
        signal.signal(signal.SIGTERM, stop_on_sigterm)        # LitServe shuts its workers down on KeyboardInterrupt
        server.run(host=args.host, port=args.port, num_api_servers=args.api_servers, generate_client_file=False,
                   log_level="warning")
    except (ConfigError, RequestError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if package_dir is not None:
            shutil.rmtree(package_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
