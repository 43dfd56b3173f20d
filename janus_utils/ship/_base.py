"""What every sink is to a shipper: open once, encode a batch of rows into bytes, send the bytes.

A row is a tuple in ``ROW_COLUMNS`` order, as stored.  ``encode`` must be a
pure function of the rows and the :class:`Identity`: the same id range
always gives the same bytes, which is what lets a replicated ClickHouse table
drop a batch that is sent again after a crash.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Any

from .._schema import COLUMNS
from ..error_handling.utils.errors import ConfigError

__all__ = ["ROW_COLUMNS", "Exporter", "Identity", "default_host"]

ROW_COLUMNS: tuple[str, ...] = ("id", *COLUMNS)

# Values outside a signed 64-bit integer cannot go into any sink's integer
# columns; they are clamped, so that one odd record never blocks a sink.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_name(value: str, what: str) -> str:
    """An SQL identifier made of letters, digits and underscores (nothing to quote or escape)."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(f"{what} must be letters, digits and underscores, starting with a letter: {value!r}")
    return value


def clamp(value: Any) -> int:
    """*value* as a 64-bit integer: clamped, and (for an odd stored value) converted as SQLite's CAST would."""
    if type(value) is not int:
        try:
            value = int(value)
        except (TypeError, ValueError, OverflowError):
            return 0
    return INT64_MIN if value < INT64_MIN else INT64_MAX if value > INT64_MAX else value


def default_host() -> str:
    """The host name rows carry unless told otherwise: $JANUS_HOST, else the machine's name."""
    return os.environ.get("JANUS_HOST") or socket.gethostname()


@dataclass(frozen=True)
class Identity:
    """Who sent a row: with the row's id, ``(host, db_id, id)`` names it across a fleet."""

    host: str
    db_id: str

    def uid(self, record_id: int) -> str:
        """``log.record.uid``: the database id and the record id (the host is a resource attribute)."""
        return f"{self.db_id}-{record_id}"


class Exporter:
    """Base of the sinks.  Subclasses set ``name`` and implement open/encode/send.

    ``name`` is the sink's stable name: the key of its shipping cursor and of
    its election lock.  Change it and shipping starts again from the first
    record, so give ``name=`` explicitly if the sink's address may change.
    """

    kind = "sink"
    name: str
    batch_size: int
    host: str | None = None  # overrides the host name stored in the database

    def open(self, identity: Identity) -> None:
        """Check (and create) what the sink needs; raises Retry or ShipError."""

    def encode(self, rows: list[tuple[Any, ...]], identity: Identity) -> bytes:
        raise NotImplementedError

    def select_encoded(self, identity: Identity) -> tuple[str, tuple[Any, ...]] | None:
        """An SQL query that encodes each row inside SQLite, or None to encode rows in Python.

        Returns ``(sql, (host, db_id))``.  The query takes the named
        parameters ``:host``, ``:db_id``, ``:after``, ``:upto`` and
        ``:limit`` and returns ``("id", line)`` for the rows ``after < id <=
        upto`` in id order, each line UTF-8 bytes (a BLOB); the batch's body
        is every line followed by a newline (``_shipper.encoded_batch``).
        """
        return None

    def send(self, body: bytes) -> int:
        """Deliver one encoded batch; returns how many records the sink said it rejected.

        Raises ``Retry`` when the same bytes should be sent again later and
        ``ShipError`` when the sink will never take them.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Drop connections; open() is called again before the next send."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def check_batch_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ConfigError(f"batch_size must be a whole number from 1 to 1,000,000, not {value!r}")
    return value


def check_timeout(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"timeout must be a positive number of seconds, not {value!r}")
    return float(value)
