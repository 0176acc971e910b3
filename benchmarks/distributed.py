"""Data-parallel training on this machine: samples/s for 1 and N processes, and
the bytes DDP communicates per step.

    python -m benchmarks.distributed --rows 1000000 --models DNN DCNv2 --procs 1 2
    python -m benchmarks.distributed --comm-only --vocab-total 2086936

Throughput: one training epoch over ``--rows`` synthetic Criteo-like rows (the
Criteo-like dataset of ``benchmarks.fixtures``), each process on its shard of the
epoch's permutation, gloo on CPU. Communication: a DDP comm hook adds up the
bytes of every gradient bucket all-reduced in one step of DNN_criteo's
architecture (embedding 10, MLP [400, 400, 400]) whose 26 categorical tables
hold ``--vocab-total`` rows in all. Each of N processes runs ``cpus / N`` torch threads
(the measured layout), whatever ``--threads`` says.
"""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


from benchmarks.fixtures import criteo_like_params, prepare_criteo_like, train_split
from benchmarks.harness import Harness, clock

from fuxictr_ext import distributed as zoo_dist
from fuxictr_ext import get_model_class
from fuxictr_ext.data import TensorDataLoader, load_feature_map
from fuxictr_ext.testing import make_feature_map, random_batch
from fuxictr_ext.training import Trainer

MODEL_ARGS = {"DNN": {"embedding_dim": 10, "hidden_units": [400, 400, 400]},
              "DCNv2": {"embedding_dim": 10}}


def _join(rank: int, world: int, init_file: str) -> zoo_dist.DistContext:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    return zoo_dist.DistContext(rank=rank, world_size=world, local_rank=rank, backend="gloo", gpu=-1)


def _throughput_worker(rank, world, init_file, work_dir, rows, model_name, batch_size, threads, out):
    torch.set_num_threads(threads)
    context = _join(rank, world, init_file) if world > 1 else None
    params = criteo_like_params(work_dir, rows)
    fmap = load_feature_map(params)
    torch.manual_seed(0)
    model = get_model_class(model_name)(fmap, gpu=-1, verbose=0, model_root=os.path.join(work_dir, "ckpt"),
                                        metrics=["AUC"], **MODEL_ARGS[model_name])
    trainer = Trainer(model, context=context)
    loader = TensorDataLoader(fmap, train_split(params), split="train", batch_size=batch_size,
                              shuffle=True, rank=rank, world_size=world)
    model.train()
    if context is not None:
        dist.barrier()
    seen = 0
    with clock() as timing:
        for batch in loader:
            trainer.train_step(batch)
            seen += len(batch["label"])
    seconds = timing.wall_s
    if context is not None:
        totals = zoo_dist.gather_objects((seen, seconds))
        seen, seconds = sum(t[0] for t in totals), max(t[1] for t in totals)
    if rank == 0:
        with open(out, "w") as fd:
            fd.write(f"{seen} {seconds}")
    if context is not None:
        dist.destroy_process_group()


def _comm_worker(rank, world, init_file, vocab_total, out):
    context = _join(rank, world, init_file)
    per_field = [vocab_total // 26 + (1 if i < vocab_total % 26 else 0) for i in range(26)]
    fmap = make_feature_map(num_categorical=26, num_numeric=13, vocab_size=2)
    for name, size in zip([f"C{i}" for i in range(1, 27)], per_field):
        fmap.features[name]["vocab_size"] = size
    torch.manual_seed(0)
    model = get_model_class("DNN")(fmap, gpu=-1, verbose=0, model_root=tempfile.gettempdir(), metrics=["AUC"],
                                   **MODEL_ARGS["DNN"])
    trainer = Trainer(model, context=context)
    sent = []

    def counting_allreduce(state, bucket):
        sent.append(bucket.buffer().numel() * bucket.buffer().element_size())
        return dist.all_reduce(bucket.buffer().div_(world), async_op=True).get_future().then(lambda f: f.value()[0])

    trainer.forward_module.register_comm_hook(None, counting_allreduce)
    model.train()
    trainer.train_step(random_batch(fmap, batch_size=256, seed=rank))
    sent.clear()
    trainer.train_step(random_batch(fmap, batch_size=256, seed=10 + rank))
    if rank == 0:
        params = sum(p.numel() for p in model.parameters())
        with open(out, "w") as fd:
            fd.write(f"{sum(sent)} {len(sent)} {params}")
    dist.destroy_process_group()


def run(worker, world, *args) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.txt")
        init_file = os.path.join(tmp, "init")
        if world == 1 and worker is _throughput_worker:
            worker(0, 1, init_file, *args, out)
        else:
            mp.spawn(worker, args=(world, init_file, *args, out), nprocs=world, join=True)
        with open(out) as fd:
            return fd.read()


def main(argv=None) -> None:
    h = Harness("distributed", "Data-parallel training on this machine: samples/s for 1 and N processes, "
                               "and the bytes DDP communicates per step.")
    h.parser.add_argument("--rows", type=int, default=1_000_000)
    h.parser.add_argument("--batch-size", type=int, default=4096)
    h.parser.add_argument("--models", nargs="+", default=["DNN", "DCNv2"])
    h.parser.add_argument("--procs", nargs="+", type=int, default=[1, 2])
    h.parser.add_argument("--vocab-total", type=int, default=2_086_936,
                          help="categorical vocabulary rows of all tables together")
    h.parser.add_argument("--comm-only", action="store_true")
    args = h.parse(argv)
    if args.tiny:
        args.rows, args.batch_size, args.models, args.procs, args.vocab_total = 2000, 256, ["DNN"], [1], 10_000
    cpus = os.cpu_count()
    sent, buckets, params = map(int, run(_comm_worker, 2, args.vocab_total).split())
    lines = [f"DDP gradient all-reduce, DNN_criteo architecture, {args.vocab_total:,} vocabulary rows, "
             f"{params:,} parameters: {sent / 2**20:,.1f} MiB per step in {buckets} buckets "
             f"(dense float32 gradients of every parameter)"]
    records = [{"measure": "communication", "vocab_total": args.vocab_total, "parameters": params,
                "bytes_per_step": sent, "buckets": buckets}]
    if not args.comm_only:
        prepare_criteo_like(args.work_dir, args.rows)
        lines += ["", f"rows={args.rows:,} batch_size={args.batch_size} cpus={cpus} "
                      "(threads per process = cpus / procs)", "",
                  "| model | procs | samples/s | seconds |", "|---|---|---|---|"]
        for model_name in args.models:
            for world in args.procs:
                seen, seconds = run(_throughput_worker, world, args.work_dir, args.rows, model_name,
                                    args.batch_size, max(1, cpus // world)).split()
                records.append({"measure": "throughput", "model": model_name, "processes": world,
                                "samples": int(seen), "seconds": float(seconds)})
                lines.append(f"| {model_name} | {world} | {int(seen) / float(seconds):,.0f} | {float(seconds):.1f} |")
    h.write("\n".join(lines), records)


if __name__ == "__main__":
    main()
