"""Atomic file output: a file is either complete at its path or absent.

Every file the zoo writes for a later run or reader to trust (checkpoints,
resume state, spectrum logs, plots, results) goes through :func:`atomic_output`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

import torch


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
