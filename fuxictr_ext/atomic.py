"""Atomic file output: a file is either complete at its path or absent; checkpoints read back with checks.

Every file the zoo writes for a later run or reader to trust (checkpoints,
resume state, spectrum logs, plots, results) goes through :func:`atomic_output`.
Every load of model weights goes through :func:`load_weights`, which names the
checkpoint's path when the file is empty, truncated, not a checkpoint, or made for
another model.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from typing import Iterator

import torch
from torch import nn

from .data.build import DataError


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; once written, give it the permissions the
    umask allows (mkstemp makes it private) and rename it onto ``path``.

    Example:
        >>> with atomic_output("out/log.csv") as tmp_path:
        ...     open(tmp_path, "w").write("a,b\\n")
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_output(path) as tmp_path, open(tmp_path, "w", newline="") as handle:
        handle.write(text)


def torch_save_atomic(obj, path: str) -> None:
    """``torch.save(obj, path)`` atomically."""
    with atomic_output(path) as tmp_path:
        torch.save(obj, tmp_path)


class CheckpointError(DataError):
    """A checkpoint file that cannot be loaded into the model; the message names its path."""


def read_checkpoint(path: str, weights_only: bool = True):
    """``torch.load(path)`` on the CPU, or a :class:`CheckpointError` naming ``path`` and what is
    wrong with it (missing, empty, truncated or not a PyTorch checkpoint)."""
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
    """Load the state dict saved at ``path`` into ``model`` (strictly, through the model's
    load hooks, so former parameter layouts still load).

    Raises:
        CheckpointError: naming ``path``: the file is missing, empty, truncated or not a
            checkpoint, holds no state dict, or its parameters do not fit ``model``
            (missing or unexpected names, other shapes: another model or other settings).
    """
    state_dict = read_checkpoint(path)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"checkpoint {path} holds a {state_dict.__class__.__name__}, not a state dict "
                              f"of {model.__class__.__name__}'s weights")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        problems = "; ".join(line.strip() for line in str(err).splitlines()[1:] if line.strip()) or str(err)
        raise CheckpointError(f"checkpoint {path} does not fit this {model.__class__.__name__} (trained with other "
                              f"settings, another dataset or another model?): {problems}") from err
