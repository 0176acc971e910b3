"""Peak memory and time of build_dataset by encoding chunk size and statistics pass.

    python -m benchmarks.build_memory --rows 500000 --chunks 100000 1000000000
    python -m benchmarks.build_memory --rows 16000000 --chunks 1000000 --statistics per_column fuxictr

Uses the raw synthetic Criteo-like files of benchmarks.data_loading (generated in
--workdir if missing). Each (chunk size, statistics pass) builds the dataset into a
fresh folder in a fresh process (one torch thread) and reports the build's seconds,
the process's peak RSS (VmHWM) and the peak of each phase (VmHWM reset through
/proc/self/clear_refs at the start of the phase): ``statistics`` (FuxiCTR's
FeatureProcessor.fit) and ``encode <split>``. A chunk size at least the split's row
count is the build without chunking (the whole split encoded at once); statistics
``per_column`` is the project's pass (ZooFeatureProcessor), ``fuxictr`` FuxiCTR's own
(all columns' queries collected together). Rounds alternate the combinations; printed
per combination: median and min seconds, max peak RSS, max peak of each phase.
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


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fd:
        fd.write("5")  # VmHWM := VmRSS


def _record_phase_peaks(zoo_build, peaks: dict) -> None:
    """Wrap the build's statistics pass and split encoding so that each records its own peak RSS."""
    from benchmarks.shared_loading import _proc_mb

    fit, write_split = zoo_build.ZooFeatureProcessor.fit, zoo_build._write_split

    def fit_recorded(self, *args, **kwargs):
        peaks["start and validation"] = _proc_mb("/proc/self/status", "VmHWM")
        _reset_peak()
        out = fit(self, *args, **kwargs)
        peaks["statistics"] = _proc_mb("/proc/self/status", "VmHWM")
        return out

    def write_split_recorded(processor, ddf, out_path):
        _reset_peak()
        rows = write_split(processor, ddf, out_path)
        peaks[f"encode {os.path.splitext(os.path.basename(out_path))[0]}"] = _proc_mb("/proc/self/status", "VmHWM")
        return rows

    zoo_build.ZooFeatureProcessor.fit = fit_recorded
    zoo_build._write_split = write_split_recorded


def build_once(params: dict, chunk_rows: int, statistics_pass: str = "per_column") -> dict:
    """Build ``params``'s dataset (rebuilding it) with ``chunk_rows`` rows encoded at a time and
    the ``statistics_pass`` (``per_column`` or ``fuxictr``), in this process (call it in a fresh one: it wraps the build's
    functions) with one torch thread; its seconds, this process's peak RSS (VmHWM) and each
    phase's peak RSS."""
    import torch
    from fuxictr.preprocess import FeatureProcessor

    from benchmarks.shared_loading import _proc_mb
    from fuxictr_ext.data import build as zoo_build

    torch.set_num_threads(1)
    zoo_build.BUILD_CHUNK_ROWS = chunk_rows
    if statistics_pass == "fuxictr":
        zoo_build.ZooFeatureProcessor._collect_statistics = FeatureProcessor._collect_statistics
    peaks: dict = {}
    _record_phase_peaks(zoo_build, peaks)
    t0 = time.time()
    zoo_build.build_dataset(dict(params, rebuild_dataset=True))
    seconds = time.time() - t0
    # the phase peaks reset VmHWM, so the build's peak is the largest of them and the last reading
    peak = max([*peaks.values(), _proc_mb("/proc/self/status", "VmHWM")])
    return {"chunk_rows": chunk_rows, "statistics": statistics_pass, "seconds": seconds, "peak_rss_mb": peak,
            "phase_peak_mb": {k: round(v) for k, v in peaks.items()}}


def _build_in_fresh_folder(workdir: str, rows: int, chunk_rows: int, statistics_pass: str) -> dict:
    from benchmarks.data_loading import _params

    params = dict(_params(workdir, rows), data_root=os.path.join(workdir, f"build_chunk_{chunk_rows}"))
    shutil.rmtree(params["data_root"], ignore_errors=True)
    try:
        return build_once(params, chunk_rows, statistics_pass)
    finally:
        shutil.rmtree(params["data_root"], ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=500_000, help="training rows")
    parser.add_argument("--chunks", type=int, nargs="+", default=[100_000, 1_000_000_000])
    parser.add_argument("--statistics", nargs="+", default=["per_column"], choices=["per_column", "fuxictr"])
    parser.add_argument("--workdir", default="./bench_data")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--once", nargs=2, metavar=("CHUNK_ROWS", "STATISTICS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.once is not None:
        print(json.dumps(_build_in_fresh_folder(args.workdir, args.rows, int(args.once[0]), args.once[1])))
        return
    from benchmarks.data_loading import generate_raw
    generate_raw(args.workdir, args.rows)
    combinations = [(chunk, stats_pass) for chunk in args.chunks for stats_pass in args.statistics]
    results = []
    for _ in range(args.repeats):
        for chunk, stats_pass in combinations:
            out = subprocess.run([sys.executable, "-m", "benchmarks.build_memory", "--rows", str(args.rows),
                                  "--workdir", args.workdir, "--once", str(chunk), stats_pass],
                                 capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    print(f"rows={args.rows} torch_threads=1 repeats={args.repeats} load_1min={os.getloadavg()[0]:.2f}")
    print(f"{'chunk rows':>12} {'statistics':>10} {'median s':>9} {'min s':>7} {'peak RSS MB':>12}  phase peaks MB")
    for chunk, stats_pass in combinations:
        rs = [r for r in results if (r["chunk_rows"], r["statistics"]) == (chunk, stats_pass)]
        seconds = [r["seconds"] for r in rs]
        phases = {k: max(r["phase_peak_mb"][k] for r in rs) for k in rs[0]["phase_peak_mb"]}
        print(f"{chunk:>12,} {stats_pass:>10} {statistics.median(seconds):>9.1f} {min(seconds):>7.1f} "
              f"{max(r['peak_rss_mb'] for r in rs):>12,.0f}  {json.dumps(phases)}")


if __name__ == "__main__":
    main()
