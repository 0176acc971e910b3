"""The CPU training-step changes one by one: each model's step with and without each change.

    python -m benchmarks.training_step_changes                    # 1 thread, batch 4096
    python -m benchmarks.training_step_changes --ids DHEN_ME_criteo --steps 5
    python -m benchmarks.training_step_changes --tiny             # smoke test

The changes (all equal in outputs and gradients to the form before them, within float32
rounding, and for the dropout in rate, scale and gradient: tests/test_token_mixing.py,
tests/test_interactions.py):

* ``tokenizer_row_chunks``: the token models' tokenizer MLP (hidden layer (B * T, 500)) runs
  over chunks of 1024 rows (:func:`fuxictr_ext.layers.common.row_chunked`); before: one call.
* ``random_bits_dropout``: dropout masks from 32-bit random integers
  (:class:`fuxictr_ext.layers.common.RandomBitsDropout`); before: ``nn.Dropout`` (``bernoulli_``).
* ``cin_rows``: the CIN interaction row by row without the (B, F * F_h, D) Hadamard tensor
  (:class:`fuxictr_ext.layers.interactions.CINInteraction`); before: fuxictr's
  ``CompressedInteractionNet`` forward (einsum + Conv1d) on the same parameters.

For each model (``--ids``, at its Criteo config, one in-memory Criteo-shaped batch of
``--batch-size`` rows as in ``benchmarks.training_efficiency``), one model and one trainer are
timed with every change on ("current"), with each applicable change undone on its own
("without <change>") and with all of them undone ("before all"), the contenders' training
steps alternated (``benchmarks.token_mixing_speed.alternate``), CPU seconds of this process;
"speed-up" = contender median / current median.
"""

from __future__ import annotations

import contextlib
import statistics
from typing import Callable, Dict, Iterator, List, Sequence

import torch
from torch import nn

from benchmarks.harness import Harness
from benchmarks.token_mixing_speed import Schedule, alternate
from benchmarks.training_efficiency import build_model, ms
from benchmarks.training_speed import headline_configs
from fuxictr_ext.layers import interactions, token_mixing
from fuxictr_ext.layers.common import RandomBitsDropout
from fuxictr_ext.layers.interactions import CINInteraction
from fuxictr_ext.layers.token_mixing import Tokenizer
from fuxictr_ext.testing import make_feature_map, random_batch
from fuxictr_ext.training import Trainer, TrainingConfig

DEFAULT_IDS = ("RankMixer_criteo", "RankElastor_criteo", "DHEN_ME_criteo")


def _one_call(network, x, rows):
    return network(x)


def _fuxictr_cin_forward(self, X):
    return self.cin(X).unflatten(-1, (self.num_fields, self.embedding_dim))  # (B, F, D)


@contextlib.contextmanager
def _patched(owner, name: str, value) -> Iterator[None]:
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


CHANGES: Dict[str, tuple] = {
    # name -> (the module type that shows the change applies, a context that undoes it)
    "tokenizer_row_chunks": (Tokenizer, lambda: _patched(token_mixing, "row_chunked", _one_call)),
    "random_bits_dropout": (RandomBitsDropout, lambda: _patched(RandomBitsDropout, "forward", nn.Dropout.forward)),
    "cin_rows": (CINInteraction, lambda: _patched(CINInteraction, "forward", _fuxictr_cin_forward)),
}


def applicable(model: nn.Module) -> List[str]:
    """The changes that touch ``model`` (it holds a module of the change's type)."""
    return [name for name, (kind, _) in CHANGES.items() if any(isinstance(m, kind) for m in model.modules())]


def undone_step(trainer: Trainer, batch: dict, undone: Sequence[str]) -> Callable[[], None]:
    """One training step with the changes ``undone`` reverted to their former forms."""
    def step() -> None:
        with contextlib.ExitStack() as stack:
            for name in undone:
                stack.enter_context(CHANGES[name][1]())
            trainer.train_step(batch)
    return step


def main(argv=None) -> None:
    h = Harness("training_step_changes", __doc__.split("\n")[0])
    h.parser.add_argument("--ids", nargs="+", default=list(DEFAULT_IDS), help="experiment ids")
    h.parser.add_argument("--batch-size", type=int, default=4096)
    h.parser.add_argument("--vocab-size", type=int, default=10000)
    h.parser.add_argument("--steps", type=int, default=3, help="timed samples per contender")
    h.parser.add_argument("--warmup", type=int, default=1, help="untimed steps per contender")
    args = h.parse(argv)
    if args.tiny:
        args.batch_size, args.steps, args.warmup, args.vocab_size = 16, 1, 1, 100
    feature_map = make_feature_map(num_categorical=26, num_numeric=13, vocab_size=args.vocab_size)
    batch = random_batch(feature_map, args.batch_size, seed=0)
    lines = ["| model (config) | contender | ms median / min | speed-up of current |", "|---|---|---|---|"]
    records = []
    for expid, params in headline_configs(args.ids).items():
        model = build_model(params, feature_map, args.work_dir)
        model.train()
        trainer = Trainer(model, TrainingConfig(verbose=0))
        changes = applicable(model)
        contenders = {"current": undone_step(trainer, batch, [])}
        contenders.update({f"without {name}": undone_step(trainer, batch, [name]) for name in changes})
        if len(changes) > 1:
            contenders["before all"] = undone_step(trainer, batch, changes)
        times = alternate(contenders, Schedule(args.steps, args.warmup, True, 0.0))
        current = statistics.median(times["current"])
        for name, samples in times.items():
            lines.append(f"| {expid} | {name} | {ms(samples)} | {statistics.median(samples) / current:.2f}x |")
            print(lines[-1], flush=True)
        records.append({"expid": expid, "changes": changes, "seconds": times})
    with open("/proc/loadavg") as fd:
        load = " ".join(fd.read().split()[:3])
    body = (f"{torch.get_num_threads()} thread(s), batch {args.batch_size}, {args.steps} samples after "
            f"{args.warmup} warm-up step(s) per contender, alternated, CPU seconds; load average at the end "
            f"{load}.\n\n" + "\n".join(lines))
    h.write(body, records)


if __name__ == "__main__":
    main()
