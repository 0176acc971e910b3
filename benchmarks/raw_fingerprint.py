"""What fingerprinting a dataset's raw files costs: the build record's content digest
against the size-and-mtime record it replaced and against parquet footers.

A build is reused only when the raw files it was made from are unchanged
(``fuxictr_ext.data.build.build_record``), and every run checks that. This script times one
such check of every raw file of a folder (``{train,valid,test}.parquet`` as
``python -m data_prep.synthetic`` writes them; generated in the work dir when ``--raw-dir``
is not given), the contenders alternated pass by pass after a warm-up pass (so the files are
in the page cache, as they are after the first run):

* ``stat``: size and modification time (build record version 1; misses a same-size
  change whose time was restored);
* ``parquet footers``: the footer and every column chunk's statistics (min, max, null
  count); misses a label flip inside a row group that holds both classes, since a 0/1
  column's statistics stay min 0, max 1, no nulls;
* ``blake2b``, ``sha256``, ``crc32``: a digest of every byte, 1 MiB at a time
  (``fuxictr_ext.data.build.file_digest``; ``content_digest`` is its ``sha256``, chosen here).

Example (the numbers in data_prep/README.md)::

    python -m data_prep.synthetic --schema criteo --rows 20000000 --out /tmp/raw20m
    python -m benchmarks.raw_fingerprint --raw-dir /tmp/raw20m --repeats 3
"""

from __future__ import annotations

import glob
import hashlib
import os
import statistics
import sys
import zlib
from typing import Callable, Dict, List

import pyarrow.parquet as pq

from benchmarks.harness import Harness
from fuxictr_ext.data.build import file_digest
from fuxictr_ext.data.synthetic import write

TINY_ROWS = 2000


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


def measure(h: Harness, files: List[str], repeats: int) -> Dict[str, Dict[str, List[float]]]:
    """Wall and CPU seconds of fingerprinting all ``files`` once, per contender: one warm-up
    pass, then ``repeats`` passes with the contenders alternated."""
    for fingerprint in CONTENDERS.values():
        for path in files:
            fingerprint(path)
    times = {name: {"wall_s": [], "cpu_s": []} for name in CONTENDERS}
    for _ in range(repeats):
        for name, fingerprint in CONTENDERS.items():
            with h.clock() as t:
                for path in files:
                    fingerprint(path)
            times[name]["wall_s"].append(t.wall_s)
            times[name]["cpu_s"].append(t.cpu_s)
    return times


def main(argv=None) -> int:
    h = Harness("raw_fingerprint", "Raw-file fingerprints: the cost of one build check")
    h.parser.add_argument("--raw-dir", default=None,
                          help="folder of {train,valid,test}.parquet (default: --rows generated in the work dir)")
    h.parser.add_argument("--rows", type=int, default=20_000_000, help="rows to generate without --raw-dir")
    h.parser.add_argument("--repeats", type=int, default=3)
    args = h.parse(argv)
    raw_dir = args.raw_dir
    if raw_dir is None:
        rows = TINY_ROWS if args.tiny else args.rows
        raw_dir = os.path.join(args.work_dir, f"raw_{rows}")
        if not glob.glob(os.path.join(raw_dir, "*.parquet")):
            write("criteo", rows, raw_dir, seed=args.seeds[0])
    files = sorted(glob.glob(os.path.join(raw_dir, "*.parquet")))
    if not files:
        print(f"error: no parquet files in {raw_dir}", file=sys.stderr)
        return 2
    load = [os.getloadavg()[0]]
    times = measure(h, files, 1 if args.tiny else args.repeats)
    load.append(os.getloadavg()[0])
    total_mb = sum(os.path.getsize(f) for f in files) / 1e6
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    lines = [f"Files: {', '.join(os.path.basename(f) for f in files)} ({total_mb:,.0f} MB, {rows:,} rows), in "
             f"the page cache (one warm-up pass). Load average (1 min) {min(load):.1f}-{max(load):.1f}, so wall "
             "seconds include waiting for a core; CPU seconds are this process's.", "",
             "| fingerprint | wall s (median) | wall s (min) | CPU s (median) | MB per CPU s |",
             "|---|---|---|---|---|"]
    records = []
    for name, t in times.items():
        cpu = statistics.median(t["cpu_s"])
        lines.append(f"| {name} | {statistics.median(t['wall_s']):.3f} | {min(t['wall_s']):.3f} | {cpu:.3f} | "
                     f"{total_mb / cpu if cpu > 0 else float('inf'):,.0f} |")
        records.append({"fingerprint": name, "rows": rows, "mb": total_mb, **t})
    h.write("\n".join(lines), {"files": files, "load_1min": load, "fingerprints": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
