"""Spectrum tools: metrics of embedding matrices, training callbacks, plots.

* :mod:`.metrics` - information abundance, stable rank, entropy effective rank (re-exported here).
* :mod:`.callbacks` - YAML ``spectrum_callbacks`` writing CSV/JSON/PNG beside the checkpoint.
* :mod:`.plot` - figures and the ``fuxictr-zoo-plot`` overlay command.
"""

from .metrics import *  # noqa: F401,F403
from .metrics import __all__  # noqa: F401
