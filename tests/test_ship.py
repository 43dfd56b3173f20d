"""Shipping to OTLP: the mapping, retries, refusals, the cursor, elections, retention, the CLI.

Every test talks to a real loopback OTLP/HTTP receiver (tests/servers.py)
that decodes each request with opentelemetry-proto.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import BASE_TS, make_row, open_writer, write_batch

pytest.importorskip("opentelemetry.proto", reason="the OTLP tests need opentelemetry-proto (the [test] extra)")

import janus_utils as ju  # noqa: E402
from janus_utils import cli  # noqa: E402
from janus_utils.error_handling import ConfigError  # noqa: E402
from janus_utils.ship import Identity, OTLPExporter, Shipper, exporter_from_url  # noqa: E402
from janus_utils.ship._base import ROW_COLUMNS  # noqa: E402
from janus_utils.ship._http import Endpoint, warn_plain_http  # noqa: E402
from janus_utils.ship._shipper import encoded_batch, open_for_shipping, read_identity, sink_status  # noqa: E402
from janus_utils.ship.otlp import severity_number  # noqa: E402
from servers import Faults, OTLPReceiver  # noqa: E402

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def db_with(tmp_path: Path, count: int, *, name: str = "app.db", start: int = 0, **values: Any) -> str:
    path = tmp_path / name
    db = open_writer(path)
    try:
        rows = [make_row(f"event {start + i}", ts=BASE_TS + start + i, **values) for i in range(count)]
        for i in range(0, len(rows), 5000):
            write_batch(db, rows[i : i + 5000])
    finally:
        db.close()
    return str(path)


def append(path: str, count: int, start: int) -> None:
    db = open_writer(path)
    try:
        write_batch(db, [make_row(f"event {start + i}", ts=BASE_TS + start + i) for i in range(count)])
    finally:
        db.close()


def shipped_ids(receiver: OTLPReceiver) -> list[int]:
    return [int(r.attributes["log.record.uid"].rsplit("-", 1)[1]) for r in receiver.records]


class TestMapping:
    def test_severity_numbers_follow_the_data_model(self) -> None:
        """Named levels map to the first number of their OTel range; others step inside it."""
        assert [severity_number(n) for n in (5, 10, 20, 30, 40, 50)] == [1, 5, 9, 13, 17, 21]
        assert severity_number(25) == 11
        assert severity_number(1) == 1
        assert severity_number(60) == 24

    def test_every_column_reaches_its_otlp_field(self, tmp_path: Path, otlp_receiver: OTLPReceiver) -> None:
        """Body, time, severity, ids, exception, fields and identity arrive field by field."""
        path = tmp_path / "app.db"
        db = open_writer(path)
        write_batch(
            db,
            [
                make_row(
                    "charge failed",
                    ts=BASE_TS + 7,
                    level=40,
                    logger="svc.pay",
                    user_id="u42",
                    agent_id="planner-7",
                    request_id="r-1",
                    trace_id=TRACE,
                    span_id=SPAN,
                    pid=4321,
                    thread="worker-1",
                    service="checkout-api",
                    host="web-3",
                    exception="Traceback (most recent call last):\n  ...\nValueError: card declined",
                    fields=json.dumps({"amount": 12.5, "tries": 3, "ok": False, "tags": ["a", 1], "meta": {"k": None}, "model": "m-1"}),
                ),
                make_row("plain", level=25, trace_id="not-hex", span_id="xyz", pid=1),
            ],
        )
        db.close()
        exporter = OTLPExporter(otlp_receiver.endpoint, service_name="checkout", resource={"deployment.environment": "test"})
        assert Shipper(str(path), exporter).run_until_caught_up(30)
        first, second = otlp_receiver.records
        identity = read_identity(open_for_shipping(str(path)))
        record = first.record
        # The row's own service and host (configure(service=..., host=...)) make its resource.
        assert first.resource == {
            "deployment.environment": "test",
            "service.name": "checkout-api",
            "host.name": "web-3",
            "process.pid": 4321,
        }
        assert first.scope == "svc.pay"
        assert (record.time_unix_nano, record.observed_time_unix_nano) == (BASE_TS + 7, BASE_TS + 7)
        assert (record.severity_number, record.severity_text) == (17, "ERROR")
        assert record.body.string_value == "charge failed"
        assert record.trace_id.hex() == TRACE and record.span_id.hex() == SPAN
        assert first.attributes == {
            "log.record.uid": f"{identity.db_id}-1",
            "thread.name": "worker-1",
            "enduser.id": "u42",
            "gen_ai.agent.id": "planner-7",
            "janus.request_id": "r-1",
            "exception.type": "ValueError",
            "exception.message": "card declined",
            "exception.stacktrace": "Traceback (most recent call last):\n  ...\nValueError: card declined",
            "amount": 12.5,
            "tries": 3,
            "ok": False,
            "tags": ["a", 1],
            "meta": {"k": None},
            "gen_ai.request.model": "m-1",  # an agent record's model field
        }
        assert (second.record.severity_number, second.record.severity_text) == (11, "LEVEL25")
        assert second.record.trace_id == b"" and second.attributes["janus.trace_id"] == "not-hex"
        assert second.attributes["janus.span_id"] == "xyz"
        # A row without them: the exporter's service and the database's host.
        assert second.resource == {
            "deployment.environment": "test",
            "service.name": "checkout",
            "host.name": identity.host,
            "process.pid": 1,
        }

    def test_the_same_rows_encode_to_the_same_bytes(self, tmp_path: Path) -> None:
        """Deterministic batches: what makes a re-sent batch recognisable."""
        path = db_with(tmp_path, 500, user_id="u1", fields='{"b": 1, "a": [1, 2]}')
        db = open_for_shipping(path)
        rows = db.execute(f'SELECT {", ".join(ROW_COLUMNS)} FROM logs ORDER BY id').fetchall()
        identity = Identity("h", "d")
        exporter = OTLPExporter("http://127.0.0.1:1", compression="gzip")
        assert exporter.encode(rows, identity) == exporter.encode(list(rows), identity)

    def test_otel_environment_variables_are_honoured(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Endpoint, headers, timeout (ms), compression and resource come from OTEL_* when not given."""
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4999")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "authorization=Bearer%20abc,x-tenant=t1")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "api")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=core")
        exporter = OTLPExporter()
        assert str(exporter.endpoint) == "http://127.0.0.1:4999/v1/logs"
        assert exporter.headers == {"authorization": "Bearer abc", "x-tenant": "t1"}
        assert exporter.timeout == 2.5 and exporter.compression == "gzip"
        assert exporter.resource_attributes == {"team": "core", "service.name": "api"}
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://127.0.0.1:5000/custom/path")
        assert str(OTLPExporter().endpoint) == "http://127.0.0.1:5000/custom/path"


class TestDelivery:
    def test_flaky_receiver_gets_every_record(self, tmp_path: Path) -> None:
        """30% of requests fail (503/429), 10% lose their connection mid-request, 5% lose the answer.

        Nothing is lost; a batch whose answer was lost arrives twice, and
        log.record.uid says which records are the same.
        """
        count = 20_000
        path = db_with(tmp_path, count, user_id="u7", fields='{"k": 1}')
        faults = Faults(fail_rate=0.3, drop_rate=0.1, lost_answer_rate=0.05, seed=7)
        with OTLPReceiver(faults) as receiver:
            shipper = Shipper(path, OTLPExporter(receiver.endpoint, batch_size=500), max_backoff=0.05)
            assert shipper.run_until_caught_up(120)
            ids = shipped_ids(receiver)
            duplicates = sum(n - 1 for n in Counter(ids).values())
            print(
                f"\nOTLP flaky receiver: {receiver.requests} requests, {receiver.failed} answered 503/429, "
                f"{receiver.dropped} dropped mid-request, {receiver.lost_answers} answers lost; "
                f"{len(ids)} records received, {len(set(ids))} distinct, {duplicates} duplicates, "
                f"retries {shipper.retries}"
            )
            assert set(ids) == set(range(1, count + 1))
            assert receiver.failed > 0 and receiver.dropped > 0 and receiver.lost_answers > 0
            # Only batches whose answer was lost come twice: at least once, never more than needed.
            assert 0 < duplicates <= receiver.lost_answers * 500
            for record in receiver.records[:50]:
                assert record.attributes["enduser.id"] == "u7" and record.attributes["k"] == 1
                assert record.record.severity_number == 9

    def test_a_stalled_request_times_out_and_is_sent_again(self, tmp_path: Path) -> None:
        """A receiver that answers after the timeout: the batch is sent again and counted twice there."""
        path = db_with(tmp_path, 100)
        with OTLPReceiver(Faults(stall_rate=1.0, stall_seconds=1.5)) as receiver:
            exporter = OTLPExporter(receiver.endpoint, timeout=0.5)
            shipper = Shipper(path, exporter, max_backoff=0.1).start()
            try:
                wait_for(lambda: shipper.retries >= 1, 10, "a timeout")
                receiver.faults.stall_rate = 0.0
                wait_for(lambda: shipper.shipped_upto == 100, 20, "catching up")
            finally:
                shipper.stop()
            ids = shipped_ids(receiver)
            assert set(ids) == set(range(1, 101))
            # At least once: the stalled copy landed too; log.record.uid tells them apart.
            assert len(ids) >= 100

    def test_a_4xx_stops_the_sink_with_the_cause(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """400 never succeeds: the sink stops, says why, and does not spin."""
        path = db_with(tmp_path, 10)
        with OTLPReceiver(Faults(status=400)) as receiver:
            shipper = Shipper(path, OTLPExporter(receiver.endpoint)).start()
            try:
                wait_for(lambda: shipper.state == "stopped", 10, "the sink to stop")
                time.sleep(1.0)
                assert receiver.requests == 1
            finally:
                shipper.stop()
        assert "HTTP 400" in (shipper.last_error or "")
        assert "stopped" in capsys.readouterr().err
        status = sink_status(open_for_shipping(path))
        assert status[0].state == "stopped" and "HTTP 400" in (status[0].last_error or "")

    def test_a_malformed_answer_stops_the_sink(self, tmp_path: Path) -> None:
        """HTTP 200 whose body is not an ExportLogsServiceResponse: not an OTLP receiver."""
        import http.server
        import threading

        class NotOTLP(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                body = b"<html>hello</html>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), NotOTLP)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            path = db_with(tmp_path, 5)
            shipper = Shipper(path, OTLPExporter(f"http://127.0.0.1:{server.server_address[1]}")).start()
            wait_for(lambda: shipper.state == "stopped", 10, "the sink to stop")
            shipper.stop()
            assert "malformed answer" in (shipper.last_error or "")
        finally:
            server.shutdown()
            server.server_close()

    def test_a_backlog_starts_with_a_short_batch_and_the_next_ones_full(self, tmp_path: Path) -> None:
        """More than a batch waiting: sending starts after a short read; the full batches after it are read meanwhile."""
        path = db_with(tmp_path, 16_000)
        with OTLPReceiver(decode=False) as receiver:
            shipper = Shipper(path, OTLPExporter(receiver.endpoint, batch_size=10_000))
            assert shipper.run_until_caught_up(60)
            # 5,000 first, then full batches of 10,000: 5,000 + 10,000 + 1,000.
            assert (receiver.requests, receiver.record_count, shipper.shipped) == (3, 16_000, 16_000)

    def test_less_than_a_batch_waiting_goes_in_one_batch(self, tmp_path: Path) -> None:
        """No short first batch when everything waiting fits in one: it would only add a request."""
        path = db_with(tmp_path, 9_000)
        with OTLPReceiver(decode=False) as receiver:
            shipper = Shipper(path, OTLPExporter(receiver.endpoint, batch_size=10_000))
            assert shipper.run_until_caught_up(60)
            assert (receiver.requests, receiver.record_count) == (1, 9_000)

    def test_a_partial_success_is_counted_not_retried(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Records a receiver says it rejected are counted and reported; the batch is not sent again."""
        path = db_with(tmp_path, 30)
        with OTLPReceiver(Faults(reject=2)) as receiver:
            shipper = Shipper(path, OTLPExporter(receiver.endpoint, batch_size=10))
            assert shipper.run_until_caught_up(10)
            assert (receiver.requests, shipper.rejected) == (3, 6)
        assert "the sink rejected 2 of 10 records" in capsys.readouterr().err

    def test_auth_headers_are_sent(self, tmp_path: Path, otlp_receiver: OTLPReceiver) -> None:
        path = db_with(tmp_path, 3)
        exporter = OTLPExporter(otlp_receiver.endpoint, headers={"Authorization": "Bearer s3cret"})
        assert Shipper(path, exporter).run_until_caught_up(10)
        assert otlp_receiver.headers[0]["authorization"] == "Bearer s3cret"

    def test_plain_http_to_another_host_warns_once(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Records would cross the network unencrypted (nothing is sent here)."""
        endpoint = Endpoint("http", "logs.example.invalid", 4318)
        warn_plain_http(endpoint, "OTLP endpoint")
        warn_plain_http(endpoint, "OTLP endpoint")
        warn_plain_http(Endpoint("http", "127.0.0.1", 4318), "OTLP endpoint")
        warn_plain_http(Endpoint("https", "secure.example.invalid", 4318), "OTLP endpoint")
        err = capsys.readouterr().err
        assert err.count("plain HTTP") == 1 and "logs.example.invalid" in err


class TestCursor:
    def test_a_batch_in_flight_is_sent_again_with_the_same_bounds(self, tmp_path: Path, otlp_receiver: OTLPReceiver) -> None:
        """A shipper that died after writing the batch bounds: the next sends exactly that range first."""
        path = db_with(tmp_path, 300)
        db = open_for_shipping(path)
        exporter = OTLPExporter(otlp_receiver.endpoint, batch_size=1000)
        db.execute(
            'INSERT INTO janus_ship_cursor(sink, shipped_upto, batch_upto, updated_ns, state) VALUES (?, 100, 150, 0, ?)',
            (exporter.name, "ok"),
        )
        assert Shipper(path, exporter).run_until_caught_up(10)
        first_request = [int(r.attributes["log.record.uid"].rsplit("-", 1)[1]) for r in otlp_receiver.records[:50]]
        assert first_request == list(range(101, 151))
        assert sorted(shipped_ids(otlp_receiver)) == list(range(101, 301))

    def test_a_down_sink_lets_the_lag_grow_and_it_returns_to_zero(self, tmp_path: Path) -> None:
        """stats()['ship'] shows the lag growing while the sink is down; zero once it is back."""
        receiver = OTLPReceiver(Faults(down=True)).start()
        try:
            ju.configure(db_path=str(tmp_path / "app.db"), console=False, ship=[OTLPExporter(receiver.endpoint)])
            log = ju.get_logger("svc")
            def lag() -> int:
                return int(next(iter(ju.stats()["ship"].values()))["lag_rows"])

            for burst in range(1, 4):
                for i in range(500):
                    log.info("order %s", i, user_id="u1")
                ju.flush()
                wait_for(lambda: lag() == 500 * burst, 15, f"the lag to show {500 * burst} rows")
            sink = next(iter(ju.stats()["ship"].values()))
            assert sink["retries"] > 0 and sink["last_error"] and sink["state"] == "retrying"
            assert sink["lag_seconds"] > 0
            receiver.faults.down = False
            wait_for(lambda: next(iter(ju.stats()["ship"].values()))["lag_rows"] == 0, 30, "the lag to return to zero")
            assert receiver.record_count == 1500
        finally:
            ju.shutdown()
            receiver.stop()

    def test_shipper_errors_never_come_back_through_the_logger(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A down sink with stdlib capture on: no record about shipping is ever stored (no feedback loop)."""
        receiver = OTLPReceiver(Faults(down=True)).start()
        try:
            ju.configure(db_path=str(tmp_path / "app.db"), console=False, capture_stdlib=True,
                         ship=[OTLPExporter(receiver.endpoint)])
            ju.get_logger("svc").info("one")
            ju.flush()
            time.sleep(1.5)
            ju.flush()
        finally:
            ju.shutdown()
            receiver.stop()
        with ju.LogStore(tmp_path / "app.db") as store:
            assert [r.message for r in store.search()] == ["one"]
        err = capsys.readouterr().err
        assert err.count("ship to") == 1  # reported once, not per retry

    def test_one_shipper_per_database_and_sink(self, tmp_path: Path, otlp_receiver: OTLPReceiver) -> None:
        """Two shippers of one sink: one leads, the other stands by; each record is sent once."""
        path = db_with(tmp_path, 2000)
        one = Shipper(path, OTLPExporter(otlp_receiver.endpoint), election_interval=0.1).start()
        two = Shipper(path, OTLPExporter(otlp_receiver.endpoint), election_interval=0.1).start()
        try:
            wait_for(lambda: one.shipped_upto == 2000 and two.shipped_upto == 2000, 20, "both to see the end")
            assert one.leader != two.leader
            assert sorted(shipped_ids(otlp_receiver)) == list(range(1, 2001))
        finally:
            one.stop()
            two.stop()


def _ship_forever(path: str, endpoint: str) -> None:
    shipper = Shipper(path, OTLPExporter(endpoint, batch_size=200), election_interval=0.1).start()
    while True:
        time.sleep(1)
        assert shipper


@pytest.mark.slow
class TestTakeover:
    def test_a_killed_shipper_is_replaced(self, tmp_path: Path, otlp_receiver: OTLPReceiver) -> None:
        """SIGKILL the leading process: a shipper in another process takes over and finishes."""
        path = db_with(tmp_path, 20_000)
        ctx = multiprocessing.get_context("spawn")
        first = ctx.Process(target=_ship_forever, args=(path, otlp_receiver.endpoint))
        first.start()
        wait_for(lambda: otlp_receiver.record_count > 1000, 30, "the first shipper to start")
        os.kill(first.pid, signal.SIGKILL)
        first.join()
        second = Shipper(path, OTLPExporter(otlp_receiver.endpoint, batch_size=200), election_interval=0.1).start()
        try:
            wait_for(lambda: second.shipped_upto == 20_000, 60, "the second shipper to finish")
        finally:
            second.stop()
        ids = Counter(shipped_ids(otlp_receiver))
        assert set(ids) == set(range(1, 20_001))
        assert sum(n - 1 for n in ids.values()) <= 200  # at most the batch in flight


class TestRetention:
    def test_unshipped_rows_are_kept_and_reported(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Expired rows a sink has not shipped stay; ship_wait=False lets them go."""
        from janus_utils.retention import prune_path

        path = db_with(tmp_path, 100)  # BASE_TS is years ago: every row is expired
        db = open_for_shipping(path)
        db.execute("INSERT INTO janus_ship_cursor(sink, shipped_upto, batch_upto, updated_ns, state) VALUES ('otlp+http://x', 40, 40, 0, 'ok')")
        db.close()
        assert prune_path(path, older_than="1d", dry_run=True).rows == 40
        summary = prune_path(path, older_than="1d")
        assert (summary.rows, summary.held_back) == (40, 60)
        summary = prune_path(path, older_than="1d", ship_wait=False)
        assert (summary.rows, summary.held_back) == (60, 0)

    def test_the_flusher_holds_rows_for_a_down_sink(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        receiver = OTLPReceiver(Faults(down=True)).start()
        try:
            ju.configure(db_path=str(tmp_path / "app.db"), console=False, retention={"max_rows": 10},
                         ship=[OTLPExporter(receiver.endpoint)])
            log = ju.get_logger("svc")
            for i in range(200):
                log.info("r %s", i)
            ju.flush()
            wait_for(lambda: ju.stats()["retention_held"] > 0, 20, "retention to hold rows back")
            assert "retention keeps" in capsys.readouterr().err
            with ju.LogStore(tmp_path / "app.db") as store:
                assert store.count() == 200
        finally:
            ju.shutdown()
            receiver.stop()


class TestCLI:
    def test_ship_once_status_and_forget(self, tmp_path: Path, otlp_receiver: OTLPReceiver, capsys: pytest.CaptureFixture[str]) -> None:
        path = db_with(tmp_path, 50)
        url = "otlp+http://" + otlp_receiver.endpoint.split("://")[1]
        assert cli.main(["ship", "--db", path, "--to", url, "--once"]) == 0
        assert "50 records shipped" in capsys.readouterr().out
        assert otlp_receiver.record_count == 50
        assert cli.main(["ship", "--db", path, "--status"]) == 0
        out = capsys.readouterr().out
        assert "shipped up to id 50 of 50" in out and "lag 0 rows" in out
        assert cli.main(["ship", "--db", path, "--status", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["sinks"][0]["lag_rows"] == 0
        sink = data["sinks"][0]["sink"]
        assert cli.main(["ship", "--db", path, "--forget", sink]) == 0
        assert cli.main(["ship", "--db", path, "--status"]) == 1

    def test_once_with_a_sink_down_ships_the_others_and_ends(
        self, tmp_path: Path, otlp_receiver: OTLPReceiver, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A sink that is down (first on the line) delays no other sink, and --once ends once it
        has failed for --give-up-after: exit 2 naming it; the next run goes on from its cursor."""
        path = db_with(tmp_path, 30)
        dead = "otlp+http://127.0.0.1:1"  # nothing listens on port 1
        url = "otlp+http://" + otlp_receiver.endpoint.split("://")[1]
        assert cli.main(["ship", "--db", path, "--to", dead, "--to", url, "--once", "--give-up-after", "1"]) == 2
        out = capsys.readouterr().out
        assert "30 records shipped" in out and otlp_receiver.record_count == 30
        assert "127.0.0.1:1/v1/logs: not caught up, up to id 0" in out and "last error:" in out
        assert cli.main(["ship", "--db", path, "--status", "--json"]) == 0
        lags = {s["sink"]: s["lag_rows"] for s in json.loads(capsys.readouterr().out)["sinks"]}
        assert sorted(lags.values()) == [0, 30]

    def test_bad_usage_is_exit_2_with_a_message(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = db_with(tmp_path, 1)
        assert cli.main(["ship", "--db", path]) == 2
        assert "nothing to ship to" in capsys.readouterr().err
        assert cli.main(["ship", "--db", path, "--to", "ftp://x"]) == 2
        assert "unknown sink" in capsys.readouterr().err
        assert cli.main(["ship", "--db", str(tmp_path / "none.db"), "--to", "otlp+http://127.0.0.1:1"]) == 2
        assert "no log database" in capsys.readouterr().err

    def test_the_daemon_ships_until_terminated(self, tmp_path: Path, otlp_receiver: OTLPReceiver) -> None:
        path = db_with(tmp_path, 100)
        url = "otlp+http://" + otlp_receiver.endpoint.split("://")[1]
        proc = subprocess.Popen([sys.executable, "-m", "janus_utils", "ship", "--db", path, "--to", url],
                                stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: otlp_receiver.record_count == 100, 30, "the daemon to ship")
            append(path, 20, 100)
            wait_for(lambda: otlp_receiver.record_count == 120, 30, "the daemon to ship new rows")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "shipping" in err

    def test_sink_urls(self) -> None:
        assert str(exporter_from_url("otlp+https://collector:4318").endpoint) == "https://collector:4318/v1/logs"
        ch = exporter_from_url("clickhouse://u:p%40ss@a:8123,b:8124/db1.t1?cluster=c1")
        assert (ch.database, ch.table, ch.cluster, ch.user, ch._password) == ("db1", "t1", "c1", "u", "p@ss")
        assert [str(e) for e in ch.endpoints] == ["http://a:8123", "http://b:8124"]
        assert ch.name == "clickhouse://a:8123/db1.t1"  # no credentials in the cursor's name
        with pytest.raises(ConfigError):
            exporter_from_url("clickhouse://a:8123/bad-name.t")


def test_configure_refuses_what_is_not_an_exporter(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ship takes exporters"):
        ju.configure(db_path=str(tmp_path / "x.db"), ship=["otlp://x"])
    exporter = OTLPExporter("http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="twice"):
        ju.configure(db_path=str(tmp_path / "x.db"), ship=[exporter, exporter])


def test_clickhouse_batches_built_in_sqlite_equal_the_python_encoder(tmp_path: Path) -> None:
    """The SQL json_object() path and ClickHouseExporter.encode give the same bytes, escapes included."""
    from janus_utils.ship import ClickHouseExporter

    rows = [
        make_row("plain"),
        make_row('quote " back \\ slash \n nl \t tab \x01 ctl é 漢字 😀 \u2028 \x7f', user_id="ü",
                 fields=json.dumps({"a": 'b"c', "n": [1, 2.5]}), exception="E\r\nx", pid=None, thread=None),
        make_row("x", ts=-5, level=0, pid=2**40, trace_id=TRACE, span_id=SPAN, request_id="r", agent_id="a",
                 service="svc", host="web-9"),
    ]
    path = str(tmp_path / "a.db")
    db = open_writer(path)
    write_batch(db, rows)
    stored = db.execute(f'SELECT {", ".join(ROW_COLUMNS)} FROM logs ORDER BY id').fetchall()
    identity = Identity('hö"st', "0123abcd")
    exporter = ClickHouseExporter("http://127.0.0.1:1", "logs")
    query = exporter.select_encoded(identity)
    assert query is not None
    count, last, body = encoded_batch(db, query, 0, None, 100)
    again = encoded_batch(db, query, 0, 3, -1)  # a batch re-read by its bounds after a crash
    db.close()
    assert (count, last) == (3, 3)
    assert body == exporter.encode(stored, identity)
    assert again == (count, last, body)


def test_a_batch_sqlite_cannot_encode_is_encoded_in_python(tmp_path: Path, clickhouse: Any) -> None:
    """A BLOB in a text column (not written by janus, but possible): the batch still ships."""
    from janus_utils.ship import ClickHouseExporter

    path = db_with(tmp_path, 5)
    db = open_writer(path)
    db.execute("UPDATE logs SET message = x'6869' WHERE id = 3")
    db.close()
    table = "t_blob"
    clickhouse.drop_table(f"default.{table}")
    assert Shipper(path, ClickHouseExporter(clickhouse.urls[0], table)).run_until_caught_up(30)
    assert clickhouse.replicas[0].query(f"SELECT message FROM default.{table} WHERE id = 3").strip() == "hi"


def test_text_that_is_not_utf8_ships_as_stored(tmp_path: Path, clickhouse: Any) -> None:
    """Bytes that are not UTF-8 in a text column (not written by janus) go out as they are; the rest of the batch too."""
    from janus_utils.ship import ClickHouseExporter

    path = db_with(tmp_path, 5)
    db = open_writer(path)
    db.execute("UPDATE logs SET message = CAST(x'ff41' AS TEXT) WHERE id = 2")
    db.close()
    table = "t_not_utf8"
    clickhouse.drop_table(f"default.{table}")
    assert Shipper(path, ClickHouseExporter(clickhouse.urls[0], table)).run_until_caught_up(30)
    assert clickhouse.replicas[0].query(f"SELECT count(), max(hex(message) = 'FF41') FROM default.{table}").split() == ["5", "1"]
