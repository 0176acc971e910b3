"""The ``fuxictr-zoo`` console command: the zoo without a clone.

    fuxictr-zoo run --expid DNN_demo [--config DIR] [--gpu N] [--override KEY=VALUE ...]
    fuxictr-zoo prepare criteo_x1 --src Criteo_x1.zip [--config DIR]
    fuxictr-zoo prepare movielens_100k              # fetched through pip (data_prep/movielens.py)

Configs: ``--config DIR`` when given; otherwise ``./config`` when the working
directory has one (a clone, or a copy a user edits); otherwise the configs that
ship with the package (:func:`packaged_config_dir`). Data, checkpoints, logs and
the results CSV go under the working directory, as for ``run_expid.py``, which
stays the clone's (and FuxiCTR's tuner's) entry point.

Each subcommand is an entry of :data:`SUBCOMMANDS`: its one-line help and the
``"module:function"`` that takes the remaining arguments and returns the exit
code. Targets are imported only when their subcommand runs, so ``fuxictr_ext``
itself does not depend on ``data_prep`` or on any other subcommand's package;
a new subcommand is a new entry.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import yaml

from . import distributed as zoo_dist
from .data import DataError
from .runner import ConfigError, run_experiment, summary_lines

PREPARE_TARGET = "data_prep.prepare:main"
PACKAGED_CONFIG = Path(__file__).resolve().parent / "packaged" / "config"
CLONE_CONFIG = Path(__file__).resolve().parent.parent / "config"


@dataclass(frozen=True)
class Subcommand:
    """One ``fuxictr-zoo <name>``: its help line and the ``"module:function"`` that runs it."""

    help: str
    target: str

    def load(self) -> Callable[[List[str]], int]:
        return load_target(self.target)


def load_target(target: str) -> Callable[[List[str]], int]:
    """The function named by ``"module:function"``, imported now."""
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


SUBCOMMANDS: Dict[str, Subcommand] = {
    "run": Subcommand("train and evaluate one experiment id (as run_expid.py)", "fuxictr_ext.cli:run_main"),
    "prepare": Subcommand("write a dataset id's raw files from a downloaded release, or MovieLens-100K "
                          "from the package registry (data_prep.prepare)",
                          "fuxictr_ext.cli:prepare_main"),
    "reproduce": Subcommand("run a paper table's cells for every seed, beside the paper's numbers",
                            "fuxictr_ext.results.reproduce:main"),
    "report": Subcommand("mean +- std per experiment id of a results record (.jsonl)",
                         "fuxictr_ext.results.record:main"),
}


def packaged_config_dir() -> Path:
    """The configs that ship with the package: in a wheel ``fuxictr_ext/packaged/config``
    (copied there at build time, see setup.py), in a clone or editable install the
    clone's ``config/``."""
    return PACKAGED_CONFIG if PACKAGED_CONFIG.is_dir() else CLONE_CONFIG


def resolve_config_dir(explicit: Optional[str]) -> str:
    """``explicit`` when given, else ``./config`` when present, else :func:`packaged_config_dir`."""
    if explicit is not None:
        return explicit
    local = Path("config")
    if (local / "model_config").is_dir() or (local / "model_config.yaml").is_file():
        return str(local)
    packaged = packaged_config_dir()
    print(f"fuxictr-zoo: no ./config here; using the packaged configs in {packaged} "
          f"(copy that folder to ./config to edit them)", file=sys.stderr)
    return str(packaged)


def parse_overrides(pairs: Sequence[str]) -> Dict[str, object]:
    """``["epochs=1", "synthetic.rows=3000"]`` -> ``{"epochs": 1, "synthetic.rows": 3000}``
    (values read as YAML, so numbers, lists and null keep their types)."""
    overrides: Dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--override {pair!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    return overrides


def default_gpu() -> int:
    """CPU for a plain run; one GPU per process under torchrun when there are GPUs."""
    if zoo_dist.torchrun_world_size() > 1 and torch.cuda.is_available():
        return 0
    return -1


def run_main(argv: Sequence[str]) -> int:
    """``fuxictr-zoo run``: run_expid.py's arguments, the config fallback and ``--override``."""
    parser = argparse.ArgumentParser(prog="fuxictr-zoo run", description=SUBCOMMANDS["run"].help)
    parser.add_argument("--config", default=None,
                        help="config directory (default: ./config if present, else the packaged configs)")
    parser.add_argument("--expid", required=True, help="experiment id in model_config")
    parser.add_argument("--gpu", type=int, default=None,
                        help="GPU index, -1 for CPU (default: CPU; under torchrun one GPU per process if any)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="set one of the experiment's params, e.g. epochs=1 or synthetic.rows=3000 "
                             "(repeatable; values are YAML)")
    args = parser.parse_args(list(argv))
    try:
        overrides = parse_overrides(args.override)
    except ValueError as err:
        parser.error(str(err))
    config_dir = resolve_config_dir(args.config)
    gpu = default_gpu() if args.gpu is None else args.gpu
    try:
        result = run_experiment(config_dir, args.expid, gpu, overrides)
    except (ConfigError, DataError, zoo_dist.DistributedSetupError) as err:
        print(f"fuxictr-zoo run: error: {err}", file=sys.stderr)
        return 2
    finally:
        zoo_dist.shutdown()
    if result["is_main"]:
        print("\n".join(summary_lines(result)))
    return 0


def prepare_main(argv: Sequence[str]) -> int:
    """``fuxictr-zoo prepare``: ``data_prep.prepare``'s command with the config fallback."""
    argv = list(argv)
    if not any(arg == "--config" or arg.startswith("--config=") for arg in argv) \
            and not any(arg in ("-h", "--help") for arg in argv):
        argv += ["--config", resolve_config_dir(None)]
    return load_target(PREPARE_TARGET)(argv)


def usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: fuxictr-zoo <command> [options]   (fuxictr-zoo <command> -h for a command's options)",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {sub.help}" for name, sub in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Dispatch ``fuxictr-zoo <command> ...`` to :data:`SUBCOMMANDS`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        near = difflib.get_close_matches(name, list(SUBCOMMANDS), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        print(f"fuxictr-zoo: unknown command {name!r}.{hint}\n{usage()}", file=sys.stderr)
        return 2
    return SUBCOMMANDS[name].load()(rest)


if __name__ == "__main__":
    sys.exit(main())
