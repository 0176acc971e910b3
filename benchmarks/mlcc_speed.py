"""Forward + backward time of MLCC (released Criteo setting) against DCNv2 (FuxiCTR's Criteo setting).

    python -m benchmarks.mlcc_speed --batch-size 2048 --iters 10 --warmup 3

Both models read the same Criteo-shaped FeatureMap: 13 numeric and 26
categorical fields whose vocabularies are the Kaggle Criteo per-field
cardinalities capped at ``--vocab-cap`` (200,000 by default, roughly what
frequency filtering leaves; the released MLCC hashes every field into 10^6 rows).

* MLCC: experiment id MLCC_criteo of config/model_config/MLCC.yaml (E = 16,
  H = 4, dynamic MLP [4, 1], keep [0, 1, 2], E' = 8, SE, DNN [256, 128, 64, 32]).
* DCNv2: the BARS / FuxiCTR Criteo_x1 setting (embedding 10, parallel, 3 cross
  layers, parallel DNN [500, 500, 500], dropout 0.1), built from fuxictr's
  FeatureEmbedding + CrossNetV2 + MLP_Block; the zoo's model_zoo.DCNv2 with the
  same setting is timed too when it is registered.

One timed step is forward + loss + backward in train mode (no optimizer step),
on one fixed random batch. The models take turns step by step, so that load
changes on a shared machine hit them alike; the script writes the median and the
spread over ``--iters`` steps after ``--warmup`` untimed ones, forward FLOPs per sample
(torch.utils.flop_counter) and dense parameter counts.
"""

from __future__ import annotations

import inspect
import os
import statistics
import sys

import torch
import yaml
from fuxictr.pytorch.layers import CrossNetV2, FeatureEmbedding, MLP_Block
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import REPO, Harness, clock
from fuxictr_ext.cost import count_parameters
from fuxictr_ext.registry import list_models, get_model_class
from fuxictr_ext.testing import make_feature_map, random_batch
from model_zoo.MLCC import MLCC

# Distinct values per categorical field of the Kaggle Criteo display-ads data (C1 .. C26).
CRITEO_CARDINALITIES = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593,
                        3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
DCNV2_CRITEO = dict(embedding_dim=10, model_structure="parallel", num_cross_layers=3,
                    parallel_dnn_hidden_units=[500, 500, 500], dnn_activations="ReLU",
                    net_dropout=0.1, batch_norm=False)


class ReferenceDCNv2(nn.Module):
    """FuxiCTR's parallel DCNv2: y = sigmoid(w^T [CrossNetV2(x_0); MLP(x_0)]) on fuxictr layers."""

    def __init__(self, feature_map, embedding_dim, num_cross_layers, parallel_dnn_hidden_units,
                 dnn_activations, net_dropout, batch_norm, model_structure):
        super().__init__()
        if model_structure != "parallel":
            raise ValueError(f"model_structure={model_structure!r}: the reference is the parallel structure")
        input_dim = feature_map.num_fields * embedding_dim
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.crossnet = CrossNetV2(input_dim, num_cross_layers)
        self.parallel_dnn = MLP_Block(input_dim=input_dim, hidden_units=parallel_dnn_hidden_units,
                                      hidden_activations=dnn_activations, dropout_rates=net_dropout,
                                      batch_norm=batch_norm)
        self.fc = nn.Linear(input_dim + parallel_dnn_hidden_units[-1], 1)
        self.feature_map = feature_map

    def forward(self, inputs):
        X = {name: inputs[name] for name in self.feature_map.features}
        x_0 = self.embedding_layer(X, flatten_emb=True)                             # (B, F*D)
        final = torch.cat([self.crossnet(x_0), self.parallel_dnn(x_0)], dim=-1)    # (B, F*D + 500)
        return {"y_pred": torch.sigmoid(self.fc(final))}                            # (B, 1)


def criteo_feature_map(vocab_cap: int):
    fmap = make_feature_map(num_categorical=26, num_numeric=13, dataset_id="criteo_shaped")
    for i, cardinality in enumerate(CRITEO_CARDINALITIES):
        fmap.features[f"C{i + 1}"]["vocab_size"] = min(cardinality, vocab_cap) + 1   # + padding index 0
    fmap.total_features = sum(spec.get("vocab_size", 1) for spec in fmap.features.values())
    return fmap


def mlcc_criteo_params() -> dict:
    with open(os.path.join(REPO, "config", "model_config", "MLCC.yaml")) as fd:
        expid = yaml.safe_load(fd)["MLCC_criteo"]
    args = set(inspect.signature(MLCC.__init__).parameters) - {"self", "feature_map", "kwargs"}
    return {k: v for k, v in expid.items() if k in args}


def flops_per_sample(model: nn.Module, batch: dict, batch_size: int) -> float:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    return counter.get_total_flops() / batch_size


def train_step(model: nn.Module, batch: dict, labels: torch.Tensor) -> float:
    """Seconds of one forward + loss + backward."""
    model.zero_grad(set_to_none=True)
    with clock() as t:
        nn.functional.binary_cross_entropy(model(batch)["y_pred"], labels).backward()
    return t.wall_s


def time_interleaved(models: dict, batch: dict, iters: int, warmup: int) -> dict:
    """Per model, the seconds of ``iters`` steps, the models taking turns so that a
    shared machine's load changes hit all of them alike."""
    labels = batch["clk"].float().view(-1, 1)
    for model in models.values():
        model.train()
        for _ in range(warmup):
            train_step(model, batch, labels)
    times = {name: [] for name in models}
    for _ in range(iters):
        for name, model in models.items():
            times[name].append(train_step(model, batch, labels))
    return times


def main(argv=None) -> int:
    h = Harness("mlcc_speed", __doc__.split("\n")[0])
    h.parser.add_argument("--batch-size", type=int, default=2048)
    h.parser.add_argument("--iters", type=int, default=10)
    h.parser.add_argument("--warmup", type=int, default=3)
    h.parser.add_argument("--vocab-cap", type=int, default=200_000)
    args = h.parse(argv)
    if args.tiny:
        args.batch_size, args.iters, args.warmup, args.vocab_cap = 64, 2, 1, 1000
    torch.manual_seed(0)

    fmap = criteo_feature_map(args.vocab_cap)
    batch = random_batch(fmap, args.batch_size, seed=0)
    mlcc_params = mlcc_criteo_params()
    models = {
        "MLCC (MLCC_criteo)": MLCC(fmap, gpu=-1, verbose=0, **mlcc_params),
        "DCNv2 (fuxictr layers)": ReferenceDCNv2(fmap, **DCNV2_CRITEO),
    }
    if "DCNv2" in list_models():
        models["DCNv2 (model_zoo.DCNv2)"] = get_model_class("DCNv2")(fmap, gpu=-1, verbose=0, **DCNV2_CRITEO)

    lines = [f"{torch.get_num_threads()} threads, batch {args.batch_size}, {args.iters} timed steps after "
             f"{args.warmup} warm-up; {fmap.num_fields} fields, {fmap.total_features:,} embedding rows "
             f"(vocab cap {args.vocab_cap:,})", "", f"MLCC_criteo: {mlcc_params}", "", f"DCNv2: {DCNV2_CRITEO}", "",
             "| model | fwd+bwd ms (median) | min | max | fwd MFLOPs/sample | dense params |",
             "|---|---|---|---|---|---|"]
    flops = {name: flops_per_sample(model, batch, args.batch_size) for name, model in models.items()}
    times = time_interleaved(models, batch, args.iters, args.warmup)
    medians = {}
    for name, model in models.items():
        ms = [1e3 * t for t in times[name]]
        medians[name] = statistics.median(ms)
        lines.append(f"| {name} | {medians[name]:.1f} | {min(ms):.1f} | {max(ms):.1f} | "
                     f"{flops[name] / 1e6:.3f} | {count_parameters(model)['dense']:,} |")
    lines.append("")
    mlcc_ms = medians["MLCC (MLCC_criteo)"]
    for name, ms in medians.items():
        if name.startswith("DCNv2"):
            lines.append(f"MLCC / {name}: {mlcc_ms / ms:.2f}x (target: <= 1.5x)")
    h.write("\n".join(lines), [{"model": name, "seconds": times[name], "flops_per_sample": flops[name]}
                               for name in models])
    return 0


if __name__ == "__main__":
    sys.exit(main())
