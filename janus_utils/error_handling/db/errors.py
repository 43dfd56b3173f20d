"""Database errors, and :func:`translate` from apsw and sqlite3 exceptions onto them.

Storage is internal: these errors never show their ``details`` to a client,
and the messages :func:`translate` writes say what happened in the client's
terms ("conflicts with an existing record"), never the driver's text.  The
driver's exception stays reachable as ``__cause__``, so its text and
traceback reach the log.
"""

from __future__ import annotations

import sys
from typing import Any

from .._base import JanusError
from ..extensions.errors import ExtensionLoadError

__all__ = [
    "DatabaseConnectionError",
    "DatabaseError",
    "DatabaseTimeout",
    "IntegrityError",
    "MigrationError",
    "RecordNotFound",
    "translate",
]


class DatabaseError(JanusError):
    """A database operation failed; also what :func:`translate` gives for driver errors it has no better name for."""

    code = "database_error"
    http_status = 500
    title = "Database error"
    expose_details = False


class DatabaseConnectionError(DatabaseError):
    """The database cannot be opened or the connection is gone."""

    code = "database_unavailable"
    http_status = 503
    title = "Database unavailable"


class DatabaseTimeout(DatabaseError):
    """The database stayed busy or locked past the wait allowed, or the query was interrupted.

    503, not 504: the database is local to the service, so the service itself
    is (briefly) unavailable; no gateway timed out.
    """

    code = "database_timeout"
    http_status = 503
    title = "Database busy"


class IntegrityError(DatabaseError):
    """A write broke a constraint: a duplicate key, a missing reference, a NULL or CHECK."""

    code = "integrity_error"
    http_status = 409
    title = "Conflicts with stored data"


class RecordNotFound(DatabaseError):
    """No row matches what was asked for."""

    code = "record_not_found"
    http_status = 404
    title = "Record not found"


class MigrationError(DatabaseError):
    """A schema migration could not be applied; the database is not at the version the code needs."""

    code = "migration_error"
    http_status = 500
    title = "Database migration failed"


# --------------------------------------------------------------------------
# translate

# constraint kind -> message for the client
_CONSTRAINT_MESSAGES = {
    "unique": "The record conflicts with an existing one.",
    "primary_key": "The record conflicts with an existing one.",
    "foreign_key": "The record refers to something that does not exist, or is still referred to.",
    "not_null": "A required value is missing.",
    "check": "A value is not allowed.",
}
_GENERIC_CONSTRAINT = "The change conflicts with stored data."

# SQLITE_CONSTRAINT_<suffix> -> kind; message prefixes for older drivers.
_CONSTRAINT_SUFFIXES = {
    "UNIQUE": "unique",
    "PRIMARYKEY": "primary_key",
    "ROWID": "primary_key",
    "FOREIGNKEY": "foreign_key",
    "NOTNULL": "not_null",
    "CHECK": "check",
    "TRIGGER": "trigger",
}
_CONSTRAINT_TEXT = (
    ("UNIQUE constraint", "unique"),
    ("FOREIGN KEY constraint", "foreign_key"),
    ("NOT NULL constraint", "not_null"),
    ("CHECK constraint", "check"),
)

_TIMEOUT_MESSAGE = "The database is busy; try again shortly."
_UNAVAILABLE_MESSAGE = "The database is unavailable."
_GENERIC_MESSAGE = "A database operation failed."


def _sqlite_error_name(exc: BaseException) -> str | None:
    """``SQLITE_CONSTRAINT_UNIQUE`` and the like, from apsw's or sqlite3's attributes."""
    name = getattr(exc, "sqlite_errorname", None)  # sqlite3, Python 3.11+
    if isinstance(name, str):
        return name
    apsw = sys.modules.get("apsw")
    code = getattr(exc, "extendedresult", None)
    if apsw is not None and isinstance(code, int):
        name = apsw.mapping_extended_result_codes.get(code)
        if name is None:
            name = apsw.mapping_result_codes.get(code & 0xFF)
        return name if isinstance(name, str) else None
    return None


def _constraint_kind(name: str | None, text: str) -> str:
    if name and name.startswith("SQLITE_CONSTRAINT_"):
        kind = _CONSTRAINT_SUFFIXES.get(name[len("SQLITE_CONSTRAINT_") :])
        if kind:
            return kind
    for prefix, kind in _CONSTRAINT_TEXT:
        if prefix in text:
            return kind
    return "other"


def _integrity(exc: BaseException, driver: str, name: str | None) -> IntegrityError:
    kind = _constraint_kind(name, str(exc))
    return IntegrityError(
        _CONSTRAINT_MESSAGES.get(kind, _GENERIC_CONSTRAINT),
        details=_driver_details(driver, name, constraint=kind),
    )


def _driver_details(driver: str, name: str | None, **more: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"driver": driver, **more}
    if name:
        details["sqlite_error"] = name
    return details


def _from_apsw(exc: BaseException, apsw: Any) -> JanusError | None:
    if not isinstance(exc, apsw.Error):
        return None
    name = _sqlite_error_name(exc)
    details = _driver_details("apsw", name)
    if isinstance(exc, apsw.ConstraintError):
        return _integrity(exc, "apsw", name)
    if isinstance(exc, (apsw.BusyError, apsw.LockedError, apsw.InterruptError)):
        return DatabaseTimeout(_TIMEOUT_MESSAGE, details=details)
    if isinstance(exc, (apsw.CantOpenError, apsw.ConnectionClosedError)):
        return DatabaseConnectionError(_UNAVAILABLE_MESSAGE, details=details)
    if isinstance(exc, apsw.ExtensionLoadingError):
        return ExtensionLoadError("A SQLite extension could not be loaded.", details=details)
    return DatabaseError(_GENERIC_MESSAGE, details=details)


def _from_sqlite3(exc: BaseException, sqlite3: Any) -> JanusError | None:
    if not isinstance(exc, sqlite3.Error):
        return None
    name = _sqlite_error_name(exc) or ""
    text = str(exc)
    details = _driver_details("sqlite3", name)
    if isinstance(exc, sqlite3.IntegrityError):
        return _integrity(exc, "sqlite3", name or None)
    if isinstance(exc, sqlite3.OperationalError):
        # Before Python 3.11 only the text tells "locked" from other failures.
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_INTERRUPT")) or text in (
            "database is locked",
            "database table is locked",
            "interrupted",
        ):
            return DatabaseTimeout(_TIMEOUT_MESSAGE, details=details)
        if name.startswith("SQLITE_CANTOPEN") or text.startswith("unable to open database"):
            return DatabaseConnectionError(_UNAVAILABLE_MESSAGE, details=details)
    if isinstance(exc, sqlite3.ProgrammingError) and "closed database" in text:
        return DatabaseConnectionError(_UNAVAILABLE_MESSAGE, details=details)
    return DatabaseError(_GENERIC_MESSAGE, details=details)


def translate(exc: BaseException) -> JanusError | None:
    """The janus error for an apsw or sqlite3 exception, with *exc* as its ``__cause__``.

    ============================================  ===========================
    driver exception                              becomes
    ============================================  ===========================
    apsw.ConstraintError, sqlite3.IntegrityError  IntegrityError (409)
    apsw.BusyError / LockedError / InterruptError DatabaseTimeout (503)
    sqlite3 "database is locked" and kin
    apsw.CantOpenError / ConnectionClosedError,   DatabaseConnectionError (503)
    sqlite3 "unable to open", closed database
    apsw.ExtensionLoadingError                    ExtensionLoadError (500)
    any other apsw.Error or sqlite3.Error         DatabaseError (500)
    anything else, janus errors included          None: not a database error
    ============================================  ===========================

    ``details`` name the driver, the SQLite error (``SQLITE_CONSTRAINT_UNIQUE``)
    and, for constraints, the kind (``unique``, ``foreign_key``, ``not_null``,
    ``check``, ...).  The driver's message, which names tables and columns,
    stays on the cause, so it is logged but never sent to a client.
    """
    if isinstance(exc, JanusError):
        return None
    # A driver that was never imported cannot have raised: no import cost here.
    error: JanusError | None = None
    apsw = sys.modules.get("apsw")
    if apsw is not None:
        error = _from_apsw(exc, apsw)
    if error is None:
        sqlite3 = sys.modules.get("sqlite3")
        if sqlite3 is not None:
            error = _from_sqlite3(exc, sqlite3)
    if error is not None:
        error.__cause__ = exc
    return error
