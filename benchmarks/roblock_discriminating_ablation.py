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
Writes the curve: one row per evaluation with (step, mean train loss, test AUC, test logloss,
mean task loss, mean HSIC term) over the steps since the last one, so a regulariser that
outgrows the task loss shows; ``--zeroed-blocks`` adds the
test AUC of the trained model with every block's update zeroed (how much of what the
head reads comes through the blocks). ``--init-gradients`` prints, for the first training
batch at initialisation, the task loss, the HSIC term and the gradient norm each of them
sends to every part of the model (embedding, f^(0), each block's modules, f*), before
training.
"""

from __future__ import annotations

import json
import logging
import os
from typing import List, Optional, Tuple

import numpy as np
import torch
from fuxictr.utils import load_model_config
from sklearn.metrics import log_loss, roc_auc_score

from benchmarks.discriminating_synthetic import DATASET, SHARED
from benchmarks.fixtures import TINY_ROWS, configured_dataset
from benchmarks.harness import REPO, Harness
from fuxictr_ext.data import TensorDataLoader
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.training import Trainer

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
    h = Harness("roblock_discriminating_ablation", __doc__.split("\n\n")[0].replace("\n", " "))
    h.parser.add_argument("--base", default="RoBlock_criteo_2x", help="committed experiment id the model starts from")
    h.parser.add_argument("--overrides", default="{}", help="JSON dict of model keys replaced in --base")
    h.parser.add_argument("--epochs", type=int, default=2)
    h.parser.add_argument("--eval-steps", type=int, default=313, help="training steps between evaluations")
    h.parser.add_argument("--tag", default="variant")
    h.parser.add_argument("--init-gradients", action="store_true",
                          help="report the loss parts and their gradient norms per module at initialisation")
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
    record = {"tag": args.tag, "base": args.base, "overrides": json.loads(args.overrides)}
    if args.init_gradients:
        record["init_gradients"] = init_gradients(model, next(iter(train)))
        print(args.tag, "init gradients", json.dumps(record["init_gradients"]), flush=True)
    step, losses, sums, curve = 0, [], {}, []
    with h.clock() as t:
        for _ in range(args.epochs):
            model.train()
            for batch in train:
                loss, parts = trainer.train_step(batch)
                losses.append(float(loss))
                for name, value in parts.items():
                    sums[name] = sums.get(name, 0.0) + float(value)
                step += 1
                if step % args.eval_steps == 0:
                    auc, logloss = test_metrics(model, test)
                    curve.append((step, round(float(np.mean(losses[-args.eval_steps:])), 4), round(auc, 4),
                                  round(logloss, 4), round(sums.get("task", float("nan")) / args.eval_steps, 4),
                                  round(sums.get("hsic", 0.0) / args.eval_steps, 4)))
                    sums = {}
                    print(args.tag, curve[-1], flush=True)
    lines = [f"`{args.tag}`: `{args.base}` with {args.overrides}, {args.epochs} epoch(s), shared settings {SHARED}, "
             f"seed {SEED}; {t.wall_s:.0f} s of training and evaluation", "",
             "| step | mean train loss | test AUC | test logloss | mean task loss | mean HSIC term |",
             "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in curve]
    if args.init_gradients:
        lines += ["", f"Loss parts and gradient norms per module at initialisation: {json.dumps(record['init_gradients'])}"]
    record["curve"] = curve
    if args.zeroed_blocks:
        record["zeroed_blocks_test_AUC"] = round(zeroed_blocks_auc(model, test), 4)
        lines += ["", f"Test AUC with every block's update zeroed: {record['zeroed_blocks_test_AUC']}"]
    h.write("\n".join(lines), [record])


if __name__ == "__main__":
    main()
