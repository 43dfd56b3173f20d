"""handle_errors and log_error: translated, logged exactly once, however many layers, sync and async."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import apsw
import pytest

import janus_utils as ju
from janus_utils.error_handling import (
    ErrorHandler,
    IntegrityError,
    JanusError,
    NotFound,
    UpstreamError,
    error_id,
    handle_errors,
    is_logged,
    log_error,
)

# The janus_logs fixture, until the package's pytest11 entry point loads it everywhere.
from janus_utils.error_handling.tests.plugin import JanusLogs


@pytest.fixture
def db() -> Iterator[apsw.Connection]:
    """An in-memory database with one UNIQUE column and one row in it."""
    conn = apsw.Connection(":memory:")
    conn.execute('CREATE TABLE "users" ("email" TEXT UNIQUE); INSERT INTO "users" VALUES (\'a@x.io\')')
    yield conn
    conn.close()


def insert_duplicate(db: apsw.Connection) -> None:
    db.execute('INSERT INTO "users" VALUES (\'a@x.io\')')


def errors(logs: JanusLogs) -> list[dict[str, Any]]:
    return [r for r in logs.records if r["logger"] == "janus.errors"]


class TestDecorator:
    def test_translates_logs_and_reraises(self, janus_logs: JanusLogs, db: apsw.Connection) -> None:
        """An apsw constraint error leaves as IntegrityError (cause kept), logged once at WARNING."""

        @handle_errors
        def create_user() -> None:
            insert_duplicate(db)

        with pytest.raises(IntegrityError) as info:
            create_user()
        assert isinstance(info.value.__cause__, apsw.ConstraintError)
        record = janus_logs.assert_logged_once(level="WARNING", logger="janus.errors")
        assert "409 integrity_error: The record conflicts with an existing one." == record["message"]
        assert {
            "error_code": "integrity_error",
            "http_status": 409,
            "error_type": "IntegrityError",
            "error_id": error_id(info.value),
            "cause_chain": [
                ["IntegrityError", "[integrity_error] The record conflicts with an existing one."],
                ["apsw.ConstraintError", "UNIQUE constraint failed: users.email"],
            ],
            "details": {
                "driver": "apsw",
                "constraint": "unique",
                "sqlite_error": "SQLITE_CONSTRAINT_UNIQUE",
            },
        } == {key: value for key, value in record["fields"].items() if not key.startswith("code.")}
        # The source location is the decorated call's caller, not the library's handler.
        assert "TestDecorator.test_translates_logs_and_reraises" == record["fields"]["code.function"]
        assert "apsw.ConstraintError: UNIQUE constraint failed" in record["exception"]
        assert "in insert_duplicate" in record["exception"]

    def test_keeps_name_and_return_value(self, janus_logs: JanusLogs) -> None:
        """A decorated function keeps its name and returns as before; nothing logged on success."""

        @handle_errors(level="ERROR")
        def add(a: int, b: int) -> int:
            return a + b

        assert ("add", 3) == (add.__name__, add(1, 2))
        janus_logs.assert_not_logged(logger="janus.errors")

    def test_reraise_false_swallows(self, janus_logs: JanusLogs) -> None:
        """reraise=False logs the error and the function returns None."""

        @handle_errors(reraise=False)
        def fails() -> int:
            raise UpstreamError("billing down", service="billing")

        assert fails() is None
        janus_logs.assert_logged_once(level="ERROR", error_code="upstream_error")

    def test_unknown_exception_is_an_internal_error_at_error(self, janus_logs: JanusLogs) -> None:
        """An exception nobody translates propagates as it is, logged as a 500 at ERROR."""

        @handle_errors
        def fails() -> None:
            raise KeyError("missing")

        with pytest.raises(KeyError):
            fails()
        record = janus_logs.assert_logged_once(level="ERROR")
        assert "500 internal_error: KeyError: 'missing'" == record["message"]
        assert ("internal_error", "KeyError") == (
            record["fields"]["error_code"],
            record["fields"]["error_type"],
        )

    def test_custom_translate(self, janus_logs: JanusLogs) -> None:
        """A translate callable maps foreign exceptions; None leaves the rest alone."""

        def lookup_errors(exc: BaseException) -> JanusError | None:
            return NotFound("No such user.") if isinstance(exc, LookupError) else None

        @handle_errors(translate=lookup_errors)
        def fetch() -> None:
            raise KeyError("user")

        with pytest.raises(NotFound) as info:
            fetch()
        assert isinstance(info.value.__cause__, KeyError)
        janus_logs.assert_logged_once(level="WARNING", error_code="not_found")

    def test_translate_none_translates_nothing(self, janus_logs: JanusLogs, db: apsw.Connection) -> None:
        """translate=None lets the driver's exception through, logged as an internal error."""
        with pytest.raises(apsw.ConstraintError):
            with handle_errors(translate=None):
                insert_duplicate(db)
        janus_logs.assert_logged_once(level="ERROR", error_type="apsw.ConstraintError")

    def test_bad_translate_result_is_a_type_error(self) -> None:
        """A translate that returns a non-exception fails loudly, the original as context."""
        with pytest.raises(TypeError, match="must return an exception or None") as info:
            with handle_errors(translate=lambda exc: "nope", logger=logging.getLogger("t")):  # type: ignore[arg-type,return-value]
                raise ValueError("original")
        assert isinstance(info.value.__context__, ValueError)

    def test_wrong_arguments_fail_at_once(self) -> None:
        """A non-callable translate or an unknown level fail when the handler is made."""
        with pytest.raises(TypeError, match="translate must be a function"):
            handle_errors(translate="db")  # type: ignore[call-overload]
        with pytest.raises(ValueError, match="unknown level"):
            handle_errors(level="LOUD")

    def test_generators_are_refused(self) -> None:
        """A generator's body runs after the call: decorating one is refused with advice."""
        with pytest.raises(TypeError, match="use 'with handle_errors"):

            @handle_errors
            def rows() -> Iterator[int]:
                yield 1

    def test_base_exceptions_pass_untouched(self, janus_logs: JanusLogs) -> None:
        """KeyboardInterrupt and friends are neither handled nor logged."""

        @handle_errors(reraise=False)
        def interrupted() -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            interrupted()
        janus_logs.assert_not_logged()


class TestLoggedOnce:
    def test_nested_sync_layers(self, janus_logs: JanusLogs, db: apsw.Connection) -> None:
        """Decorator inside context manager inside decorator: one record, one IntegrityError."""

        @handle_errors
        def repository() -> None:
            insert_duplicate(db)

        @handle_errors
        def service() -> None:
            with handle_errors():
                repository()

        with pytest.raises(IntegrityError) as info:
            service()
        assert 1 == len(errors(janus_logs))
        assert isinstance(info.value.__cause__, apsw.ConstraintError)

    def test_nested_async_layers(self, janus_logs: JanusLogs, db: apsw.Connection) -> None:
        """async decorator inside async with inside async decorator: one record."""

        @handle_errors
        async def repository() -> None:
            await asyncio.sleep(0)
            insert_duplicate(db)

        @handle_errors
        async def service() -> None:
            async with handle_errors():
                with handle_errors():
                    await repository()

        with pytest.raises(IntegrityError):
            asyncio.run(service())
        janus_logs.assert_logged_once(level="WARNING", error_code="integrity_error")
        assert 1 == len(errors(janus_logs))

    def test_async_reraise_false(self, janus_logs: JanusLogs) -> None:
        """An async function with reraise=False returns None after logging."""

        @handle_errors(reraise=False)
        async def fails() -> int:
            raise NotFound("gone")

        assert asyncio.run(fails()) is None
        janus_logs.assert_logged_once(level="WARNING", error_code="not_found")

    def test_translation_after_an_untranslating_layer(self, janus_logs: JanusLogs, db: apsw.Connection) -> None:
        """An inner layer logs the raw error; the outer translates it but does not log again."""
        with pytest.raises(IntegrityError) as info:
            with handle_errors():
                with handle_errors(translate=None):
                    insert_duplicate(db)
        record = janus_logs.assert_logged_once(level="ERROR", error_type="apsw.ConstraintError")
        assert record["fields"]["error_id"] == error_id(info.value)
        assert is_logged(info.value) and is_logged(info.value.__cause__)  # type: ignore[arg-type]

    def test_original_and_translation_share_one_id(self, db: apsw.Connection, janus_logs: JanusLogs) -> None:
        """The driver error and its translation are both marked, with the logged error id."""
        with pytest.raises(IntegrityError) as info:
            with handle_errors():
                insert_duplicate(db)
        cause = info.value.__cause__
        assert cause is not None and is_logged(cause)
        assert error_id(cause) == error_id(info.value) == janus_logs.records[0]["fields"]["error_id"]

    def test_a_new_error_raised_from_a_logged_one_is_logged(self, janus_logs: JanusLogs) -> None:
        """Wrapping a logged error in a new one is a new error: both records, linked by the chain."""
        with pytest.raises(UpstreamError):
            with handle_errors():
                try:
                    with handle_errors():
                        raise NotFound("no invoice")
                except NotFound as exc:
                    raise UpstreamError("billing inconsistent") from exc
        assert ["not_found", "upstream_error"] == [r["fields"]["error_code"] for r in errors(janus_logs)]


class TestLogError:
    def test_logs_once_then_reports_false(self, janus_logs: JanusLogs) -> None:
        """log_error returns True when it logs, False for an error logged before."""
        err = NotFound("gone")
        assert (True, False) == (log_error(err), log_error(err))
        assert 1 == len(janus_logs.records)

    def test_context_fields_and_level(self, janus_logs: JanusLogs) -> None:
        """Context becomes fields; names the logger call reserves get a trailing '_'."""
        log_error(ValueError("x"), level="CRITICAL", http_path="/a", msg="kept", level_hint=1)
        record = janus_logs.assert_logged_once(level="CRITICAL", http_path="/a")
        assert ("kept", 1) == (record["fields"]["msg_"], record["fields"]["level_hint"])

    def test_secrets_in_details_and_message_are_redacted(self, janus_logs: JanusLogs) -> None:
        """A password in details, message or context never reaches the record."""
        err = NotFound("login password=hunter2 failed", details={"password": "hunter2", "user": "ann"})
        log_error(err, form={"api_key": "k-123"})
        record = janus_logs.records[0]
        assert "hunter2" not in json.dumps(record) and "k-123" not in json.dumps(record)
        assert "[REDACTED:password]" == record["fields"]["details"]["password"]

    def test_logger_by_name_and_janus_logger(self, janus_logs: JanusLogs) -> None:
        """logger= takes a name or a janus Logger."""
        log_error(NotFound("a"), logger="svc.users")
        log_error(NotFound("b"), logger=ju.get_logger("svc.orders"))
        assert ["svc.users", "svc.orders"] == [r["logger"] for r in janus_logs.records]

    def test_stdlib_logger(self, caplog: pytest.LogCaptureFixture) -> None:
        """A stdlib logging.Logger gets the fields as extra= and the traceback as exc_info."""
        with caplog.at_level(logging.WARNING, logger="stdlib.errors"):
            log_error(NotFound("gone", details={"id": 7}), logger=logging.getLogger("stdlib.errors"), name="x")
        (record,) = caplog.records
        assert ("404 not_found: gone", "not_found", {"id": 7}, "x") == (
            record.getMessage(),
            record.error_code,  # type: ignore[attr-defined]
            record.details,  # type: ignore[attr-defined]
            record.name_,  # type: ignore[attr-defined]
        )
        assert record.exc_info is not None and record.exc_info[1].message == "gone"  # type: ignore[union-attr]

    def test_stored_row_has_fields_and_traceback(self, janus_logs: JanusLogs, db: apsw.Connection) -> None:
        """After flush() the error is one row in SQLite: fields as JSON, the traceback in exception."""
        with pytest.raises(IntegrityError):
            with handle_errors():
                insert_duplicate(db)
        assert janus_logs.db_path is not None and ju.flush(timeout=10)
        reader = apsw.Connection(str(janus_logs.db_path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            rows = reader.execute(
                'SELECT "level", "logger", "exception", "fields" FROM "logs"'
            ).fetchall()
        finally:
            reader.close()
        ((level, logger, exception, fields),) = rows
        assert (30, "janus.errors") == (level, logger)
        assert "apsw.ConstraintError" in str(exception)
        assert "integrity_error" == json.loads(str(fields))["error_code"]


class TestErrorHandlerObject:
    def test_repr_and_reuse(self, janus_logs: JanusLogs) -> None:
        """One ErrorHandler serves many with-blocks and functions."""
        handler = ErrorHandler(reraise=False)
        assert "reraise=False" in repr(handler)
        for message in ("a", "b"):
            with handler:
                raise NotFound(message)
        assert 2 == len(janus_logs.records)
