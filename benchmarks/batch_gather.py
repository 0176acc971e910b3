"""Where a shuffled pass's time goes: rows/s of gathering batches of a Criteo-like split four ways.

    python -m benchmarks.batch_gather --rows 4000000 --repeats 3

A split of 26 int64 and 14 float64 columns of ``--rows`` random rows (no data files),
a random permutation, and ``--repeats`` rounds of 100 batches gathered four ways
(column-wise indexing, column-wise ``index_select``, row-major ``index_select`` and
row-major ``numpy.take``), at 1 and 2 torch threads, alternating; building the batch
dict from the gathered parts is included. Written: the median and min rows/s of each.
"""

from __future__ import annotations

import os
import statistics

from benchmarks.harness import Harness, clock


def gather_profile(rows: int, batch_size: int, repeats: int) -> dict:
    """rows/s of every (way, threads) in each round."""
    import numpy as np
    import torch

    ints = [torch.randint(0, 1000, (rows,)) for _ in range(26)]
    floats = [torch.rand(rows, dtype=torch.float64) for _ in range(14)]
    int_rows, float_rows = torch.stack(ints, 1), torch.stack(floats, 1)  # (rows, 26), (rows, 14)
    columns = ints + floats
    order = torch.randperm(rows)

    def by_column_indexing(idx):
        return {i: c[idx] for i, c in enumerate(columns)}

    def by_column_index_select(idx):
        return {i: c.index_select(0, idx) for i, c in enumerate(columns)}

    def row_major_index_select(idx):
        parts = [m.index_select(0, idx).t().contiguous() for m in (int_rows, float_rows)]
        return dict(enumerate([*parts[0], *parts[1]]))

    def row_major_numpy_take(idx):
        parts = [np.ascontiguousarray(np.take(m, idx.numpy(), axis=0).T)
                 for m in (int_rows.numpy(), float_rows.numpy())]
        return dict(enumerate(torch.from_numpy(c) for part in parts for c in part))

    ways = [by_column_indexing, by_column_index_select, row_major_index_select, row_major_numpy_take]
    speeds = {(way.__name__, threads): [] for way in ways for threads in (1, 2)}
    batches = max(1, min(100, rows // batch_size))
    for _ in range(repeats):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for way in ways:
                with clock() as t:
                    for start in range(0, batches * batch_size, batch_size):
                        way(order[start:start + batch_size])
                speeds[(way.__name__, threads)].append(batches * batch_size / t.wall_s)
    return speeds


def main(argv=None) -> None:
    h = Harness("batch_gather", __doc__.split("\n")[0])
    h.parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the split")
    h.parser.add_argument("--batch-size", type=int, default=4096)
    h.parser.add_argument("--repeats", type=int, default=2, help="rounds, ways alternating in each")
    args = h.parse(argv)
    if args.tiny:
        args.rows, args.repeats = 50_000, 1
    speeds = gather_profile(args.rows, args.batch_size, args.repeats)
    lines = [f"rows={args.rows} batch_size={args.batch_size} repeats={args.repeats} "
             f"load_1min={os.getloadavg()[0]:.2f}", "",
             "| gather | threads | median rows/s | min rows/s |", "|---|---|---|---|"]
    for (name, threads), values in speeds.items():
        lines.append(f"| {name} | {threads} | {statistics.median(values):,.0f} | {min(values):,.0f} |")
    h.write("\n".join(lines), [{"gather": name, "threads": threads, "rows_per_s": values}
                               for (name, threads), values in speeds.items()])


if __name__ == "__main__":
    main()
