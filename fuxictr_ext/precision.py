"""Numeric precision of training and evaluation: the ``precision`` run setting.

* ``float32`` (default): every op in float32, as FuxiCTR runs.
* ``bf16``: the forward (and so the backward) runs under
  ``torch.autocast(device_type, dtype=torch.bfloat16)``: matmuls and linear layers in
  bfloat16, the parameters (master weights), their gradients, the optimizer state and
  the checkpoints stay float32. The loss is computed in float32 from the outputs cast
  back (:func:`as_float32`); the layers where bfloat16 would hurt (norms, HSIC, the
  rank-1 update normalization) run in float32 through :func:`in_float32`.

Example:
    >>> with autocast("bf16", "cpu"):
    ...     y = torch.nn.Linear(4, 2)(torch.randn(3, 4))
    >>> y.dtype
    torch.bfloat16
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, ContextManager, Union

import torch

from .config import PRECISIONS, check_choice

__all__ = ["PRECISIONS", "autocast", "as_float32", "in_float32"]

LOW_PRECISION_DTYPES = (torch.bfloat16, torch.float16)


def autocast(precision: str, device: Union[str, torch.device]) -> ContextManager:
    """The context a forward of ``precision`` (one of :data:`PRECISIONS`) runs in on ``device``:
    nothing for float32, bfloat16 autocast for bf16."""
    if check_choice("precision", precision, PRECISIONS) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def as_float32(outputs):
    """``outputs`` (a tensor, or dicts / lists / tuples of them) with every bfloat16 / float16
    tensor cast to float32; other tensors (float32, float64, ids) are returned as they are
    (the same objects)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.dtype in LOW_PRECISION_DTYPES else outputs
    if isinstance(outputs, dict):
        return {key: as_float32(value) for key, value in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(as_float32(value) for value in outputs)
    return outputs


def in_float32(function: Callable) -> Callable:
    """Decorator: ``function`` runs with autocast off and its bfloat16 / float16 tensor
    arguments in float32 (for numerics that bfloat16 would hurt: power iterations, squared sums).

    Under float32 it changes nothing (no cast, autocast already off)."""

    @functools.wraps(function)
    def float32_function(*args, **kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        device_type = tensors[0].device.type if tensors else "cpu"
        with torch.autocast(device_type, enabled=False):
            return function(*as_float32(args), **as_float32(kwargs))

    return float32_function
