"""Train and evaluate one experiment id, FuxiCTR-style.

    python run_expid.py --config ./config/ --expid DNN_demo --gpu -1
    torchrun --nproc_per_node=2 run_expid.py --expid DNN_demo --gpu -1

Works unchanged under FuxiCTR's tuner (fuxictr.autotuner.grid_search), which
calls it with a generated config directory. Under torchrun it trains
data-parallel (see fuxictr_ext/distributed.py).
"""

import argparse
import sys

import torch

from fuxictr_ext import distributed as zoo_dist
from fuxictr_ext.base import TrainingDiverged
from fuxictr_ext.data import DataError
from fuxictr_ext.runner import ConfigError, run_experiment


def default_gpu() -> int:
    """CPU for a plain run (FuxiCTR's default); one GPU per process under torchrun when there are GPUs."""
    if zoo_dist.torchrun_world_size() > 1 and torch.cuda.is_available():
        return 0
    return -1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=str, default="./config/", help="config directory")
    parser.add_argument("--expid", type=str, required=True, help="experiment id in model_config")
    parser.add_argument("--gpu", type=int, default=None,
                        help="GPU index, -1 for CPU (default: CPU; under torchrun one GPU per process if any)")
    args = parser.parse_args(argv)
    gpu = default_gpu() if args.gpu is None else args.gpu
    try:
        result = run_experiment(args.config, args.expid, gpu)
    except (ConfigError, DataError, TrainingDiverged, zoo_dist.DistributedSetupError) as err:
        print(f"run_expid: error: {err}", file=sys.stderr)
        return 2
    finally:
        zoo_dist.shutdown()
    if not result["is_main"]:
        return 0
    test = result["test"] or result["valid"]
    print(f"[{args.expid}] test " + " - ".join(f"{k}: {v:.6f}" for k, v in test.items()))
    if result["ceiling"]:
        print(f"[{args.expid}] planted-model ceiling on this synthetic test split: "
              f"AUC {result['ceiling']['ceiling_test_AUC']:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
