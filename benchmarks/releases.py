"""What the release-equivalence checks share: the release imported from ``--release-dir``, the
weight copy with its bookkeeping, the perturbation of the constant parameters, the table.

A release-equivalence check (``benchmarks/<model>_release_equivalence.py``, marked
``RELEASE_CHECK = True``) compares one of our models with the authors' released code: it
imports the release at run time from a checkout given by ``--release-dir`` (nothing of the
release is kept in this repository), builds both models on one FeatureMap, copies every
release parameter into ours with :class:`WeightCopy` (every element of ours assigned exactly
once, every release parameter used exactly once) and compares eval-mode outputs::

    checkout = "a checkout of github.com/owner/repo at abc1234"
    parser = release_parser(__doc__, checkout, vocab=1000, tolerance=1e-6)
    args = parser.parse_args(argv)
    module = load_release_module(parser, args.release_dir, "src/model.py", "owner_model_release", checkout)
    copy = WeightCopy(release_model, our_model)
    copy.copy("layer.weight", "layer.weight", transform=torch.t)
    count = copy.finish()
    print(markdown_header(["config", "max abs dy"]))
    print(markdown_row([name, f"{max_abs_diff(y_release, y_ours):.1e}"]))
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections import Counter
from types import ModuleType
from typing import Callable, Optional, Sequence

import torch
from torch import nn


class ReleaseError(ValueError):
    """A release checkout that lacks what a check imports from it, or a weight copy that is not one to one."""


def load_module(release_dir: str, relative_path: str, module_name: str, checkout: str) -> ModuleType:
    """Import ``relative_path`` of the checkout at ``release_dir`` as the module ``module_name``.

    A folder is imported as a package (its ``__init__.py``, with its submodules found in the
    folder, so that the release's relative imports work); a file as a single module.

    Args:
        release_dir: the checkout (``--release-dir``).
        relative_path: the release's file or package folder inside it.
        module_name: a name of ours for it in ``sys.modules`` (one that no installed package has).
        checkout: what ``--release-dir`` should be, for the error message.

    Raises:
        ReleaseError: ``release_dir`` has no such file or package.
    """
    path = os.path.join(release_dir, relative_path)
    package = os.path.isdir(path)
    init = os.path.join(path, "__init__.py") if package else path
    if not os.path.isfile(init):
        raise ReleaseError(f"--release-dir {release_dir!r}: no {relative_path} (expected {checkout})")
    loaded = sys.modules.get(module_name)
    if loaded is not None and getattr(loaded, "__file__", None) == init:
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, init,
                                                  submodule_search_locations=[path] if package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def load_release_module(parser: argparse.ArgumentParser, release_dir: str, relative_path: str, module_name: str,
                        checkout: str) -> ModuleType:
    """:func:`load_module` for a command line: a missing file is a usage error (exit status 2)."""
    try:
        return load_module(release_dir, relative_path, module_name, checkout)
    except ReleaseError as error:
        parser.error(str(error))


def release_parser(doc: str, checkout: str, vocab: int, tolerance: float) -> argparse.ArgumentParser:
    """The options every release check takes: ``--release-dir`` (required), ``--vocab``,
    ``--batch-size``, ``--seed``, ``--threads``, ``--tolerance`` (default ``tolerance``)."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--release-dir", required=True, help=checkout)
    parser.add_argument("--vocab", type=int, default=vocab, help="vocabulary of every categorical field")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--tolerance", type=float, default=tolerance,
                        help="largest accepted max |dy|; a larger one makes the exit status 1")
    return parser


class WeightCopy:
    """Copies release parameters into ours, keeping count of what each copy covers.

    Every call of :meth:`copy` writes one release parameter (after an optional ``transform``,
    e.g. a transpose) into one of our parameters or a part of one (``index``). :meth:`finish`
    checks that the copy was one to one: every release parameter used exactly once and every
    element of every one of our parameters written exactly once (so both hold the same number
    of values).

    Args:
        release: the release's model.
        ours: our model.

    Example:
        >>> copy = WeightCopy(release, ours)
        >>> copy.copy("ffn.0.weight", "ffn.weight", index=(0,), transform=torch.t)  # token 0 of a stack
        >>> copy.finish()                          # the number of values copied
    """

    def __init__(self, release: nn.Module, ours: nn.Module):
        self.release = dict(release.named_parameters())
        self.ours = dict(ours.named_parameters())
        self.writes = {name: torch.zeros(param.shape, dtype=torch.int32) for name, param in self.ours.items()}
        self.uses: Counter = Counter()

    def copy(self, release_name: str, our_name: str, index=(),
             transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
        """``ours[our_name][index] = transform(release[release_name])``."""
        if release_name not in self.release:
            raise ReleaseError(f"the release has no parameter {release_name!r}")
        if our_name not in self.ours:
            raise ReleaseError(f"{release_name!r} -> {our_name!r}: ours has no such parameter")
        source = self.release[release_name].detach()
        source = transform(source) if transform is not None else source
        target = self.ours[our_name]
        if target[index].shape != source.shape:
            raise ReleaseError(f"{release_name} {tuple(source.shape)} -> {our_name}[{index}] "
                               f"{tuple(target[index].shape)}: shapes differ")
        with torch.no_grad():
            target[index] = source
        self.writes[our_name][index] += 1
        self.uses[release_name] += 1

    def finish(self) -> int:
        """Check that the copy was one to one; the number of values copied.

        Raises:
            ReleaseError: naming the release parameters not used once and our parameters with
                elements not written once.
        """
        unused = sorted(set(self.release) - set(self.uses))
        reused = sorted(name for name, count in self.uses.items() if count > 1)
        unwritten = sorted(name for name, writes in self.writes.items() if (writes == 0).any())
        rewritten = sorted(name for name, writes in self.writes.items() if (writes > 1).any())
        if unused or reused or unwritten or rewritten:
            raise ReleaseError(f"the weight copy is not one to one: release parameters not used: {unused}, "
                               f"used twice: {reused}; ours not written: {unwritten}, written twice: {rewritten}")
        return sum(param.numel() for param in self.ours.values())


def perturb_constant_parameters(model: nn.Module, std: float, seed: int) -> int:
    """Add N(0, std^2) noise to every parameter whose entries are all equal; the number perturbed.

    Initialisation leaves norm gains at 1 and biases at 0: as long as they are, a copy that
    swaps two gains or two biases is not seen. Perturbing them (in the release, before the
    copy) makes the comparison see their mapping too.
    """
    generator = torch.Generator().manual_seed(seed)
    perturbed = 0
    with torch.no_grad():
        for param in model.parameters():
            if param.numel() > 0 and bool((param == param.flatten()[0]).all()):
                param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * std)
                perturbed += 1
    return perturbed


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over all entries."""
    return (a - b).abs().max().item()


def markdown_row(cells: Sequence[object]) -> str:
    """One markdown table row (cells formatted by ``str``)."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def markdown_header(header: Sequence[str]) -> str:
    """The header of a markdown table and the line under it; rows follow by :func:`markdown_row`."""
    return markdown_row(header) + "\n|" + "---|" * len(header)
