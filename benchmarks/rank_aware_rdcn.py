"""rDCN + FC vs DCNv2 + FC of the same shape on synthetic request data (Table 3, DCN rows).

Trains the experiment ids of config/model_config/rDCN.yaml on ``demo_request``
(K = 8 context fields, M = 4 target fields, 10 candidates per request) with
run_expid's runner, once per seed, and reports test logloss / AUC / gAUC next to
the counted FLOPs of one request (N = 10) on each model's serving paths. It also
scores real test requests (grouped by ``request_id``, context checked identical
across candidates) through both paths of every trained model and reports the
largest score difference.

    python -m benchmarks.rank_aware_rdcn --seeds 2019 2020 2021 --epochs 2
"""

from __future__ import annotations

import os
import statistics
import sys

from benchmarks.fixtures import TINY_ROWS, Point, write_config_dir
from benchmarks.harness import Harness
from fuxictr_ext.data import load_feature_map, processed_paths
from fuxictr_ext.serving import RequestBatch, build_scorer, resolve_partition
from fuxictr_ext.cost import count_parameters, flops_by_module
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.config import load_params
from fuxictr_ext.runner import make_loaders, run_experiment

EXPERIMENTS = {"DCNv2 + FC": "DCNv2_rDCN_shape_demo_request", "rDCN + FC": "rDCN_demo_request",
               "rDCN** + FC": "rDCNNoContextStream_demo_request"}


def seeded_points(seeds) -> list:
    """One experiment id per (experiment, seed)."""
    return [Point(f"{expid}_seed{seed}", name, expid, {"seed": seed})
            for seed in seeds for name, expid in EXPERIMENTS.items()]


def load_trained(config_dir: str, expid: str, checkpoint: str):
    params, _ = load_params(config_dir, expid)
    feature_map = load_feature_map(params)
    params["gpu"] = -1
    model = get_model_class(params["model"])(feature_map, **params)
    model.load_weights(checkpoint)
    return model.eval(), feature_map, params


def request_batches(model, feature_map, params, limit: int):
    """Test-split request batches grouped by request_id (context checked identical per request)."""
    partition = resolve_partition(model)
    test_params = dict(params, test_data=processed_paths(params)["test"])
    for i, rows in enumerate(make_loaders(feature_map, test_params, "test")):
        if i >= limit:
            return
        yield RequestBatch.from_flat(partition, rows, rows["request_id"], check_context=True)


def main(argv=None) -> int:
    h = Harness("rank_aware_rdcn", __doc__.split("\n")[0])
    h.parser.add_argument("--epochs", type=int, default=None, help="override the configs' epochs")
    h.parser.add_argument("--check-batches", type=int, default=5, help="test batches scored through both paths")
    h.parser.set_defaults(seeds=[2019, 2020, 2021])
    args = h.parse(argv)
    if args.tiny:
        args.seeds, args.epochs, args.check_batches = args.seeds[:1], 1, 1
    config_dir = write_config_dir(seeded_points(args.seeds), args.epochs, args.work_dir, datasets=("demo_request",),
                                  rows=TINY_ROWS if args.tiny else None)
    os.chdir(args.work_dir)  # run_experiment's results lines go to the work dir
    results = {name: [] for name in EXPERIMENTS}
    for seed in args.seeds:
        for name, expid in EXPERIMENTS.items():
            run = run_experiment(config_dir, f"{expid}_seed{seed}", gpu=-1)
            model, feature_map, params = load_trained(config_dir, f"{expid}_seed{seed}", run["checkpoint"])
            diff = 0.0
            for batch in request_batches(model, feature_map, params, args.check_batches):
                vanilla = build_scorer(model, "vanilla").score(batch)
                diff = max(diff, float((build_scorer(model, "rank_aware").score(batch) - vanilla).abs().max()))
            results[name].append({"test": run["test"], "diff": diff, "model": model, "params": params})
            print(f"[{name} seed {seed}] test {run['test']}  max |rank-aware - vanilla| {diff:.2e}", flush=True)

    lines = [f"Dataset demo_request (K = 8, M = 4, 10 candidates per request), seeds {args.seeds}; "
             "mean (sd) of test metrics. FLOPs: counted for one request of N = 10 candidates; the vanilla "
             "path broadcasts context to the candidates and runs the model's forward, the rank-aware path "
             "runs context-only work once (DCNv2: cross layer 0 and the DNN's first layer split).", "",
             "| model | test logloss | test AUC | test gAUC | parameters (dense) | MFLOPs/request vanilla | "
             "MFLOPs/request rank-aware | vs DCNv2 vanilla | max abs(rank-aware - vanilla) |",
             "|---|---|---|---|---|---|---|---|---|"]
    reference = None
    for name, runs in results.items():
        model = runs[0]["model"]
        batch = next(request_batches(model, runs[0]["model"].feature_map, runs[0]["params"], 1))
        one = RequestBatch({f: v[:1] for f, v in batch.context.items()},
                           {f: v[:int(batch.num_candidates[0])] for f, v in batch.candidates.items()},
                           batch.num_candidates[:1])
        flops = {path: flops_by_module(build_scorer(model, path), one.context, one.candidates,
                                   one.request_index)["total"] for path in ("vanilla", "rank_aware")}
        reference = reference or flops["vanilla"]
        dense = count_parameters(model)["dense"]

        def stat(metric):
            values = [r["test"][metric] for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.5f} ({spread:.5f})"

        lines.append(f"| {name} | {stat('logloss')} | {stat('AUC')} | {stat('gAUC')} | {dense:,} | "
                     f"{flops['vanilla'] / 1e6:.3f} | {flops['rank_aware'] / 1e6:.3f} | "
                     f"{100 * (flops['rank_aware'] - reference) / reference:+.0f}% | "
                     f"{max(r['diff'] for r in runs):.1e} |")
    h.write("\n".join(lines), {name: [{"seed": seed, "test": r["test"], "max_abs_diff": r["diff"]}
                                      for seed, r in zip(args.seeds, runs)] for name, runs in results.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
