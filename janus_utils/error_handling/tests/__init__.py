"""Test support: the ``janus_logs`` pytest fixture (in :mod:`.plugin`) and its errors.

The plugin module is not imported here, so that importing the errors does not import pytest.
"""

from .errors import *  # noqa: F403
from .errors import __all__ as __all__
