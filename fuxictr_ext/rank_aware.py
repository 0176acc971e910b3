"""Former import path of the serving API; the canonical one is :mod:`fuxictr_ext.serving`."""

from .serving import *  # noqa: F401,F403
from .serving import __all__  # noqa: F401
