"""Shipping into a real two-replica ClickHouse cluster, and searching it like a local database.

The ``clickhouse`` fixture (conftest.py) runs ZooKeeper and two
``clickhouse-server`` replicas from the Debian packages on loopback; these
tests skip, saying why, where the packages are not installed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import BASE_TS, make_row, open_writer, write_batch

import janus_utils as ju
from janus_utils import cli
from janus_utils.error_handling import SearchQueryError, UpstreamError
from janus_utils.ship import ClickHouseExporter, Shipper
from janus_utils.ship._shipper import open_for_shipping
from janus_utils.ship.clickhouse import ddl

pytestmark = pytest.mark.usefixtures("clickhouse")


def url_of(cluster: Any, table: str, *, replicas: bool = True) -> str:
    hosts = ",".join(u.split("://")[1] for u in (cluster.urls if replicas else cluster.urls[:1]))
    return f"clickhouse://{hosts}/default.{table}?cluster={cluster.cluster}"


def counts(cluster: Any, table: str) -> list[tuple[int, int]]:
    """(count(), uniqExact(host, db_id, id)) on every replica, after syncing them."""
    cluster.sync(f"default.{table}")
    found = []
    for replica in cluster.replicas:
        text = replica.query(f"SELECT count(), uniqExact(host, db_id, id) FROM default.{table}")
        found.append(tuple(int(x) for x in text.split()))
    return found


def small_db(path: Path, rows: list[tuple[Any, ...]]) -> str:
    db = open_writer(path)
    try:
        write_batch(db, rows)
    finally:
        db.close()
    return str(path)


class TestExactlyOnce:
    def test_the_table_is_created_on_the_cluster_and_a_resent_batch_is_dropped(self, clickhouse: Any, tmp_path: Path) -> None:
        """ReplicatedMergeTree ON CLUSTER from the documented DDL; a batch sent again changes nothing."""
        table = "t_resend"
        clickhouse.drop_table(f"default.{table}")
        path = small_db(tmp_path / "a.db", [make_row(f"m {i}", ts=BASE_TS + i * 10**9) for i in range(3000)])
        exporter = ClickHouseExporter(clickhouse.urls, table, cluster=clickhouse.cluster, batch_size=1000)
        assert Shipper(path, exporter).run_until_caught_up(60)
        assert exporter.exactly_once and exporter.engine == "ReplicatedMergeTree"
        assert counts(clickhouse, table) == [(3000, 3000), (3000, 3000)]
        # A shipper that died after sending ids 1001-2000 but before recording it:
        db = open_for_shipping(path)
        db.execute("UPDATE janus_ship_cursor SET shipped_upto = 1000, batch_upto = 2000")
        db.close()
        # ...comes back through the other replica first.
        other = ClickHouseExporter(list(reversed(clickhouse.urls)), table, cluster=clickhouse.cluster,
                                   batch_size=1000, name=exporter.name)
        resent = Shipper(path, other)
        assert resent.run_until_caught_up(60)
        assert resent.shipped == 2000
        assert counts(clickhouse, table) == [(3000, 3000), (3000, 3000)]

    def test_a_table_of_other_columns_stops_the_sink(self, clickhouse: Any, tmp_path: Path) -> None:
        """Schema mismatch: the sink stops and names the columns."""
        table = "t_mismatch"
        clickhouse.drop_table(f"default.{table}")
        clickhouse.query(f"CREATE TABLE default.{table} ON CLUSTER {clickhouse.cluster} (id UInt64, message String) "
                         "ENGINE = MergeTree() ORDER BY id")
        path = small_db(tmp_path / "a.db", [make_row("x")])
        shipper = Shipper(path, ClickHouseExporter(clickhouse.urls[0], table)).start()
        try:
            deadline = time.monotonic() + 20
            while shipper.state != "stopped" and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            shipper.stop()
        assert shipper.state == "stopped"
        assert "schema mismatch" in (shipper.last_error or "") and "host String (missing)" in (shipper.last_error or "")

    def test_ddl_is_the_documented_one(self) -> None:
        text = ddl("default", "logs", "prod")
        assert "ON CLUSTER `prod`" in text and "ReplicatedMergeTree('/clickhouse/tables/{shard}/default.logs', '{replica}')" in text
        assert "MergeTree()" in ddl("default", "logs") and "ON CLUSTER" not in ddl("default", "logs")


def _writer(path: str, worker: int, count: int) -> None:
    ju.configure(db_path=path, console=False)
    log = ju.get_logger(f"svc.w{worker}")
    for start in range(0, count, 1000):
        for i in range(start, start + 1000):
            log.info("order %s placed", i, user_id=f"u{i % 97}", worker=worker)
        time.sleep(0.12)
    ju.shutdown()


def _daemon(path: str, url: str, host: str | None = None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "janus_utils", "ship", "--db", path, "--to", url, "--batch-size", "2000"]
    if host:
        command += ["--host", host]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_200k_records_from_4_processes_through_20_kills_and_a_replica_restart(clickhouse: Any, tmp_path: Path) -> None:
    """count() == uniqExact(host, db_id, id) == 200,000 on both replicas."""
    table = "t_kills"
    clickhouse.drop_table(f"default.{table}")
    path = str(tmp_path / "app.db")
    url = url_of(clickhouse, table)
    ctx = multiprocessing.get_context("spawn")
    ju.configure(db_path=path, console=False)  # creates the database before the daemon opens it
    ju.shutdown()
    writers = [ctx.Process(target=_writer, args=(path, n, 50_000)) for n in range(4)]
    for w in writers:
        w.start()
    rng = random.Random(12)
    daemon = _daemon(path, url)
    kills = in_flight = 0
    restarted = False
    started = time.monotonic()
    while kills < 20:
        time.sleep(rng.uniform(0.2, 0.9))
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait()
        kills += 1
        db = open_for_shipping(path)
        row = db.execute("SELECT shipped_upto, batch_upto FROM janus_ship_cursor").fetchall()
        db.close()
        if row and row[0][1] > row[0][0]:
            in_flight += 1  # killed with a batch written down but not acknowledged
        if kills == 10 and not restarted:
            clickhouse.restart_replica(clickhouse.replicas[0], kill=True)
            restarted = True
        daemon = _daemon(path, url)
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    os.kill(daemon.pid, signal.SIGTERM)
    daemon.wait(30)
    final = subprocess.run(
        [sys.executable, "-m", "janus_utils", "ship", "--db", path, "--to", url, "--once", "--timeout", "120"],
        capture_output=True, text=True,
    )
    assert final.returncode == 0, final.stdout + final.stderr
    found = counts(clickhouse, table)
    print(
        f"\nClickHouse, 4 writer processes x 50,000, {kills} SIGKILLs of the shipper "
        f"({in_flight} with a batch in flight), replica r1 SIGKILLed and restarted: "
        f"(count, uniqExact) per replica {found} in {time.monotonic() - started:.0f} s"
    )
    assert found == [(200_000, 200_000), (200_000, 200_000)]


def fleet_message(i: int, host: str) -> str:
    """The fleet's i-th message on *host*: some with a CJK word or an emoji."""
    text = f"payment timeout for order {i}" if i % 10 == 0 else f"order {i} paid on {host}"
    return text + (" 注文" if i % 20 == 3 else "") + (" 🔥" if i % 30 == 7 else "")


@pytest.fixture(scope="module")
def fleet(clickhouse: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two hosts' databases shipped into one table, and their local twins for comparison."""
    table = "t_fleet"
    clickhouse.drop_table(f"default.{table}")
    url = url_of(clickhouse, table)
    paths = {}
    for n, host in enumerate(("web-1", "web-2")):
        rows = []
        for i in range(400):
            rows.append(
                make_row(
                    fleet_message(i, host),
                    ts=BASE_TS + (n * 400 + i) * 10**9,
                    level=(10, 20, 30, 40)[i % 4],
                    logger=("svc.pay", "svc.db", "web")[i % 3],
                    user_id=f"u{i % 5}",
                    agent_id="planner-7" if i % 7 == 0 else None,
                    request_id=f"r{i}",
                    trace_id=f"t{i % 3}",
                    fields=json.dumps(
                        {"status": 500 if i % 8 == 0 else 200, "tenant": "acme" if i % 2 else "globex"}
                        | ({"note": "ラーメン"} if i % 40 == 9 else {}),
                        ensure_ascii=False,
                    ),
                    exception="Traceback\nTimeoutError: gateway timeout" if i % 50 == 0 else None,
                    service="shop",
                    host=host,
                )
            )
        path = small_db(tmp_path_factory.mktemp(host) / "app.db", rows)
        code = cli.main(["ship", "--db", path, "--to", url, "--host", host, "--once"])
        assert code == 0
        paths[host] = path
    clickhouse.sync(f"default.{table}")
    return {"url": url, "paths": paths, "table": table}


class TestFleet:
    def test_search_source_returns_both_hosts_like_a_local_search(self, fleet: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
        """Same exit codes, same lines as the local searches put together, records of both hosts."""
        assert cli.main(["search", "payment timeout", "--source", fleet["url"], "--limit", "1000", "--order", "oldest"]) == 0
        remote = capsys.readouterr().out.splitlines()
        local_lines = []
        for host in ("web-1", "web-2"):
            assert cli.main(["search", "payment timeout", "--db", fleet["paths"][host], "--limit", "1000", "--order", "oldest"]) == 0
            local_lines += capsys.readouterr().out.splitlines()
        assert remote == local_lines
        assert len(remote) == 80
        assert cli.main(["search", "payment timeout", "--source", fleet["url"], "--limit", "1000", "--json"]) == 0
        hosts = {json.loads(line)["host"] for line in capsys.readouterr().out.splitlines()}
        assert hosts == {"web-1", "web-2"}
        assert cli.main(["search", "payment timeout", "--source", fleet["url"], "--host", "web-2", "--json"]) == 0
        assert {json.loads(line)["host"] for line in capsys.readouterr().out.splitlines()} == {"web-2"}
        # JSON lines: the same objects plus "host".
        assert cli.main(["search", "payment timeout", "--source", fleet["url"], "--user", "u0", "--json", "--limit", "1"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["host"] in ("web-1", "web-2") and data["user_id"] == "u0" and "[payment]" in data["snippet"]
        # Nothing found: 1; a source that does not answer: 2 with one line on stderr.
        assert cli.main(["search", "quokka", "--source", fleet["url"]]) == 1
        assert capsys.readouterr().out == ""
        assert cli.main(["search", "x", "--source", "clickhouse://127.0.0.1:1/default.logs"]) == 2
        assert capsys.readouterr().err.startswith("janus-logs: error: cannot query ClickHouse")
        assert cli.main(["search", "x", "--source", fleet["url"], "--archives", "a"]) == 2

    @pytest.mark.parametrize(
        "query, filters",
        [
            (None, {}),
            ("timeout", {}),
            ('"payment timeout"', {"level": "DEBUG"}),
            ("pay*", {"logger": "svc"}),
            ("order NOT paid", {}),
            ("timeout OR web", {"user_id": "u0"}),
            ("message:timeout", {}),
            ("exception:gateway", {}),
            (None, {"fields": {"status": 500}}),
            (None, {"fields": {"tenant": "acme"}, "level": "WARNING"}),
            (None, {"agent_id": "planner-7", "since": BASE_TS // 10**9 + 100, "until": BASE_TS // 10**9 + 700}),
            (None, {"request_id": "r10"}),
            ("timeout", {"trace_id": "t1"}),
            ("timeout", {"host": "web-1", "service": "shop"}),
            ("注文", {}),
            ("🔥 OR timeout", {"level": "INFO"}),
            ("order NOT 注文", {"user_id": "u3"}),
            ("fields:ラーメン OR 🔥", {}),
            ("message:ラーメン", {}),
            ("-paid", {}),
            ("NOT 注文", {"logger": "web"}),
        ],
    )
    def test_clickhouse_store_answers_like_logstore(self, fleet: dict[str, Any], query: str | None, filters: dict[str, Any]) -> None:
        """search/count/histogram over the fleet equal the union of the local answers."""
        local: list[tuple[str, int]] = []
        local_count = 0
        local_hist: dict[Any, dict[str, int]] = {}
        for host, path in fleet["paths"].items():
            with ju.LogStore(path) as store:
                local += [(host, r.id) for r in store.search(query, limit=None, **filters)]
                local_count += store.count(query, **filters)
                for start, values in store.histogram("5m", "level", query=query, **filters):
                    bucket = local_hist.setdefault(start, {})
                    for name, n in values.items():
                        bucket[name] = bucket.get(name, 0) + n
        with ju.ClickHouseStore(fleet["url"]) as fleet_store:
            remote = [(r.host, r.id) for r in fleet_store.search(query, limit=None, **filters)]
            assert sorted(remote) == sorted(local)
            assert fleet_store.count(query, **filters) == local_count
            assert dict(fleet_store.histogram("5m", "level", query=query, **filters)) == local_hist

    def test_records_are_the_same_objects(self, fleet: dict[str, Any]) -> None:
        with ju.LogStore(fleet["paths"]["web-2"]) as store:
            local = store.search(request_id="r40")[0]
        with ju.ClickHouseStore(fleet["url"]) as fleet_store:
            remote = [r for r in fleet_store.search(request_id="r40") if r.host == "web-2"][0]
        assert remote.to_dict() == local.to_dict()

    def test_tail_and_its_cursor(self, fleet: dict[str, Any]) -> None:
        with ju.ClickHouseStore(fleet["url"]) as fleet_store:
            last = list(fleet_store.tail(5))
            assert [r.message for r in last] == [fleet_message(i, "web-2") for i in range(395, 400)]
            after = list(fleet_store.tail(cursor=last[1].ts))
            assert [r.id for r in after] == [r.id for r in last[2:]]
            with pytest.raises(SearchQueryError, match="rank"):
                fleet_store.search("timeout", order="rank")

    def test_an_unreachable_server_is_an_upstream_error(self) -> None:
        with ju.ClickHouseStore("http://127.0.0.1:1", "logs") as store, pytest.raises(UpstreamError):
            store.count()
