"""Results as data: the record every run appends, reports on it, and paper tables.

* :mod:`.record` - FuxiCTR's CSV results line, the JSON record per run, ``report``
  (mean +- std per experiment id); re-exported here.
* :mod:`.reproduce` - a paper table's cells for every seed, beside the paper's numbers.

    python -m fuxictr_ext.results RECORD.jsonl            # report (fuxictr-zoo report)
    python -m fuxictr_ext.results.reproduce --list         # paper tables (fuxictr-zoo reproduce)
"""

from .record import *  # noqa: F401,F403
from .record import __all__  # noqa: F401
