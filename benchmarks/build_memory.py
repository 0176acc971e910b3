"""Peak memory and time of build_dataset by encoding chunk size and statistics pass.

    python -m benchmarks.build_memory --rows 500000 --chunks 100000 1000000000
    python -m benchmarks.build_memory --rows 16000000 --chunks 1000000 --statistics per_column fuxictr

Uses the raw synthetic Criteo-like files of ``benchmarks.fixtures`` (generated in
--work-dir if missing). Each (chunk size, statistics pass) builds the dataset into a
fresh folder in a fresh process (one torch thread) and reports the build's seconds,
the process's peak RSS (VmHWM) and the peak of each phase (VmHWM reset through
/proc/self/clear_refs at the start of the phase): ``statistics`` (FuxiCTR's
FeatureProcessor.fit) and ``encode <split>``. A chunk size at least the split's row
count is the build without chunking (the whole split encoded at once); statistics
``per_column`` is the project's pass (ZooFeatureProcessor), ``fuxictr`` FuxiCTR's own
(all columns' queries collected together). Rounds alternate the combinations; written
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

from benchmarks.fixtures import criteo_like_params, generate_raw
from benchmarks.harness import Harness, clock, peak_rss_mb, reset_peak_rss


def _record_phase_peaks(zoo_build, peaks: dict) -> None:
    """Wrap the build's statistics pass and split encoding so that each records its own peak RSS."""
    fit, write_split = zoo_build.ZooFeatureProcessor.fit, zoo_build._write_split

    def fit_recorded(self, *args, **kwargs):
        peaks["start and validation"] = peak_rss_mb()
        reset_peak_rss()
        out = fit(self, *args, **kwargs)
        peaks["statistics"] = peak_rss_mb()
        return out

    def write_split_recorded(processor, ddf, out_path):
        reset_peak_rss()
        rows = write_split(processor, ddf, out_path)
        peaks[f"encode {os.path.splitext(os.path.basename(out_path))[0]}"] = peak_rss_mb()
        return rows

    zoo_build.ZooFeatureProcessor.fit = fit_recorded
    zoo_build._write_split = write_split_recorded


def build_once(params: dict, chunk_rows: int, statistics_pass: str = "per_column") -> dict:
    """Build ``params``'s dataset (rebuilding it) with ``chunk_rows`` rows encoded at a time and
    the ``statistics_pass`` (``per_column`` or ``fuxictr``), in this process (call it in a fresh one: it wraps the build's
    functions) with the caller's torch threads; its seconds, this process's peak RSS (VmHWM) and each
    phase's peak RSS."""
    from fuxictr.preprocess import FeatureProcessor

    from fuxictr_ext.data import build as zoo_build

    zoo_build.BUILD_CHUNK_ROWS = chunk_rows
    if statistics_pass == "fuxictr":
        zoo_build.ZooFeatureProcessor._collect_statistics = FeatureProcessor._collect_statistics
    peaks: dict = {}
    _record_phase_peaks(zoo_build, peaks)
    with clock() as t:
        zoo_build.build_dataset(dict(params, rebuild_dataset=True))
    # the phase peaks reset VmHWM, so the build's peak is the largest of them and the last reading
    peak = max([*peaks.values(), peak_rss_mb()])
    return {"chunk_rows": chunk_rows, "statistics": statistics_pass, "seconds": t.wall_s, "peak_rss_mb": peak,
            "phase_peak_mb": {k: round(v) for k, v in peaks.items()}}


def _build_in_fresh_folder(work_dir: str, rows: int, chunk_rows: int, statistics_pass: str) -> dict:
    params = dict(criteo_like_params(work_dir, rows), data_root=os.path.join(work_dir, f"build_chunk_{chunk_rows}"))
    shutil.rmtree(params["data_root"], ignore_errors=True)
    try:
        return build_once(params, chunk_rows, statistics_pass)
    finally:
        shutil.rmtree(params["data_root"], ignore_errors=True)


def main(argv=None) -> None:
    h = Harness("build_memory", __doc__.split("\n")[0])
    h.parser.add_argument("--rows", type=int, default=500_000, help="training rows")
    h.parser.add_argument("--chunks", type=int, nargs="+", default=[100_000, 1_000_000_000])
    h.parser.add_argument("--statistics", nargs="+", default=["per_column"], choices=["per_column", "fuxictr"])
    h.parser.add_argument("--repeats", type=int, default=2)
    h.parser.add_argument("--once", nargs=2, metavar=("CHUNK_ROWS", "STATISTICS"), help=argparse.SUPPRESS)
    args = h.parse(argv)
    if args.once is not None:
        print(json.dumps(_build_in_fresh_folder(args.work_dir, args.rows, int(args.once[0]), args.once[1])))
        return
    if args.tiny:
        args.rows, args.chunks, args.repeats = 2000, [1000], 1
    generate_raw(args.work_dir, args.rows)
    combinations = [(chunk, stats_pass) for chunk in args.chunks for stats_pass in args.statistics]
    results = []
    for _ in range(args.repeats):
        for chunk, stats_pass in combinations:
            out = subprocess.run([sys.executable, "-m", "benchmarks.build_memory", "--rows", str(args.rows),
                                  "--work-dir", args.work_dir, "--threads", str(args.threads),
                                  "--once", str(chunk), stats_pass],
                                 capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    lines = [f"rows={args.rows} torch_threads={args.threads} repeats={args.repeats} "
             f"load_1min={os.getloadavg()[0]:.2f}", "",
             "| chunk rows | statistics | median s | min s | peak RSS MB | phase peaks MB |", "|---|---|---|---|---|---|"]
    for chunk, stats_pass in combinations:
        rs = [r for r in results if (r["chunk_rows"], r["statistics"]) == (chunk, stats_pass)]
        seconds = [r["seconds"] for r in rs]
        phases = {k: max(r["phase_peak_mb"][k] for r in rs) for k in rs[0]["phase_peak_mb"]}
        lines.append(f"| {chunk:,} | {stats_pass} | {statistics.median(seconds):.1f} | {min(seconds):.1f} | "
                     f"{max(r['peak_rss_mb'] for r in rs):,.0f} | {json.dumps(phases)} |")
    h.write("\n".join(lines), results)


if __name__ == "__main__":
    main()
