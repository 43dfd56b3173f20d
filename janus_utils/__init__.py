"""janus_utils: SQLite-first structured logging and the utilities a Python backend needs.

    import janus_utils as ju
    ju.configure(db_path="janus-logs.db")
    log = ju.get_logger(__name__)
    log.info("user %s logged in", uid, user_id=uid)

Names are imported on first use, so ``import janus_utils`` stays cheap for
code that only wants, say, ``janus_utils.security``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_getattr

__all__ = [
    "Alert",
    "ClickHouseExporter",
    "ClickHouseStore",
    "JanusError",
    "JanusHandler",
    "LogStore",
    "Logger",
    "OTLPExporter",
    "Record",
    "StoreStats",
    "add_record_listener",
    "configure",
    "flush",
    "get_logger",
    "is_configured",
    "log_context",
    "security",
    "shutdown",
    "stats",
]
__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Alert": ".alerts",
    "ClickHouseExporter": ".ship",
    "ClickHouseStore": ".clickhouse_store",
    "JanusError": ".error_handling",
    "JanusHandler": ".logger",
    "LogStore": ".store",
    "Logger": ".logger",
    "OTLPExporter": ".ship",
    "Record": ".store",
    "StoreStats": ".store",
    "add_record_listener": ".logger",
    "configure": ".logger",
    "flush": ".logger",
    "get_logger": ".logger",
    "is_configured": ".logger",
    "log_context": ".logger",
    "shutdown": ".logger",
    "stats": ".logger",
}
_SUBMODULES = {"alerts", "security", "file_handler", "logger", "error_handling", "metrics", "retention", "ship", "store", "web"}


_exported = lazy_getattr(__name__, globals(), _EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    return _exported(name)


if TYPE_CHECKING:  # pragma: no cover
    from . import security, ship
    from .alerts import Alert
    from .clickhouse_store import ClickHouseStore
    from .error_handling import JanusError
    from .ship import ClickHouseExporter, OTLPExporter
    from .store import LogStore, Record, StoreStats
    from .logger import (
        JanusHandler,
        Logger,
        add_record_listener,
        configure,
        flush,
        get_logger,
        is_configured,
        log_context,
        shutdown,
        stats,
    )
