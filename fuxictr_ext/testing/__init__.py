"""Test and benchmark helpers - not part of the model API.

Small in-memory FeatureMaps and batches for unit tests of zoo models
(:mod:`.serving` adds random requests for serving tests).

They let a model be built and run without building a dataset on disk (no Ray,
no parquet): the FeatureMap has the same structure that fuxictr's
FeatureProcessor writes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional, Sequence

import torch
from fuxictr.features import FeatureMap


def make_feature_map(num_categorical: int = 6, num_numeric: int = 2, vocab_size: int = 30,
                     num_sequence: int = 0, seq_len: int = 5,
                     sources: Optional[Sequence[str]] = None,
                     dataset_id: str = "unit_test", group_id: Optional[str] = None) -> FeatureMap:
    """A FeatureMap with ``num_numeric`` numeric, ``num_categorical`` categorical and
    ``num_sequence`` mean-pooled sequence fields, plus the label ``clk``.

    ``sources`` gives each field's ``source`` (numeric first, then categorical,
    then sequence); by default all are ``""``. With ``group_id``, a meta field of
    that name is added (FuxiCTR's way of passing the gAUC group).
    """
    fmap = FeatureMap(dataset_id, data_dir=".")
    names = ([f"I{i + 1}" for i in range(num_numeric)] + [f"C{i + 1}" for i in range(num_categorical)]
             + [f"S{i + 1}" for i in range(num_sequence)])
    if sources is None:
        sources = [""] * len(names)
    if len(sources) != len(names):
        raise ValueError(f"sources has {len(sources)} entries for {len(names)} fields")
    features = OrderedDict()
    for name, source in zip(names, sources):
        if name.startswith("I"):
            features[name] = {"source": source, "type": "numeric"}
        elif name.startswith("C"):
            features[name] = {"source": source, "type": "categorical", "padding_idx": 0,
                              "vocab_size": vocab_size}
        else:
            features[name] = {"source": source, "type": "sequence", "padding_idx": 0,
                              "vocab_size": vocab_size, "max_len": seq_len,
                              "feature_encoder": "layers.MaskedAveragePooling()"}
    if group_id is not None:
        features[group_id] = {"source": "", "type": "meta"}
    fmap.features = features
    fmap.labels = ["clk"]
    fmap.group_id = group_id
    fmap.num_fields = fmap.get_num_fields()
    fmap.total_features = sum(spec.get("vocab_size", 1) for spec in features.values())
    fmap.set_column_index()
    return fmap


def random_batch(feature_map: FeatureMap, batch_size: int = 8, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A batch dict shaped like fuxictr's loaders produce: (B,) per scalar field,
    (B, max_len) per sequence field, numeric and label as float64, ids as int64."""
    gen = torch.Generator().manual_seed(seed)
    batch: Dict[str, torch.Tensor] = {}
    for name, spec in feature_map.features.items():
        if spec["type"] == "numeric":
            batch[name] = torch.rand(batch_size, generator=gen, dtype=torch.float64)
        elif spec["type"] == "categorical":
            batch[name] = torch.randint(1, spec["vocab_size"], (batch_size,), generator=gen)
        elif spec["type"] == "sequence":
            batch[name] = torch.randint(0, spec["vocab_size"], (batch_size, spec["max_len"]), generator=gen)
        elif spec["type"] == "meta":
            batch[name] = torch.randint(0, max(2, batch_size // 4), (batch_size,), generator=gen)
    for label in feature_map.labels:
        batch[label] = torch.randint(0, 2, (batch_size,), generator=gen).double()
    return batch


def unit_model_kwargs(tmp_path) -> dict:
    """BaseModel kwargs for a quiet CPU model whose checkpoints go under ``tmp_path``."""
    return {"gpu": -1, "verbose": 0, "model_root": str(tmp_path), "metrics": ["logloss", "AUC"]}
