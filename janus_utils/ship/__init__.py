"""Ship committed records off the host: to OpenTelemetry (OTLP/HTTP) and to ClickHouse.

    import janus_utils as ju
    ju.configure(db_path="app.db", ship=[
        ju.OTLPExporter(endpoint="http://127.0.0.1:4318"),
        ju.ClickHouseExporter(url="http://127.0.0.1:8123", table="logs"),
    ])
    ju.stats()["ship"]    # per sink: shipped id, lag, state, last error, retries

The SQLite database stays the durable buffer: a sink that is down only makes
the lag grow.  See ``_shipper`` for how exactly-once into ClickHouse works.
"""

from __future__ import annotations

from typing import Any

from ..error_handling.utils.errors import ConfigError
from ._base import Exporter, Identity
from ._shipper import Shipper, SinkStatus, sink_status, unshipped_floor
from .clickhouse import ClickHouseExporter
from .otlp import OTLPExporter

__all__ = [
    "ClickHouseExporter",
    "Exporter",
    "Identity",
    "OTLPExporter",
    "Shipper",
    "SinkStatus",
    "exporter_from_url",
    "sink_status",
    "unshipped_floor",
]


def exporter_from_url(url: str, **options: Any) -> Exporter:
    """An exporter from a sink URL, as ``janus-logs ship --to`` takes them.

    ``otlp+http://host:4318`` (or ``otlp+https://``, ``otlp://`` meaning
    http) and ``clickhouse://[user:pass@]host:8123[,host2:8123]/db.table[?cluster=c]``
    (``clickhouse+https://`` for TLS).
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in ("otlp", "otlp+http", "otlp+https"):
        real = "https" if scheme == "otlp+https" else "http"
        return OTLPExporter(endpoint=real + url[len(scheme):], **options)
    if scheme.startswith("clickhouse"):
        return ClickHouseExporter(url, **options)
    raise ConfigError(
        f"unknown sink {url!r}: use otlp+http://host:4318 or clickhouse://host:8123/database.table"
    )
