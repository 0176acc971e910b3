"""Model weights on disk: written atomically (a file is complete at its path or absent),
read back as plain tensors (``weights_only``), onto the model's device. Every load of
weights or resume state goes through :func:`read_checkpoint`, which names the file when
it is empty, truncated or not a checkpoint; :func:`load_weights` also names it when its
weights do not fit the model."""

from __future__ import annotations

import os
import pickle
import zipfile

import torch
from torch import nn

from ..atomic import torch_save_atomic
from ..config import ZooError


class CheckpointError(ZooError):
    """A checkpoint file that cannot be loaded into the model; the message names its path."""


def save_weights(model: nn.Module, path: str) -> None:
    """Write ``model.state_dict()`` to ``path`` atomically (temp file in the folder, then rename)."""
    torch_save_atomic(model.state_dict(), path)


def read_checkpoint(path: str, weights_only: bool = True):
    """``torch.load(path)`` on the CPU, or a :class:`CheckpointError` naming ``path`` and what is
    wrong with it (missing, empty, truncated, damaged or not written by ``torch.save``)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} not found")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): its writing was interrupted or "
                              "the file was replaced; train again or pass another checkpoint")
    with open(path, "rb") as handle:
        zip_archive = handle.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
    if zip_archive and not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {path} ({size} bytes) is truncated: its zip archive has no end "
                              "(an interrupted write or copy); train again or copy it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as err:
        problem = "is damaged" if zip_archive else "is not a checkpoint written by torch.save"
        raise CheckpointError(f"checkpoint {path} ({size} bytes) {problem}; it cannot be read as PyTorch "
                              "weights") from err


def load_weights(model: nn.Module, path: str) -> None:
    """Load the state dict at ``path`` into ``model`` (moved to ``model.device`` first), strictly
    and through the model's load hooks, so former parameter layouts still load.

    Raises:
        CheckpointError: naming ``path``: the file is missing, empty, truncated or not a
            checkpoint, holds no state dict, or its parameters do not fit ``model``
            (missing or unexpected names, other shapes: another model or other settings).
    """
    model.to(model.device)
    state_dict = read_checkpoint(path)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"checkpoint {path} holds a {state_dict.__class__.__name__}, not a state dict "
                              f"of {model.__class__.__name__}'s weights")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        problems = "; ".join(line.strip() for line in str(err).splitlines()[1:] if line.strip()) or str(err)
        raise CheckpointError(f"checkpoint {path} does not fit this {model.__class__.__name__} (trained with "
                              f"other settings, another dataset or another model?): {problems}") from err
