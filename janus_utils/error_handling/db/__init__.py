"""Database errors and the translation of driver exceptions onto them; see :mod:`.errors`."""

from .errors import *  # noqa: F403
from .errors import __all__ as __all__
