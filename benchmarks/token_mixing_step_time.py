"""Training-step time of every Criteo / Avazu RankMixer and RankElastor config, and the
batched per-token FFN against the token loop it replaces.

    python -m benchmarks.token_mixing_step_time --device cuda

Models get random ids over a 10,000-id vocabulary per field (the dense part, not
the embedding tables, is what differs between the configs); times are fp32,
forward + backward + Adam step, averaged after warm-up.
"""

import argparse
from pathlib import Path

import torch
import yaml

from fuxictr_ext.testing import make_feature_map, random_batch
from benchmarks.timing import mean_seconds
from fuxictr_ext.cost import count_parameters
from fuxictr_ext.layers.token_mixing import PerTokenFFN
from model_zoo.RankElastor import RankElastor
from model_zoo.RankMixer import RankMixer

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "model_config"
DATASET_FIELDS = {"criteo_x1": (26, 13), "avazu_x4": (24, 0)}  # (categorical, numeric)
MODELS = {"RankMixer": RankMixer, "RankElastor": RankElastor}


def ffn_batched_vs_loop(device: torch.device, iters: int) -> None:
    """One PerTokenFFN over T tokens against T single-token FFNs called in a Python loop."""
    for tokens, dim, hidden, batch in [(26, 30, [64, 64], 4096), (24, 16, [16], 10000)]:
        torch.manual_seed(0)
        batched = PerTokenFFN(tokens, dim, hidden, "GLU", 3.0, True).to(device)
        singles = torch.nn.ModuleList(PerTokenFFN(1, dim, hidden, "GLU", 3.0, True)
                                      for _ in range(tokens)).to(device)
        x = torch.randn(batch, tokens, dim, device=device, requires_grad=True)
        t_batched = 1e3 * mean_seconds(lambda: batched(x).sum().backward(), iters, warmup=5, device=device)
        t_loop = 1e3 * mean_seconds(lambda: torch.cat([singles[t](x[:, t:t + 1]) for t in range(tokens)], dim=1)
                         .sum().backward(), iters, warmup=5, device=device)
        print(f"P-FFN GLU T={tokens} D={dim} widths={hidden} B={batch}: batched {t_batched:.2f} ms, "
              f"token loop {t_loop:.2f} ms (forward + backward)", flush=True)


def config_step_times(device: torch.device, iters: int) -> None:
    for file_name in ("RankMixer.yaml", "RankElastor.yaml"):
        configs = yaml.safe_load(open(CONFIG_DIR / file_name))
        for expid, block in configs.items():
            if expid == "Base" or block["dataset_id"] not in DATASET_FIELDS:
                continue
            torch.manual_seed(0)
            categorical, numeric = DATASET_FIELDS[block["dataset_id"]]
            fmap = make_feature_map(num_categorical=categorical, num_numeric=numeric, vocab_size=10000)
            params = {**configs["Base"], **block, "verbose": 0, "model_root": "/tmp/step_time",
                      "gpu": device.index if device.type == "cuda" else -1, "metrics": ["logloss", "AUC"]}
            model = MODELS[params["model"]](fmap, **params)
            batch = {k: v.to(model.device) for k, v in random_batch(fmap, params["batch_size"]).items()}
            labels = model.get_labels(batch)
            model.train()

            def train_step():
                model.optimizer.zero_grad()
                model.compute_loss(model(batch), labels).backward()
                model.optimizer.step()

            dense = count_parameters(model)["dense"]
            print(f"{expid}: batch {params['batch_size']}, dense parameters {dense:,}, "
                  f"train step {1e3 * mean_seconds(train_step, iters, warmup=5, device=model.device):.2f} ms", flush=True)
            del model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per measurement")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        print(f"torch {torch.__version__} on {torch.cuda.get_device_name(device)}", flush=True)
    ffn_batched_vs_loop(device, args.iters)
    config_step_times(device, args.iters)


if __name__ == "__main__":
    main()
