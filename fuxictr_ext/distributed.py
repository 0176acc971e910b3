"""Data-parallel training on torch.distributed, launched by torchrun.

``run_expid.py`` reads the torchrun environment (WORLD_SIZE, RANK, LOCAL_RANK);
with WORLD_SIZE > 1 it calls :func:`init_from_env` and hands the context to the
trainer (``fuxictr_ext.training.Trainer(..., context=)``), which then

* wraps the model in ``DistributedDataParallel`` for the training forward only
  (models stay plain FuxiCTR models, checkpoints keep their plain keys);
* trains on this rank's shard of every epoch's seeded permutation
  (``TensorDataLoader(rank=, world_size=)``: equal-length shards, so no rank
  waits on a missing last batch);
* evaluates a strided share of the batches on every rank and gathers the
  predictions back into the single-process order, so AUC, logloss and gAUC equal
  a single process's;
* takes checkpoint, early-stop and learning-rate decisions on rank 0 and
  broadcasts them; only rank 0 writes checkpoints, logs and result lines;
* after each epoch writes ``<checkpoint>.resume`` (weights, optimizer, early-stop
  state and every rank's RNG state, tagged with this job's :func:`job_id` and the
  config's fingerprint; :mod:`fuxictr_ext.training.resume`); a worker restarted by torchrun's agent goes on from it
  bit-exactly, and a resume file of another job or config is never loaded;
* lets the other ranks wait for rank 0's dataset build in a barrier of its own
  with a long timeout (:func:`wait_for_main`), so a build that outlasts
  ``dist_timeout_s`` does not fail the job.

Embedding gradients travel as dense all-reduce of the full tables (DDP's
default): simple and exact, and the bytes per step grow with the vocabulary,
not the batch (see ``benchmarks/distributed.py``).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from dataclasses import dataclass
from typing import Callable, List

import torch
import torch.distributed as dist

from .config import ZooError

ENV_KEYS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
BUILD_WAIT_S = 7 * 24 * 3600.0  # how long the other ranks wait for rank 0's dataset build


class DistributedSetupError(ZooError):
    """A distributed setting that cannot work on this machine; names the setting."""


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    gpu: int  # device index of this process, -1 for CPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_world_size() -> int:
    """WORLD_SIZE when started by torchrun (1 for a plain process)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def restart_count() -> int:
    """How often torchrun's elastic agent has restarted this job's workers."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def job_id() -> str:
    """This torchrun job's identity, the same for every restart of its workers: torchrun's
    run id, the host, and the pid and start time of the elastic agent (the workers' parent).
    Rank 0's value is the job's (ZooModel broadcasts it)."""
    agent = os.getppid()
    try:
        with open(f"/proc/{agent}/stat") as fd:
            started = fd.read().rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks
    except OSError:
        started = "?"
    return f"{os.environ.get('TORCHELASTIC_RUN_ID', '')}:{socket.gethostname()}:{agent}:{started}"


def init_from_env(gpu: int, backend: str | None = None, timeout_s: float = 300.0) -> DistContext:
    """Join the torchrun process group.

    Args:
        gpu: run_expid's --gpu. -1: CPU processes (gloo). >= 0: one GPU per
            process, GPU index = LOCAL_RANK (NCCL).
        backend: ``dist_backend`` from the config; default gloo on CPU, nccl on GPU.
        timeout_s: ``dist_timeout_s``: a collective waiting longer than this on a
            dead rank fails instead of hanging.
    """
    missing = [k for k in ENV_KEYS if k not in os.environ]
    if missing:
        raise DistributedSetupError(f"torchrun environment incomplete: {missing} not set")
    rank, world, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    device = -1
    if gpu >= 0:
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if local_rank >= available:
            raise DistributedSetupError(
                f"--gpu {gpu} under torchrun uses one GPU per process (GPU = LOCAL_RANK), but local rank "
                f"{local_rank} has no GPU: this machine has {available}. Use --gpu -1 for CPU processes "
                "or fewer --nproc_per_node")
        device = local_rank
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device >= 0 else "gloo")
    if not dist.is_backend_available(backend):
        raise DistributedSetupError(f"dist_backend={backend!r} is not available in this torch build "
                                    f"(gloo: {dist.is_gloo_available()}, nccl: {dist.is_nccl_available()})")
    if backend == "nccl" and device < 0:
        raise DistributedSetupError("dist_backend='nccl' needs GPUs: pass --gpu 0 (one GPU per process)")
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        dist.init_process_group(backend=backend, store=_attempt_store(rank, world, timeout),
                                rank=rank, world_size=world, timeout=timeout)
    logging.info(f"Distributed: rank {rank}/{world}, local rank {local_rank}, backend {backend}, "
                 f"device {'cuda:%d' % device if device >= 0 else 'cpu'}")
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend, gpu=device)


def _attempt_store(rank: int, world: int, timeout: datetime.timedelta) -> dist.Store:
    """The rendezvous store, namespaced by torchrun's restart count.

    After a restart (``--max-restarts``) the new workers would otherwise read the
    dead workers' addresses, which the agent's store still holds, and fail to connect.
    """
    agent_hosts_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=(rank == 0 and not agent_hosts_store), timeout=timeout)
    return dist.PrefixStore(f"fuxictr_zoo/attempt_{restart_count()}", store)


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s value of ``obj`` on every rank."""
    box: List = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    out: List = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wait_for_main(context: DistContext, work: Callable[[], None], timeout_s: float = BUILD_WAIT_S) -> None:
    """Run ``work`` on rank 0 while the other ranks wait, however long it takes.

    The wait is a broadcast in a gloo group of its own whose timeout is ``timeout_s``
    (not the job's ``dist_timeout_s``, which is for collectives that should be
    quick). Rank 0's error is raised on every rank - as itself when it is a
    ValueError (the family of the zoo's clear errors, :class:`~fuxictr_ext.config.ZooError`), else
    as a RuntimeError quoting it - so all ranks stop with its message.
    """
    group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))
    error = None
    if context.is_main:
        try:
            work()
        except Exception as err:
            error = err
    box: List = [error if error is None or isinstance(error, ValueError) else RuntimeError(f"rank 0 failed: {error!r}")]
    dist.broadcast_object_list(box, src=0, group=group)
    dist.destroy_process_group(group)
    if error is not None:
        raise error
    if box[0] is not None:
        raise box[0]


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
