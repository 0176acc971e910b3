"""In-process cost of one scoring call: a scorer rebuilt per call, score_requests (cached), a Scorer built once.

A DLRM (FM pairs + FC, ``model_zoo.DLRM``) with K context and M target fields scores one
request of N candidates on the rank-aware path. Contenders, alternated in rounds after a
warm-up, each timed as CPU time of this process (``time.process_time``) over ``--calls``
calls per round:

* ``rebuild``   - ``build_scorer(model).score(batch)``: the scorer built on every call
  (what ``score_requests`` did before it kept its scorers);
* ``score_requests`` - ``score_requests(model, batch)``: reuses its cached scorer while the
  weights are unchanged (it checks them on every call);
* ``Scorer``    - ``Scorer(model).score_batch(batch)`` with the Scorer built once.

Median and min per call over ``--rounds`` rounds; ratios against ``Scorer``.

    python -m benchmarks.serving_overhead --context 24 --target 4 --candidates 128
"""

import argparse
import statistics
import tempfile
import time

import torch

from fuxictr_ext.serving import FieldPartition, Scorer, build_scorer, score_requests
from fuxictr_ext.testing import make_feature_map, unit_model_kwargs
from fuxictr_ext.testing.serving import random_requests
from model_zoo.DLRM import DLRM


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--context", type=int, default=24, help="K")
    parser.add_argument("--target", type=int, default=4, help="M")
    parser.add_argument("--candidates", type=int, default=128, help="N")
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--hidden-units", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    K, M = args.context, args.target
    feature_map = make_feature_map(num_numeric=0, num_categorical=K + M, vocab_size=1000,
                                   sources=["user"] * K + ["item"] * M)
    partition = FieldPartition.from_feature_map(feature_map)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as workdir:
        model = DLRM(feature_map, embedding_dim=args.embedding_dim, hidden_units=args.hidden_units,
                     **unit_model_kwargs(workdir)).eval()
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
                start = time.process_time()
                for _ in range(args.calls):
                    call()
                times[name].append((time.process_time() - start) / args.calls * 1e3)
    print(f"DLRM rank-aware, K = {K}, M = {M}, N = {args.candidates}, D = {args.embedding_dim}, FC {args.hidden_units}, "
          f"{args.threads} thread(s), {args.rounds} rounds x {args.calls} calls, CPU ms per call")
    base = statistics.median(times["Scorer"])
    for name, values in times.items():
        print(f"{name:15s} median {statistics.median(values):.3f} ms  min {min(values):.3f} ms  "
              f"x{statistics.median(values) / base:.2f} of Scorer")


if __name__ == "__main__":
    main()
