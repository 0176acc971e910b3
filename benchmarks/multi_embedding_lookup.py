"""Multi-embedding lookup: s stacked tables (one lookup per field) against one table per set.

The reference is the former layout, written here: s fuxictr ``FeatureEmbedding`` tables
looked up one after another and stacked (s x F lookups). Both sides hold the same
parameters (checked); forward + backward of the (B, s, F, k) output, the contenders
alternating step by step after a warm-up, one thread by default.

    python -m benchmarks.multi_embedding_lookup --batch-size 4096 --iters 20
"""

from __future__ import annotations

import statistics
import sys

import torch
from fuxictr.pytorch.layers import FeatureEmbedding
from torch import nn

from benchmarks.harness import Harness, call_seconds
from fuxictr_ext.cost import count_parameters
from fuxictr_ext.layers.multi_embedding import MultiEmbedding
from fuxictr_ext.testing import make_feature_map, random_batch

# (name, categorical fields, numeric fields, s, k): RoBlock's Criteo 10x (M = 11 copies of k = 10),
# DCNv2 ME 5x on Criteo, WuKong/DHEN ME 2x on Avazu.
SETTINGS = [("criteo_RoBlock_10x", 26, 13, 11, 10), ("criteo_ME_5x", 26, 13, 5, 10),
            ("avazu_ME_2x", 24, 0, 2, 10)]


class PerSetTables(nn.Module):
    """The former layout: one FeatureEmbedding per set, stacked: (B, s, F, k)."""

    def __init__(self, feature_map, embedding_dim: int, num_embeddings: int):
        super().__init__()
        self.embedding_sets = nn.ModuleList(FeatureEmbedding(feature_map, embedding_dim)
                                            for _ in range(num_embeddings))

    def forward(self, X):
        return torch.stack([table(X) for table in self.embedding_sets], dim=1)


def main(argv=None) -> int:
    h = Harness("multi_embedding_lookup", __doc__.split("\n")[0])
    h.parser.add_argument("--batch-size", type=int, default=4096)
    h.parser.add_argument("--iters", type=int, default=20)
    h.parser.add_argument("--warmup", type=int, default=3)
    h.parser.add_argument("--vocab", type=int, default=10_000)
    args = h.parse(argv)
    if args.tiny:
        args.batch_size, args.iters, args.warmup, args.vocab = 64, 2, 1, 100
    lines = [f"threads {args.threads}, batch {args.batch_size}, vocabulary {args.vocab} per field; "
             "forward + backward seconds per step, median / min over the alternated steps", "",
             "| setting | s | F | per-set median | stacked median | per-set min | stacked min | speed-up (median) |",
             "|---|---|---|---|---|---|---|---|"]
    records = []
    for name, categorical, numeric, sets, dim in SETTINGS:
        feature_map = make_feature_map(num_categorical=categorical, num_numeric=numeric, vocab_size=args.vocab)
        batch = random_batch(feature_map, args.batch_size, seed=0)
        X = {k: v for k, v in batch.items() if k not in feature_map.labels}
        contenders = {"per_set": PerSetTables(feature_map, dim, sets), "stacked": MultiEmbedding(feature_map, dim, sets)}
        counts = {key: count_parameters(module)["total"] for key, module in contenders.items()}
        if len(set(counts.values())) != 1:
            raise RuntimeError(f"{name}: parameter counts differ: {counts}")

        def step(module):
            module.zero_grad(set_to_none=True)
            module(X).sum().backward()

        times = {key: [] for key in contenders}
        for key, module in contenders.items():
            call_seconds(lambda: step(module), iters=0, warmup=args.warmup)
        for _ in range(args.iters):
            for key, module in contenders.items():
                times[key] += call_seconds(lambda: step(module), iters=1, warmup=0)
        med = {key: statistics.median(v) for key, v in times.items()}
        low = {key: min(v) for key, v in times.items()}
        lines.append(f"| {name} | {sets} | {categorical + numeric} | {med['per_set']:.4f} | {med['stacked']:.4f} | "
                     f"{low['per_set']:.4f} | {low['stacked']:.4f} | {med['per_set'] / med['stacked']:.2f}x |")
        print(lines[-1], flush=True)
        records.append({"setting": name, "sets": sets, "fields": categorical + numeric, "seconds": times})
    h.write("\n".join(lines), records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
