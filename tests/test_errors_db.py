"""db.translate: real apsw and sqlite3 exceptions become janus database errors, cause kept."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from janus_utils.error_handling import (
    DatabaseConnectionError,
    DatabaseError,
    DatabaseTimeout,
    ExtensionLoadError,
    IntegrityError,
    JanusError,
    MigrationError,
    RecordNotFound,
    translate_db_error,
)
from janus_utils.error_handling.db import translate


def raised(func: object, *args: object) -> BaseException:
    """The exception func(*args) raises."""
    try:
        func(*args)  # type: ignore[operator]
    except BaseException as exc:  # noqa: BLE001 - the point is to catch it
        return exc
    raise AssertionError("nothing was raised")


@pytest.fixture
def db() -> Iterator[apsw.Connection]:
    """An in-memory apsw database with a table that has every kind of constraint."""
    conn = apsw.Connection(":memory:")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(
        """
        CREATE TABLE "teams" ("id" INTEGER PRIMARY KEY);
        CREATE TABLE "users" (
            "id" INTEGER PRIMARY KEY,
            "email" TEXT NOT NULL UNIQUE,
            "age" INTEGER CHECK ("age" >= 0),
            "team_id" INTEGER REFERENCES "teams" ("id")
        );
        INSERT INTO "users" ("id", "email") VALUES (1, 'ann@example.com');
        """
    )
    yield conn
    conn.close()


@pytest.fixture
def sdb() -> Iterator[sqlite3.Connection]:
    """The same schema through the standard library's sqlite3."""
    conn = sqlite3.connect(":memory:")
    conn.executescript(
        """
        CREATE TABLE "users" ("id" INTEGER PRIMARY KEY, "email" TEXT NOT NULL UNIQUE);
        INSERT INTO "users" VALUES (1, 'ann@example.com');
        """
    )
    yield conn
    conn.close()


class TestApsw:
    @pytest.mark.parametrize(
        ("sql", "kind"),
        [
            ("INSERT INTO \"users\" (\"email\") VALUES ('ann@example.com')", "unique"),
            ("INSERT INTO \"users\" (\"id\", \"email\") VALUES (1, 'bob@example.com')", "primary_key"),
            ('INSERT INTO "users" ("email") VALUES (NULL)', "not_null"),
            ("INSERT INTO \"users\" (\"email\", \"age\") VALUES ('c@example.com', -1)", "check"),
            ("INSERT INTO \"users\" (\"email\", \"team_id\") VALUES ('d@example.com', 9)", "foreign_key"),
        ],
    )
    def test_constraint_failures_become_integrity_errors(
        self, db: apsw.Connection, sql: str, kind: str
    ) -> None:
        """Each constraint kind is a 409 IntegrityError naming the kind; the driver error is its cause."""
        original = raised(db.execute, sql)
        assert isinstance(original, apsw.ConstraintError)
        err = translate(original)
        assert isinstance(err, IntegrityError)
        assert (409, kind, "apsw") == (err.http_status, err.details["constraint"], err.details["driver"])
        assert err.__cause__ is original

    def test_client_message_does_not_name_tables(self, db: apsw.Connection) -> None:
        """The message and body say 'conflicts', not the table and column; the cause does."""
        original = raised(db.execute, "INSERT INTO \"users\" (\"email\") VALUES ('ann@example.com')")
        err = translate(original)
        assert err is not None
        assert "users.email" in str(original)
        assert "users" not in repr(err.to_dict())
        assert "The record conflicts with an existing one." == err.to_dict()["detail"]

    def test_busy_database_is_a_timeout(self, tmp_path: Path) -> None:
        """A write blocked by another connection's write lock is a 503 DatabaseTimeout."""
        path = str(tmp_path / "busy.db")
        holder, waiter = apsw.Connection(path), apsw.Connection(path)
        try:
            holder.execute('CREATE TABLE "t" ("x")')
            holder.execute("BEGIN IMMEDIATE")
            waiter.set_busy_timeout(0)
            original = raised(waiter.execute, 'INSERT INTO "t" VALUES (1)')
            assert isinstance(original, apsw.BusyError)
            err = translate(original)
            assert isinstance(err, DatabaseTimeout)
            assert (503, "SQLITE_BUSY") == (err.http_status, err.details["sqlite_error"])
        finally:
            holder.execute("ROLLBACK")
            waiter.close()
            holder.close()

    def test_interrupted_query_is_a_timeout(self, db: apsw.Connection) -> None:
        """A query stopped by a progress handler (a statement deadline) is a DatabaseTimeout."""
        db.set_progress_handler(lambda: True, 1)
        original = raised(db.execute, 'SELECT count(*) FROM "users"')
        assert isinstance(original, apsw.InterruptError)
        assert isinstance(translate(original), DatabaseTimeout)

    def test_locked_table_is_a_timeout(self) -> None:
        """apsw.LockedError (a shared-cache table lock) maps like busy."""
        assert isinstance(translate(apsw.LockedError("database table is locked")), DatabaseTimeout)

    def test_cannot_open_is_a_connection_error(self, tmp_path: Path) -> None:
        """A database that cannot be opened is a 503 DatabaseConnectionError."""
        original = raised(apsw.Connection, str(tmp_path / "no" / "such" / "dir.db"))
        assert isinstance(original, apsw.CantOpenError)
        err = translate(original)
        assert isinstance(err, DatabaseConnectionError) and 503 == err.http_status

    def test_closed_connection_is_a_connection_error(self) -> None:
        """Using a closed connection is a DatabaseConnectionError."""
        conn = apsw.Connection(":memory:")
        conn.close()
        original = raised(conn.execute, "SELECT 1")
        assert isinstance(original, apsw.ConnectionClosedError)
        assert isinstance(translate(original), DatabaseConnectionError)

    def test_extension_that_will_not_load(self, tmp_path: Path) -> None:
        """apsw.ExtensionLoadingError becomes the extensions area's ExtensionLoadError."""
        conn = apsw.Connection(":memory:")
        try:
            conn.enable_load_extension(True)
            original = raised(conn.load_extension, str(tmp_path / "missing_ext"))
        finally:
            conn.close()
        assert isinstance(original, apsw.ExtensionLoadingError)
        assert isinstance(translate(original), ExtensionLoadError)

    def test_other_driver_errors_are_generic(self, db: apsw.Connection) -> None:
        """An SQL error with no better name is a 500 DatabaseError that hides its text."""
        original = raised(db.execute, 'SELECT * FROM "nope"')
        assert isinstance(original, apsw.SQLError)
        err = translate(original)
        assert type(err) is DatabaseError
        assert "nope" not in repr(err.to_dict())


class TestSqlite3:
    def test_integrity_error(self, sdb: sqlite3.Connection) -> None:
        """sqlite3.IntegrityError is an IntegrityError naming the constraint kind."""
        original = raised(sdb.execute, "INSERT INTO \"users\" (\"email\") VALUES ('ann@example.com')")
        err = translate(original)
        assert isinstance(err, IntegrityError)
        assert ("unique", "sqlite3") == (err.details["constraint"], err.details["driver"])
        assert err.__cause__ is original

    def test_database_is_locked(self, tmp_path: Path) -> None:
        """OperationalError 'database is locked' is a DatabaseTimeout."""
        path = tmp_path / "locked.db"
        holder = sqlite3.connect(path, isolation_level=None)
        waiter = sqlite3.connect(path, timeout=0)
        try:
            holder.execute('CREATE TABLE "t" ("x")')
            holder.execute("BEGIN IMMEDIATE")
            original = raised(waiter.execute, 'INSERT INTO "t" VALUES (1)')
            assert "database is locked" == str(original)
            assert isinstance(translate(original), DatabaseTimeout)
        finally:
            holder.execute("ROLLBACK")
            waiter.close()
            holder.close()

    def test_unable_to_open(self, tmp_path: Path) -> None:
        """OperationalError 'unable to open database file' is a DatabaseConnectionError."""
        original = raised(sqlite3.connect, tmp_path / "no" / "such.db")
        assert isinstance(translate(original), DatabaseConnectionError)

    def test_closed_database(self) -> None:
        """ProgrammingError on a closed connection is a DatabaseConnectionError."""
        conn = sqlite3.connect(":memory:")
        conn.close()
        original = raised(conn.execute, "SELECT 1")
        assert isinstance(original, sqlite3.ProgrammingError)
        assert isinstance(translate(original), DatabaseConnectionError)

    def test_syntax_error_is_generic(self, sdb: sqlite3.Connection) -> None:
        """Any other sqlite3.Error is a generic DatabaseError."""
        assert type(translate(raised(sdb.execute, "SELEKT 1"))) is DatabaseError


class TestNotADatabaseError:
    def test_foreign_and_janus_exceptions_give_none(self) -> None:
        """Exceptions that are not a driver's are left alone: translate returns None."""
        assert [None, None, None] == [
            translate(KeyError("x")),
            translate(ValueError("y")),
            translate(IntegrityError()),
        ]

    def test_package_alias(self) -> None:
        """translate_db_error is db.translate."""
        assert translate_db_error is translate


class TestDatabaseErrors:
    def test_details_are_never_shown(self) -> None:
        """Database errors keep details for the log only, even for a 404 or 409."""
        err = RecordNotFound("No such user.", details={"table": "users", "id": 7})
        body = err.to_dict()
        assert ("No such user.", False) == (body["detail"], "details" in body)

    def test_migration_error_is_a_500(self) -> None:
        """A failed migration is our fault: 500, message hidden."""
        body = MigrationError("v3 -> v4: column exists").to_dict()
        assert (500, "migration_error") == (body["status"], body["code"])
        assert "column" not in body["detail"]

    def test_all_are_janus_errors(self) -> None:
        """Every database error is a JanusError and a DatabaseError."""
        for cls in (DatabaseConnectionError, DatabaseTimeout, IntegrityError, RecordNotFound, MigrationError):
            assert issubclass(cls, DatabaseError) and issubclass(cls, JanusError)
