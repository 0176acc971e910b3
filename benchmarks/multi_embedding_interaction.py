"""Multi-embedding interaction copies: stored stacked against re-stacked on every forward.

The reference is the former layout, written here: s ordinary copies in an ``nn.ModuleList``
whose parameters are ``torch.stack``-ed on every forward and fed to the same vmapped
functional call. The contender is ``MultiEmbeddingInteraction``, which stores every
parameter as one ``(s, *shape)`` tensor. Both are built from the same modules (same
values; the outputs are checked equal before timing); forward + backward of the
(B, s*O) output, the contenders alternating step by step after a warm-up, one thread
by default.

    python -m benchmarks.multi_embedding_interaction --iters 15
"""

from __future__ import annotations

import statistics
import sys

import torch
from fuxictr.pytorch.layers import CrossNetV2, MLP_Block
from torch import nn
from torch.func import functional_call, vmap

from benchmarks.harness import Harness, call_seconds
from fuxictr_ext.layers.multi_embedding import MultiEmbeddingInteraction

F, K = 39, 10  # Criteo fields, base embedding size
# (name, copies s, factory of one copy on a set's F*k inputs)
SETTINGS = [
    ("CrossNetV2 x3 (DCNv2 ME 11x)", 11, lambda: CrossNetV2(F * K, 3)),
    ("CrossNetV2 x3 (DCNv2 ME 5x)", 5, lambda: CrossNetV2(F * K, 3)),
    ("MLP_Block [500] (DNN ME 11x)", 11, lambda: MLP_Block(F * K, [500])),
]


class RestackedCopies(nn.Module):
    """The former layout: ordinary copies, their parameters stacked on every forward."""

    def __init__(self, modules):
        super().__init__()
        self.interactions = nn.ModuleList(modules)

    def forward(self, x):
        template = self.interactions[0]
        named = [dict(m.named_parameters()) for m in self.interactions]
        params = {name: torch.stack([p[name] for p in named]) for name in named[0]}

        def apply_copy(copy_params, x_set):
            return functional_call(template, copy_params, (x_set,))

        out = vmap(apply_copy, in_dims=(0, 1), out_dims=-2, randomness="different")(params, x)
        return out.flatten(start_dim=-2)


def main(argv=None) -> int:
    h = Harness("multi_embedding_interaction", __doc__.split("\n")[0])
    h.parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4096, 256])
    h.parser.add_argument("--iters", type=int, default=15)
    h.parser.add_argument("--warmup", type=int, default=2)
    h.parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                          help="cpu: this process's CPU seconds (steadier on a shared machine, one thread); "
                               "wall: wall time")
    args = h.parse(argv)
    if args.tiny:
        args.batch_sizes, args.iters, args.warmup = [32], 2, 1
    cpu = args.clock == "cpu"
    lines = [f"threads {args.threads}, {args.clock} clock; forward + backward seconds per step, median / min over "
             f"{args.iters} alternated steps after {args.warmup} warm-up steps each", "",
             "| setting | B | restack median | stacked median | restack min | stacked min | speed-up median "
             "| speed-up min |", "|---|---|---|---|---|---|---|---|"]
    records = []
    for name, copies, factory in SETTINGS:
        torch.manual_seed(0)
        modules = [factory() for _ in range(copies)]
        contenders = {"restack": RestackedCopies(modules), "stacked": MultiEmbeddingInteraction(modules)}
        for batch_size in args.batch_sizes:
            x = torch.randn(batch_size, copies, F * K, requires_grad=True)
            with torch.no_grad():
                torch.testing.assert_close(contenders["stacked"].eval()(x), contenders["restack"].eval()(x))
            for module in contenders.values():
                module.train()

            def step(module):
                module.zero_grad(set_to_none=True)
                x.grad = None
                module(x).sum().backward()

            times = {key: [] for key in contenders}
            for module in contenders.values():
                call_seconds(lambda: step(module), iters=0, warmup=args.warmup, cpu=cpu)
            for _ in range(args.iters):
                for key, module in contenders.items():
                    times[key] += call_seconds(lambda: step(module), iters=1, warmup=0, cpu=cpu)
            med = {key: statistics.median(v) for key, v in times.items()}
            low = {key: min(v) for key, v in times.items()}
            lines.append(f"| {name} | {batch_size} | {med['restack']:.4f} | {med['stacked']:.4f} | "
                         f"{low['restack']:.4f} | {low['stacked']:.4f} | {med['restack'] / med['stacked']:.3f}x | "
                         f"{low['restack'] / low['stacked']:.3f}x |")
            print(lines[-1], flush=True)
            records.append({"setting": name, "batch_size": batch_size, "seconds": times})
    h.write("\n".join(lines), records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
