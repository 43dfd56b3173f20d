"""The flusher: one process per database drains the shared ring and commits batches of rows.

Every process that configured a database runs a ``Flusher``; they elect one
leader with a file lock beside the database.  The leader reads the ring in
batches, turns each payload into a row (``_record.decode_row``), and commits
the rows, their FTS5 index entries and the ring position in one transaction,
so a crash anywhere never loses or repeats a record.  When idle it
checkpoints the WAL and runs retention a small chunk at a time.  The others
wait for the lock, ready to take over if the leader's process dies.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import apsw

from . import _ring, _schema, security
from ._console import Console
from ._record import decode_row, native_enabled, speedups, unstorable_row
from .error_handling.utils.errors import ConfigError, RingFormatError
from .file_handler import FileLock

if TYPE_CHECKING:
    from .logger import Config

__all__ = ["Flusher", "open_database"]


_INSERT = (
    f'INSERT INTO "{_schema.TABLE}" ({", ".join(_schema.COLUMNS)}) '
    f"VALUES ({', '.join('?' for _ in _schema.COLUMNS)})"
)
_INDEX = (
    f'INSERT INTO "{_schema.FTS_TABLE}"(rowid, message, fields, exception) '
    f'SELECT id, message, fields, exception FROM "{_schema.TABLE}" WHERE id > ?'
)
# Errors that say nothing about the rows: retry the same batch later.
_TRANSIENT = (
    apsw.BusyError,
    apsw.LockedError,
    apsw.IOError,
    apsw.FullError,
    apsw.CantOpenError,
    apsw.ReadOnlyError,
    apsw.NotADBError,
    apsw.CorruptError,
    apsw.ConnectionClosedError,
)


_CHECKPOINT_AFTER_IDLE = 1.0  # seconds without a commit before the WAL is checkpointed
_SAVE_POS = 'INSERT OR REPLACE INTO "janus_ring_state"(ring_id, committed_upto) VALUES (?, ?)'


def open_database(path: str, *, synchronous: str = "NORMAL") -> apsw.Connection:
    """Open (creating 0600) and migrate the log database for writing."""
    if not os.path.exists(path):
        # SQLite gives the -wal and -shm files the database file's mode.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
    db = apsw.Connection(path)
    # Lets retention give pages back (incremental_vacuum).  It only takes
    # effect on a new, empty file, before WAL is switched on.
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
    _schema.apply_connection_settings(db, synchronous=synchronous)
    # Checkpoints are run by the flusher when idle, not by whichever commit
    # crosses 1,000 pages (that commit would stall).
    db.execute("PRAGMA wal_autocheckpoint=0")
    _schema.ensure_schema(db)
    return db




_rings: dict[str, _ring.Ring] = {}


def open_ring(path: str, cfg: Config) -> _ring.Ring:
    """The process's one handle on the ring at *path*, opened on first use.

    A ring stays mapped until the process exits: a log call that started
    before shutdown() or a new configure() may still be pushing through it,
    and unmapping it then would crash the process.  A late record lands in
    the shared file and is committed by the next flusher.
    """
    ring = _rings.get(path)
    if ring is None:
        try:
            ring = _ring.Ring(path, cfg.ring_size, policy=cfg.on_full, block_timeout=cfg.block_timeout)
        except RingFormatError as err:
            if "another capacity" not in str(err):
                raise
            # Other processes may have the ring mapped: keep its size rather
            # than replace it under them.  Resizing needs every process stopped.
            ring = _ring.Ring(path, None, policy=cfg.on_full, block_timeout=cfg.block_timeout)
        _rings[path] = ring
    else:
        ring.set_policy(cfg.on_full, cfg.block_timeout)
    return ring


class Flusher:
    """The ring, the flusher thread, the console and the counters of one configured process."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        directory = os.path.dirname(cfg.db_path)
        if not os.path.isdir(directory):
            raise ConfigError(
                f"the directory of db_path does not exist: {directory!r}; create it first"
            )
        self.ring_path = cfg.db_path + "-ring"
        self.lock_path = cfg.db_path + "-flusher.lock"
        self.last_error: str | None = None
        self.ring = open_ring(self.ring_path, cfg)
        self.decode_rows = speedups.decode_rows if native_enabled() else None
        if self.ring.stats().capacity != cfg.ring_size:
            self.last_error = (
                f"ring {self.ring_path} exists with {self.ring.stats().capacity} bytes, not "
                f"ring_size={cfg.ring_size}; using it as it is (remove it while no process "
                "uses it to resize)"
            )
        self.ring_id = f"{self.ring.stats().ring_id:016x}"
        self.console = Console(
            stream=cfg.console_stream, fmt=cfg.console_format, enabled=cfg.console, report=self._report
        )
        self.lock = FileLock(self.lock_path)
        self.db: apsw.Connection | None = None
        self.db_lock = threading.Lock()  # held around each batch and across fork
        self.leader = False
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None
        # counters (this process)
        self.committed = 0
        self.batches = 0
        self.retries = 0
        self.unstorable = 0
        self._last_report = 0.0
        self._backoff = 0.0
        self._batches_since_checkpoint = 0
        self._last_commit = 0.0
        self._drop_warned_at = 0
        self.pruner = None
        if cfg.retention is not None:
            from .retention import AutoPruner

            # Consulted after every batch and when idle; it does at most one
            # small chunk per call, so writes never stall behind a prune.
            self.pruner = AutoPruner(
                cfg.retention, archive_dir=cfg.archive_dir, every_n_batches=50, report=self._report
            )

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        # Leftovers of a crashed run are committed before configure() returns
        # when this process can become the flusher at once.
        if self.lock.acquire(blocking=False):
            try:
                self._become_leader()
                with self.db_lock:
                    self._drain_to(self.ring.stats().head)
            except Exception as err:
                # Never hold the election lock without a flusher thread: other
                # processes would wait for us for ever.
                self.leader = False
                if self.db is not None:
                    with contextlib.suppress(Exception):
                        self.db.close()
                    self.db = None
                self.lock.release()
                raise ConfigError(
                    f"cannot use {self.cfg.db_path} as a log database: {type(err).__name__}: {err}"
                ) from err
        self._start_thread()
        self.console.start()

    def _drain_to(self, target: int) -> None:
        """Commit batches until everything before ring position *target* is stored.

        Bounded by *target*, so a steady stream of new records cannot keep
        configure() or shutdown() running.
        """
        while self.ring.stats().tail < target:
            if self._flush_locked() <= 0:
                return

    def _start_thread(self) -> None:
        self.thread = threading.Thread(target=self._run, name="janus-flusher", daemon=True)
        self.thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        self.stopping = True
        self.wake.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        self.console.stop(timeout)
        with self.db_lock:
            if self.leader:
                with contextlib.suppress(Exception):
                    self._drain_to(self.ring.stats().head)
                self._checkpoint()
            if self.db is not None:
                with contextlib.suppress(Exception):
                    self.db.close()
                self.db = None
            if self.leader:
                self.lock.release()
                self.leader = False
        # The ring stays mapped (see _open_ring).

    # -- the flusher thread ------------------------------------------------

    def _run(self) -> None:
        cfg = self.cfg
        while not self.stopping:
            try:
                if not self.leader:
                    if self.lock.acquire(blocking=False):
                        self._become_leader()
                    else:
                        self.wake.wait(cfg.election_interval)
                        self.wake.clear()
                        continue
                n = self._flush_once()
                if n < 0:  # a failed write: back off, the records stay in the ring
                    self._sleep(self._backoff)
                elif n < cfg.batch_size:  # caught up: let the next batch gather
                    if n == 0:
                        self._idle()
                    self._gather()
            except Exception as err:  # the flusher must outlive any single failure
                self._report(f"flusher error: {type(err).__name__}: {err}")
                time.sleep(0.1)

    def _sleep(self, seconds: float) -> None:
        """Sleep through a backoff; only stopping cuts it short (not flush())."""
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(min(0.05, max(end - time.monotonic(), 0)))
        self.wake.clear()

    def _gather(self) -> None:
        """Wait until the next commit is due: commit_interval passed, the ring a
        quarter full, or flush()/shutdown() asked.

        Committing on size or time, rather than chasing every record, makes
        bigger transactions (cheaper per row, fewer FTS segments) and keeps the
        flusher from taking the GIL from the application at every log call.
        """
        deadline = time.monotonic() + self.cfg.commit_interval
        full = self.ring.stats().capacity // 4
        while not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.wake.wait(min(remaining, 0.01)):
                self.wake.clear()
                return
            if self.ring.stats().used >= full:
                return

    def _become_leader(self) -> None:
        with self.db_lock:
            self.leader = True
            self._open_db()
            self.ring.rewind()

    def _open_db(self) -> None:
        """Open the database and skip ring records it already holds (exactly once)."""
        self.db = open_database(self.cfg.db_path, synchronous=self.cfg.synchronous)
        row = self.db.execute(
            'SELECT committed_upto FROM "janus_ring_state" WHERE ring_id = ?', (self.ring_id,)
        ).fetchall()
        if row:
            stats = self.ring.stats()
            upto = row[0][0]
            if stats.tail < upto <= stats.head:
                # The last flusher committed these rows but died before it
                # released them from the ring: release them now, unread.
                self.ring.release(upto)
        self.ring.rewind()

    def _flush_once(self) -> int:
        with self.db_lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        """Commit one batch.  Returns rows committed, 0 if none ready, -1 on failure."""
        if self.db is None:
            if not self.leader:
                return 0
            try:
                self._open_db()
            except Exception as err:
                return self._failed(err)
        if self.decode_rows is not None:
            n, raw, upto = self.ring.read_raw(self.cfg.batch_size)
            rows = self.decode_rows(raw, n, decode_row) if n > 0 else []
        else:
            batch, upto = self.ring.read(self.cfg.batch_size)
            rows = [decode_row(payload) for _, payload in batch]
        if not rows:
            if upto != self.ring.stats().tail:  # only torn records were skipped
                self.ring.release(upto)
            return 0
        db = self.db
        assert db is not None
        try:
            self._commit(db, rows, upto, one_by_one=False)
        except _TRANSIENT as err:
            self.ring.rewind()
            return self._failed(err)
        except Exception:
            # SQLite refused a row (a constraint, a value out of range): store
            # the batch row by row, each refused row replaced by a record
            # saying why, so one bad record never blocks or loses the others.
            try:
                self._commit(db, rows, upto, one_by_one=True)
            except Exception as err:
                self.ring.rewind()
                return self._failed(err)
        # Counted before the release: flush() returns once the ring's tail
        # passes its target, and stats() read right after must include these.
        self.committed += len(rows)
        self.batches += 1
        self.ring.release(upto)
        self._last_commit = time.monotonic()
        self._batches_since_checkpoint += 1
        self._backoff = 0.0
        if self._batches_since_checkpoint >= 64:
            self._checkpoint()
        if self.pruner is not None:
            self._prune_step()
        return len(rows)

    def _commit(self, db: apsw.Connection, rows: list[tuple[Any, ...]], upto: int, *, one_by_one: bool) -> None:
        """Insert *rows*, index them and store the ring position, in one transaction."""
        with db:
            last = db.execute(f'SELECT max(id) FROM "{_schema.TABLE}"').fetchall()[0][0] or 0
            if not one_by_one:
                db.executemany(_INSERT, rows)
            else:
                for row in rows:
                    try:
                        with db:  # a savepoint: a refused row leaves nothing behind
                            db.execute(_INSERT, row)
                    except _TRANSIENT:
                        raise
                    except Exception as err:
                        db.execute(_INSERT, unstorable_row(row, err))
                        self.unstorable += 1
            db.execute(_INDEX, (last,))
            db.execute(_SAVE_POS, (self.ring_id, upto))

    def _failed(self, err: BaseException) -> int:
        self.retries += 1
        self._backoff = min(max(self._backoff * 2, 0.05), 5.0)
        self._report(f"cannot write to {self.cfg.db_path}: {type(err).__name__}: {err}")
        if not isinstance(err, apsw.BusyError) and self.db is not None:
            # Reopen on the next try: the file may have been replaced or fixed.
            with contextlib.suppress(Exception):
                self.db.close()
            self.db = None
        return -1

    def _idle(self) -> None:
        with self.db_lock:
            # Checkpoint once the application has been quiet for a while: a
            # checkpoint copies and syncs the whole WAL, which would compete
            # with a burst that is just starting.  Under steady load the
            # every-64-batches checkpoint in _flush_locked bounds the WAL.
            quiet = time.monotonic() - self._last_commit >= _CHECKPOINT_AFTER_IDLE
            if self._batches_since_checkpoint and quiet:
                self._checkpoint()
            if self.pruner is not None:
                self._prune_step()

    def _prune_step(self) -> None:
        if self.db is None:
            return
        try:
            self.pruner.maybe_prune(self.db)  # type: ignore[union-attr]
        except Exception as err:
            self._report(f"retention failed: {type(err).__name__}: {err}")

    def _checkpoint(self) -> None:
        if self.db is None:
            return
        self._batches_since_checkpoint = 0
        with contextlib.suppress(apsw.Error):
            self.db.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)

    def _report(self, message: str) -> None:
        """Note a problem in stats() and on stderr, at most once every 10 s."""
        self.last_error = message
        now = time.monotonic()
        if now - self._last_report >= 10.0:
            self._last_report = now
            with contextlib.suppress(Exception):
                print(f"janus_utils: {security.sanitize(message)}", file=sys.stderr)

    def warn_dropped(self) -> None:
        dropped = self.ring.stats().dropped
        if dropped >= self._drop_warned_at * 2 or dropped - self._drop_warned_at >= 10_000:
            self._drop_warned_at = max(dropped, 1)
            self._report(f"log ring full: {dropped} records dropped so far (on_full={self.cfg.on_full!r})")

    # -- fork --------------------------------------------------------------

    def before_fork(self) -> None:
        # No SQLite connection may cross fork(): close it with no batch in
        # flight; the parent reopens it on its next batch.
        self.db_lock.acquire()
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.close()
            self.db = None

    def after_fork_parent(self) -> None:
        self.db_lock.release()

    def after_fork_child(self) -> None:
        # The child shares the ring mapping but has no flusher thread, and the
        # lock it inherited is not its own (FileLock drops it at fork).
        self.db_lock = threading.Lock()
        self.leader = False
        self.lock = FileLock(self.lock_path)
        self.wake = threading.Event()
        self.committed = self.batches = self.retries = 0
        if not self.stopping:
            self._start_thread()
        self.console.after_fork_child()
