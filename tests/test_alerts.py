"""Alert rules: one notification per storm and cooldown, one evaluator per database, a real HTTP receiver."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import janus_utils as ju
from janus_utils.alerts import Alert, AlertEngine
from janus_utils.error_handling.utils.errors import ConfigError


class Receiver:
    """A loopback HTTP server that keeps every JSON body POSTed to it, with the time it came."""

    def __init__(self, port: int = 0) -> None:
        received = self.received = []  # type: list[tuple[float, dict[str, Any]]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append((time.monotonic(), json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def shutdown_after() -> Iterator[None]:
    yield
    ju.shutdown()


class TestRules:
    def test_bad_rules_are_refused(self) -> None:
        """Each mistake in a rule is a ConfigError that names the rule and the fix."""
        cases = [
            dict(name="", notify="http://x/"),
            dict(name="a", notify="ftp://x/"),
            dict(name="a", notify=42),
            dict(name="a", notify="http://x/", threshold=0),
            dict(name="a", notify="http://x/", window="soon"),
            dict(name="a", notify="http://x/", cooldown=-1),
            dict(name="a", notify="http://x/", level="LOUD"),
        ]
        messages = []
        for case in cases:
            with pytest.raises(ConfigError) as caught:
                Alert(**case)  # type: ignore[arg-type]
            messages.append(caught.value.message)
        assert all(messages) and "http:// or https://" in messages[1]

    def test_configure_takes_only_alerts_with_distinct_names(self, tmp_path: Path) -> None:
        """configure(alerts=...) takes Alert objects only, each with its own name."""
        rule = Alert("a", notify="http://127.0.0.1:1/")
        with pytest.raises(ConfigError, match="two alerts are named"):
            ju.configure(tmp_path / "x.db", console=False, alerts=[rule, rule])
        with pytest.raises(ConfigError, match="Alert"):
            ju.configure(tmp_path / "x.db", console=False, alerts=["errors > 5"])

    def test_durations(self) -> None:
        """Windows and cooldowns are durations or seconds, and read back as durations."""
        rule = Alert("a", notify="http://x/", window="90s", cooldown=600)
        assert (90.0, 600.0, "90s", "10m") == (rule.window_s, rule.cooldown_s, rule.describe()["window"], rule.describe()["cooldown"])


@pytest.mark.slow
class TestStorm:
    def test_storm_from_two_processes_sends_one_notification_per_cooldown(self, tmp_path: Path, receiver: Receiver) -> None:
        """10,000 errors in 10 s from two processes, both with the rule: exactly one POST in the
        cooldown; the next error after the cooldown is a second one."""
        db = tmp_path / "storm.db"
        script = textwrap.dedent(
            f"""
            import sys, time
            import janus_utils as ju
            ju.configure({str(db)!r}, console=False, alerts=[ju.Alert(
                "errors spiking", level="ERROR", threshold=20, window="10s", cooldown="13s",
                notify={receiver.url!r})])
            log = ju.get_logger("svc.worker" + sys.argv[1])
            print("ready", flush=True)
            sys.stdin.readline()
            start = time.monotonic()
            for i in range(5000):  # 500 per second for 10 s
                log.error("payment failed %s", i, user_id="u%d" % (i % 7), password="hunter2")
                if i % 50 == 49:
                    time.sleep(max(0.0, start + (i + 1) / 500 - time.monotonic()))
            ju.flush()
            print(ju.stats()["alerts"]["evaluating"], flush=True)
            sys.stdin.readline()
            ju.shutdown()
            """
        )
        procs = [
            subprocess.Popen([sys.executable, "-c", script, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for n in (1, 2)
        ]
        try:
            for p in procs:
                assert "ready" == p.stdout.readline().strip()  # type: ignore[union-attr]
            started = time.monotonic()
            for p in procs:
                p.stdin.write("go\n")  # type: ignore[union-attr]
                p.stdin.flush()  # type: ignore[union-attr]
            evaluating = [p.stdout.readline().strip() for p in procs]  # type: ignore[union-attr]
            storm_s = time.monotonic() - started
            time.sleep(1.0)  # the storm's last records committed and evaluated
            during_storm = list(receiver.received)
            # After the cooldown, one more error must be told.
            first_at = during_storm[0][0] if during_storm else started
            time.sleep(max(0.0, first_at + 13.5 - time.monotonic()))
            ju.configure(db, console=False)
            ju.get_logger("svc.late").error("after the cooldown")
            ju.flush()
            ju.shutdown()
            resumed = _wait(lambda: len(receiver.received) >= 2, 10)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.stdin.write("done\n")  # type: ignore[union-attr]
                    p.stdin.flush()  # type: ignore[union-attr]
                    p.wait(30)
        first = during_storm[0][1] if during_storm else {}
        sample = first.get("samples", [{}])[0]
        assert (1, ["False", "True"], True) == (len(during_storm), sorted(evaluating), storm_s < 13)
        assert ("errors spiking", True, "10s", 5, "ERROR") == (
            first["rule"], first["count"] >= 20, first["window"], len(first["samples"]), sample["level_name"]
        )
        assert "hunter2" not in json.dumps(first), "samples must be the stored, redacted records"
        assert (True, 2, True) == (resumed, len(receiver.received), receiver.received[1][0] - first_at >= 13)


@pytest.mark.slow
class TestNotifier:
    def test_receiver_down_then_up_is_retried_and_delivered(self, tmp_path: Path, shutdown_after: None) -> None:
        """A receiver that refuses connections: retried with backoff, delivered once it is up,
        reported in stats(), and the log calls and flush meanwhile are not slowed."""
        port = _free_port()
        url = f"http://127.0.0.1:{port}/hook"
        db = tmp_path / "down.db"
        ju.configure(db, console=False, alerts=[Alert("errors", level="ERROR", threshold=5, window="1m", notify=url)])
        log = ju.get_logger("svc")
        for i in range(50):
            log.error("boom %s", i)
        assert ju.flush(10)
        assert _wait(lambda: ju.stats()["alerts"]["retries"] >= 1, 10)
        failing = ju.stats()["alerts"]
        started = time.monotonic()
        for i in range(1000):
            log.info("still logging %s", i)
        assert ju.flush(10)
        flush_s = time.monotonic() - started
        late = Receiver(port)
        try:
            delivered = _wait(lambda: len(late.received) == 1, 20)
        finally:
            late.close()
        stats = ju.stats()["alerts"]
        stored_by_janus = ju.LogStore(db).count(logger="janus_utils")
        assert (True, True, 1, 0, 0, True) == (
            failing["last_error"] is not None and "notify failed" in failing["last_error"],
            delivered,
            stats["sent"],
            stats["failed"],
            stored_by_janus,
            flush_s < 2.0,
        )

    def test_receiver_never_up_counts_a_failure_and_goes_on(self, tmp_path: Path, receiver: Receiver) -> None:
        """Past retry_for a notification is counted as failed; the next one still goes out."""
        db = tmp_path / "never.db"
        dead = f"http://127.0.0.1:{_free_port()}/hook"
        ju.configure(db, console=False)
        try:
            engine = AlertEngine(
                str(db),
                [Alert("dead", query="boom", threshold=1, cooldown="1h", notify=dead),
                 Alert("alive", query="later", threshold=1, cooldown="1h", notify=receiver.url)],
                poll_interval=0.05, retry_backoff=0.1, retry_for=0.5,
            )
            engine.start()
            ju.get_logger("svc").error("boom")
            ju.flush()
            assert _wait(lambda: engine.failed == 1, 10)
            ju.get_logger("svc").error("later")
            ju.flush()
            assert _wait(lambda: len(receiver.received) == 1, 10)
            stats = engine.stats()
            engine.stop()
        finally:
            ju.shutdown()
        assert ({"fired": 1, "sent": 0, "failed": 1}, {"fired": 1, "sent": 1, "failed": 0}, True) == (
            stats["by_rule"]["dead"], stats["by_rule"]["alive"], stats["retries"] >= 2
        )

    def test_callable_notifier_and_query_rule(self, tmp_path: Path, shutdown_after: None) -> None:
        """notify= a function: it gets the same dict, from the notifier thread, never a log call's."""
        got: list[tuple[str, dict[str, Any]]] = []
        rule = Alert("payments", query='"payment failed"', threshold=2, window="5m",
                     notify=lambda n: got.append((threading.current_thread().name, n)))
        ju.configure(tmp_path / "call.db", console=False, alerts=[rule])
        log = ju.get_logger("svc.pay")
        log.error("payment failed for order 1")
        log.info("payment ok for order 2")
        log.warning("payment failed for order 3")
        assert ju.flush(10)
        assert _wait(lambda: len(got) == 1, 10)
        thread, note = got[0]
        assert ("janus-alerts-notify", 2, ["payment failed for order 3", "payment failed for order 1"]) == (
            thread, note["count"], [s["message"] for s in note["samples"]]
        )

    def test_cooldown_survives_a_new_evaluator(self, tmp_path: Path, shutdown_after: None) -> None:
        """The last firing is kept beside the database: a restarted process keeps the cooldown."""
        got: list[dict[str, Any]] = []
        rule = Alert("errs", level="ERROR", threshold=1, cooldown="1h", notify=got.append)
        db = tmp_path / "keep.db"
        ju.configure(db, console=False, alerts=[rule])
        ju.get_logger("svc").error("one")
        ju.flush()
        assert _wait(lambda: len(got) == 1, 10)
        ju.shutdown()
        ju.configure(db, console=False, alerts=[rule])
        ju.get_logger("svc").error("two")
        ju.flush()
        time.sleep(1.5)
        state = json.loads(Path(str(db) + "-alerts.json").read_text())
        assert (1, ["errs"], 0o600) == (len(got), list(state["last_fired"]), os.stat(str(db) + "-alerts.json").st_mode & 0o777)

    def test_shutdown_evaluates_the_last_records(self, tmp_path: Path) -> None:
        """Records logged just before shutdown() are evaluated, and their notification delivered."""
        got: list[dict[str, Any]] = []
        ju.configure(tmp_path / "last.db", console=False,
                     alerts=[Alert("errs", level="ERROR", threshold=1, notify=got.append)])
        ju.get_logger("svc").error("the very last record")
        ju.shutdown()
        assert ["the very last record"] == [s["message"] for n in got for s in n["samples"]]


@pytest.mark.slow
class TestElection:
    def test_another_process_takes_over_when_the_evaluator_dies(self, tmp_path: Path, shutdown_after: None) -> None:
        """SIGKILL the evaluating process: a waiting one takes the alert lock and fires the rule."""
        db = tmp_path / "failover.db"
        script = textwrap.dedent(
            f"""
            import time
            import janus_utils as ju
            ju.configure({str(db)!r}, console=False, alerts=[ju.Alert(
                "errs", level="ERROR", threshold=1, notify=lambda n: None)])
            while not ju.stats()["alerts"]["evaluating"]:
                time.sleep(0.05)
            print("evaluating", flush=True)
            time.sleep(600)
            """
        )
        leader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert "evaluating" == leader.stdout.readline().strip()  # type: ignore[union-attr]
            got: list[dict[str, Any]] = []
            ju.configure(db, console=False, alerts=[Alert("errs", level="ERROR", threshold=1, notify=got.append)])
            waiting = ju.stats()["alerts"]["evaluating"]
            leader.kill()
            leader.wait(10)
            took_over = _wait(lambda: ju.stats()["alerts"]["evaluating"], 5)
            ju.get_logger("svc").error("after the failover")
            ju.flush()
            fired = _wait(lambda: len(got) == 1, 5)
        finally:
            if leader.poll() is None:
                leader.kill()
                leader.wait(10)
        assert (False, True, True) == (waiting, took_over, fired)

    def test_a_forked_child_evaluates_once_the_parent_stops(self, tmp_path: Path) -> None:
        """After fork() the child runs its own alert threads (no lock, no connection of the parent's),
        and takes over evaluating when the parent shuts down."""
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        messages = ctx.Queue()
        db = tmp_path / "fork.db"
        ju.configure(db, console=False, alerts=[Alert(
            "errs", level="ERROR", threshold=1, notify=lambda n: messages.put(n["samples"][0]["message"]))])
        assert _wait(lambda: ju.stats()["alerts"]["evaluating"], 5)

        def child() -> None:
            if not _wait(lambda: ju.stats()["alerts"]["evaluating"], 10):
                messages.put("the child never took over")
                return
            ju.get_logger("svc").error("logged by the child %s", os.getpid())
            ju.shutdown()

        process = ctx.Process(target=child)
        process.start()
        ju.shutdown()  # releases the alert lock: the child takes over
        try:
            message = messages.get(timeout=20)
        finally:
            process.join(20)
        assert (f"logged by the child {process.pid}", 0) == (message, process.exitcode)
