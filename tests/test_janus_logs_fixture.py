"""The janus_logs pytest fixture: captures a test's records and asserts on them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import janus_utils as ju
from janus_utils.error_handling import TestSetupError

# The janus_logs fixture, until the package's pytest11 entry point loads it everywhere.
from janus_utils.error_handling.tests.plugin import JanusLogs, capture_janus_logs

# Every test here runs through both encoders of a log call (see conftest.log_call_path).
pytestmark = pytest.mark.usefixtures("log_call_path")

RECORD_KEYS = {
    "ts", "level", "level_name", "logger", "message", "exception", "pid", "thread",
    "user_id", "agent_id", "request_id", "trace_id", "span_id", "fields",
}  # fmt: skip


class TestCapture:
    def test_records_are_dicts_of_the_logged_calls(self, janus_logs: JanusLogs) -> None:
        """Each log call is one dict: known fields in their keys, the rest under 'fields'."""
        ju.get_logger("svc").info("user %s in", 7, user_id=7, ip="10.0.0.1")
        (record,) = janus_logs.records
        assert RECORD_KEYS == set(record)
        assert ("INFO", "svc", "user 7 in", 7, {"ip": "10.0.0.1"}) == (
            record["level_name"],
            record["logger"],
            record["message"],
            record["user_id"],
            record["fields"],
        )

    def test_configures_a_temporary_database(self, janus_logs: JanusLogs) -> None:
        """Unconfigured, the fixture configures janus_utils to a database of its own."""
        assert janus_logs.db_path is not None
        assert (True, str(janus_logs.db_path)) == (ju.is_configured(), ju.stats()["db_path"])

    def test_debug_is_captured(self, janus_logs: JanusLogs) -> None:
        """The fixture's configuration records DEBUG and up."""
        ju.get_logger("svc").debug("detail")
        janus_logs.assert_logged(level="DEBUG", contains="detail")

    def test_records_are_redacted(self, janus_logs: JanusLogs) -> None:
        """Records are captured after redaction, as they are stored."""
        ju.get_logger("svc").warning("login", password="hunter2")
        assert "[REDACTED:password]" == janus_logs.records[0]["fields"]["password"]

    def test_other_threads_are_captured(self, janus_logs: JanusLogs) -> None:
        """A record logged on another thread is captured with that thread's name."""
        worker = threading.Thread(target=ju.get_logger("bg").error, args=("failed",), name="worker-1")
        worker.start()
        worker.join()
        assert "worker-1" == janus_logs.assert_logged(level="ERROR", logger="bg")["thread"]

    def test_clear(self, janus_logs: JanusLogs) -> None:
        """clear() forgets what was captured so far."""
        ju.get_logger("svc").error("before")
        janus_logs.clear()
        ju.get_logger("svc").error("after")
        assert ["after"] == [r["message"] for r in janus_logs.records]


class TestAssertions:
    def test_assert_logged_matches_level_text_logger_and_fields(self, janus_logs: JanusLogs) -> None:
        """level is exact; contains searches the message; keywords match columns and fields."""
        ju.get_logger("svc.db").warning("slow query took %d ms", 900, request_id="r-1", table="users")
        record = janus_logs.assert_logged(
            level="WARNING", contains="slow query", logger="svc.db", request_id="r-1", table="users"
        )
        assert "slow query took 900 ms" == record["message"]
        with pytest.raises(AssertionError):
            janus_logs.assert_logged(level="ERROR", contains="slow query")

    def test_assert_logged_failure_lists_what_was_logged(self, janus_logs: JanusLogs) -> None:
        """A failed assert_logged says what it wanted and shows the records captured."""
        ju.get_logger("svc").info("started", port=8000)
        with pytest.raises(AssertionError) as info:
            janus_logs.assert_logged(contains="crashed")
        assert (
            "no record matches (level=ERROR, contains='crashed')\n"
            "1 record(s) captured; the closest:\n"
            "  INFO svc: started {'port': 8000}\n"
            "      differs: level=INFO (wanted ERROR), message='started' (wanted it to contain 'crashed')"
        ) == str(info.value)

    def test_failure_shows_the_differing_fields(self, janus_logs: JanusLogs) -> None:
        """The closest records come first, each with the keys that differed and their values."""
        log = ju.get_logger("svc")
        log.warning("refund", user_id=41, order=7)
        log.warning("refund", user_id=42, order=8)
        log.info("unrelated")
        with pytest.raises(AssertionError) as info:
            janus_logs.assert_logged(level="WARNING", contains="refund", user_id="42", order=9)
        lines = str(info.value).splitlines()
        assert "3 record(s) captured; the closest:" == lines[1]
        assert "  WARNING svc: refund [user_id=42] {'order': 8}" == lines[2]
        assert "      differs: order=8 (wanted 9)" == lines[3]
        assert "differs: user_id=41 (wanted '42'), order=7 (wanted 9)" in lines[5]

    def test_values_compare_as_logstore_does(self, janus_logs: JanusLogs) -> None:
        """user_id=42 matches "42" and back; JSON fields match by JSON value."""
        log = ju.get_logger("svc")
        log.warning("a", user_id=42, request_id="7", count=5, tags=("x", "y"), ok=True)
        janus_logs.assert_logged(level="WARNING", user_id="42")
        janus_logs.assert_logged(level="WARNING", request_id=7)
        janus_logs.assert_logged(level="WARNING", count=5.0, tags=["x", "y"], ok=True)
        assert [] == janus_logs.find(count="5")
        assert [] == janus_logs.find(ok=1)
        assert [] == janus_logs.find(user_id=None)
        with ju.LogStore(janus_logs.db_path) as store:  # type: ignore[arg-type]
            ju.flush()
            assert 1 == store.count(user_id="42", fields={"count": 5.0})
            assert 0 == store.count(fields={"count": "5"})


class TestStdlib:
    def test_stdlib_records_are_captured(self, janus_logs: JanusLogs) -> None:
        """A stdlib logging record in the test is captured, extra= as fields."""
        import logging

        logging.getLogger("lib.payments").warning("card declined %s", "x", extra={"user_id": 3})
        record = janus_logs.assert_logged_once(level="WARNING", logger="lib.payments", user_id="3")
        assert "card declined x" == record["message"]

    def test_captured_by_janus_is_seen_once(self, tmp_path: Path) -> None:
        """With capture_stdlib=True a stdlib record is captured once, not by both paths."""
        import logging

        ju.configure(tmp_path / "c.db", console=False, capture_stdlib=True)
        try:
            with capture_janus_logs(tmp_path) as logs:
                logging.getLogger("lib").error("once")
                logs.assert_logged_once(contains="once")
        finally:
            ju.shutdown()

    def test_assert_logged_once(self, janus_logs: JanusLogs) -> None:
        """assert_logged_once fails when a matching record appears twice."""
        log = ju.get_logger("svc")
        log.error("boom")
        assert "boom" == janus_logs.assert_logged_once(contains="boom")["message"]
        log.error("boom")
        with pytest.raises(AssertionError, match="2 records match .* expected exactly 1"):
            janus_logs.assert_logged_once(contains="boom")

    def test_assert_not_logged(self, janus_logs: JanusLogs) -> None:
        """assert_not_logged passes when nothing matches, fails listing the matches otherwise."""
        ju.get_logger("svc").warning("disk 91% full")
        janus_logs.assert_not_logged(level="ERROR")
        with pytest.raises(AssertionError, match="(?s)1 record\\(s\\) match .*matching:\n  WARNING svc: disk 91% full"):
            janus_logs.assert_not_logged(contains="disk")

    def test_assert_not_logged_without_arguments_means_nothing_at_all(self, janus_logs: JanusLogs) -> None:
        """With no arguments, any record fails it."""
        janus_logs.assert_not_logged()
        ju.get_logger("svc").debug("x")
        with pytest.raises(AssertionError):
            janus_logs.assert_not_logged()

    def test_a_missing_field_never_matches(self, janus_logs: JanusLogs) -> None:
        """A keyword naming a field the record lacks does not match, even against None."""
        ju.get_logger("svc").error("x")
        assert [] == janus_logs.find(order_id=None)

    def test_unknown_level_is_a_setup_error(self, janus_logs: JanusLogs) -> None:
        """A level name that does not exist is the test's mistake: TestSetupError."""
        with pytest.raises(TestSetupError, match="unknown level"):
            janus_logs.find(level="LOUD")


class TestLifecycle:
    def test_configures_and_shuts_down_when_unconfigured(self, tmp_path: Path) -> None:
        """Capture configures janus_utils for the block and shuts it down after."""
        assert not ju.is_configured()
        with capture_janus_logs(tmp_path) as logs:
            assert ju.is_configured()
            ju.get_logger("x").error("inside")
        assert not ju.is_configured()
        assert ["inside"] == [r["message"] for r in logs.records]

    def test_leaves_an_existing_configuration_alone(self, tmp_path: Path) -> None:
        """Configured before, configured after: the test's own setup is not shut down."""
        ju.configure(tmp_path / "own.db", console=False)
        try:
            with capture_janus_logs(tmp_path) as logs:
                ju.get_logger("x").error("inside")
            assert logs.db_path is None
            assert ju.is_configured() and ju.stats()["db_path"] == str(tmp_path / "own.db")
            assert 1 == len(logs.records)
        finally:
            ju.shutdown()

    def test_a_reconfiguration_inside_the_block_survives(self, tmp_path: Path) -> None:
        """If the test reconfigures to its own database, that configuration is left running."""
        try:
            with capture_janus_logs(tmp_path):
                ju.configure(tmp_path / "mine.db", console=False)
            assert ju.stats()["db_path"] == str(tmp_path / "mine.db")
        finally:
            ju.shutdown()

    def test_nothing_is_captured_after_the_block(self, tmp_path: Path) -> None:
        """The listener is removed when the block ends."""
        ju.configure(tmp_path / "own.db", console=False)
        try:
            with capture_janus_logs(tmp_path) as logs:
                pass
            ju.get_logger("x").error("later")
            assert [] == logs.records
        finally:
            ju.shutdown()


def test_plugin_loads_with_dash_p(tmp_path: Path) -> None:
    """-p janus_utils.error_handling.tests.plugin provides janus_logs; each test starts empty."""
    (tmp_path / "test_uses_fixture.py").write_text(
        textwrap.dedent(
            """
            import janus_utils as ju

            def test_first(janus_logs):
                ju.get_logger("app").error("one")
                janus_logs.assert_logged_once(contains="one")

            def test_second_starts_empty(janus_logs):
                assert [] == janus_logs.records

            def test_failure_shows_records(janus_logs):
                ju.get_logger("app").warning("visible in the report")
                janus_logs.assert_logged(level="ERROR")
            """
        )
    )
    # No entry-point plugins: the plugin comes from -p alone, whatever is installed.
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "janus_utils.error_handling.tests.plugin",
         "-p", "no:cacheprovider", "test_uses_fixture.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "1 failed, 2 passed" in result.stdout, result.stdout + result.stderr
    assert "WARNING app: visible in the report" in result.stdout
    assert "plugin.py" not in result.stdout  # the fixture's own frames are hidden
