"""CPU cost of RoBlock's training-only parts (rank-1 update normalization, HSIC), of the
spectrum metrics, and RoBlock's training throughput against DCNv2 ME and DHEN ME at 10x.

    python -m benchmarks.roblock_costs --batch-size 10000 --model-batch-size 1000 --steps 2 --threads 2
    python -m benchmarks.roblock_costs --parts share --model-batch-size 10000 --steps 3 --threads 2

Four parts, all on random data (no dataset); ``share`` runs only when asked for (at batch
10,000 it holds about 21 GiB and takes about 15 minutes on 2 cores):

* ``metrics``: IA, stable rank and erank (``fuxictr_ext.spectrum``) of a
  [batch, 39, 100] tensor, each on its own and all three from one SVD
  (``spectrum_metrics``); median of ``--repeats`` calls.
* ``ops``: the two training-only operations alone, forward + backward, at RoBlock's
  10x sizes: rank-1 update normalization (t = 3) of X (batch, 39, D = 100) and the
  HSIC loss of the decoupler output (batch, M = 11, 39, k = 10); median of ``--repeats``.
* ``share``: the share of the training-only parts in a RoBlock step, measured as a
  paired difference: ``RoBlock_criteo_10x_L2`` and the same model without rank-1
  normalization and HSIC (rank1_norm off, beta = 0; the identical parameters, checked)
  in one process, their training steps and eval forwards alternated A B B A ... on one
  batch of ``--model-batch-size`` rows, so that slow drifts of a shared machine's load
  hit both alike. One warm-up round, then ``--steps`` rounds; the share is
  1 - median(without) / median(with), and per round.
* ``models``: one subprocess per model (so that each peak RSS is its own): Adam
  training steps (forward, BCE + aux losses, backward, step) and eval forwards on one
  batch of ``--model-batch-size`` rows of a 39-categorical-field FeatureMap (vocabulary
  10,000 per field). RoBlock ``RoBlock_criteo_10x_L2`` (k = 10, D = 100, M = 11, L = 2,
  heterogeneous) with both training-only parts, without rank-1 normalization, without
  HSIC (beta = 0) and without both; ``DCNv2_criteo`` and ``DHEN_ME_criteo`` with
  10 embedding tables of size 10 (ME 10x). One warm-up step, then ``--steps`` timed
  steps; samples/s = batch / mean step time. Peak memory is the subprocess's peak
  resident set size (the harness probe, VmHWM), reported at the end and after building
  the model and the batch, before the first step.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

import torch
from fuxictr.utils import load_model_config

from benchmarks.harness import REPO, Harness, clock, mean_seconds, median_seconds, peak_rss_mb
from fuxictr_ext.cost import count_parameters
from fuxictr_ext.layers.hsic import hsic_loss
from fuxictr_ext.layers.rank1_norm import RankOneUpdateNorm
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.spectrum import entropy_effective_rank, information_abundance, spectrum_metrics, stable_rank
from fuxictr_ext.testing import make_feature_map, random_batch

FIELDS, VOCAB = 39, 10000
MODELS = {
    "RoBlock_10x_L2": ("RoBlock_criteo_10x_L2", {}),
    "RoBlock_10x_L2_noRU": ("RoBlock_criteo_10x_L2", {"rank1_norm": False}),
    "RoBlock_10x_L2_noHSIC": ("RoBlock_criteo_10x_L2", {"hsic_weight": 0}),
    "RoBlock_10x_L2_noRU_noHSIC": ("RoBlock_criteo_10x_L2", {"rank1_norm": False, "hsic_weight": 0}),
    "DCNv2_ME_10x": ("DCNv2_criteo", {"num_embeddings": 10, "embedding_mode": "multi"}),
    "DHEN_ME_10x_L2": ("DHEN_ME_criteo", {"num_embeddings": 10, "embedding_mode": "multi"}),
}


def peak_rss_gib() -> float:
    return peak_rss_mb() / 1024


def bench_metrics(batch: int, repeats: int) -> Dict[str, float]:
    X = torch.randn(batch, FIELDS, 100, generator=torch.Generator().manual_seed(0))  # (B, F, D)
    calls = {"IA": lambda: information_abundance(X), "stable_rank": lambda: stable_rank(X),
             "erank": lambda: entropy_effective_rank(X), "all three (one SVD)": lambda: spectrum_metrics(X)}
    return {name: median_seconds(call, repeats) for name, call in calls.items()}


def bench_ops(batch: int, repeats: int) -> Dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(batch, FIELDS, 100, generator=generator, requires_grad=True)          # (B, F, D)
    components = torch.randn(batch, 11, FIELDS, 10, generator=generator, requires_grad=True)  # (B, M, F, k)
    norm = RankOneUpdateNorm(3).train()

    def rank1():
        norm(X).sum().backward()

    def hsic():
        hsic_loss(components).backward()

    return {"rank-1 update normalization (t = 3), (B, 39, 100)": median_seconds(rank1, repeats),
            "HSIC loss, (B, 11, 39, 10)": median_seconds(hsic, repeats)}


def build_model(name: str, feature_map):
    """The model ``name`` of MODELS (its config with the overrides), seeded with 0."""
    expid, overrides = MODELS[name]
    params = dict(load_model_config(os.path.join(REPO, "config"), expid))
    params.update(overrides)
    params.pop("spectrum_callbacks", None)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as model_root:
        params.update(gpu=-1, verbose=0, model_root=model_root)
        return get_model_class(params["model"])(feature_map, **params)


def adam_step(model, batch, y_true) -> None:
    """One training step: forward, BCE + aux losses, backward, Adam update."""
    model.train()
    model.optimizer.zero_grad()
    model.compute_loss(model(batch), y_true).backward()
    model.optimizer.step()


def bench_model(name: str, batch_size: int, steps: int) -> Dict[str, float]:
    """Train-step and eval-forward time and peak RSS of one model (run in its own process)."""
    expid, overrides = MODELS[name]
    feature_map = make_feature_map(num_categorical=FIELDS, num_numeric=0, vocab_size=VOCAB)
    batch = random_batch(feature_map, batch_size, seed=0)
    model = build_model(name, feature_map)
    dense = count_parameters(model)["dense"]
    y_true = model.get_labels(batch)
    rss_before = peak_rss_gib()

    train_s = mean_seconds(lambda: adam_step(model, batch, y_true), steps)
    model.eval()
    with torch.no_grad():
        eval_s = mean_seconds(lambda: model(batch), steps)
    peak = peak_rss_gib()
    return {"model": name, "expid": expid, "overrides": overrides, "dense_params": dense,
            "train_step_s": train_s, "samples_per_s": batch_size / train_s, "eval_forward_s": eval_s,
            "rss_before_gib": rss_before, "peak_rss_gib": peak}


def bench_share(batch_size: int, steps: int) -> Dict[str, object]:
    """Paired step times of RoBlock 10x L = 2 with and without its training-only parts."""
    feature_map = make_feature_map(num_categorical=FIELDS, num_numeric=0, vocab_size=VOCAB)
    batch = random_batch(feature_map, batch_size, seed=0)
    models = {"with": build_model("RoBlock_10x_L2", feature_map),
              "without": build_model("RoBlock_10x_L2_noRU_noHSIC", feature_map)}
    with_state, without_state = (model.state_dict() for model in models.values())
    if with_state.keys() != without_state.keys() or any(
            not torch.equal(with_state[key], without_state[key]) for key in with_state):
        raise RuntimeError("the two RoBlock variants should start from identical parameters")
    y_true = models["with"].get_labels(batch)

    def evaluate(model) -> None:
        model.eval()
        with torch.no_grad():
            model(batch)

    times = {(kind, variant): [] for kind in ("train", "eval") for variant in models}
    for round_index in range(steps + 1):                       # round 0 warms up
        order = list(models) if round_index % 2 == 0 else list(models)[::-1]
        for kind, call in (("train", lambda model: adam_step(model, batch, y_true)), ("eval", evaluate)):
            for variant in order:
                with clock() as t:
                    call(models[variant])
                if round_index:
                    times[kind, variant].append(t.wall_s)
        print(f"[roblock_costs] share round {round_index}: " + (", ".join(
            f"{kind} {variant} {values[-1]:.2f} s" for (kind, variant), values in times.items())
            if round_index else "warm-up done"), flush=True)
    result: Dict[str, object] = {"batch_size": batch_size, "steps": steps, "times": {
        f"{kind}_{variant}": values for (kind, variant), values in times.items()},
        "peak_rss_gib": peak_rss_gib()}
    for kind in ("train", "eval"):
        with_times, without_times = times[kind, "with"], times[kind, "without"]
        result[f"{kind}_share"] = 1 - statistics.median(without_times) / statistics.median(with_times)
        result[f"{kind}_share_per_round"] = [1 - b / a for a, b in zip(with_times, without_times)]
    return result


def run_model_subprocess(name: str, args) -> Optional[Dict[str, float]]:
    command = [sys.executable, "-m", "benchmarks.roblock_costs", "--model", name,
               "--model-batch-size", str(args.model_batch_size), "--steps", str(args.steps),
               "--threads", str(args.threads), "--work-dir", args.work_dir]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    print(f"[roblock_costs] {name}: exit {done.returncode}\n{done.stderr[-2000:]}", flush=True)
    return None


def share_markdown(share: Dict[str, object]) -> List[str]:
    times = share["times"]
    lines = [f"Training-only parts in a step (paired, {share['steps']} rounds after 1 warm-up, batch "
             f"{share['batch_size']}, `RoBlock_criteo_10x_L2` with / without rank-1 normalization and HSIC, "
             f"identical parameters; peak RSS {share['peak_rss_gib']:.2f} GiB):", "",
             "| | with (s, per round) | without (s, per round) | share: 1 - median without / median with "
             "| share per round |", "|---|---|---|---|---|"]
    for kind, label in (("train", "Adam training step"), ("eval", "eval forward")):
        per_round = ", ".join(f"{value:+.1%}" for value in share[f"{kind}_share_per_round"])
        lines.append(f"| {label} | {', '.join(f'{t:.2f}' for t in times[kind + '_with'])} | "
                     f"{', '.join(f'{t:.2f}' for t in times[kind + '_without'])} | "
                     f"{share[kind + '_share']:+.1%} | {per_round} |")
    return lines + [""]


def markdown(args, metrics: Dict[str, float], ops: Dict[str, float], rows: List[dict],
             share: Optional[Dict[str, object]] = None) -> str:
    lines = [f"CPU ({os.cpu_count()} cores), {args.threads} torch thread(s).", ""]
    if metrics:
        lines += [f"Spectrum metrics of a [{args.batch_size}, {FIELDS}, 100] tensor (median of {args.repeats}):", "",
                  "| metric | ms |", "|---|---|"]
        lines += [f"| {name} | {seconds * 1e3:.1f} |" for name, seconds in metrics.items()]
        lines.append("")
    if ops:
        lines += [f"Training-only operations alone, forward + backward (median of {args.repeats}):", "",
                  "| operation | ms |", "|---|---|"]
        lines += [f"| {name} | {seconds * 1e3:.1f} |" for name, seconds in ops.items()]
        lines.append("")
    if share:
        lines += share_markdown(share)
    if rows:
        lines += [f"Models: {args.steps} timed Adam steps / eval forwards after 1 warm-up, one batch of "
                  f"{args.model_batch_size} rows, {FIELDS} categorical fields:", "",
                  "| model | config | dense params | train step s | samples/s | eval forward s "
                  "| peak RSS before first step GiB | peak RSS GiB |", "|---|---|---|---|---|---|---|---|"]
        for row in rows:
            config = row["expid"] + (" + " + json.dumps(row["overrides"]) if row["overrides"] else "")
            lines.append(f"| {row['model']} | `{config}` | {row['dense_params']:,} | {row['train_step_s']:.2f} | "
                         f"{row['samples_per_s']:,.0f} | {row['eval_forward_s']:.2f} | "
                         f"{row['rss_before_gib']:.2f} | {row['peak_rss_gib']:.2f} |")
        by_name = {row["model"]: row for row in rows}
        full = by_name.get("RoBlock_10x_L2")
        if full:
            lines += ["", "Share of the full RoBlock 10x L = 2 step (1 - variant / full):", "",
                      "| removed | train step share | eval forward share |", "|---|---|---|"]
            for variant, removed in (("RoBlock_10x_L2_noRU", "rank-1 normalization"),
                                     ("RoBlock_10x_L2_noHSIC", "HSIC"),
                                     ("RoBlock_10x_L2_noRU_noHSIC", "both")):
                if variant in by_name:
                    row = by_name[variant]
                    lines.append(f"| {removed} | {1 - row['train_step_s'] / full['train_step_s']:+.1%} | "
                                 f"{1 - row['eval_forward_s'] / full['eval_forward_s']:+.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    h = Harness("roblock_costs", __doc__.split("\n\n")[0].replace("\n", " "))
    h.parser.add_argument("--batch-size", type=int, default=10000, help="batch of the metrics and ops parts")
    h.parser.add_argument("--model-batch-size", type=int, default=10000, help="batch of the models part")
    h.parser.add_argument("--steps", type=int, default=3, help="timed training steps / eval forwards per model")
    h.parser.add_argument("--repeats", type=int, default=5, help="timed calls per metric / operation")
    h.parser.add_argument("--parts", nargs="+", default=["metrics", "ops", "models"],
                          choices=["metrics", "ops", "share", "models"])
    h.parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    h.parser.add_argument("--model", choices=list(MODELS), help="measure this model only, print one JSON line")
    args = h.parse(argv)
    if args.model:
        print(json.dumps(bench_model(args.model, args.model_batch_size, args.steps)), flush=True)
        return
    if args.tiny:
        args.batch_size, args.model_batch_size, args.steps, args.repeats = 64, 32, 1, 1
        args.models = args.models[:1]
    metrics = bench_metrics(args.batch_size, args.repeats) if "metrics" in args.parts else {}
    for name, seconds in metrics.items():
        print(f"[roblock_costs] {name}: {seconds * 1e3:.1f} ms", flush=True)
    ops = bench_ops(args.batch_size, args.repeats) if "ops" in args.parts else {}
    for name, seconds in ops.items():
        print(f"[roblock_costs] {name}: {seconds * 1e3:.1f} ms", flush=True)
    share = bench_share(args.model_batch_size, args.steps) if "share" in args.parts else None
    if share:
        print(f"[roblock_costs] {json.dumps(share)}", flush=True)
    rows = []
    for name in args.models if "models" in args.parts else []:
        row = run_model_subprocess(name, args)
        if row:
            rows.append(row)
            print(f"[roblock_costs] {json.dumps(row)}", flush=True)
    h.write(markdown(args, metrics, ops, rows, share), {"metrics_s": metrics, "ops_s": ops, "share": share,
                                                        "models": rows})


if __name__ == "__main__":
    main()
