"""Synthetic Criteo-like data at size: generation, build and loader memory and speed.

    python -m benchmarks.data_at_size --rows 4000000 --work-dir /tmp/dt_scale

``--rows`` training rows; ``rows * 5 / 4`` rows are generated (train / valid / test =
80 / 10 / 10) with ``benchmarks.fixtures``' Criteo-like dataset (13 numeric, 26 categorical
fields, label). Each stage runs in a fresh process with --threads torch threads and gives
one JSON record with the machine's 1-minute load average at its end:

1. ``generate``: the streamed synthetic generator - seconds, peak RSS (VmHWM), raw bytes;
2. ``build``: ``build_dataset`` (default ``BUILD_CHUNK_ROWS``) - seconds, VmHWM, each phase's
   peak RSS (``benchmarks.build_memory.build_once``), built bytes;
3. ``load``: ``benchmarks.shared_loading.compare`` over ``--configs`` (loader:processes,
   alternating, ``--repeats`` rounds): one shuffled pass at ``--batch-size`` per process,
   rows/s, VmHWM and PSS per process (see that script), then its summary table.

The work folder (``--work-dir``) is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from benchmarks.build_memory import build_once
from benchmarks.fixtures import criteo_like_params, raw_rows
from benchmarks.harness import Harness, clock, peak_rss_mb
from benchmarks.shared_loading import compare, summary


def _bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def generate_once(work_dir: str, rows: int) -> dict:
    from fuxictr_ext.data.synthetic import write

    raw = os.path.join(work_dir, "raw")
    with clock() as t:
        write("criteo", raw_rows(rows), raw, seed=7)
    return {"stage": "generate", "rows": raw_rows(rows), "seconds": round(t.wall_s, 1),
            "peak_rss_mb": round(peak_rss_mb()), "raw_mb": round(_bytes(raw) / 2 ** 20)}


def build_stage(work_dir: str, rows: int) -> dict:
    from fuxictr_ext.data import build as zoo_build

    params = criteo_like_params(work_dir, rows)
    result = build_once(params, zoo_build.BUILD_CHUNK_ROWS)
    built = os.path.join(params["data_root"], params["dataset_id"])
    return {"stage": "build", "train_rows": rows, "chunk_rows": result["chunk_rows"],
            "seconds": round(result["seconds"], 1), "peak_rss_mb": round(result["peak_rss_mb"]),
            "phase_peak_mb": result["phase_peak_mb"], "built_mb": round(_bytes(built) / 2 ** 20)}


def _in_fresh_process(stage: str, work_dir: str, rows: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.data_at_size", "--rows", str(rows),
                          "--work-dir", work_dir, "--threads", str(threads), "--once", stage],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    h = Harness("data_at_size", __doc__.split("\n")[0])
    h.parser.add_argument("--rows", type=int, default=4_000_000, help="training rows")
    h.parser.add_argument("--batch-size", type=int, default=4096)
    h.parser.add_argument("--stages", nargs="+", default=["generate", "build", "load"],
                          choices=["generate", "build", "load"])
    h.parser.add_argument("--configs", nargs="+", default=["memory:1", "mapped:1", "memory:2", "mapped:2"],
                          help="loader:processes pairs measured in the load stage")
    h.parser.add_argument("--repeats", type=int, default=2)
    h.parser.add_argument("--keep", action="store_true", help="keep the work folder")
    h.parser.add_argument("--once", choices=["generate", "build"], help=argparse.SUPPRESS)
    args = h.parse(argv)
    if args.once:
        stage = generate_once if args.once == "generate" else build_stage
        print(json.dumps(dict(stage(args.work_dir, args.rows), load_1min=os.getloadavg()[0])))
        return
    if args.tiny:
        args.rows, args.batch_size, args.repeats, args.configs = 2000, 256, 1, ["memory:1"]
    lines = [f"train_rows={args.rows} batch_size={args.batch_size} torch_threads={args.threads} "
             f"load_1min={os.getloadavg()[0]:.2f}", ""]
    records = []
    try:
        for stage in ("generate", "build"):
            if stage in args.stages:
                records.append(_in_fresh_process(stage, args.work_dir, args.rows, args.threads))
                print(json.dumps(records[-1]), flush=True)
        if records:
            lines += ["```", *(json.dumps(record) for record in records), "```", ""]
        if "load" in args.stages:
            configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs]
            results = compare(args.work_dir, args.rows, args.batch_size, args.repeats, configs, args.threads)
            records += results
            lines += [f"load_1min={os.getloadavg()[0]:.2f} repeats={args.repeats}", "", summary(results)]
        h.write("\n".join(lines), records)
    finally:
        if not args.keep:
            shutil.rmtree(args.work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
