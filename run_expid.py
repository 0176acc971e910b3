"""Train and evaluate one experiment id, FuxiCTR-style.

    python run_expid.py --config ./config/ --expid DNN_demo --gpu -1

Works unchanged under FuxiCTR's tuner (fuxictr.autotuner.grid_search), which
calls it with a generated config directory.
"""

import argparse
import sys

from fuxictr_ext.data import DataError
from fuxictr_ext.runner import ConfigError, run_experiment


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=str, default="./config/", help="config directory")
    parser.add_argument("--expid", type=str, required=True, help="experiment id in model_config")
    parser.add_argument("--gpu", type=int, default=-1, help="GPU index, -1 for CPU")
    args = parser.parse_args(argv)
    try:
        result = run_experiment(args.config, args.expid, args.gpu)
    except (ConfigError, DataError) as err:
        print(f"run_expid: error: {err}", file=sys.stderr)
        return 2
    test = result["test"] or result["valid"]
    print(f"[{args.expid}] test " + " - ".join(f"{k}: {v:.6f}" for k, v in test.items()))
    if result["ceiling"]:
        print(f"[{args.expid}] planted-model ceiling on this synthetic test split: "
              f"AUC {result['ceiling']['ceiling_test_AUC']:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
