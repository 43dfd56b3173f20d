"""janus_utils.metrics: the collector in an application's own registry, scraped over HTTP and parsed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler
from prometheus_client.parser import text_string_to_metric_families

import janus_utils as ju
from janus_utils._ring import Ring
from janus_utils.metrics import OTHER_LOGGER, JanusCollector


def _scrape(registry: CollectorRegistry) -> dict[str, Any]:
    """Serve *registry* on loopback, GET it, parse it with prometheus_client's parser."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler.factory(registry))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_address[1]}/metrics").text
    finally:
        server.shutdown()
        server.server_close()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _values(family: Any, *label_names: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(sample.labels[name] for name in label_names): sample.value
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[Path]:
    db = tmp_path / "app.db"
    ju.configure(db, console=False)
    yield db
    ju.shutdown()


class TestCollector:
    def test_committed_by_level_and_logger(self, configured: Path) -> None:
        """Records committed after the collector started, by level and logger."""
        ju.get_logger("old").info("before the collector")
        assert ju.flush(10)
        registry = CollectorRegistry()
        registry.register(JanusCollector())
        _scrape(registry)
        for _ in range(3):
            ju.get_logger("svc.api").info("hello")
        ju.get_logger("svc.db").error("boom")
        assert ju.flush(10)
        families = _scrape(registry)
        committed = _values(families["janus_records_committed"], "level", "logger")
        assert {("INFO", "svc.api"): 3.0, ("ERROR", "svc.db"): 1.0} == committed

    def test_pipeline_figures(self, configured: Path) -> None:
        """Ring, lag, size and this process's flusher figures, all parseable."""
        ju.get_logger("svc").info("x")
        assert ju.flush(10)
        registry = CollectorRegistry()
        registry.register(JanusCollector())
        families = _scrape(registry)
        names = {
            "janus_records_dropped", "janus_records_torn", "janus_ring_used_bytes", "janus_ring_capacity_bytes",
            "janus_ring_fill_ratio", "janus_ring_high_water_bytes", "janus_flusher_lag_seconds",
            "janus_database_bytes", "janus_flusher_retries", "janus_flusher_leader", "janus_database_up",
            "janus_ring_full_waits", "janus_ring_full_wait_seconds", "janus_ring_full_wait_max_seconds",
        }
        assert (set(), 1.0, 1.0) == (
            names - set(families),
            families["janus_flusher_leader"].samples[0].value,
            families["janus_database_up"].samples[0].value,
        )

    def test_waits_for_room_in_a_full_ring(self, tmp_path: Path) -> None:
        """A push that waited on a full ring shows in the wait counters, read from the ring file."""
        path = tmp_path / "w.db"
        with Ring(str(path) + "-ring", 65536, policy="block") as ring:
            while ring.push_wait(b"f" * 100, 0):
                pass
            assert not ring.push_wait(b"f" * 100, 0.05)
            registry = CollectorRegistry()
            registry.register(JanusCollector(path, stats=dict))
            families = _scrape(registry)
        waits = families["janus_ring_full_waits"].samples[0].value
        waited = families["janus_ring_full_wait_seconds"].samples[0].value
        longest = families["janus_ring_full_wait_max_seconds"].samples[0].value
        assert 1.0 == waits
        assert 0.05 <= waited == longest

    def test_loggers_past_the_cap_are_other(self, configured: Path) -> None:
        """A label per logger only up to max_loggers: the rest add up under (other)."""
        registry = CollectorRegistry()
        registry.register(JanusCollector(max_loggers=2))
        _scrape(registry)
        for name in ("a", "b", "c", "d"):
            ju.get_logger(name).info("x")
        assert ju.flush(10)
        committed = _values(_scrape(registry)["janus_records_committed"], "logger")
        assert {("a",): 1.0, ("b",): 1.0, (OTHER_LOGGER,): 2.0} == committed

    def test_shipping_and_alert_sections(self, tmp_path: Path) -> None:
        """Numbers in stats()['ship'] and ['alerts'] become gauges; per-name sections a label."""
        db = tmp_path / "app.db"
        ju.configure(db, console=False)
        ju.shutdown()
        fake = {
            "configured": True,
            "db_path": str(db),
            "leader": True,
            "retries": 2,
            "ship": {"lag_seconds": 1.5, "otlp": {"lag_seconds": 3.0, "sent": 10}, "last_error": None},
            "alerts": {"sent": 4, "failed": 1, "by_rule": {"errors": {"fired": 2}}},
        }
        registry = CollectorRegistry()
        registry.register(JanusCollector(stats=lambda: fake))
        families = _scrape(registry)
        assert (1.5, {("otlp",): 10.0}, 4.0, {("errors",): 2.0}, 2.0) == (
            families["janus_ship_lag_seconds"].samples[0].value,
            _values(families["janus_ship_sent"], "name"),
            families["janus_alerts_sent"].samples[0].value,
            _values(families["janus_alerts_by_rule_fired"], "name"),
            families["janus_flusher_retries"].samples[0].value,
        )

    def test_unconfigured_and_no_path(self) -> None:
        """Without a database to read, a scrape still succeeds and says so."""
        registry = CollectorRegistry()
        registry.register(JanusCollector(stats=lambda: {"configured": False}))
        assert 0.0 == _scrape(registry)["janus_database_up"].samples[0].value
