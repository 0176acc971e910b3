"""Training-step time, peak memory and inference time of RoBlock variants on random batches.

The paper's setting (section 5.5, appendix A.5.1): batch size 10,000, 10x scale-up
(D = 100), Criteo's 39 fields. Each variant is built on an in-memory FeatureMap
(no dataset needed), warmed up, then timed over ``--steps`` Adam steps and eval
forwards. It also checks, on the device, that eval mode is deterministic and that a
reloaded checkpoint gives identical predictions.

    python -m benchmarks.roblock_step_time --gpu 0 --batch-size 10000 --fields 39
"""

from __future__ import annotations

import torch

from benchmarks.harness import Harness, mean_seconds, synchronize
from fuxictr_ext.cost import count_parameters
from fuxictr_ext.testing import make_feature_map, random_batch

from model_zoo.RoBlock import RoBlock

HETERO = dict(interaction_types=["DCNv2", "FM", "CIN", "DNN"], interaction_assignment="sample")
VARIANTS = {
    "base_L1": {},
    "10x_L1_hetero": dict(scale_factor=10, **HETERO),
    "10x_L5_hetero": dict(scale_factor=10, num_blocks=5, **HETERO),
    "10x_L5_homo_crossnetv2": dict(scale_factor=10, num_blocks=5),
    "10x_L5_hetero_noRU_noHSIC": dict(scale_factor=10, num_blocks=5, rank1_norm=False, hsic_weight=0, **HETERO),
}


def measure(name: str, overrides: dict, feature_map, batch, gpu: int, steps: int, model_root: str) -> dict:
    torch.manual_seed(0)
    model = RoBlock(feature_map, model_id=name, gpu=gpu, verbose=0, model_root=model_root, **overrides)
    device = model.device
    dense = count_parameters(model)["dense"]
    y_true = model.get_labels(batch)

    def train_step():
        model.optimizer.zero_grad()
        loss = model.compute_loss(model(batch), y_true)
        loss.backward()
        model.optimizer.step()

    model.train()
    for _ in range(3):
        train_step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_ms = mean_seconds(train_step, steps, warmup=0, device=device) * 1e3
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")

    model.eval()
    with torch.no_grad():
        eval_ms = mean_seconds(lambda: model(batch), steps, warmup=3, device=device) * 1e3
        y_pred = model(batch)["y_pred"]
        deterministic = torch.equal(model(batch)["y_pred"], y_pred)
    model.save_weights(model.checkpoint)
    reloaded = RoBlock(feature_map, model_id=name, gpu=gpu, verbose=0, model_root=model_root, **overrides)
    reloaded.load_weights(model.checkpoint)
    reloaded.eval()
    with torch.no_grad():
        identical = torch.equal(reloaded(batch)["y_pred"], y_pred)
    return {"variant": name, "components": model.num_components, "dense_params": dense, "train_step_ms": train_ms,
            "peak_gpu_mem_gib": peak, "eval_forward_ms": eval_ms, "eval_deterministic": deterministic,
            "reload_identical": identical}


def main(argv=None) -> None:
    h = Harness("roblock_step_time", __doc__.split("\n")[0])
    h.parser.add_argument("--gpu", type=int, default=-1, help="CUDA device index, -1 for CPU")
    h.parser.add_argument("--batch-size", type=int, default=10000)
    h.parser.add_argument("--fields", type=int, default=39, help="categorical fields of the random FeatureMap")
    h.parser.add_argument("--steps", type=int, default=10)
    h.parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = h.parse(argv)
    if args.tiny:
        args.batch_size, args.fields, args.steps, args.variants = 64, 5, 1, ["base_L1", "10x_L1_hetero"]
    feature_map = make_feature_map(num_categorical=args.fields, num_numeric=0, vocab_size=10000)
    device = torch.device(f"cuda:{args.gpu}" if args.gpu >= 0 else "cpu")
    batch = {k: v.to(device) for k, v in random_batch(feature_map, args.batch_size, seed=0).items()}
    lines = [f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
             f"batch_size={args.batch_size}, fields={args.fields}, {args.steps} steps (mean)", "",
             "| variant | M | dense params | train step ms | peak GPU memory GiB | eval forward ms "
             "| eval deterministic | reload identical |", "|---|---|---|---|---|---|---|---|"]
    records = []
    for name in args.variants:
        row = measure(name, VARIANTS[name], feature_map, batch, args.gpu, args.steps, args.work_dir)
        records.append(row)
        lines.append(f"| {name} | {row['components']} | {row['dense_params']:,} | {row['train_step_ms']:.1f} | "
                     f"{row['peak_gpu_mem_gib']:.2f} | {row['eval_forward_ms']:.1f} | {row['eval_deterministic']} | "
                     f"{row['reload_identical']} |")
        print(lines[-1], flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    h.write("\n".join(lines), records)


if __name__ == "__main__":
    main()
