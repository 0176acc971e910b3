"""Command line of the synthetic data generator (:func:`fuxictr_ext.data.synthetic.main`,
also ``fuxictr-zoo synthetic``).

    python -m data_prep.synthetic --schema criteo --rows 200000 --out ./data/raw/demo
"""

import sys

from fuxictr_ext.data.synthetic import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
