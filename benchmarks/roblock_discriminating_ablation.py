"""RoBlock ablations on the ``discriminating`` synthetic data (issue 21): test AUC and
mean train loss every ``--eval-steps`` training steps, one variant per call.

    python -m benchmarks.roblock_discriminating_ablation --base RoBlock_criteo_2x \\
        --overrides '{"embedding_dim": 8, "block_norm": "layer_norm"}' --epochs 2 --tag LN

The model is built from a committed experiment id (``--base``) with ``--overrides``
and the shared settings of ``benchmarks.discriminating_synthetic`` (batch 512,
Adam lr 1e-3, seed 2019), on the processed ``discriminating`` dataset under
``data/`` (generated and built on first use); it trains with ``Trainer.train_step`` (gradient norm clipped at 10, as
``fit`` does) and is evaluated on the test split, so the curve shows when (and
whether) a variant leaves the first-order level (planted first-order AUC 0.586).
Writes the curve (one row per evaluation); ``--zeroed-blocks`` adds the
test AUC of the trained model with every block's update zeroed (how much of what the
head reads comes through the blocks).
"""

from __future__ import annotations

import json
import logging
import os
from typing import List, Optional

import numpy as np
import torch
from fuxictr.utils import load_model_config
from sklearn.metrics import roc_auc_score

from benchmarks.discriminating_synthetic import DATASET, SHARED
from benchmarks.fixtures import TINY_ROWS, configured_dataset
from benchmarks.harness import REPO, Harness
from fuxictr_ext.data import TensorDataLoader
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.training import Trainer

SEED = 2019


def test_auc(model, loader) -> float:
    model.eval()
    labels, scores = [], []
    with torch.no_grad():
        for batch in loader:
            scores.append(model(batch)["y_pred"].squeeze(-1).numpy())
            labels.append(model.get_labels(batch).squeeze(-1).numpy())
    model.train()
    return float(roc_auc_score(np.concatenate(labels), np.concatenate(scores)))


def zeroed_blocks_auc(model, loader) -> float:
    """Test AUC with the update of every RoBlock block zeroed (X^(l) = X^(l-1)): what the head
    reads through the residual stream alone."""
    if not hasattr(model, "blocks"):
        raise SystemExit(f"--zeroed-blocks needs a RoBlock model, --base builds {type(model).__name__}")
    handles = [block.fusion.register_forward_hook(lambda module, args, output: torch.zeros_like(output))
               for block in model.blocks]
    try:
        return test_auc(model, loader)
    finally:
        for handle in handles:
            handle.remove()


def main(argv: Optional[List[str]] = None) -> None:
    h = Harness("roblock_discriminating_ablation", __doc__.split("\n\n")[0].replace("\n", " "))
    h.parser.add_argument("--base", default="RoBlock_criteo_2x", help="committed experiment id the model starts from")
    h.parser.add_argument("--overrides", default="{}", help="JSON dict of model keys replaced in --base")
    h.parser.add_argument("--epochs", type=int, default=2)
    h.parser.add_argument("--eval-steps", type=int, default=313, help="training steps between evaluations")
    h.parser.add_argument("--tag", default="variant")
    h.parser.add_argument("--zeroed-blocks", action="store_true",
                          help="also report the test AUC with every block's update f^(l)(...) replaced by zeros")
    args = h.parse(argv)
    if args.tiny:
        args.epochs, args.eval_steps = 1, 2
    logging.disable(logging.INFO)
    dataset, feature_map = configured_dataset(DATASET, args.work_dir, TINY_ROWS if args.tiny else None)
    data_dir = os.path.join(dataset["data_root"], DATASET)

    params = load_model_config(os.path.join(REPO, "config"), args.base)
    params.update({"batch_size": SHARED["batch_size"], "learning_rate": SHARED["learning_rate"], "seed": SEED,
                   "verbose": 0, "model_root": os.path.join(args.work_dir, "checkpoints") + "/"})
    params.pop("spectrum_callbacks", None)
    params.update(json.loads(args.overrides))
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    model = get_model_class(params["model"])(
        feature_map, **{k: v for k, v in params.items() if k not in ("model", "dataset_id")})
    train = TensorDataLoader(feature_map, os.path.join(data_dir, "train.parquet"), split="train",
                             batch_size=SHARED["batch_size"], shuffle=True, seed=SEED)
    test = TensorDataLoader(feature_map, os.path.join(data_dir, "test.parquet"), split="test", batch_size=4096)
    trainer = Trainer(model)
    step, losses, curve = 0, [], []
    with h.clock() as t:
        for _ in range(args.epochs):
            model.train()
            for batch in train:
                losses.append(float(trainer.train_step(batch)[0]))
                step += 1
                if step % args.eval_steps == 0:
                    curve.append((step, round(float(np.mean(losses[-args.eval_steps:])), 4),
                                  round(test_auc(model, test), 4)))
                    print(args.tag, curve[-1], flush=True)
    lines = [f"`{args.tag}`: `{args.base}` with {args.overrides}, {args.epochs} epoch(s), shared settings {SHARED}, "
             f"seed {SEED}; {t.wall_s:.0f} s of training and evaluation", "", "| step | mean train loss | test AUC |", "|---|---|---|"]
    lines += [f"| {step} | {loss} | {auc} |" for step, loss, auc in curve]
    record = {"tag": args.tag, "base": args.base, "overrides": json.loads(args.overrides), "curve": curve}
    if args.zeroed_blocks:
        record["zeroed_blocks_test_AUC"] = round(zeroed_blocks_auc(model, test), 4)
        lines += ["", f"Test AUC with every block's update zeroed: {record['zeroed_blocks_test_AUC']}"]
    h.write("\n".join(lines), [record])


if __name__ == "__main__":
    main()
