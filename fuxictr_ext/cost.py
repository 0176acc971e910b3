"""Cost accounting of any zoo model: parameters (embedding vs dense) and forward FLOPs.

* Embedding parameters: every parameter inside a fuxictr ``FeatureEmbeddingDict``
  (the tables of categorical and sequence fields and the ``nn.Linear(1, D)`` of
  numeric fields, the same set fuxictr's ``embedding_regularizer`` applies to) or
  inside any ``nn.Embedding`` / ``nn.EmbeddingBag``. Dense parameters: all the
  others. Shared (tied) parameters count once.
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one eval-mode,
  no_grad forward, divided by the batch size. It counts matrix products and
  convolutions (mm, addmm, bmm, baddbmm, einsum through them, convolution,
  scaled dot-product attention) at 2 FLOPs per multiply-add, as
  FlopCounterMode counts them; elementwise ops, norms, activations and
  embedding lookups are not counted. The papers do not say how they count
  FLOPs (the MLCC paper's GFLOPs tables state no convention), so compare these
  numbers with a paper's only as ratios between models counted the same way.

Example:
    >>> cost = model_cost(model, batch)          # batch: dict of (B,) tensors
    >>> print(cost.summary())
    params: total=1,234,567 embedding=1,000,000 dense=234,567 | flops/sample=468,000
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Mapping

import torch
from fuxictr.pytorch.layers import FeatureEmbeddingDict
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["ModelCost", "count_flops", "count_parameters", "count_step_flops", "flops_by_module", "model_cost"]

EMBEDDING_MODULES = (FeatureEmbeddingDict, nn.Embedding, nn.EmbeddingBag)


@dataclass
class ModelCost:
    """Parameter counts and forward FLOPs per sample of one model.

    Attributes:
        embedding_params: parameters of embedding tables (see the module docstring).
        dense_params: all other parameters.
        total_params: embedding_params + dense_params.
        flops_per_sample: forward FLOPs of one eval-mode sample (2 per multiply-add).
    """

    embedding_params: int
    dense_params: int
    total_params: int
    flops_per_sample: float

    def summary(self, grouped: bool = True) -> str:
        """One line for logs (``grouped``: thousands separators) and, with
        ``grouped=False``, for the comma-separated results line."""
        sep = "," if grouped else ""
        return (f"params: total={self.total_params:{sep}} embedding={self.embedding_params:{sep}} "
                f"dense={self.dense_params:{sep}} | flops/sample={self.flops_per_sample:{sep}.0f}")

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """``{"embedding": n, "dense": n, "total": n}``; each distinct parameter counted once."""
    embedding_ids = {id(p) for module in model.modules() if isinstance(module, EMBEDDING_MODULES)
                     for p in module.parameters()}
    unique = {id(p): p for p in model.parameters()}
    embedding = sum(p.numel() for key, p in unique.items() if key in embedding_ids)
    total = sum(p.numel() for p in unique.values())
    return {"embedding": embedding, "dense": total - embedding, "total": total}


def count_flops(fn: Callable[..., Any], *args, **kwargs) -> int:
    """Total FLOPs of ``fn(*args, **kwargs)`` as counted by FlopCounterMode (gradients off).

    Example:
        >>> count_flops(nn.Linear(8, 4), torch.randn(3, 8))    # 2 * 3 * 8 * 4
        192
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def count_step_flops(step: Callable[[], Any]) -> int:
    """Total FLOPs of ``step()`` with gradients on, as counted by FlopCounterMode: for a training
    step (forward, backward, optimizer step) the forward's and the backward's matrix products.

    Example:
        >>> layer = nn.Linear(8, 4)
        >>> count_step_flops(lambda: layer(torch.randn(3, 8)).sum().backward())  # forward + weight grad
        384
    """
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def flops_by_module(fn: Callable[..., Any], *args, **kwargs) -> Dict[str, int]:
    """FLOPs of ``fn(*args, **kwargs)`` by module: ``{"total": n, "<child>.<path>": n, ...}``.

    Module paths are relative to the root module the call enters (its class
    name is stripped), so ``{"interaction": ..., "fc": ...}`` for a scorer.
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    counts = {"total": int(counter.get_total_flops())}
    for name, ops in counter.get_flop_counts().items():
        if name != "Global" and "." in name:
            counts[name.split(".", 1)[1]] = int(sum(ops.values()))
    return counts


def _batch_size(model: nn.Module, batch_data: Mapping[str, torch.Tensor]) -> int:
    labels = getattr(getattr(model, "feature_map", None), "labels", None) or []
    for name in list(labels) + list(batch_data):
        value = batch_data.get(name)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError("model_cost: batch_data holds no batched tensor to read the batch size from")


def model_cost(model: nn.Module, batch_data: Mapping[str, torch.Tensor]) -> ModelCost:
    """Parameters and forward FLOPs per sample of ``model`` on ``batch_data``.

    Runs one forward in eval mode under no_grad and restores every module's
    train/eval flag afterwards.

    Args:
        model: a FuxiCTR/zoo model whose ``forward`` takes a batch dict.
        batch_data: one batch as the data loader yields it.
    """
    params = count_parameters(model)
    batch_size = _batch_size(model, batch_data)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        flops = count_flops(model, batch_data)
    finally:
        for module, training in modes:
            module.training = training
    return ModelCost(embedding_params=params["embedding"], dense_params=params["dense"],
                     total_params=params["total"], flops_per_sample=flops / batch_size)
