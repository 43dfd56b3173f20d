"""Errors raised by janus_utils' own modules; see :mod:`.errors`."""

from .errors import *  # noqa: F403
from .errors import __all__ as __all__
