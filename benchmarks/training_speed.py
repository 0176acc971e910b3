"""Training and eval samples/s of every zoo model at its headline config, with a per-stage breakdown.

    python -m benchmarks.training_speed                        # CPU, 1 thread, batch 1024
    python -m benchmarks.training_speed --ids DNN_criteo RankMixer_criteo --steps 10 --out /tmp/x

The headline config of a model is the first Criteo experiment id (``dataset_id:
criteo_x1``) of its config/model_config/<Model>.yaml; ``--ids`` picks others.
Models without a Criteo id are listed as such. Every model reads one in-memory
Criteo-shaped FeatureMap (13 numeric, 26 categorical fields, ``--vocab-size`` ids
per field, from fuxictr_ext.testing) and one fixed random batch, so no dataset is
needed; the models' hyper-parameters are their configs', the batch size is
``--batch-size`` for all.

A train step is ``zero_grad``, forward, ``compute_loss`` (task loss and
regularizers), ``backward``, ``optimizer.step``; an eval step is a forward under
``torch.no_grad``. The models take turns step by step (all models' step i before
any step i + 1) after ``--warmup`` untimed steps each. Times are CPU seconds of this
process (the harness clock; ``--clock wall`` for wall time), which on a
machine shared with other jobs leaves out the time spent waiting for a core.

Stages of the train step, from module hooks (forward pre-hook to forward hook):

* embedding: the outermost embedding modules (``fuxictr_ext.cost.EMBEDDING_MODULES``);
* head: the last top-level child module with parameters to run in the forward
  (named in the table, e.g. ``head`` or ``mlp``; for a model whose MLP is both
  its interaction and its head this is that MLP);
* interaction: the rest of the forward (forward minus embedding and head);
* loss: ``compute_loss``; backward: ``loss.backward()``; optimizer: ``zero_grad`` + ``step``.

The table reports medians, the stages as shares of the median train step, and
every model's samples/s as a ratio to the first model of the run (DNN by default):
compare runs of this script by these ratios, not by absolute times.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import yaml
from torch import nn

from benchmarks.harness import Harness, call_seconds, now
from fuxictr_ext.cost import EMBEDDING_MODULES, count_parameters
from fuxictr_ext.registry import get_model_class
from fuxictr_ext.testing import make_feature_map, random_batch

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "model_config"
HEADLINE_DATASET = "criteo_x1"
CLOCKS = {"cpu": functools.partial(now, cpu=True), "wall": now}
FORWARD_STAGES = ("embedding", "interaction", "head")
STAGES = FORWARD_STAGES + ("loss", "backward", "optimizer")


def headline_configs(ids: Sequence[str]) -> Dict[str, Optional[dict]]:
    """Experiment id -> params (Base merged) of each model's first Criteo id, or of ``ids``.

    Without ``ids``, a model whose file has no Criteo id maps ``"<Model> (no Criteo config)"`` to None.
    """
    found: Dict[str, Optional[dict]] = {}
    wanted = set(ids)
    for path in sorted(CONFIG_DIR.glob("*.yaml"), key=lambda p: (p.stem != "DNN", p.stem)):
        configs = yaml.safe_load(open(path))
        criteo = [expid for expid, block in configs.items()
                  if expid != "Base" and block.get("dataset_id") == HEADLINE_DATASET]
        chosen = [expid for expid in configs if expid in wanted] if wanted else criteo[:1]
        for expid in chosen:
            found[expid] = {**configs.get("Base", {}), **configs[expid]}
        if not wanted and not criteo:
            found[f"{path.stem} (no Criteo config)"] = None
    missing = wanted - set(found)
    if missing:
        raise ValueError(f"--ids {sorted(missing)} are not experiment ids of {CONFIG_DIR}")
    return found


class StageClock:
    """Module hooks that add up, per forward, the clock time spent in the embedding and head modules.

    Args:
        model: the model.
        clock: the clock to read.
    """

    def __init__(self, model: nn.Module, clock: Callable[[], float]):
        self.clock = clock
        self.seconds = {"embedding": 0.0, "head": 0.0}
        self.starts: Dict[int, float] = {}
        self.last_parameterised_child: Optional[str] = None
        self.handles = []
        for module in outermost_embeddings(model):
            self._time(module, "embedding")
        for name, child in model.named_children():
            if next(child.parameters(), None) is not None and not any(
                    isinstance(m, EMBEDDING_MODULES) for m in child.modules()):
                self.handles.append(child.register_forward_hook(
                    lambda module, args, out, name=name: setattr(self, "last_parameterised_child", name)))
        self.children = dict(model.named_children())
        self.head_name: Optional[str] = None

    def _time(self, module: nn.Module, stage: str) -> None:
        def start(module, args):
            self.starts[id(module)] = self.clock()

        def stop(module, args, out):
            self.seconds[stage] += self.clock() - self.starts.pop(id(module))

        self.handles += [module.register_forward_pre_hook(start), module.register_forward_hook(stop)]

    def find_head(self, forward: Callable[[], object]) -> str:
        """Run ``forward`` once, take the last parameterised top-level child as the head, time it from now on."""
        forward()
        if self.last_parameterised_child is None:
            raise RuntimeError("no top-level module with parameters ran in the forward")
        self.head_name = self.last_parameterised_child
        self._time(self.children[self.head_name], "head")
        return self.head_name

    def reset(self) -> None:
        self.seconds = {"embedding": 0.0, "head": 0.0}


def outermost_embeddings(model: nn.Module) -> List[nn.Module]:
    """The embedding modules of ``model`` that are not inside another one."""
    found: List[nn.Module] = []
    inner = set()
    for module in model.modules():
        if id(module) in inner:
            continue
        if isinstance(module, EMBEDDING_MODULES):
            found.append(module)
            inner.update(id(m) for m in module.modules())
    return found


@dataclasses.dataclass
class Contender:
    """One model with its batch, stage hooks and the timings collected so far."""
    expid: str
    model: nn.Module
    batch: Dict[str, torch.Tensor]
    stages: StageClock
    clock: Callable[[], float]
    train: List[Dict[str, float]] = dataclasses.field(default_factory=list)
    eval: List[float] = dataclasses.field(default_factory=list)

    def train_step(self) -> Dict[str, float]:
        model, clock = self.model, self.clock
        model.train()
        self.stages.reset()
        t0 = clock()
        model.optimizer.zero_grad()
        t1 = clock()
        out = model(self.batch)
        t2 = clock()
        loss = model.compute_loss(out, model.get_labels(self.batch))
        t3 = clock()
        loss.backward()
        t4 = clock()
        model.optimizer.step()
        t5 = clock()
        embedding, head = self.stages.seconds["embedding"], self.stages.seconds["head"]
        return {"embedding": embedding, "head": head, "interaction": (t2 - t1) - embedding - head,
                "loss": t3 - t2, "backward": t4 - t3, "optimizer": (t1 - t0) + (t5 - t4), "total": t5 - t0}

    def eval_step(self) -> None:
        self.model.eval()
        with torch.no_grad():
            self.model(self.batch)


def build(expid: str, params: dict, feature_map, batch, clock, model_root: str) -> Contender:
    params = {**params, "verbose": 0, "gpu": -1, "model_root": model_root, "metrics": ["logloss", "AUC"]}
    torch.manual_seed(0)
    model = get_model_class(params["model"])(feature_map, **params)
    contender = Contender(expid, model, batch, StageClock(model, clock), clock)
    model.train()
    contender.stages.find_head(lambda: model(batch))
    return contender


def run(contenders: List[Contender], steps: int, warmup: int) -> None:
    for contender in contenders:
        for _ in range(warmup):
            contender.train_step()
            contender.eval_step()
        print(f"  warmed up {contender.expid}", flush=True)
    for _ in range(steps):
        for contender in contenders:
            contender.train.append(contender.train_step())
    for _ in range(steps):
        for contender in contenders:
            contender.eval += call_seconds(contender.eval_step, iters=1, warmup=0,
                                           cpu=contender.clock is CLOCKS["cpu"])


def table(contenders: List[Contender], batch_size: int, skipped: Sequence[str]) -> str:
    rows = ["| model (config) | dense params | head module | train samples/s | train vs first | "
            "eval samples/s | eval vs first | " + " | ".join(f"{s} %" for s in STAGES) + " |",
            "|---|---|---|---|---|---|---|" + "---|" * len(STAGES)]
    base_train = base_eval = None
    for c in contenders:
        train_total = statistics.median(step["total"] for step in c.train)
        train_rate = batch_size / train_total
        eval_rate = batch_size / statistics.median(c.eval)
        base_train, base_eval = base_train or train_rate, base_eval or eval_rate
        shares = [100 * statistics.median(step[s] for step in c.train) / train_total for s in STAGES]
        rows.append(f"| {c.model.__class__.__name__} ({c.expid}) | {count_parameters(c.model)['dense']:,} | "
                    f"`{c.stages.head_name}` | {train_rate:,.0f} | {train_rate / base_train:.2f}x | "
                    f"{eval_rate:,.0f} | {eval_rate / base_eval:.2f}x | "
                    + " | ".join(f"{share:.0f}" for share in shares) + " |")
    rows += [f"| {name} | - | - | - | - | - | - |" + " - |" * len(STAGES) for name in skipped]
    return "\n".join(rows)


def main(argv=None) -> None:
    h = Harness("training_speed", __doc__.split("\n")[0])
    h.parser.add_argument("--batch-size", type=int, default=1024)
    h.parser.add_argument("--vocab-size", type=int, default=1000, help="ids per categorical field")
    h.parser.add_argument("--steps", type=int, default=5, help="timed train and eval steps per model")
    h.parser.add_argument("--warmup", type=int, default=2, help="untimed train + eval steps per model")
    h.parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    h.parser.add_argument("--ids", nargs="*", default=[], help="experiment ids (default: each model's first Criteo id)")
    args = h.parse(argv)
    if args.tiny:
        args.batch_size, args.vocab_size, args.steps, args.warmup = 32, 100, 1, 1
    clock = CLOCKS[args.clock]
    feature_map = make_feature_map(num_categorical=26, num_numeric=13, vocab_size=args.vocab_size,
                                   dataset_id="criteo_shaped")
    batch = random_batch(feature_map, args.batch_size)
    configs = headline_configs(args.ids)
    skipped = [expid for expid, params in configs.items() if params is None]
    chosen = [(expid, params) for expid, params in configs.items() if params is not None]
    contenders = [build(expid, params, feature_map, batch, clock, args.work_dir)
                  for expid, params in (chosen[:2] if args.tiny else chosen)]
    header = (f"{torch.get_num_threads()} thread(s), CPU, batch {args.batch_size}, "
              f"{args.vocab_size} ids per field, {args.steps} steps after {args.warmup} warm-up, {args.clock} clock")
    print(header, flush=True)
    run(contenders, args.steps, args.warmup)
    h.write(f"{header}\n\n{table(contenders, args.batch_size, skipped)}",
            [{"expid": c.expid, "train": c.train, "eval": c.eval} for c in contenders])


if __name__ == "__main__":
    main()
