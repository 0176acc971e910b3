"""Test and benchmark helpers - not part of the model API: random requests and perturbed weights
for tests and benchmarks of rank-aware scoring."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from ..layers.rank_aware import FieldPartition
from ..serving.requests import RequestBatch


def random_field_values(spec: dict, rows: int, generator: torch.Generator) -> torch.Tensor:
    """(rows,) or (rows, L) values of one FeatureMap field, as fuxictr's loaders deliver them."""
    if spec["type"] == "numeric":
        return torch.rand(rows, generator=generator, dtype=torch.float64)
    if spec["type"] == "sequence":
        return torch.randint(0, spec["vocab_size"], (rows, spec["max_len"]), generator=generator)
    return torch.randint(1, spec["vocab_size"], (rows,), generator=generator)


def random_requests(feature_map, partition: FieldPartition, num_candidates: Sequence[int],
                    seed: int = 0, vocab_limit: Optional[int] = None) -> RequestBatch:
    """A RequestBatch with one request per entry of ``num_candidates`` and random field values.

    Args:
        feature_map: the FeatureMap whose field specs give types and vocabularies.
        partition: the context/target split.
        num_candidates: N of each request (ragged allowed).
        seed: generator seed.
        vocab_limit: draw categorical ids below this bound (default: the vocabulary size).
    """
    generator = torch.Generator().manual_seed(seed)
    counts = torch.as_tensor(list(num_candidates), dtype=torch.long)

    def spec_of(name):
        spec = dict(feature_map.features[name])
        if vocab_limit is not None and "vocab_size" in spec:
            spec["vocab_size"] = min(spec["vocab_size"], vocab_limit)
        return spec

    context = {f: random_field_values(spec_of(f), len(counts), generator) for f in partition.context_fields}
    candidates = {f: random_field_values(spec_of(f), int(counts.sum()), generator) for f in partition.target_fields}
    batch = RequestBatch(context, candidates, counts)
    batch.validate(partition)
    return batch


def perturb_parameters(model: nn.Module, std: float = 0.3, seed: int = 0) -> nn.Module:
    """Redraw every floating-point parameter from N(0, std^2), so that all fields matter in the scores.

    FuxiCTR initialises embeddings with std 1e-4; with those, interaction terms
    are ~1e-8 and any equivalence check would pass trivially.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.is_floating_point():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return model


def train_steps(model: nn.Module, batches: Sequence[Dict[str, torch.Tensor]], lr: float = 1e-2) -> List[float]:
    """One Adam step of a FuxiCTR model per batch (task loss + regularizers); the losses in order."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for batch in batches:
        optimizer.zero_grad()
        loss = model.compute_loss(model(batch), model.get_labels(batch))
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses
