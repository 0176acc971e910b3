"""RoBlock ablations on the ``discriminating`` synthetic data (issue 21): test AUC and
mean train loss every ``--eval-steps`` training steps, one variant per call.

    python -m benchmarks.discriminating_synthetic --models DNN --epochs 1   # generates and builds the data once
    python -m benchmarks.roblock_discriminating_ablation --base RoBlock_criteo_2x \\
        --overrides '{"embedding_dim": 8, "block_norm": "layer_norm"}' --epochs 2 --tag LN

The model is built from a committed experiment id (``--base``) with ``--overrides``
and the shared settings of ``benchmarks.discriminating_synthetic`` (batch 512,
Adam lr 1e-3, seed 2019), on the processed ``discriminating`` dataset under
``data/``; it trains with ``ZooModel.train_step`` (gradient norm clipped at 10, as
``fit`` does) and is evaluated on the test split, so the curve shows when (and
whether) a variant leaves the first-order level (planted first-order AUC 0.586).
Every evaluation line holds (step, mean train loss, test AUC, test logloss, mean task
loss, mean HSIC term) over the steps since the last one, so a regulariser that outgrows
the task loss shows. Prints one line per evaluation and a final ``RESULT`` line; ``--zeroed-blocks`` adds the
test AUC of the trained model with every block's update zeroed (how much of what the
head reads comes through the blocks). ``--init-gradients`` prints, for the first training
batch at initialisation, the task loss, the HSIC term and the gradient norm each of them
sends to every part of the model (embedding, f^(0), each block's modules, f*), before
training.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import List, Optional, Tuple

import numpy as np
import torch
from fuxictr.features import FeatureMap
from fuxictr.utils import load_model_config
from sklearn.metrics import log_loss, roc_auc_score

from benchmarks.discriminating_synthetic import DATASET, SHARED
from benchmarks.mlcc_scaling import REPO
from fuxictr_ext.data import TensorDataLoader
from fuxictr_ext.registry import get_model_class

SEED = 2019


def test_metrics(model, loader) -> Tuple[float, float]:
    """(AUC, logloss) of the model on every batch of the loader."""
    model.eval()
    labels, scores = [], []
    with torch.no_grad():
        for batch in loader:
            scores.append(model(batch)["y_pred"].squeeze(-1).numpy())
            labels.append(model.get_labels(batch).squeeze(-1).numpy())
    model.train()
    y_true, y_pred = np.concatenate(labels), np.concatenate(scores)
    return float(roc_auc_score(y_true, y_pred)), float(log_loss(y_true, np.clip(y_pred, 1e-7, 1 - 1e-7)))


def test_auc(model, loader) -> float:
    return test_metrics(model, loader)[0]


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


def parameter_group(name: str) -> str:
    """``blocks.<l>.<module>`` for a block's parameters, else the top-level module's name."""
    parts = name.split(".")
    return ".".join(parts[:3]) if parts[0] == "blocks" else parts[0]


def init_gradients(model, batch) -> dict:
    """Task loss, HSIC term and the gradient norm of each per parameter group, in training mode."""
    model.train()
    out = model(batch)
    losses = {"task": model.add_loss(out, model.get_labels(batch))}
    losses.update(out.get("aux_losses", {}))
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    report = {}
    for part, loss in losses.items():
        grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
        squares: dict = {}
        for name, grad in zip(names, grads):
            if grad is not None:
                squares[parameter_group(name)] = squares.get(parameter_group(name), 0.0) + float(grad.square().sum())
        report[part] = {"loss": round(float(loss.detach()), 4),
                        "grad_norm": {group: float(f"{value ** 0.5:.3g}") for group, value in squares.items()}}
    return report


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="committed experiment id the model starts from")
    parser.add_argument("--overrides", default="{}", help="JSON dict of model keys replaced in --base")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--eval-steps", type=int, default=313, help="training steps between evaluations")
    parser.add_argument("--tag", default="variant")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--init-gradients", action="store_true",
                        help="print the loss parts and their gradient norms per module at initialisation")
    parser.add_argument("--zeroed-blocks", action="store_true",
                        help="also report the test AUC with every block's update f^(l)(...) replaced by zeros")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.disable(logging.INFO)
    data_dir = os.path.join(REPO, "data", DATASET)
    if not os.path.isfile(os.path.join(data_dir, "feature_map.json")):
        raise FileNotFoundError(f"{data_dir}: no built dataset; run benchmarks.discriminating_synthetic once first")
    feature_map = FeatureMap(DATASET, data_dir)
    feature_map.load(os.path.join(data_dir, "feature_map.json"), {})

    params = load_model_config(os.path.join(REPO, "config"), args.base)
    params.update({"batch_size": SHARED["batch_size"], "learning_rate": SHARED["learning_rate"], "seed": SEED,
                   "verbose": 0, "model_root": os.path.join(REPO, "checkpoints", "roblock_ablation") + "/"})
    params.pop("spectrum_callbacks", None)
    params.update(json.loads(args.overrides))
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    model = get_model_class(params["model"])(
        feature_map, **{k: v for k, v in params.items() if k not in ("model", "dataset_id")})
    train = TensorDataLoader(feature_map, os.path.join(data_dir, "train.parquet"), split="train",
                             batch_size=SHARED["batch_size"], shuffle=True, seed=SEED)
    test = TensorDataLoader(feature_map, os.path.join(data_dir, "test.parquet"), split="test", batch_size=4096)
    model._max_gradient_norm = 10.0
    if args.init_gradients:
        print("INIT_GRADIENTS", args.tag, json.dumps(init_gradients(model, next(iter(train)))), flush=True)
    start, step, losses, curve = time.time(), 0, [], []
    for _ in range(args.epochs):
        model.train()
        for batch in train:
            losses.append(float(model.train_step(batch).detach()))
            step += 1
            if step % args.eval_steps == 0:
                parts = {name: total / max(model._loss_count, 1) for name, total in model._loss_sums.items()}
                model._loss_sums, model._loss_count = {}, 0
                auc, logloss = test_metrics(model, test)
                curve.append((step, round(float(np.mean(losses[-args.eval_steps:])), 4), round(auc, 4),
                              round(logloss, 4), round(parts.get("task", float("nan")), 4),
                              round(parts.get("hsic", 0.0), 4)))
                print(args.tag, curve[-1], f"{time.time() - start:.0f}s", flush=True)
    print("RESULT", args.tag, curve, flush=True)
    if args.zeroed_blocks:
        print("ZEROED_BLOCKS", args.tag, round(zeroed_blocks_auc(model, test), 4), flush=True)


if __name__ == "__main__":
    main()
