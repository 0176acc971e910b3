"""``python -m fuxictr_ext.results RECORD.jsonl``: the report of a results record."""

import sys

from .record import main

sys.exit(main())
