"""Peak memory and time of build_dataset by encoding chunk size.

    python -m benchmarks.build_memory --rows 500000 --chunks 100000 1000000000

Uses the raw synthetic Criteo-like files of benchmarks.data_loading (generated in
--workdir if missing). Each chunk size builds the dataset into a fresh folder in
a fresh process (one torch thread) and reports the build's seconds and the
process's peak RSS (VmHWM); a chunk size at least the split's row count is the
build without chunking (the whole split encoded at once). Rounds alternate the
chunk sizes; printed per chunk size: median and min seconds, max peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time


def build_once(params: dict, chunk_rows: int) -> dict:
    """Build ``params``'s dataset (rebuilding it) with ``chunk_rows`` rows encoded at a time, in
    this process with one torch thread; its seconds and this process's peak RSS (VmHWM)."""
    import torch

    from benchmarks.shared_loading import _proc_mb
    from fuxictr_ext.data import build as zoo_build

    torch.set_num_threads(1)
    zoo_build.BUILD_CHUNK_ROWS = chunk_rows
    t0 = time.time()
    zoo_build.build_dataset(dict(params, rebuild_dataset=True))
    seconds = time.time() - t0
    return {"chunk_rows": chunk_rows, "seconds": seconds, "peak_rss_mb": _proc_mb("/proc/self/status", "VmHWM")}


def _build_in_fresh_folder(workdir: str, rows: int, chunk_rows: int) -> dict:
    from benchmarks.data_loading import _params

    params = dict(_params(workdir, rows), data_root=os.path.join(workdir, f"build_chunk_{chunk_rows}"))
    shutil.rmtree(params["data_root"], ignore_errors=True)
    try:
        return build_once(params, chunk_rows)
    finally:
        shutil.rmtree(params["data_root"], ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=500_000, help="training rows")
    parser.add_argument("--chunks", type=int, nargs="+", default=[100_000, 1_000_000_000])
    parser.add_argument("--workdir", default="./bench_data")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--once", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.once is not None:
        print(json.dumps(_build_in_fresh_folder(args.workdir, args.rows, args.once)))
        return
    from benchmarks.data_loading import generate_raw
    generate_raw(args.workdir, args.rows)
    results = []
    for _ in range(args.repeats):
        for chunk in args.chunks:
            out = subprocess.run([sys.executable, "-m", "benchmarks.build_memory", "--rows", str(args.rows),
                                  "--workdir", args.workdir, "--once", str(chunk)],
                                 capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    print(f"rows={args.rows} torch_threads=1 repeats={args.repeats}")
    print(f"{'chunk rows':>12} {'median s':>9} {'min s':>7} {'peak RSS MB':>12}")
    for chunk in args.chunks:
        rs = [r for r in results if r["chunk_rows"] == chunk]
        seconds = [r["seconds"] for r in rs]
        print(f"{chunk:>12,} {statistics.median(seconds):>9.1f} {min(seconds):>7.1f} "
              f"{max(r['peak_rss_mb'] for r in rs):>12,.0f}")


if __name__ == "__main__":
    main()
