"""Train and eval speed of MLCC / MC-MLCC against the authors' release, side by side.

    git clone https://github.com/shishishu/MLCC /tmp/mlcc_release      # outside this repository
    python -m benchmarks.mlcc_release_speed --release-dir /tmp/mlcc_release --iters 30

The release's ``models/mlcc.py`` is imported from ``--release-dir`` at run time (nothing of
it is kept in this repository). Both sides are built at one experiment id of
config/model_config/<Model>.yaml (``--expid``, by default MCMLCC_criteo_S2, the release's
configs/mlcc_criteo/mc-mlcc-s2.yaml) mapped to the release's keys, on the same data: the
release hashes all 39 Criteo fields into one table each, so ours reads a FeatureMap of 39
categorical fields with the release's ``hash_size`` rows each (``--vocab``); the script
checks that both hold the same number of parameters.

* train step, ours: ``Trainer.train_step`` (zero_grad, forward, loss with regularizers,
  backward, FuxiCTR's gradient clipping at its default max norm 10, Adam step);
  release: its trainer's loop body (zero_grad, forward, ``BCEWithLogitsLoss``, backward,
  Adam step).
* eval step: one forward under ``torch.no_grad`` in eval mode.

The two alternate step by step after ``--warmup`` untimed steps each; CPU seconds of the
process (the harness clock, one thread by default); the script writes median and min
per side and ours / release as a speed ratio (> 1: ours is faster). Without ``--release-dir``
only our side is timed (the release columns say so). ``--profile`` prints torch.profiler's
self-CPU table of three train steps per side instead.
"""

from __future__ import annotations

import inspect
import os
import statistics
import sys
from typing import Callable, Dict, List

import torch
import yaml
from torch import nn

from benchmarks.harness import REPO, Harness, clock
from benchmarks.mlcc_release_equivalence import CHECKOUT, MODULE_NAME, RELEASE_FILE
from benchmarks.releases import load_release_module
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.testing import make_feature_map, random_batch
from fuxictr_ext.training import Trainer, TrainingConfig

NUM_FIELDS = 39          # Criteo: 13 integer + 26 categorical fields, all hashed by the release
MAX_GRADIENT_NORM = 10.0  # FuxiCTR's fit() default, which train_step clips to


def our_params(expid: str):
    """(model class, constructor arguments, learning rate) of ``expid``."""
    model_name = expid.split("_")[0]
    with open(os.path.join(REPO, "config", "model_config", f"{model_name}.yaml")) as fd:
        config = yaml.safe_load(fd)[expid]
    model_cls = get_model_class(config["model"])
    names = set(inspect.signature(model_cls.__init__).parameters) - {"self", "feature_map", "kwargs"}
    return model_cls, {k: v for k, v in config.items() if k in names}, config["learning_rate"]


def release_kwargs(params: dict, hash_size: int) -> dict:
    """Our MLCC / MC-MLCC arguments in the release's ``MLCCModel`` keys."""
    if not (params.get("local_compression", True) and params.get("squeeze_excitation", True)
            and params.get("cross_type", "plc") == "plc" and params.get("dynamic_mlp_activation") is None):
        raise ValueError("the release has only PLC without activation, with LC and SE: pick an expid that has them")
    depth = len(params["dynamic_mlp_units"])
    return dict(num_features=NUM_FIELDS, embedding_dim_total=params["embedding_dim"],
                embedding_dim_block=params.get("channel_dim", params["embedding_dim"]),
                hidden_dims=list(params["dnn_hidden_units"]), head_num=params["num_heads"],
                dmlp_dim_list=list(params["dynamic_mlp_units"]),
                dmlp_dim_concat=[k for k in params["keep_layers"] if k < depth],  # the last layer is always kept
                emb_size2=params["refined_dim"], dropout=params["net_dropout"], hash_size=hash_size)


def alternate(contenders: Dict[str, Callable[[], None]], iters: int, warmup: int) -> Dict[str, List[float]]:
    """CPU seconds of each contender's ``iters`` calls, the contenders taking turns."""
    for step in contenders.values():
        for _ in range(warmup):
            step()
    times: Dict[str, List[float]] = {name: [] for name in contenders}
    for _ in range(iters):
        for name, step in contenders.items():
            with clock() as t:
                step()
            times[name].append(t.cpu_s)
    return times


def main(argv=None) -> int:
    h = Harness("mlcc_release_speed", __doc__.split("\n")[0])
    h.parser.add_argument("--release-dir", help="a checkout of github.com/shishishu/MLCC (default: ours only)")
    h.parser.add_argument("--expid", default="MCMLCC_criteo_S2")
    h.parser.add_argument("--batch-size", type=int, default=4096)
    h.parser.add_argument("--vocab", type=int, default=10_000, help="ids per field (the release's hash_size)")
    h.parser.add_argument("--iters", type=int, default=30)
    h.parser.add_argument("--warmup", type=int, default=3)
    h.parser.add_argument("--profile", action="store_true")
    args = h.parse(argv)
    if args.tiny:
        args.batch_size, args.vocab, args.iters, args.warmup = 64, 100, 2, 1
    release = (load_release_module(h.parser, args.release_dir, RELEASE_FILE, MODULE_NAME, CHECKOUT)
               if args.release_dir else None)

    model_cls, params, learning_rate = our_params(args.expid)
    feature_map = make_feature_map(num_categorical=NUM_FIELDS, num_numeric=0, vocab_size=args.vocab)
    hash_size = feature_map.features["C1"]["vocab_size"]
    torch.manual_seed(0)
    ours = model_cls(feature_map, gpu=-1, verbose=0, learning_rate=learning_rate, optimizer="adam", **params)
    ours_trainer = Trainer(ours, TrainingConfig(max_gradient_norm=MAX_GRADIENT_NORM))
    batch = random_batch(feature_map, args.batch_size, seed=0)
    train = {"ours": lambda: (ours.train(), ours_trainer.train_step(batch))}
    evaluate = {"ours": lambda: (ours.eval(), _no_grad(ours, batch))}
    counts = {"ours": sum(p.numel() for p in ours.parameters())}
    if release is not None:
        theirs = release.MLCCModel(**release_kwargs(params, hash_size))
        counts["release"] = sum(p.numel() for p in theirs.parameters())
        if counts["ours"] != counts["release"]:
            raise RuntimeError(f"parameter counts differ: {counts}")
        optimizer = torch.optim.Adam(theirs.parameters(), lr=learning_rate)
        criterion = nn.BCEWithLogitsLoss()
        ids = torch.stack([batch[name] for name in feature_map.features], dim=1)     # (B, 39), the release's input
        labels = batch["clk"].float()

        def release_train():
            theirs.train()
            optimizer.zero_grad()
            criterion(theirs(ids).squeeze(), labels).backward()
            optimizer.step()

        train["release"] = release_train
        evaluate["release"] = lambda: (theirs.eval(), _no_grad(theirs, ids))

    lines = [f"{torch.get_num_threads()} thread(s), batch {args.batch_size}, {hash_size:,} ids per field, "
             f"{counts['ours']:,} parameters on each side; {args.expid}: {params}"
             + ("" if release is not None else "; no --release-dir: the release is not measured")]
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        for name, step in train.items():
            for _ in range(args.warmup):
                step()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    step()
            lines += ["", f"{name}: 3 train steps", "```",
                      prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20), "```"]
        h.write("\n".join(lines), [])
        return 0
    lines += ["", f"{args.iters} alternated steps after {args.warmup} warm-up steps each, CPU ms per step", "",
              "| step | ours median | release median | ours min | release min | ours/release speed (median) "
              "| (min) |", "|---|---|---|---|---|---|---|"]
    records = []
    for kind, contenders in (("train", train), ("eval", evaluate)):
        times = alternate(contenders, args.iters, args.warmup)
        med = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        low = {name: 1e3 * min(t) for name, t in times.items()}
        if release is not None:
            lines.append(f"| {kind} | {med['ours']:.1f} | {med['release']:.1f} | {low['ours']:.1f} | "
                         f"{low['release']:.1f} | {med['release'] / med['ours']:.3f}x | "
                         f"{low['release'] / low['ours']:.3f}x |")
        else:
            lines.append(f"| {kind} | {med['ours']:.1f} | - | {low['ours']:.1f} | - | - | - |")
        print(lines[-1], flush=True)
        records.append({"step": kind, "cpu_seconds": times})
    h.write("\n".join(lines), records)
    return 0


def _no_grad(model, inputs):
    with torch.no_grad():
        return model(inputs)


if __name__ == "__main__":
    sys.exit(main())
