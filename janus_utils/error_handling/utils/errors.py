"""Errors raised by janus_utils' own modules: configuration, files, security, search, the ring."""

from __future__ import annotations

from .._base import JanusError

__all__ = [
    "ConfigError",
    "FileHandlerError",
    "RecordTooLargeError",
    "RingError",
    "RingFormatError",
    "RingFullError",
    "SQLiteConflictError",
    "SealError",
    "SearchQueryError",
    "SecurityError",
    "ShipError",
]


class ConfigError(JanusError):
    """A setting passed to configure() or read from the environment is wrong."""

    code = "config_error"
    title = "Configuration error"


class SQLiteConflictError(ConfigError):
    """Python's sqlite3 was asked to open a log database this process writes with apsw.

    The two link different SQLite libraries, which do not see each other's
    locks in one process: the connection would corrupt the database.
    """

    code = "sqlite_conflict"
    title = "Log database opened with a second SQLite library"


class FileHandlerError(JanusError):
    """A file operation was refused or failed."""

    code = "file_error"
    title = "File operation failed"


class SecurityError(JanusError):
    """A security check failed."""

    code = "security_error"
    http_status = 400
    title = "Security check failed"


class SearchQueryError(JanusError):
    """A log search query is not valid."""

    code = "search_query_error"
    http_status = 400
    title = "Invalid search query"


class RingError(JanusError):
    """The shared log ring could not be opened or used."""

    code = "ring_error"
    title = "Log ring error"


class RingFormatError(RingError):
    """A ring file is not a janus ring, is of another version, or is damaged."""

    code = "ring_format_error"
    title = "Not a usable log ring file"


class RingFullError(RingError):
    """The ring had no room for a record within the time allowed."""

    code = "ring_full"
    title = "Log ring full"


class RecordTooLargeError(RingError):
    """A record is larger than the ring can ever hold."""

    code = "record_too_large"
    title = "Log record too large for the ring"


class ShipError(JanusError):
    """A sink refused records in a way that retrying will not fix (janus_utils.ship)."""

    code = "ship_error"
    title = "Shipping to a sink failed"


class SealError(JanusError):
    """A seal key file or a database's seal chain cannot be used for sealing."""

    code = "seal_error"
    title = "Sealing failed"
