"""An HTTP scoring server for a trained model, on Ray Serve (``pip install .[serve]``).

Ray Serve is the engine: it runs the HTTP proxy (FastAPI/uvicorn), the model replica(s)
and the dynamic batching (``@serve.batch``): concurrent HTTP requests that arrive within
``batch_wait_ms`` of each other, up to ``max_batch_size`` of them, are scored in one
ragged call (``RequestBatch.concat``) of the rank-aware or vanilla scorer.

Endpoints:

* ``POST /score`` - body: one request, the raw feature values as in the training data::

      {"context": {"user_id": "17", "hour": "13", ...},
       "candidates": {"item_id": ["3", "8", "5"], "category": ["1", "1", "4"], ...}}

  (``"num_candidates": N`` too when no field is a target). Answer ``{"scores": [N floats]}``
  in candidate order. A bad request gets 400 (not JSON), 413 (more than ``max_candidates``
  candidates) or 422 (a missing or unknown field, zero candidates, a value of the wrong
  type) with ``{"error": "<what is wrong>"}``; the server keeps serving.
* ``GET /health`` - ``{"status": "ok", ...}`` with the experiment, the path, the request
  fields, the requests and batches scored so far and the replica's CPU seconds.

Command::

    python -m fuxictr_ext.serving.server --config config --expid DLRM_demo_request --port 8000
"""


import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from typing import List, Optional

import torch

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from ray import serve
except ImportError as err:   # the optional extra
    raise ImportError(f"the scoring server needs Ray Serve: pip install 'fuxictr-zoo[serve]' "
                      f"(or pip install -e '.[serve]' in a clone); {err}") from err

from .encoding import RequestError, TooManyCandidatesError
from .load import DTYPES, load_scorer
from .requests import RequestBatch
from .scorers import PATHS

app = FastAPI(title="fuxictr-zoo scoring server")


@serve.deployment
@serve.ingress(app)
class ScoringServer:
    """One model replica: loads the experiment's scorer once, batches concurrent requests.

    Args:
        workdir: the folder ``run_expid.py`` ran in (the config's relative ``data_root`` and
            ``model_root`` are read from there).
        config_dir, expid, checkpoint, path, dtype, max_candidates: as :func:`load_scorer`.
        max_batch_size: the most HTTP requests scored in one call.
        batch_wait_ms: how long the first queued request waits for others.
        torch_threads: intra-op threads of the replica.
    """

    def __init__(self, workdir: str, config_dir: str, expid: str, checkpoint: Optional[str] = None,
                 path: str = "rank_aware", dtype: Optional[str] = None, max_candidates: int = 1024,
                 max_batch_size: int = 32, batch_wait_ms: float = 2.0, torch_threads: int = 1):
        os.chdir(workdir)
        torch.set_num_threads(torch_threads)
        self.scorer = load_scorer(config_dir, expid, checkpoint, path, dtype=DTYPES.get(dtype),
                                  max_candidates=max_candidates)
        self.info = {"expid": expid, "model": self.scorer.model.__class__.__name__, "path": path,
                     "context_fields": list(self.scorer.encoder.context_columns),
                     "target_fields": list(self.scorer.encoder.target_columns),
                     "max_candidates": max_candidates, "max_batch_size": max_batch_size}
        self.batches = self.requests = self.largest_batch = 0
        self.score_batch.set_max_batch_size(max_batch_size)
        self.score_batch.set_batch_wait_timeout_s(batch_wait_ms / 1000.0)

    @app.get("/health")
    def health(self) -> dict:
        return dict(self.info, status="ok", batches=self.batches, requests=self.requests,
                    largest_batch=self.largest_batch, cpu_seconds=time.process_time())

    @app.post("/score")
    async def score(self, http_request: Request):
        try:
            body = json.loads(await http_request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return JSONResponse({"error": f"the body is not JSON: {err}"}, status_code=400)
        try:
            batch = self.scorer.encode([body])
        except TooManyCandidatesError as err:
            return JSONResponse({"error": str(err)}, status_code=413)
        except RequestError as err:
            return JSONResponse({"error": str(err)}, status_code=422)
        scores = await self.score_batch(batch)
        return Response(json.dumps({"scores": scores}), media_type="application/json")   # no pydantic encoding

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def score_batch(self, batches: List[RequestBatch]) -> List[List[float]]:
        """Score the queued requests in one ragged call; one score list per request."""
        merged = RequestBatch.concat(batches)
        scores = await asyncio.to_thread(self.scorer.score_batch, merged)   # the event loop keeps accepting
        self.batches, self.requests = self.batches + 1, self.requests + len(batches)
        self.largest_batch = max(self.largest_batch, len(batches))
        return [s.tolist() for s in merged.split(scores.double())]


def scoring_app(config_dir: str, expid: str, checkpoint: Optional[str] = None, path: str = "rank_aware",
                dtype: Optional[str] = None, max_candidates: int = 1024, max_batch_size: int = 32,
                batch_wait_ms: float = 2.0, torch_threads: int = 1, replicas: int = 1, workdir: Optional[str] = None):
    """The Ray Serve application of :class:`ScoringServer` (``serve.run(scoring_app(...))``).

    Paths are resolved against ``workdir`` (default the current folder).
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    workdir = os.path.abspath(workdir or os.getcwd())
    deployment = ScoringServer.options(num_replicas=replicas, max_ongoing_requests=max(4 * max_batch_size, 64),
                                       ray_actor_options={"num_cpus": torch_threads})
    return deployment.bind(workdir, os.path.join(workdir, config_dir), expid,
                           os.path.join(workdir, checkpoint) if checkpoint else None, path, dtype, max_candidates,
                           max_batch_size, batch_wait_ms, torch_threads)


def start(application, host: str = "127.0.0.1", port: int = 8000, num_cpus: Optional[int] = None,
          name: str = "default", route_prefix: str = "/") -> None:
    """Start Ray (locally, unless a cluster is connected), the HTTP proxy on ``host:port``, and
    ``application`` under ``route_prefix`` (several applications may run side by side)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(application, name=name, route_prefix=route_prefix)


def stop() -> None:
    """Shut the application, Ray Serve and the local Ray down."""
    import ray

    serve.shutdown()
    ray.shutdown()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fuxictr_ext.serving.server", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="./config/")
    parser.add_argument("--expid", required=True)
    parser.add_argument("--checkpoint", default=None, help="default: the one run_expid.py wrote")
    parser.add_argument("--path", choices=PATHS, default="rank_aware")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-candidates", type=int, default=1024)
    parser.add_argument("--max-batch-size", type=int, default=32, help="HTTP requests scored in one call")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per replica")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    return parser


def main(argv=None) -> int:
    """``fuxictr-zoo serve`` (``python -m fuxictr_ext.serving.server``): serve until SIGTERM or Ctrl-C."""
    args = build_parser().parse_args(argv)
    start(scoring_app(args.config, args.expid, args.checkpoint, args.path, args.dtype, args.max_candidates,
                      args.max_batch_size, args.batch_wait_ms, args.threads, args.replicas),
          args.host, args.port, args.num_cpus)
    print(f"serving {args.expid} ({args.path}) on http://{args.host}:{args.port}  (POST /score, GET /health)",
          flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
