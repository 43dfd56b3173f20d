"""The logging pipeline's figures for Prometheus: a collector to register in any registry.

    from prometheus_client import REGISTRY
    from janus_utils.metrics import JanusCollector
    REGISTRY.register(JanusCollector())          # the database configure() was given

``janus-logs serve`` serves the same collector at ``/metrics``.  Needs
``prometheus-client`` (``pip install 'janus_utils[metrics]'``).

What it exports (all names start ``janus_``):

* ``records_committed_total{level,logger}``: records committed since the
  collector started (each scrape reads only the rows committed since the last
  one); loggers past the first ``max_loggers`` are counted as ``(other)``;
* ``records_dropped_total``, ``records_torn_total``: the ring's shared counters
  (every process that logs into the database counts there);
* ``ring_used_bytes``, ``ring_capacity_bytes``, ``ring_fill_ratio``,
  ``ring_high_water_bytes``;
* ``ring_full_waits_total``, ``ring_full_wait_seconds_total``,
  ``ring_full_wait_max_seconds``: log calls that found the ring full and
  waited for room (any process), their time waiting, the longest wait;
* ``flusher_lag_seconds``: while records wait in the ring, the age of the
  newest committed record (how far behind the flusher is); 0 when the ring is
  empty;
* ``database_bytes{file="db"|"wal"}``;
* in a process that called ``configure()`` for this database:
  ``flusher_retries_total``, ``flusher_leader`` and, when ``stats()`` has
  them, the shipping figures (``ship_*``) and the alert figures (``alerts_*``).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._levels import level_name

__all__ = ["OTHER_LOGGER", "JanusCollector"]

OTHER_LOGGER = "(other)"  # the label of loggers past max_loggers
_NAME = re.compile(r"[^a-zA-Z0-9_]")


class JanusCollector(Collector):
    """Collects janus_utils figures for one log database on every scrape.

    *db_path*: the database; None means the one ``configure()`` was given, read
    at each scrape.  *stats*: the function whose counters describe this
    process's pipeline (default ``janus_utils.stats``); its figures are used
    only when it reports the same database.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        *,
        stats: Callable[[], Mapping[str, Any]] | None = None,
        max_loggers: int = 200,
    ) -> None:
        self._db_path = os.path.abspath(os.fspath(db_path)) if db_path is not None else None
        self._stats = stats
        self._max_loggers = max_loggers
        self._lock = threading.Lock()  # one scrape at a time owns the cursor and the store
        self._store: Any = None
        self._store_path: str | None = None
        self._cursor: int | None = None
        self._committed: dict[tuple[str, str], int] = {}
        self._loggers: set[str] = set()
        self._ring: Any = None

    # -- what to read ----------------------------------------------------
    def _process_stats(self) -> Mapping[str, Any]:
        if self._stats is not None:
            return self._stats()
        from .logger import stats

        return stats()

    def _path(self, counters: Mapping[str, Any]) -> str | None:
        if self._db_path is not None:
            return self._db_path
        configured = counters.get("db_path")
        return configured if counters.get("configured") and isinstance(configured, str) else None

    def _open_store(self, path: str) -> Any:
        from .store import LogStore

        if self._store is not None and self._store_path != path:
            self._store.close()
            self._store = None
            self._cursor = None
        if self._store is None:
            self._store = LogStore(path)
            self._store_path = path
        return self._store

    def _ring_stats(self, path: str) -> Any:
        """The shared ring's counters, read from its file (this process need not log)."""
        from . import _ring

        if self._ring is None or self._ring.path != path + "-ring":
            if not os.path.exists(path + "-ring"):
                return None
            self._ring = _ring.Ring(path + "-ring", None, create=False)
        return self._ring.stats()

    # -- collecting ------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._collect()

    def _collect(self) -> Iterator[Metric]:
        counters = self._process_stats()
        path = self._path(counters)
        same_db = (
            path is not None
            and bool(counters.get("configured"))
            and os.path.realpath(str(counters.get("db_path"))) == os.path.realpath(path)
        )
        up = GaugeMetricFamily("janus_database_up", "1 if the log database could be read at this scrape")
        if path is None:
            up.add_metric([], 0)
            yield up
            return
        newest_ts = None
        try:
            store = self._open_store(path)
            yield self._committed_family(store)
            newest_ts = store.newest_ts()
            up.add_metric([], 1)
        except Exception:
            # A scrape must not fail because the database is busy or missing.
            if self._store is not None:
                self._store.close()
                self._store = None
            up.add_metric([], 0)
        yield up

        ring: Any = None
        try:
            ring = self._ring_stats(path)
        except Exception:
            ring = None
        if ring is not None:
            yield _counter("janus_records_dropped", "Records dropped because the ring was full", ring.dropped)
            yield _counter("janus_records_torn", "Records lost by a producer killed mid-push", ring.torn)
            used = ring.head - ring.tail
            yield _gauge("janus_ring_used_bytes", "Bytes of records not yet committed", used)
            yield _gauge("janus_ring_capacity_bytes", "Size of the shared ring", ring.capacity)
            yield _gauge("janus_ring_fill_ratio", "ring_used_bytes / ring_capacity_bytes", used / ring.capacity)
            yield _gauge("janus_ring_high_water_bytes", "The most the ring has held", ring.high_water)
            yield _counter("janus_ring_full_waits", "Log calls that found the ring full and waited", ring.full_waits)
            yield _counter(
                "janus_ring_full_wait_seconds", "Time log calls spent waiting for room", ring.full_wait_ns / 1e9
            )
            yield _gauge("janus_ring_full_wait_max_seconds", "The longest wait for room", ring.full_wait_max_ns / 1e9)
            lag = 0.0
            if used > 0 and newest_ts is not None:
                lag = max(time.time_ns() - newest_ts, 0) / 1e9
            yield _gauge(
                "janus_flusher_lag_seconds",
                "While records wait in the ring: the age of the newest committed record; else 0",
                lag,
            )

        sizes = GaugeMetricFamily("janus_database_bytes", "Size of the log database files", labels=["file"])
        for label, suffix in (("db", ""), ("wal", "-wal")):
            try:
                sizes.add_metric([label], os.path.getsize(path + suffix))
            except OSError:
                sizes.add_metric([label], 0)
        yield sizes

        if same_db:
            yield from self._process_families(counters)

    def _committed_family(self, store: Any) -> Metric:
        if self._cursor is None:
            # Counters start at the collector's start, as every Prometheus
            # counter does: the first scrape never scans a big database.
            self._cursor = store.newest_id()
        counts, self._cursor = store.counts_after(self._cursor)
        for (level, logger), n in counts.items():
            if logger not in self._loggers:
                if len(self._loggers) >= self._max_loggers:
                    logger = OTHER_LOGGER
                else:
                    self._loggers.add(logger)
            key = (level_name(level), logger)
            self._committed[key] = self._committed.get(key, 0) + n
        family = CounterMetricFamily(
            "janus_records_committed",
            "Records committed to the log database since this collector started",
            labels=["level", "logger"],
        )
        for (level, logger), n in sorted(self._committed.items()):
            family.add_metric([level, logger], n)
        return family

    def _process_families(self, counters: Mapping[str, Any]) -> Iterator[Metric]:
        yield _counter("janus_flusher_retries", "Failed commits retried by this process's flusher", counters.get("retries", 0))
        yield _gauge("janus_flusher_leader", "1 if this process runs the database's flusher", 1 if counters.get("leader") else 0)
        for section in ("ship", "alerts"):
            value = counters.get(section)
            if isinstance(value, Mapping):
                yield from _numbers(f"janus_{section}", value)


def _counter(name: str, doc: str, value: float) -> Metric:
    family = CounterMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _gauge(name: str, doc: str, value: float) -> Metric:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _numbers(prefix: str, data: Mapping[str, Any]) -> Iterator[Metric]:
    """A stats() section as gauges.

    ``{"lag_seconds": 1.5}`` is ``<prefix>_lag_seconds``; a mapping per name (a
    sink) becomes a label: ``{"otlp": {"sent": 2}}`` is ``<prefix>_sent{name="otlp"}``;
    a mapping of those (``{"by_rule": {"errors": {"fired": 2}}}``) is
    ``<prefix>_by_rule_fired{name="errors"}``.  Text and other values are left out.
    """
    plain: dict[str, float] = {}
    labelled: dict[str, list[tuple[str, float]]] = {}
    for key, value in data.items():
        if _is_number(value):
            plain[_NAME.sub("_", str(key))] = float(value)
        elif isinstance(value, Mapping):
            for inner, number in value.items():
                if _is_number(number):
                    labelled.setdefault(_NAME.sub("_", str(inner)), []).append((str(key), float(number)))
                elif isinstance(number, Mapping):
                    for leaf, figure in number.items():
                        if _is_number(figure):
                            name = _NAME.sub("_", f"{key}_{leaf}")
                            labelled.setdefault(name, []).append((str(inner), float(figure)))
    section = prefix.removeprefix("janus_")
    for key, number in sorted(plain.items()):
        yield _gauge(f"{prefix}_{key}", f"stats()[{section!r}][{key!r}]", number)
    for key, pairs in sorted(labelled.items()):
        if key in plain:
            continue
        family = GaugeMetricFamily(f"{prefix}_{key}", f"stats()[{section!r}], per name: {key}", labels=["name"])
        for name, number in pairs:
            family.add_metric([name], number)
        yield family


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
