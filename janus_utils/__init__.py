"""janus_utils: SQLite-first structured logging and the utilities a Python backend needs."""

from __future__ import annotations

__all__: list[str] = []
__version__ = "0.1.0"
