"""Train and evaluate one experiment id, FuxiCTR-style: ``fuxictr-zoo run`` under its old name.

    python run_expid.py --config ./config/ --expid DNN_demo --gpu -1
    torchrun --nproc_per_node=2 run_expid.py --expid DNN_demo --gpu -1

Works unchanged under FuxiCTR's tuner (fuxictr.autotuner.grid_search), which
calls it with a generated config directory. Under torchrun it trains
data-parallel (see fuxictr_ext/distributed.py). The flags, the ``--override``
option and the error handling are those of :func:`fuxictr_ext.cli.run_main`.
"""

import functools
import sys

from fuxictr_ext.cli import report_user_errors, run_main


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return report_user_errors("run_expid", functools.partial(run_main, prog="run_expid.py"), argv)


if __name__ == "__main__":
    sys.exit(main())
