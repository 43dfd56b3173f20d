"""The shipper: one per database and sink, it sends committed rows in id order and remembers how far it got.

The database is the queue.  A shipper reads ``id > shipped_upto`` in batches,
writes the batch's last id (``batch_upto``) to its cursor row *before*
sending, and moves ``shipped_upto`` only once the sink has acknowledged.  So:

- nothing is held in memory that is not also in the database: a sink that is
  down for an hour costs disk, never RAM, and never a record;
- after a crash the batch in flight is re-read by its bounds, so it is the
  same rows in the same order and (the encoders being pure) the same bytes:
  a ``Replicated*MergeTree`` table drops it as a duplicate block;
- one shipper per (database, sink) at a time, elected with a file lock beside
  the database (``<db>-ship-<hash>.lock``), like the flusher: it may run in any
  process that configured ``ship=`` or in ``janus-logs ship``, and when its
  process dies another takes over within ``election_interval``.

Shipping runs on its own threads, never in a log call or in the flusher's
commit loop.  While one batch is on the wire the next is read and encoded.
The shipper never logs: its errors go to stderr (rate-limited), to
``stats()`` and to the cursor row (so ``janus-logs ship --status`` sees
them from another process).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import random
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import apsw

from .. import _schema, security
from ..error_handling.utils.errors import ConfigError, ShipError
from ..file_handler import FileLock
from ._base import ROW_COLUMNS, Exporter, Identity, default_host
from ._http import Retry

__all__ = ["Shipper", "SinkStatus", "lock_path", "sink_status"]

_T = f'"{_schema.TABLE}"'
_C = f'"{_schema.SHIP_CURSOR_TABLE}"'
_M = f'"{_schema.META_TABLE}"'
_COLS = ", ".join(f'"{c}"' for c in ROW_COLUMNS)
_SELECT_AFTER = f'SELECT {_COLS} FROM {_T} WHERE "id" > ? ORDER BY "id" LIMIT ?'
_SELECT_RANGE = f'SELECT {_COLS} FROM {_T} WHERE "id" > ? AND "id" <= ? ORDER BY "id"'
_REGISTER = (
    f'INSERT OR IGNORE INTO {_C}("sink", "shipped_upto", "batch_upto", "updated_ns", "state") '
    "VALUES (?, 0, 0, ?, 'new')"
)
_ADVANCE = (
    f'UPDATE {_C} SET "shipped_upto" = ?, "batch_upto" = ?, "updated_ns" = ?, '
    "\"state\" = 'ok', \"last_error\" = NULL WHERE \"sink\" = ?"
)
_STATE = f'UPDATE {_C} SET "state" = ?, "last_error" = ?, "updated_ns" = ? WHERE "sink" = ?'

_REPORT_EVERY = 30.0  # seconds between two stderr lines about the same trouble

# When more than a batch is waiting (a start, a sink back after an outage),
# the first batch is at most this many rows: sending begins after a short
# read, and the next, full-sized batch is read while it is on the wire.  A
# 50,000-row ClickHouse batch read first would keep the sink waiting for its
# whole encoding.  Less than a batch waiting goes in one batch, as it is: a
# short batch would only add an insert.
_FIRST_BATCH = 5_000


def lock_path(db_path: str, sink: str) -> str:
    """The election lock of (*db_path*, *sink*): one shipper per pair, whichever process."""
    digest = hashlib.sha256(sink.encode()).hexdigest()[:16]
    return f"{db_path}-ship-{digest}.lock"


def read_identity(db: apsw.Connection, host: str | None = None) -> Identity:
    """The database's (host, db_id).  Rows carry their own host (configure(host=...));
    this host is for rows stored before they did, and is stored the first
    time it is asked for.

    Stored rather than read from the machine each time: a container that gets
    a new name at every restart would otherwise send its in-flight batch again
    under another name, and the sink could not tell it was the same.
    """
    db.execute(f"INSERT OR IGNORE INTO {_M}(\"key\", \"value\") VALUES ('host', ?)", (default_host(),))
    stored = db.execute(f'SELECT "value" FROM {_M} WHERE "key" = \'host\'').fetchall()
    db_id = _schema.database_id(db)
    if db_id is None:
        raise ConfigError("this log database has no db_id (schema older than version 2): open it with configure() first")
    return Identity(host=host or str(stored[0][0]), db_id=db_id)


def open_for_shipping(db_path: str) -> apsw.Connection:
    """A connection to an existing log database, schema brought up to date."""
    if not os.path.isfile(db_path):
        raise ConfigError(f"no log database at {db_path}: check the path (it is created by configure())")
    db = apsw.Connection(db_path, flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        _schema.apply_connection_settings(db)
        _schema.ensure_schema(db)
    except BaseException:
        db.close()
        raise
    return db


@dataclass
class Batch:
    """Rows ``after < id <= upto``, encoded."""

    after: int
    upto: int
    count: int
    body: bytes
    first_ts: int
    full: bool = False  # as many rows as asked for: more are likely waiting


@dataclass(frozen=True)
class SinkStatus:
    """A sink's position as the database records it (``janus-logs ship --status``)."""

    sink: str
    shipped_upto: int
    batch_upto: int
    max_id: int
    lag_rows: int
    lag_seconds: float
    state: str
    last_error: str | None
    updated_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "sink": self.sink,
            "shipped_id": self.shipped_upto,
            "batch_upto": self.batch_upto,
            "max_id": self.max_id,
            "lag_rows": self.lag_rows,
            "lag_seconds": self.lag_seconds,
            "state": self.state,
            "last_error": self.last_error,
            "updated_ns": self.updated_ns,
        }


def _lag(db: apsw.Connection, shipped: int) -> tuple[int, int, float]:
    """(max id, rows after *shipped*, seconds since the oldest of them was logged)."""
    max_id = db.execute(f'SELECT coalesce(max("id"), 0) FROM {_T}').fetchall()[0][0]
    if max_id <= shipped:
        return max_id, 0, 0.0
    # Ids are handed out without gaps by the one flusher; only a prune that
    # did not wait for shipping (ship_wait=False) leaves holes, and then this
    # counts a little high.
    first = db.execute(f'SELECT "ts" FROM {_T} WHERE "id" > ? ORDER BY "id" LIMIT 1', (shipped,)).fetchall()
    age = max(0.0, (time.time_ns() - first[0][0]) / 1e9) if first else 0.0
    return max_id, max_id - shipped, age


def sink_status(db: apsw.Connection) -> list[SinkStatus]:
    """Every sink the database has a cursor for, with its lag now."""
    found = []
    rows = db.execute(
        f'SELECT "sink", "shipped_upto", "batch_upto", "state", "last_error", "updated_ns" FROM {_C} ORDER BY "sink"'
    ).fetchall()
    for sink, shipped, batch, state, error, updated in rows:
        max_id, lag_rows, lag_s = _lag(db, shipped)
        found.append(SinkStatus(sink, shipped, batch, max_id, lag_rows, lag_s, state, error, updated))
    return found


def unshipped_floor(db: apsw.Connection) -> tuple[int, str] | None:
    """(lowest shipped id, its sink) over every registered sink; None when nothing ships.

    Retention keeps every row above this unless told not to wait.
    """
    try:
        row = db.execute(f'SELECT "shipped_upto", "sink" FROM {_C} ORDER BY "shipped_upto" LIMIT 1').fetchall()
    except apsw.SQLError:  # a database from before shipping existed
        return None
    return (int(row[0][0]), str(row[0][1])) if row else None


def encoded_batch(
    db: apsw.Connection, query: tuple[str, tuple[Any, ...]], after: int, upto: int | None, limit: int
) -> tuple[int, int, bytes]:
    """(row count, last id, body) of the rows ``after < id <= upto`` (at most *limit*; -1: all),
    encoded by an exporter's select_encoded *query*: each line followed by a newline.

    Raises apsw.SQLError when SQLite cannot encode a value (a BLOB in JSON).
    """
    sql, (host, db_id) = query
    bindings = {"host": host, "db_id": db_id, "after": after, "upto": 2**63 - 1 if upto is None else upto, "limit": limit}
    # Row by row into a list of lines: no list of row tuples beside them
    # (a batch of 50,000 rows would hold both, twice the memory).
    lines: list[bytes] = []
    add = lines.append
    last = after
    for last, line in db.execute(sql, bindings):
        add(line)
    if not lines:
        return 0, after, b""
    add(b"")  # the last line ends with a newline too
    return len(lines) - 1, last, b"\n".join(lines)


_live: weakref.WeakSet[Shipper] = weakref.WeakSet()


class Shipper:
    """Ships one database to one sink from a background thread, when elected.

    ``start()`` returns at once; ``stop()`` ends the thread (a send in flight
    is given up to *timeout*) and releases the election.  ``stats()`` is safe
    from any thread.
    """

    def __init__(
        self,
        db_path: str,
        exporter: Exporter,
        *,
        host: str | None = None,
        poll_interval: float = 0.1,
        election_interval: float = 0.5,
        max_backoff: float = 10.0,
        stream: Any = None,
    ) -> None:
        self.db_path = os.path.abspath(db_path)
        self.exporter = exporter
        self.sink = exporter.name
        self.host = exporter.host or host
        self.poll_interval = poll_interval
        self.election_interval = election_interval
        self.max_backoff = max_backoff
        self.stream = stream  # None: sys.stderr at write time
        self.lock = FileLock(lock_path(self.db_path, self.sink))
        self.identity: Identity | None = None
        # What stats() shows
        self.leader = False
        self.state = "starting"
        self.shipped_upto = 0
        self.batch_upto = 0
        self.max_id = 0
        self.lag_rows = 0
        self.lag_seconds = 0.0
        self.shipped = 0  # records this process shipped
        self.batches = 0
        self.retries = 0
        self.rejected = 0  # records the sink said it dropped (OTLP partial success)
        self.last_error: str | None = None
        self.failing_since: float | None = None
        # Inner state
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._db: apsw.Connection | None = None
        self._db_lock = threading.Lock()  # held around every use of _db, and across fork
        self._sink_open = False
        self._encoded_sql: tuple[str, tuple[Any, ...]] | None = None
        self._backoff = 0.0
        self._pending: Batch | None = None
        self._next: Batch | None = None
        self._written_upto = -1  # the batch_upto last written to the cursor row
        self._reported: tuple[str, float] = ("", 0.0)
        self._saved_error: tuple[str | None, float] = (None, 0.0)
        self._sender: concurrent.futures.ThreadPoolExecutor | None = None
        self.thread: threading.Thread | None = None
        self._started = False
        _live.add(self)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Shipper:
        # Registered before start() returns: from now on retention keeps
        # what this sink has not shipped (the thread would be a moment late).
        with contextlib.suppress(Exception), self._db_lock:
            self._conn().execute(_REGISTER, (self.sink, time.time_ns()))
        self._started = True
        self._stopping.clear()
        self.thread = threading.Thread(target=self._run, name=f"janus-ship-{self.exporter.kind}", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        self._started = False
        self._stopping.set()
        self._wake.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        if self._sender is not None:
            self._sender.shutdown(wait=False)
            self._sender = None
        with self._db_lock:
            self._close_db()
        with contextlib.suppress(Exception):
            self.exporter.close()
        if self.leader:
            self.leader = False
            with contextlib.suppress(Exception):
                self.lock.release()

    def wake(self) -> None:
        """Look for new rows now rather than at the next poll."""
        self._wake.set()

    def drain(self, timeout: float) -> bool:
        """Wait up to *timeout* s until every row committed now is shipped, if this process ships.

        Returns at once (False) when another process ships or the sink is failing.
        """
        if not self.leader or self.state != "shipping" or self.thread is None or not self.thread.is_alive():
            return False
        try:
            with self._db_lock:
                target = self._conn().execute(f'SELECT coalesce(max("id"), 0) FROM {_T}').fetchall()[0][0]
        except apsw.Error:
            return False
        deadline = time.monotonic() + timeout
        while self.shipped_upto < target:
            if time.monotonic() >= deadline or self.state != "shipping":
                return False
            self._wake.set()
            time.sleep(0.01)
        return True

    def run_until_caught_up(self, timeout: float | None = None, give_up_after: float | None = None) -> bool:
        """In this thread: take the election, ship until every row present at the call is shipped.

        For ``janus-logs ship --once``.  Returns True when caught up, False
        when another process holds the election, *timeout* passed, or the
        sink has failed without a break for *give_up_after* seconds (a sink
        that is down: the next run goes on from the cursor); raises
        ShipError when the sink refuses for good.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.lock.acquire(blocking=False):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self.election_interval)
        self.leader = True
        try:
            self._elected()
            with self._db_lock:
                target = self._conn().execute(f'SELECT coalesce(max("id"), 0) FROM {_T}').fetchall()[0][0]
            while self.shipped_upto < target:
                # The sooner of the two limits; a failure sets failing_since, so
                # it is read again each time round.
                ends = [deadline, None if give_up_after is None or self.failing_since is None
                        else self.failing_since + give_up_after]  # fmt: skip
                until = min((end for end in ends if end is not None), default=None)
                if until is not None and time.monotonic() >= until:
                    return False
                try:
                    self._ship_one(wait_idle=False)
                except Retry as err:
                    self._failed(str(err), getattr(err, "retry_after", None), until=until)
            return True
        finally:
            self._close_sender()
            with self._db_lock:
                self._close_db()
            self.leader = False
            self.lock.release()

    # ------------------------------------------------------------ the thread
    def _run(self) -> None:
        try:
            with self._db_lock:
                db = self._conn()
                db.execute(_REGISTER, (self.sink, time.time_ns()))
        except Exception as err:
            self._report(f"cannot open {self.db_path} for shipping: {type(err).__name__}: {err}")
        while not self._stopping.is_set():
            try:
                if not self.leader:
                    if self.lock.acquire(blocking=False):
                        self.leader = True
                        self._elected()
                    else:
                        self.state = "standby"  # another process ships
                        self._observe()
                        self._stopping.wait(self.election_interval)
                        continue
                if self.state == "stopped":
                    # Refused for good: keep the election (another process
                    # would only meet the same refusal) until restarted.
                    self._observe()
                    self._stopping.wait(1.0)
                    continue
                self._ship_one(wait_idle=True)
            except ShipError as err:
                self._stop_sink(err)
            except Retry as err:
                self._failed(str(err), err.retry_after)
            except apsw.Error as err:
                with self._db_lock:
                    self._close_db()
                self._failed(f"reading {self.db_path}: {type(err).__name__}: {err}", None)
            except Exception as err:  # the shipper must outlive any single failure
                self._failed(f"unexpected {type(err).__name__}: {err}", None)
        self._close_sender()

    def _elected(self) -> None:
        """Just took the election: read where the last shipper stopped."""
        with self._db_lock:
            db = self._conn()
            db.execute(_REGISTER, (self.sink, time.time_ns()))
            self.identity = read_identity(db, self.host)
            self._encoded_sql = self.exporter.select_encoded(self.identity)
            row = db.execute(f'SELECT "shipped_upto", "batch_upto", "state" FROM {_C} WHERE "sink" = ?', (self.sink,)).fetchall()
        self.shipped_upto, self.batch_upto, _ = row[0]
        self._written_upto = self.batch_upto
        self._pending = None
        self._next = None
        self._sink_open = False
        self.state = "shipping"

    def _conn(self) -> apsw.Connection:
        if self._db is None:
            self._db = open_for_shipping(self.db_path)
        return self._db

    def _close_db(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None

    def _close_sender(self) -> None:
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None

    def _observe(self) -> None:
        """Not shipping here: keep stats() current from the cursor row."""
        try:
            with self._db_lock:
                db = self._conn()
                row = db.execute(
                    f'SELECT "shipped_upto", "batch_upto", "state", "last_error" FROM {_C} WHERE "sink" = ?', (self.sink,)
                ).fetchall()
                if row:
                    self.shipped_upto, self.batch_upto = row[0][0], row[0][1]
                    if not self.leader:
                        self.last_error = row[0][3]
                self.max_id, self.lag_rows, self.lag_seconds = _lag(db, self.shipped_upto)
        except apsw.Error:
            with self._db_lock:
                self._close_db()

    # ------------------------------------------------------------ one batch
    def _read(self, db: apsw.Connection, after: int, upto: int | None, limit: int | None = None) -> Batch | None:
        """Rows after *after* (up to *upto* when re-sending a batch; else at most *limit*,
        the exporter's batch_size by default), encoded; None if there are none."""
        assert self.identity is not None
        if limit is None:
            limit = self.exporter.batch_size
        if self._encoded_sql is not None:
            try:
                return self._read_encoded(db, after, upto, limit)
            except apsw.SQLError:
                pass  # a value SQLite cannot put in JSON (a BLOB): this batch is encoded in Python
        if upto is not None:
            rows = db.execute(_SELECT_RANGE, (after, upto)).fetchall()
        else:
            rows = db.execute(_SELECT_AFTER, (after, limit)).fetchall()
        if not rows:
            if upto is not None and upto > after:
                # The batch's rows are gone (pruned without waiting): skip its range.
                return Batch(after, upto, 0, b"", 0)
            return None
        body = self.exporter.encode(rows, self.identity)
        full = upto is None and len(rows) >= limit
        return Batch(after, rows[-1][0] if upto is None else upto, len(rows), body, rows[0][1], full)

    def _read_encoded(self, db: apsw.Connection, after: int, upto: int | None, limit: int) -> Batch | None:
        """_read with each row encoded inside SQLite (the exporter's select_encoded)."""
        assert self._encoded_sql is not None
        count, last, body = encoded_batch(db, self._encoded_sql, after, upto, -1 if upto is not None else limit)
        if not count:
            return Batch(after, upto, 0, b"", 0) if upto is not None and upto > after else None
        return Batch(after, last if upto is None else upto, count, body, 0, upto is None and count >= limit)

    def _ship_one(self, *, wait_idle: bool) -> None:
        if not self._sink_open:
            assert self.identity is not None
            self.exporter.open(self.identity)
            self._sink_open = True
        batch = self._pending
        if batch is None:
            with self._db_lock:
                db = self._conn()
                if self.batch_upto > self.shipped_upto:
                    # A batch was in flight when the last shipper stopped: the same bounds again.
                    batch = self._read(db, self.shipped_upto, self.batch_upto)
                else:
                    limit = self.exporter.batch_size
                    waiting = db.execute(f'SELECT coalesce(max("id"), 0) FROM {_T}').fetchall()[0][0] - self.shipped_upto
                    if waiting > limit:
                        limit = min(_FIRST_BATCH, limit)
                    batch = self._read(db, self.shipped_upto, None, limit)
                if batch is None:
                    self.max_id, self.lag_rows, self.lag_seconds = _lag(db, self.shipped_upto)
            if batch is None:
                self._idle(wait_idle)
                return
            self._pending = batch
        if batch.upto > self._written_upto:
            with self._db_lock:
                self._conn().execute(_ADVANCE, (self.shipped_upto, batch.upto, time.time_ns(), self.sink))
            self._written_upto = self.batch_upto = batch.upto
        rejected = self._send(batch)
        # Acknowledged: record it, together with the bounds of the batch read meanwhile.
        following = self._next
        self._next = None
        upto = following.upto if following is not None else batch.upto
        with self._db_lock:
            db = self._conn()
            db.execute(_ADVANCE, (batch.upto, upto, time.time_ns(), self.sink))
            self._written_upto = self.batch_upto = upto
            self.shipped_upto = batch.upto
            self.max_id, self.lag_rows, self.lag_seconds = _lag(db, self.shipped_upto)
        self._pending = following
        self.shipped += batch.count
        self.batches += 1
        if rejected:
            # OTLP partial success: the receiver dropped these for good.
            self.rejected += rejected
            self._report(f"the sink rejected {rejected} of {batch.count} records (ids {batch.after + 1}-{batch.upto}); "
                         f"{self.rejected} so far")
        if self.failing_since is not None:
            self._recovered()
        self._backoff = 0.0

    def _send(self, batch: Batch) -> int:
        """Send *batch*; meanwhile read and encode the next one if the batch was full."""
        if batch.count == 0:
            return 0
        if self._sender is None:
            self._sender = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="janus-ship-send")
        future = self._sender.submit(self.exporter.send, batch.body)
        if self._next is None and batch.full:
            try:
                with self._db_lock:
                    self._next = self._read(self._conn(), batch.upto, None)
            except apsw.Error:
                self._next = None  # read it again after the send
        try:
            return future.result()
        except ShipError:
            self._next = None
            raise

    def _idle(self, wait: bool) -> None:
        self.state = "shipping"
        if wait:
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    # ------------------------------------------------------------ trouble
    def _failed(self, message: str, retry_after: float | None, until: float | None = None) -> None:
        """A try failed in a way that may pass: back off (with jitter, capped) and try the same batch.

        The pause ends by *until* (a monotonic time) when given: ship --once's limits."""
        self.retries += 1
        self.state = "retrying"
        self.last_error = message
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self._report(message)
        self._save_state("retrying", message)
        self._backoff = min(self.max_backoff, max(0.1, self._backoff * 2))
        pause = random.uniform(self._backoff / 2, self._backoff)
        if retry_after is not None:
            pause = max(pause, min(retry_after, 60.0))
        end = time.monotonic() + pause
        if until is not None:
            end = min(end, until)
        while True:
            # The lag keeps growing while the sink is away: keep stats() telling.
            with contextlib.suppress(apsw.Error), self._db_lock:
                self.max_id, self.lag_rows, self.lag_seconds = _lag(self._conn(), self.shipped_upto)
            left = end - time.monotonic()
            if left <= 0 or self._stopping.wait(min(left, 0.5)):
                return

    def _recovered(self) -> None:
        seconds = time.monotonic() - (self.failing_since or time.monotonic())
        self.failing_since = None
        self.state = "shipping"
        self._write(f"janus_utils: ship to {self.sink}: sending again after {seconds:.0f} s of failures")
        self._reported = ("", 0.0)

    def _stop_sink(self, err: ShipError) -> None:
        self.state = "stopped"
        self.last_error = f"stopped: {err.message}"
        self._pending = self._next = None
        self._write(f"janus_utils: ship to {self.sink}: {self.last_error} (nothing more is sent to it until restarted)")
        self._save_state("stopped", self.last_error, force=True)
        with contextlib.suppress(Exception):
            self.exporter.close()

    def _save_state(self, state: str, error: str | None, *, force: bool = False) -> None:
        """Write the state to the cursor row, for other processes; at most every few seconds."""
        now = time.monotonic()
        if not force and error == self._saved_error[0] and now - self._saved_error[1] < 5.0:
            return
        self._saved_error = (error, now)
        with contextlib.suppress(apsw.Error), self._db_lock:
            self._conn().execute(_STATE, (state, error, time.time_ns(), self.sink))

    def _report(self, message: str) -> None:
        """One stderr line per kind of trouble, again only after _REPORT_EVERY seconds."""
        kind = message.split(":", 1)[0]
        now = time.monotonic()
        last_kind, last_at = self._reported
        if kind == last_kind and now - last_at < _REPORT_EVERY:
            return
        self._reported = (kind, now)
        suffix = "" if message.startswith("the sink rejected") else " (retrying with backoff)"
        self._write(f"janus_utils: ship to {self.sink}: {message}{suffix}")

    def _write(self, line: str) -> None:
        with contextlib.suppress(Exception):
            print(security.sanitize(line), file=self.stream or sys.stderr, flush=True)

    # ------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        return {
            "kind": self.exporter.kind,
            "leader": self.leader,
            "state": self.state,
            "shipped_id": self.shipped_upto,
            "max_id": self.max_id,
            "lag_rows": self.lag_rows,
            "lag_seconds": round(self.lag_seconds, 3),
            "shipped": self.shipped,
            "batches": self.batches,
            "retries": self.retries,
            "rejected": self.rejected,
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------ fork
    def _before_fork(self) -> None:
        self._db_lock.acquire()
        self._close_db()

    def _after_fork_parent(self) -> None:
        self._db_lock.release()

    def _after_fork_child(self) -> None:
        # No thread survives fork and the election lock is not the child's.
        self._db_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._sender = None
        self.leader = False
        self.lock = FileLock(lock_path(self.db_path, self.sink))
        self.shipped = self.batches = self.retries = self.rejected = 0
        self._pending = self._next = None
        self._sink_open = False
        with contextlib.suppress(Exception):
            self.exporter.close()
        if self._started:
            self.start()


def _before_fork() -> None:
    for shipper in list(_live):
        shipper._before_fork()


def _after_fork_parent() -> None:
    for shipper in list(_live):
        shipper._after_fork_parent()


def _after_fork_child() -> None:
    for shipper in list(_live):
        shipper._after_fork_child()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child)
