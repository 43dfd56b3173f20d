"""Which service and host a record comes from: announced once per process, filled in by the flusher.

Every process that configures a database pushes one announcement into the
ring, ``(pid -> service, host)``, before any record of its own, and again
after fork() with the child's pid.  The flusher takes announcements out of
each batch, remembers them (in memory and in the ``janus_processes`` table,
in the same transaction as the rows, so a flusher that takes over knows
them too) and fills the ``service`` and ``host`` columns of every row from
the row's pid.  The log call itself carries nothing more: service and host
cost nothing on the hot path.

A row whose pid never announced (its announcement was dropped by a full ring
with ``on_full="drop"``) gets the flusher's own service and host; every
process writing one ring runs on one machine, so the host is right even then.
"""

from __future__ import annotations

import os
import socket
import time
from operator import itemgetter
from typing import Any

from ._record import FORMAT, dumps, native_enabled, speedups
from ._schema import DECODED_COLUMNS

__all__ = ["ANNOUNCE_LOGGER", "Resources", "announcement", "default_host", "default_service"]

ANNOUNCE_LOGGER = "janus.process"
ANNOUNCE_LEVEL = 0  # below TRACE: no log call makes it by accident with this logger name
_ANNOUNCE_LEVEL = ANNOUNCE_LEVEL
_MARK = "_janus_announce"

_SAVE = 'INSERT OR REPLACE INTO "janus_processes"(pid, service, host, announced_ts) VALUES (?, ?, ?, ?)'
_LOAD = 'SELECT pid, service, host FROM "janus_processes"'
_level_of = itemgetter(1)
_LABEL_AT = len(DECODED_COLUMNS)  # where a row's service and host go


def default_service() -> str | None:
    """``$OTEL_SERVICE_NAME``, as OpenTelemetry names a service, or None."""
    return os.environ.get("OTEL_SERVICE_NAME") or None


def default_host() -> str:
    return socket.gethostname()


def announcement(pid: int, service: str | None, host: str | None) -> bytes:
    """The ring payload that tells the flusher *pid*'s service and host."""
    fields = {"service": service, "host": host, _MARK: 1}
    return dumps((FORMAT, time.time_ns(), _ANNOUNCE_LEVEL, ANNOUNCE_LOGGER, "", fields, None, pid, ""))


class Resources:
    """The flusher's map of pid -> (service, host), and the rows it fills from it."""

    def __init__(self, service: str | None, host: str | None) -> None:
        self.own = (service, host)
        self.by_pid: dict[int, tuple[str | None, str | None]] = {}
        self.pending: list[tuple[int, str | None, str | None, int]] = []  # to store with the batch

    def load(self, db: Any) -> None:
        """What earlier flushers learned (a flusher that takes over needs it)."""
        self.by_pid.update({pid: (service, host) for pid, service, host in db.execute(_LOAD).fetchall()})

    def label(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """*rows* with service and host appended, announcements taken out and learned.

        Rows longer than the decoded columns hold them already, from what was
        known before the batch (``speedups.decode_rows`` appends them as it
        decodes, the word signature after them): labelled again only when the
        batch announces a process.
        """
        self.pending = []  # a batch that failed is read again, announcements included
        labelled = bool(rows) and len(rows[0]) > _LABEL_AT
        if rows and min(map(_level_of, rows)) == _ANNOUNCE_LEVEL:
            rows = [row for row in rows if not self._learn(row)]
            if labelled and self.pending:
                get, own, at = self.by_pid.get, self.own, _LABEL_AT
                return [row[:at] + get(row[9], own) + row[at + len(own) :] for row in rows]
        if labelled:
            return rows
        if native_enabled():
            return speedups.label_rows(rows, self.by_pid, self.own)  # type: ignore[union-attr]
        get, own = self.by_pid.get, self.own
        return [row + get(row[9], own) for row in rows]

    def _learn(self, row: tuple[Any, ...]) -> bool:
        """Learn *row* if it is an announcement (decoded: known columns, then fields JSON)."""
        if row[1] != _ANNOUNCE_LEVEL or row[2] != ANNOUNCE_LOGGER or not row[12] or _MARK not in row[12]:
            return False
        import json

        try:
            fields = json.loads(row[12])
        except ValueError:
            return False
        if not isinstance(fields, dict) or fields.get(_MARK) != 1 or not isinstance(row[9], int):
            return False
        service, host = fields.get("service"), fields.get("host")
        self.by_pid[row[9]] = (service, host)
        self.pending.append((row[9], service, host, row[0]))
        return True

    def save(self, db: Any) -> None:
        """Store what was learned from the batch being committed (in its transaction)."""
        if self.pending:
            db.executemany(_SAVE, self.pending)

    def committed(self) -> None:
        self.pending.clear()
