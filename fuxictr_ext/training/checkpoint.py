"""Model weights on disk: written atomically (a file is complete at its path or absent),
read back as plain tensors (``weights_only``), onto the model's device."""

from __future__ import annotations

import torch
from torch import nn

from ..atomic import torch_save_atomic


def save_weights(model: nn.Module, path: str) -> None:
    """Write ``model.state_dict()`` to ``path`` atomically (temp file in the folder, then rename)."""
    torch_save_atomic(model.state_dict(), path)


def load_weights(model: nn.Module, path: str) -> None:
    """Load the state dict at ``path`` into ``model`` (moved to ``model.device`` first)."""
    model.to(model.device)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
