"""Former import path of the spectrum plots; the canonical one is :mod:`fuxictr_ext.spectrum.plot`.

``python -m fuxictr_ext.spectrum_plot ...`` still runs the overlay command.
"""

import sys

from .spectrum.plot import *  # noqa: F401,F403
from .spectrum.plot import __all__, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
