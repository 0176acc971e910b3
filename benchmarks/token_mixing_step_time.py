"""Training-step time of every Criteo / Avazu RankMixer and RankElastor config, and the
batched per-token FFN against the token loop it replaces.

    python -m benchmarks.token_mixing_step_time --device cuda

Models get random ids over a 10,000-id vocabulary per field (the dense part, not
the embedding tables, is what differs between the configs); times are fp32,
forward + backward + Adam step, averaged after warm-up. ``--tiny``: CPU, batch 64, one
config per model, one step.
"""

from pathlib import Path

import torch
import yaml

from benchmarks.harness import Harness, mean_seconds
from fuxictr_ext.testing import make_feature_map, random_batch
from fuxictr_ext.cost import count_parameters
from fuxictr_ext.layers.token_mixing import PerTokenFFN
from model_zoo.RankElastor import RankElastor
from model_zoo.RankMixer import RankMixer

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "model_config"
DATASET_FIELDS = {"criteo_x1": (26, 13), "avazu_x4": (24, 0)}  # (categorical, numeric)
MODELS = {"RankMixer": RankMixer, "RankElastor": RankElastor}


def ffn_batched_vs_loop(device: torch.device, iters: int, warmup: int = 5, batch_size=None) -> list:
    """One PerTokenFFN over T tokens against T single-token FFNs called in a Python loop
    (``batch_size`` replaces each setting's batch size)."""
    lines = []
    for tokens, dim, hidden, batch in [(26, 30, [64, 64], 4096), (24, 16, [16], 10000)]:
        batch = batch_size or batch
        torch.manual_seed(0)
        batched = PerTokenFFN(tokens, dim, hidden, "GLU", 3.0, True).to(device)
        singles = torch.nn.ModuleList(PerTokenFFN(1, dim, hidden, "GLU", 3.0, True)
                                      for _ in range(tokens)).to(device)
        x = torch.randn(batch, tokens, dim, device=device, requires_grad=True)
        t_batched = 1e3 * mean_seconds(lambda: batched(x).sum().backward(), iters, warmup=warmup, device=device)
        t_loop = 1e3 * mean_seconds(lambda: torch.cat([singles[t](x[:, t:t + 1]) for t in range(tokens)], dim=1)
                         .sum().backward(), iters, warmup=warmup, device=device)
        lines.append(f"P-FFN GLU T={tokens} D={dim} widths={hidden} B={batch}: batched {t_batched:.2f} ms, "
                     f"token loop {t_loop:.2f} ms (forward + backward)")
        print(lines[-1], flush=True)
    return lines


def config_step_times(device: torch.device, iters: int, model_root: str, warmup: int = 5, batch_size=None,
                      configs_per_model=None) -> list:
    """Train-step time of every config (the first ``configs_per_model`` of each model; ``batch_size``
    replaces the configs' batch size)."""
    lines = []
    for file_name in ("RankMixer.yaml", "RankElastor.yaml"):
        configs = yaml.safe_load(open(CONFIG_DIR / file_name))
        expids = [expid for expid, block in configs.items()
                  if expid != "Base" and block["dataset_id"] in DATASET_FIELDS][:configs_per_model]
        for expid in expids:
            block = configs[expid]
            torch.manual_seed(0)
            categorical, numeric = DATASET_FIELDS[block["dataset_id"]]
            fmap = make_feature_map(num_categorical=categorical, num_numeric=numeric, vocab_size=10000)
            params = {**configs["Base"], **block, "verbose": 0, "model_root": model_root,
                      "gpu": device.index if device.type == "cuda" else -1, "metrics": ["logloss", "AUC"]}
            params["batch_size"] = batch_size or params["batch_size"]
            model = MODELS[params["model"]](fmap, **params)
            batch = {k: v.to(model.device) for k, v in random_batch(fmap, params["batch_size"]).items()}
            labels = model.get_labels(batch)
            model.train()

            def train_step():
                model.optimizer.zero_grad()
                model.compute_loss(model(batch), labels).backward()
                model.optimizer.step()

            dense = count_parameters(model)["dense"]
            lines.append(f"{expid}: batch {params['batch_size']}, dense parameters {dense:,}, train step "
                         f"{1e3 * mean_seconds(train_step, iters, warmup=warmup, device=model.device):.2f} ms")
            print(lines[-1], flush=True)
            del model
    return lines


def main(argv=None) -> None:
    h = Harness("token_mixing_step_time", __doc__.split("\n\n")[0].replace("\n", " "))
    h.parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    h.parser.add_argument("--iters", type=int, default=20, help="timed iterations per measurement")
    args = h.parse(argv)
    tiny = {"warmup": 1, "batch_size": 64} if args.tiny else {}
    if args.tiny:
        args.device, args.iters = "cpu", 1
    device = torch.device(args.device)
    lines = []
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        lines.append(f"torch {torch.__version__} on {torch.cuda.get_device_name(device)}")
    lines += ffn_batched_vs_loop(device, args.iters, **tiny)
    lines += config_step_times(device, args.iters, args.work_dir, **tiny, configs_per_model=1 if args.tiny else None)
    h.write("```\n" + "\n".join(lines) + "\n```", lines)


if __name__ == "__main__":
    main()
