"""In-process cost of one scoring call: a scorer rebuilt per call, score_requests (cached), a Scorer built once.

A DLRM (FM pairs + FC, ``model_zoo.DLRM``) with K context and M target fields scores one
request of N candidates on the rank-aware path. Contenders, alternated in rounds after a
warm-up, each timed as CPU time of this process (the harness clock) over ``--calls``
calls per round:

* ``rebuild``   - ``build_scorer(model).score(batch)``: the scorer built on every call
  (what ``score_requests`` did before it kept its scorers);
* ``score_requests`` - ``score_requests(model, batch)``: reuses its cached scorer while the
  weights are unchanged (it checks them on every call);
* ``Scorer``    - ``Scorer(model).score_batch(batch)`` with the Scorer built once.

Median and min per call over ``--rounds`` rounds; ratios against ``Scorer``.

    python -m benchmarks.serving_overhead --context 24 --target 4 --candidates 128
"""

import statistics

import torch

from benchmarks.harness import Harness, clock

from fuxictr_ext.serving import FieldPartition, Scorer, build_scorer, score_requests
from fuxictr_ext.testing import make_feature_map, unit_model_kwargs
from fuxictr_ext.testing.serving import random_requests
from model_zoo.DLRM import DLRM


def main(argv=None):
    h = Harness("serving_overhead", __doc__.split("\n")[0])
    h.parser.add_argument("--context", type=int, default=24, help="K")
    h.parser.add_argument("--target", type=int, default=4, help="M")
    h.parser.add_argument("--candidates", type=int, default=128, help="N")
    h.parser.add_argument("--embedding-dim", type=int, default=16)
    h.parser.add_argument("--hidden-units", type=int, nargs="+", default=[256, 128])
    h.parser.add_argument("--calls", type=int, default=100)
    h.parser.add_argument("--rounds", type=int, default=7)
    args = h.parse(argv)
    if args.tiny:
        args.candidates, args.calls, args.rounds = 8, 4, 1

    K, M = args.context, args.target
    feature_map = make_feature_map(num_numeric=0, num_categorical=K + M, vocab_size=1000,
                                   sources=["user"] * K + ["item"] * M)
    partition = FieldPartition.from_feature_map(feature_map)
    torch.manual_seed(0)
    model = DLRM(feature_map, embedding_dim=args.embedding_dim, hidden_units=args.hidden_units,
                 **unit_model_kwargs(args.work_dir)).eval()
    batch = random_requests(feature_map, partition, [args.candidates], seed=1)
    scorer = Scorer(model, "rank_aware")
    contenders = {"rebuild": lambda: build_scorer(model).score(batch),
                  "score_requests": lambda: score_requests(model, batch),
                  "Scorer": lambda: scorer.score_batch(batch)}
    reference = scorer.score_batch(batch)
    for name, call in contenders.items():
        assert torch.equal(call(), reference), name
    for call in contenders.values():        # warm-up
        for _ in range(args.calls // 4):
            call()
    times = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, call in contenders.items():
            with clock() as t:
                for _ in range(args.calls):
                    call()
            times[name].append(t.cpu_s / args.calls * 1e3)
    lines = [f"DLRM rank-aware, K = {K}, M = {M}, N = {args.candidates}, D = {args.embedding_dim}, "
             f"FC {args.hidden_units}, {args.threads} thread(s), {args.rounds} rounds x {args.calls} calls, "
             "CPU ms per call", "", "| contender | median ms | min ms | x of Scorer |", "|---|---|---|---|"]
    base = statistics.median(times["Scorer"])
    for name, values in times.items():
        lines.append(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | "
                     f"{statistics.median(values) / base:.2f} |")
    h.write("\n".join(lines), times)


if __name__ == "__main__":
    main()
