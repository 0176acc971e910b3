"""Token-mixing layers and models against a token-loop reference, at every released config.

    python -m benchmarks.token_mixing_speed                      # CPU, 1 thread, batch 4096
    python -m benchmarks.token_mixing_speed --parts ffn glu --configs RankMixer_criteo

For every Criteo / Avazu experiment id of config/model_config/RankMixer.yaml and
RankElastor.yaml (T, D, FFN widths, activation, GLU expansion r, inner norm, mixing,
depth), the batched layers of :mod:`fuxictr_ext.layers.token_mixing` are timed
against a reference written here the way the authors' release computes them
(vasile-paskardlgm/RankElastor, ``src/Token_FFN.py``): T separate small
``nn.Linear`` networks, each run on its (B, d) slice, the outputs stacked.

* ``ffn``: the P-FFN with its residual (``PerTokenFFN`` against ``LoopFFN``);
* ``glu``: one GLU layer of Eq. 4 (``PerTokenGLU`` against T ``LoopGLU``, the
  release's five ``nn.Linear`` maps W_1, W_2, S, W_down, R);
* ``mixing``: the token mixing with its residual (``FullMixing`` /
  ``BlockTransposeMixing`` against the release's forms: RMSNorm + one
  ``nn.Linear`` over vec X, or view / permute / reshape);
* ``model``: the whole model, ours against the same model whose P-FFNs and
  mixings are the references (equal dense parameter counts checked):
  a train step (forward, loss, backward, Adam step) and an eval forward.

A layer's train step is forward + backward of ``out.sum()`` with the input
requiring a gradient (as inside the model); its eval step is a forward under
``torch.no_grad``. The two contenders take turns step by step after
``--warmup`` untimed steps each; a timed sample is the mean of enough calls to
last ``--min-sample-seconds``; the script prints the median and the minimum
of ``--steps`` samples and ``speed-up = loop median / ours median``
(= samples/s ours / samples/s loop). Parameter counts of both sides are checked
equal before timing.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import yaml
from torch import nn

from benchmarks.harness import Harness, call_seconds
from fuxictr_ext.cost import count_parameters
from fuxictr_ext.layers.token_mixing import (BlockTransposeMixing, FullMixing, PerTokenFFN, PerTokenGLU,
                                             FFN_ACTIVATIONS)
from fuxictr_ext.config import check_choice
from fuxictr_ext.testing import make_feature_map, random_batch
from model_zoo.RankElastor import RankElastor
from model_zoo.RankMixer import RankMixer

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "model_config"
CONFIG_FILES = ("RankMixer.yaml", "RankElastor.yaml")
DATASET_FIELDS = {"criteo_x1": (26, 13), "avazu_x4": (24, 0)}  # (categorical, numeric)
MODELS = {"RankMixer": RankMixer, "RankElastor": RankElastor}
PARTS = ("ffn", "glu", "mixing", "model")


# --------------------------------------------------------------------------- token-loop references
class LoopGLU(nn.Module):
    """One token's GLU layer as the release writes it: (S x + GELU(W_1 x)) * (W_2 x) -> W_down, + R x.

    Shapes: (B, d) -> (B, d).
    """

    def __init__(self, dim: int, expansion_rate: float):
        super().__init__()
        hidden = int(dim * expansion_rate)
        self.lift_gate, self.lift_value = nn.Linear(dim, hidden), nn.Linear(dim, hidden)  # W_1, W_2
        self.lift_skip, self.residual = nn.Linear(dim, hidden), nn.Linear(dim, dim)        # S, R
        self.reduce = nn.Linear(hidden, dim)                                               # W_down
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = (self.lift_skip(x) + self.activation(self.lift_gate(x))) * self.lift_value(x)  # (B, r*d)
        return self.reduce(inner) + self.residual(x)                                           # (B, d)


class TokenLoop(nn.Module):
    """T independent networks, network t on the (B, d) slice x[:, t], outputs stacked to (B, T, d_out).

    Args:
        networks: one module per token.
        residual: add the input (the P-FFN's X + f_t(X_t)).
    """

    def __init__(self, networks: Sequence[nn.Module], residual: bool):
        super().__init__()
        self.networks = nn.ModuleList(networks)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.stack([net(x[:, t]) for t, net in enumerate(self.networks)], dim=1)  # (B, T, d_out)
        return x + out if self.residual else out


def loop_token_network(token_dim: int, hidden_units: Sequence[int], activation: str, expansion_rate: float,
                       inner_norm: bool, dropout: float) -> nn.Sequential:
    """One token's FFN in the order of the release's ``Token_Interaction._build_mlp``."""
    activation = check_choice("ffn_activation", activation, FFN_ACTIVATIONS)
    layers: List[nn.Module] = []
    width = token_dim
    for out_width in hidden_units:
        if activation == "GLU":
            if inner_norm:
                layers.append(nn.RMSNorm(width))
            layers.append(LoopGLU(width, expansion_rate))
            if out_width != width:
                layers.append(nn.Linear(width, out_width))
        else:
            layers.append(nn.Linear(width, out_width))
            if inner_norm:
                layers.append(nn.RMSNorm(out_width))
            layers.append(nn.GELU() if activation == "GELU" else nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = out_width
    layers.append(nn.Linear(width, token_dim))
    return nn.Sequential(*layers)


class LoopFullMixing(nn.Module):
    """The release's full mixing: X + reshape(Linear(RMSNorm(vec X))). Shapes: (B, T, D) -> (B, T, D)."""

    def __init__(self, num_tokens: int, token_dim: int):
        super().__init__()
        self.norm = nn.RMSNorm(num_tokens * token_dim)
        self.mix = nn.Linear(num_tokens * token_dim, num_tokens * token_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(self.norm(x.reshape(x.shape[0], -1))).reshape(x.shape)


class LoopBlockTranspose(nn.Module):
    """The release's block transpose: X + view(B, T, H, D/H).permute(0, 2, 1, 3).reshape(B, T, D)."""

    def __init__(self, num_tokens: int, token_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        heads = x.view(batch, tokens, self.num_heads, dim // self.num_heads).permute(0, 2, 1, 3)
        return x + heads.reshape(batch, tokens, dim)


# --------------------------------------------------------------------------- configs
def released_configs(names: Sequence[str]) -> Dict[str, dict]:
    """Experiment id -> merged params of every Criteo / Avazu id (optionally only ``names``)."""
    found = {}
    for file_name in CONFIG_FILES:
        configs = yaml.safe_load(open(CONFIG_DIR / file_name))
        for expid, block in configs.items():
            if expid != "Base" and block["dataset_id"] in DATASET_FIELDS and (not names or expid in names):
                found[expid] = {**configs["Base"], **block}
    missing = set(names) - set(found)
    if missing:
        raise ValueError(f"--configs {sorted(missing)} are not Criteo / Avazu ids of {list(CONFIG_FILES)}")
    return found


def ffn_key(params: dict) -> Tuple:
    return (params["num_tokens"], params["token_dim"], tuple(params["ffn_hidden_units"]),
            check_choice("ffn_activation", params["ffn_activation"], FFN_ACTIVATIONS),
            float(params["expansion_rate"]), bool(params["ffn_inner_norm"]), float(params["ffn_dropout"]))


def mixing_key(params: dict) -> Tuple:
    heads = params["num_heads"] if params["num_heads"] is not None else params["num_tokens"]
    if params["token_mixing"] == "full":
        heads = None
    return params["token_mixing"], params["num_tokens"], params["token_dim"], heads


def glu_keys(params: dict) -> List[Tuple]:
    """(T, d, r) of every GLU layer of the config's P-FFN (its input widths)."""
    if check_choice("ffn_activation", params["ffn_activation"], FFN_ACTIVATIONS) != "GLU":
        return []
    widths = [params["token_dim"]] + list(params["ffn_hidden_units"])[:-1]
    return [(params["num_tokens"], width, float(params["expansion_rate"])) for width in widths]


def build_ffn_pair(key: Tuple) -> Tuple[nn.Module, nn.Module]:
    tokens, dim, hidden, activation, rate, inner_norm, dropout = key
    ours = PerTokenFFN(tokens, dim, hidden, activation=activation, expansion_rate=rate,
                       inner_norm=inner_norm, dropout=dropout)
    loop = TokenLoop([loop_token_network(dim, hidden, activation, rate, inner_norm, dropout)
                      for _ in range(tokens)], residual=True)
    return ours, loop


def build_mixing_pair(key: Tuple) -> Tuple[nn.Module, nn.Module]:
    kind, tokens, dim, heads = key
    if kind == "full":
        return FullMixing(tokens, dim), LoopFullMixing(tokens, dim)
    return BlockTransposeMixing(tokens, dim, heads), LoopBlockTranspose(tokens, dim, heads)


def build_glu_pair(key: Tuple) -> Tuple[nn.Module, nn.Module]:
    tokens, dim, rate = key
    return PerTokenGLU(tokens, dim, rate), TokenLoop([LoopGLU(dim, rate) for _ in range(tokens)], residual=False)


# --------------------------------------------------------------------------- timing
CLOCKS = ("cpu", "wall")


@dataclasses.dataclass
class Schedule:
    """``steps`` timed samples per contender after ``warmup`` untimed calls, in CPU seconds of this
    process (``cpu``) or wall seconds; a sample is the mean of enough calls to last
    ``min_sample_seconds`` (calibrated on one call after warm-up)."""
    steps: int
    warmup: int
    cpu: bool
    min_sample_seconds: float


def alternate(contenders: Dict[str, Callable[[], object]], schedule: Schedule) -> Dict[str, List[float]]:
    """Seconds per call of each contender, the contenders taking turns sample by sample after warm-up."""
    repeats = {}
    for name, fn in contenders.items():
        first = call_seconds(fn, iters=1, warmup=schedule.warmup, cpu=schedule.cpu)[0]
        repeats[name] = max(1, math.ceil(schedule.min_sample_seconds / max(first, 1e-9)))
    times: Dict[str, List[float]] = {name: [] for name in contenders}
    for _ in range(schedule.steps):
        for name, fn in contenders.items():
            times[name].append(statistics.fmean(call_seconds(fn, iters=repeats[name], warmup=0,
                                                             cpu=schedule.cpu)))
    return times


def report(label: str, mode: str, batch: int, times: Dict[str, List[float]]) -> str:
    ours, loop = times["ours"], times["loop"]
    speed_up = statistics.median(loop) / statistics.median(ours)
    line = (f"| {label} | {mode} | {1e3 * statistics.median(ours):.1f} / {1e3 * min(ours):.1f} | "
            f"{1e3 * statistics.median(loop):.1f} / {1e3 * min(loop):.1f} | "
            f"{batch / statistics.median(ours):,.0f} | {batch / statistics.median(loop):,.0f} | {speed_up:.2f}x |")
    print(line, flush=True)
    return line


def same_parameter_count(ours: nn.Module, loop: nn.Module, label: str) -> int:
    count_ours, count_loop = count_parameters(ours)["dense"], count_parameters(loop)["dense"]
    if count_ours != count_loop:
        raise RuntimeError(f"{label}: ours has {count_ours:,} dense parameters, the loop reference {count_loop:,}")
    return count_ours


def time_layer_pair(label: str, ours: nn.Module, loop: nn.Module, x: torch.Tensor, schedule: Schedule) -> List[str]:
    same_parameter_count(ours, loop, label)
    x_grad = x.detach().clone().requires_grad_(True)

    def train(module: nn.Module) -> Callable[[], None]:
        def step() -> None:
            module.zero_grad(set_to_none=True)
            x_grad.grad = None
            module(x_grad).sum().backward()
        return step

    def evaluate(module: nn.Module) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                module(x)
        return step

    for module in (ours, loop):
        module.train()
    lines = [report(label, "train", x.shape[0], alternate({"ours": train(ours), "loop": train(loop)}, schedule))]
    for module in (ours, loop):
        module.eval()
    return lines + [report(label, "eval", x.shape[0],
                           alternate({"ours": evaluate(ours), "loop": evaluate(loop)}, schedule))]


def loop_reference_model(model: nn.Module, params: dict) -> nn.Module:
    """``model`` with each block's P-FFN and mixing replaced by the token-loop references, initialised as
    fuxictr initialises ours (xavier normal linears, zero biases), with a new Adam."""
    for block in model.blocks:
        _, block.ffn = build_ffn_pair(ffn_key(params))
        _, block.mixing = build_mixing_pair(mixing_key(params))
    model.reset_parameters()
    model.to(model.device)
    model.optimizer = torch.optim.Adam(model.parameters(), lr=params["learning_rate"])
    return model


def time_model_pair(expid: str, params: dict, batch_size: int, schedule: Schedule, model_root: str) -> List[str]:
    categorical, numeric = DATASET_FIELDS[params["dataset_id"]]
    fmap = make_feature_map(num_categorical=categorical, num_numeric=numeric, vocab_size=10000)
    params = {**params, "verbose": 0, "model_root": model_root, "gpu": -1,
              "metrics": ["logloss", "AUC"]}
    torch.manual_seed(0)
    ours = MODELS[params["model"]](fmap, **params)
    torch.manual_seed(0)
    loop = loop_reference_model(MODELS[params["model"]](fmap, **params), params)
    dense = same_parameter_count(ours, loop, expid)
    batch = random_batch(fmap, batch_size)
    labels = ours.get_labels(batch)

    def train(model: nn.Module) -> Callable[[], None]:
        def step() -> None:
            model.optimizer.zero_grad()
            model.compute_loss(model(batch), labels).backward()
            model.optimizer.step()
        return step

    def evaluate(model: nn.Module) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                model(batch)
        return step

    label = f"{expid} (dense {dense:,})"
    for model in (ours, loop):
        model.train()
    lines = [report(label, "train", batch_size, alternate({"ours": train(ours), "loop": train(loop)}, schedule))]
    for model in (ours, loop):
        model.eval()
    return lines + [report(label, "eval", batch_size,
                           alternate({"ours": evaluate(ours), "loop": evaluate(loop)}, schedule))]


HEADER = ("| what | mode | ours ms median / min | loop ms median / min | ours samples/s | loop samples/s "
          "| speed-up |\n|---|---|---|---|---|---|---|")


def main(argv=None) -> None:
    h = Harness("token_mixing_speed", __doc__.split("\n")[0])
    h.parser.add_argument("--batch-size", type=int, default=4096)
    h.parser.add_argument("--steps", type=int, default=5, help="timed steps per contender")
    h.parser.add_argument("--warmup", type=int, default=2, help="untimed steps per contender")
    h.parser.add_argument("--clock", choices=CLOCKS, default="cpu",
                          help="cpu: CPU seconds of this process (steady on a shared machine, 1 thread); wall")
    h.parser.add_argument("--min-sample-seconds", type=float, default=0.05,
                          help="a timed sample averages enough calls to last this long")
    h.parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    h.parser.add_argument("--configs", nargs="*", default=[], help="experiment ids (default: every Criteo/Avazu id)")
    args = h.parse(argv)
    configs = released_configs(args.configs)
    if args.tiny:
        args.batch_size, args.steps, args.warmup, args.min_sample_seconds = 16, 1, 1, 0.0
        configs = dict(list(configs.items())[:1])
    schedule = Schedule(args.steps, args.warmup, args.clock == "cpu", args.min_sample_seconds)
    lines = [f"{torch.get_num_threads()} thread(s), batch {args.batch_size}, {args.steps} steps after "
             f"{args.warmup} warm-up, CPU, {args.clock} clock", "", HEADER]
    print(HEADER, flush=True)
    B = args.batch_size
    if "ffn" in args.parts:
        for key in dict.fromkeys(ffn_key(p) for p in configs.values()):
            torch.manual_seed(0)
            ours, loop = build_ffn_pair(key)
            tokens, dim, hidden, activation, rate, inner_norm, _ = key
            label = f"P-FFN {activation} T={tokens} D={dim} widths={list(hidden)} r={rate:g} norm={inner_norm}"
            lines += time_layer_pair(label, ours, loop, torch.randn(B, tokens, dim), schedule)
    if "glu" in args.parts:
        for key in dict.fromkeys(k for p in configs.values() for k in glu_keys(p)):
            torch.manual_seed(0)
            ours, loop = build_glu_pair(key)
            tokens, dim, rate = key
            lines += time_layer_pair(f"GLU T={tokens} d={dim} r={rate:g}", ours, loop, torch.randn(B, tokens, dim),
                                     schedule)
    if "mixing" in args.parts:
        for key in dict.fromkeys(mixing_key(p) for p in configs.values()):
            torch.manual_seed(0)
            ours, loop = build_mixing_pair(key)
            kind, tokens, dim, heads = key
            label = f"mixing {kind} T={tokens} D={dim}" + (f" H={heads}" if heads else "")
            lines += time_layer_pair(label, ours, loop, torch.randn(B, tokens, dim), schedule)
    if "model" in args.parts:
        for expid, params in configs.items():
            lines += time_model_pair(expid, params, B, schedule, args.work_dir)
    h.write("\n".join(lines), lines[3:])


if __name__ == "__main__":
    main()
