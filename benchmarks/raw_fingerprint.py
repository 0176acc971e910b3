"""What fingerprinting a dataset's raw files costs: the build record's content digest
against the size-and-mtime record it replaced and against parquet footers.

A build is reused only when the raw files it was made from are unchanged
(``fuxictr_ext.data.build.build_record``), and every run checks that. This script times one
such check of every raw file of a folder (``{train,valid,test}.parquet`` as
``python -m data_prep.synthetic`` writes them), the contenders alternated pass by pass
after a warm-up pass (so the files are in the page cache, as they are after the first run):

* ``stat``: size and modification time (build record version 1; misses a same-size
  change whose time was restored);
* ``parquet footers``: the footer and every column chunk's statistics (min, max, null
  count); misses a label flip inside a row group that holds both classes, since a 0/1
  column's statistics stay min 0, max 1, no nulls;
* ``blake2b``, ``sha256``, ``crc32``: a digest of every byte, 1 MiB at a time
  (``fuxictr_ext.data.build.file_digest``; ``content_digest`` is its ``sha256``, chosen here).

Example (the numbers in data_prep/README.md)::

    python -m data_prep.synthetic --schema criteo --rows 20000000 --out /tmp/raw20m
    python -m benchmarks.raw_fingerprint --raw-dir /tmp/raw20m --repeats 3 --out results/raw_fingerprint.md
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import statistics
import sys
import time
import zlib
from typing import Callable, Dict, List

import pyarrow.parquet as pq

from fuxictr_ext.data.build import file_digest



def stat_record(path: str) -> tuple:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def footer_record(path: str) -> str:
    """A digest of the parquet footer's row-group statistics of every column chunk."""
    metadata = pq.read_metadata(path)
    digest = hashlib.blake2b(digest_size=16)
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for column in range(row_group.num_columns):
            stats = row_group.column(column).statistics
            digest.update(repr(stats.to_dict() if stats is not None else None).encode())
    return digest.hexdigest()


class Crc32:
    """zlib.crc32 behind hashlib's update/hexdigest."""

    def __init__(self):
        self.value = 0

    def update(self, data) -> None:
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


CONTENDERS: Dict[str, Callable[[str], object]] = {
    "stat (size + mtime)": stat_record,
    "parquet footers (row-group statistics)": footer_record,
    "blake2b": lambda path: file_digest(path, lambda: hashlib.blake2b(digest_size=16)),
    "sha256": lambda path: file_digest(path, hashlib.sha256),
    "crc32": lambda path: file_digest(path, Crc32),
}


def measure(files: List[str], repeats: int) -> Dict[str, Dict[str, List[float]]]:
    """Wall and CPU seconds of fingerprinting all ``files`` once, per contender: one warm-up
    pass, then ``repeats`` passes with the contenders alternated."""
    for fingerprint in CONTENDERS.values():
        for path in files:
            fingerprint(path)
    times = {name: {"wall_s": [], "cpu_s": []} for name in CONTENDERS}
    for _ in range(repeats):
        for name, fingerprint in CONTENDERS.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for path in files:
                fingerprint(path)
            times[name]["wall_s"].append(time.perf_counter() - wall)
            times[name]["cpu_s"].append(time.process_time() - cpu)
    return times


def load_1min() -> float:
    return os.getloadavg()[0]


def report(files: List[str], times: Dict[str, Dict[str, List[float]]], command: str, load: List[float]) -> str:
    total_mb = sum(os.path.getsize(f) for f in files) / 1e6
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    lines = [f"# Raw-file fingerprints: the cost of one build check at {rows:,} rows", "",
             f"Command: `{command}`", "",
             f"Files: {', '.join(os.path.basename(f) for f in files)} ({total_mb:,.0f} MB, {rows:,} rows), "
             f"in the page cache (one warm-up pass). One thread; load average (1 min) "
             f"{min(load):.1f}-{max(load):.1f} on {os.cpu_count()} cores, so wall seconds include waiting for "
             "a core; CPU seconds are this process's.", "",
             "| fingerprint | wall s (median) | wall s (min) | CPU s (median) | MB per CPU s |",
             "|---|---|---|---|---|"]
    for name, t in times.items():
        cpu = statistics.median(t["cpu_s"])
        lines.append(f"| {name} | {statistics.median(t['wall_s']):.3f} | {min(t['wall_s']):.3f} | {cpu:.3f} | "
                     f"{total_mb / cpu if cpu > 0 else float('inf'):,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw-dir", required=True, help="folder of {train,valid,test}.parquet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="markdown file to write (default: print only)")
    args = parser.parse_args(argv)
    files = sorted(glob.glob(os.path.join(args.raw_dir, "*.parquet")))
    if not files:
        print(f"error: no parquet files in {args.raw_dir}", file=sys.stderr)
        return 2
    load = [load_1min()]
    times = measure(files, args.repeats)
    load.append(load_1min())
    text = report(files, times, "python -m benchmarks.raw_fingerprint " + " ".join(argv or sys.argv[1:]), load)
    print(text)
    if args.out:
        with open(args.out, "w") as fd:
            fd.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as fd:
            json.dump({"files": files, "times": times, "load_1min": load}, fd, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
