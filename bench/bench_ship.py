"""Shipping: throughput to ClickHouse beside a bare HTTP insert, OTLP throughput, lag, a sink that is down.

Groups (one pytest-benchmark run, so the ratios compare like with like):

- ``ship-clickhouse``: the same rows inserted by a bare ``INSERT ... FORMAT
  JSONEachRow`` POST (bodies encoded before the clock starts: the server's
  and the transport's cost alone) and shipped by a Shipper from the SQLite
  database (read, encode, send, cursor writes).  Goals: shipper ≥ 0.5× bare,
  ≥ 100,000 rows/s.
- ``ship-otlp``: records shipped to a loopback OTLP/HTTP receiver running in
  another process (it counts records; decoding is the tests' job).  Goal ≥ 30,000/s.
- ``ship-lag``: an application logging a steady 10,000 records/s with a
  ClickHouse sink configured; the lag (time since the oldest record not yet
  acknowledged by the sink was logged) sampled every 20 ms.  Goal: max < 1 s.
- ``ship-sink-down``: log calls with no sink, and with a sink that is down for
  ``JANUS_BENCH_OUTAGE_S`` seconds (60; 2 in quick mode), rounds spread over
  the outage; then the sink comes back and the time until the lag is zero is
  recorded.  Goal: the calls cost the same.

ClickHouse benchmarks skip when the Debian packages are absent, OTLP ones
when opentelemetry-proto is.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import janus_utils as ju
from janus_utils._flusher import open_database
from janus_utils._schema import COLUMNS

from . import _sizes
from ._sizes import MESSAGE, user_ids

SHIP_ROWS = _sizes._int("JANUS_BENCH_SHIP_ROWS", 500_000, 20_000)
SHIP_ROUNDS = _sizes._int("JANUS_BENCH_SHIP_ROUNDS", 3, 1)
CH_BATCH = _sizes._int("JANUS_BENCH_SHIP_BATCH", 50_000, 5_000)  # the exporter's default
OTLP_RECORDS = _sizes._int("JANUS_BENCH_OTLP_RECORDS", 200_000, 5_000)
STEADY_RATE = 10_000
STEADY_S = float(os.environ.get("JANUS_BENCH_STEADY_S", "2" if _sizes.QUICK else "30"))
OUTAGE_S = float(os.environ.get("JANUS_BENCH_OUTAGE_S", "2" if _sizes.QUICK else "60"))
DOWN_ROUNDS = _sizes._int("JANUS_BENCH_DOWN_ROUNDS", 30, 3)


def _servers() -> Any:
    from tests import servers  # the test suite's real servers (repository root on sys.path)

    return servers


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    servers = _servers()
    missing = servers.clickhouse_missing()
    if missing:
        pytest.skip(f"ClickHouse benchmarks need the Debian packages clickhouse-server and zookeeper: {missing}")
    with servers.ClickHouseCluster() as running:
        yield running


@pytest.fixture(scope="module")
def source_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """SHIP_ROWS committed records (the benchmark record, indexed like the flusher's)."""
    path = str(tmp_path_factory.mktemp("ship") / "source.db")
    db = open_database(path)
    insert = f'INSERT INTO "logs" ({", ".join(COLUMNS)}) VALUES ({", ".join("?" for _ in COLUMNS)})'
    ids = user_ids(SHIP_ROWS)
    now = time.time_ns()
    with db:
        db.executemany(
            insert,
            (
                (now + i, 20, "bench.ship", MESSAGE % uid, uid, _sizes.AGENT, None, None, None, 4242, "MainThread", None,
                 f'{{"user_id": "{uid}", "ip": "{_sizes.IP}", "agent_id": "{_sizes.AGENT}"}}', "bench", "bench-host")
                for i, uid in enumerate(ids)
            ),
        )
        db.execute('INSERT INTO "logs_fts"(rowid, message, fields, exception) SELECT id, message, fields, exception FROM "logs"')
    db.close()
    return path


def _rows(path: str) -> list[tuple[Any, ...]]:
    from janus_utils.ship._shipper import _SELECT_AFTER, open_for_shipping

    db = open_for_shipping(path)
    try:
        return db.execute(_SELECT_AFTER, (0, SHIP_ROWS)).fetchall()
    finally:
        db.close()


_tables = iter(range(1_000_000))
_made: list[str] = []


def _fresh_exporter(cluster: Any, **options: Any) -> Any:
    """An exporter on a new, empty replicated table, created before the clock starts.

    A table per round: block dedup would drop a second round's rows.  The
    tables of earlier rounds are dropped first, so that the merges and
    replica fetches a round leaves behind do not run during the next one
    (bare and shipper rounds follow each other: the second would pay for
    the first).
    """
    from janus_utils.ship import ClickHouseExporter, Identity

    while _made:
        cluster.drop_table(f"default.{_made.pop()}")
    table = f"bench_{next(_tables)}_{os.getpid()}"
    exporter = ClickHouseExporter(cluster.urls, table, cluster=cluster.cluster, name=f"bench-{table}", **options)
    exporter.open(Identity("bench-host", "0" * 32))  # CREATE TABLE ... ON CLUSTER: not part of either's time
    exporter.close()
    _made.append(table)
    return exporter


@pytest.mark.benchmark(group="ship-clickhouse")
def test_ship_clickhouse_bare_insert(benchmark: Any, cluster: Any, source_db: str) -> None:
    """POST the rows as INSERT ... FORMAT JSONEachRow, in batches of CH_BATCH, bodies made beforehand."""
    from janus_utils.ship import Identity

    rows = _rows(source_db)
    identity = Identity("bench-host", "0" * 32)

    def setup() -> tuple[tuple[Any, list[bytes]], dict[str, Any]]:
        exporter = _fresh_exporter(cluster, batch_size=CH_BATCH)
        bodies = [exporter.encode(rows[i : i + CH_BATCH], identity) for i in range(0, len(rows), CH_BATCH)]
        return (exporter, bodies), {}

    def insert(exporter: Any, bodies: list[bytes]) -> None:
        for body in bodies:
            exporter.send(body)
        exporter.close()

    benchmark.pedantic(insert, setup=setup, rounds=SHIP_ROUNDS)
    benchmark.extra_info.update({"rows": len(rows), "batch": CH_BATCH, "what": "bare HTTP INSERT JSONEachRow"})


@pytest.mark.benchmark(group="ship-clickhouse")
def test_ship_clickhouse_shipper(benchmark: Any, cluster: Any, source_db: str) -> None:
    """A Shipper from the SQLite database to a new table: read, encode, send, cursor, until caught up."""
    from janus_utils.ship import Shipper

    shipped: list[int] = []

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        exporter = _fresh_exporter(cluster, batch_size=CH_BATCH)
        return (Shipper(source_db, exporter),), {}

    def ship(shipper: Any) -> None:
        assert shipper.run_until_caught_up(600)
        shipped.append(shipper.shipped)

    benchmark.pedantic(ship, setup=setup, rounds=SHIP_ROUNDS)
    assert shipped and all(n == SHIP_ROWS for n in shipped), shipped
    benchmark.extra_info.update({"rows": SHIP_ROWS, "batch": CH_BATCH, "what": "janus Shipper from SQLite"})


@pytest.fixture(scope="module")
def receiver_process() -> Iterator[str]:
    pytest.importorskip("opentelemetry.proto", reason="the OTLP benchmark needs opentelemetry-proto")
    servers = _servers()
    port = servers.free_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=servers.serve_otlp, args=(port, ready), daemon=True)
    proc.start()
    assert ready.wait(30)
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.join()


def _received(endpoint: str) -> int:
    with urllib.request.urlopen(endpoint + "/count", timeout=10) as answer:  # noqa: S310 - loopback
        return int(answer.read())


@pytest.mark.benchmark(group="ship-otlp")
def test_ship_otlp_shipper(benchmark: Any, receiver_process: str, source_db: str) -> None:
    """OTLP_RECORDS records to the loopback receiver in another process."""
    from janus_utils.ship import OTLPExporter, Shipper
    from janus_utils.ship._shipper import open_for_shipping

    rounds = iter(range(1000))
    before: list[int] = []

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        name = f"bench-otlp-{next(rounds)}-{os.getpid()}"
        db = open_for_shipping(source_db)
        # Start each round OTLP_RECORDS before the end: a fresh cursor that far back.
        start = max(0, SHIP_ROWS - OTLP_RECORDS)
        db.execute(
            "INSERT OR REPLACE INTO janus_ship_cursor(sink, shipped_upto, batch_upto, updated_ns, state) VALUES (?, ?, ?, 0, 'ok')",
            (name, start, start),
        )
        db.close()
        before.append(_received(receiver_process))
        return (Shipper(source_db, OTLPExporter(receiver_process, name=name)),), {}

    def ship(shipper: Any) -> None:
        assert shipper.run_until_caught_up(600)

    benchmark.pedantic(ship, setup=setup, rounds=SHIP_ROUNDS)
    got = _received(receiver_process) - before[-1]
    assert got == min(OTLP_RECORDS, SHIP_ROWS), got
    benchmark.extra_info.update({"rows": min(OTLP_RECORDS, SHIP_ROWS), "what": "janus Shipper, OTLP/HTTP protobuf"})


@pytest.mark.benchmark(group="ship-lag")
def test_ship_lag_at_steady_10k(benchmark: Any, cluster: Any, tmp_path: Path) -> None:
    """10,000 records/s for STEADY_S with a ClickHouse sink configured in the same process."""
    exporter = _fresh_exporter(cluster)
    result: dict[str, Any] = {}

    def run() -> None:
        ju.configure(db_path=str(tmp_path / "steady.db"), console=False, ship=[exporter])
        log = ju.get_logger("bench.steady")
        logged_at: list[float] = []  # logged_at[k]: when record k+1 was logged (ids start at 1)
        lags: list[float] = []
        try:
            sink = exporter.name
            start = time.monotonic()
            per_tick = STEADY_RATE // 100
            tick = 0
            while time.monotonic() - start < STEADY_S:
                due = start + tick * 0.01
                while time.monotonic() < due:
                    shipped = ju.stats()["ship"][sink]["shipped_id"]
                    now = time.monotonic()
                    lags.append(now - logged_at[shipped] if shipped < len(logged_at) else 0.0)
                    time.sleep(0.002)
                now = time.monotonic()
                for i in range(per_tick):
                    log.info(MESSAGE, i, user_id="u1")
                    logged_at.append(now)
                tick += 1
            ju.flush()
            deadline = time.monotonic() + 60
            while ju.stats()["ship"][sink]["shipped_id"] < len(logged_at) and time.monotonic() < deadline:
                time.sleep(0.01)
            lags.sort()
            result.update(
                records=len(logged_at),
                rate=round(len(logged_at) / STEADY_S),
                lag_max_s=round(lags[-1], 3),
                lag_p99_s=round(lags[int(len(lags) * 0.99)], 3),
                lag_median_s=round(lags[len(lags) // 2], 3),
                shipped=ju.stats()["ship"][sink]["shipped_id"],
            )
        finally:
            ju.shutdown()

    benchmark.pedantic(run, rounds=1)
    assert result["shipped"] == result["records"], result
    benchmark.extra_info.update(result)


def _burst(log: Any, ids: list[str]) -> None:
    info = log.info
    for uid in ids:
        info(MESSAGE, uid, user_id=uid, ip=_sizes.IP, agent_id=_sizes.AGENT)


@pytest.mark.benchmark(group="ship-sink-down")
def test_ship_log_calls_no_sink(benchmark: Any, tmp_path: Path) -> None:
    """CALLS log calls per round, no shipping configured."""
    ju.configure(db_path=str(tmp_path / "plain.db"), console=False)
    log = ju.get_logger("bench.down")
    ids = user_ids(_sizes.CALLS)
    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        ju.flush()
        return (log, ids), {}

    try:
        benchmark.pedantic(_burst, setup=setup, rounds=DOWN_ROUNDS)
    finally:
        ju.shutdown()
    benchmark.extra_info.update({"calls_per_round": len(ids)})


@pytest.mark.benchmark(group="ship-sink-down")
def test_ship_log_calls_sink_down(benchmark: Any, tmp_path: Path) -> None:
    """The same calls while the OTLP sink is down for OUTAGE_S; then it comes back and the lag drains."""
    pytest.importorskip("opentelemetry.proto", reason="needs opentelemetry-proto")
    from janus_utils.ship import OTLPExporter

    servers = _servers()
    port = servers.free_port()  # nothing listens here until the sink "comes back"
    exporter = OTLPExporter(f"http://127.0.0.1:{port}")
    ju.configure(db_path=str(tmp_path / "down.db"), console=False, ship=[exporter])
    log = ju.get_logger("bench.down")
    ids = user_ids(_sizes.CALLS)
    lag_rows: list[int] = []
    started = time.monotonic()
    spacing = OUTAGE_S / DOWN_ROUNDS

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        ju.flush()
        lag_rows.append(ju.stats()["ship"][exporter.name]["lag_rows"])
        # Rounds spread over the outage: the shipper retries all along.
        wait = started + len(lag_rows) * spacing - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return (log, ids), {}

    try:
        benchmark.pedantic(_burst, setup=setup, rounds=DOWN_ROUNDS)
        ju.flush()
        deadline = time.monotonic() + 10
        while ju.stats()["ship"][exporter.name]["retries"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the sink is down: the shipper must have noticed
        time.sleep(0.6)  # its lag figure is refreshed every 0.5 s while it fails
        outage = time.monotonic() - started
        sink = ju.stats()["ship"][exporter.name]
        peak = sink["lag_rows"]
        assert sink["retries"] > 0 and peak == len(lag_rows) * len(ids), sink
        receiver = servers.OTLPReceiver(decode=False, port=port).start()
        back = time.monotonic()
        while ju.stats()["ship"][exporter.name]["lag_rows"] and time.monotonic() - back < 120:
            time.sleep(0.01)
        caught_up = time.monotonic() - back
        assert ju.stats()["ship"][exporter.name]["lag_rows"] == 0
        received = receiver.record_count
    finally:
        ju.shutdown()
    receiver.stop()
    assert received >= peak
    benchmark.extra_info.update(
        {
            "calls_per_round": len(ids),
            "outage_s": round(outage, 1),
            "lag_rows_growth": lag_rows,
            "lag_rows_peak": peak,
            "catch_up_s": round(caught_up, 2),
        }
    )
