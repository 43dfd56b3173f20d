"""The flusher: one process per database drains the shared ring and commits batches of rows.

Every process that configured a database runs a ``Flusher``; they elect one
leader with a file lock beside the database.  The leader reads the ring in
batches, turns each payload into a row (``_record.decode_row``), and commits
the rows, their FTS5 index entries and the ring position in one transaction,
so a crash anywhere never loses or repeats a record.  It checkpoints the WAL
when it has grown (sooner on a disk running out of room) and when idle, and
runs retention after each batch.  The others wait for the lock, ready to take
over if the leader's process dies, or if it stops beating its heartbeat in
the ring (stopped, hung) for ``takeover_after`` seconds.

The election can fail (a deleted lock file; a stopped leader replaced, then
resumed), so it is not what keeps records exactly once.  The commit is:
inside its write transaction it checks that the stored ring position is not
past where its batch starts (a compare-and-set under SQLite's write lock),
and that the database file at ``db_path`` is still the one it has open.  A
flusher that fails the first check steps down; one that fails the second
lets go of the old file and continues into the file now at the path.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import itertools
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import apsw

from . import _resource, _ring, _rollup, _schema, _spill, _sqlite_guard, _termbits, _words, security
from ._console import Console
from ._record import decode_row, native_enabled, speedups, unstorable_row
from .error_handling._base import JanusError
from .error_handling.utils.errors import ConfigError, FileHandlerError, RingError, RingFormatError
from .file_handler import FileLock

if TYPE_CHECKING:
    from .logger import Config

__all__ = ["Flusher", "config_error", "open_database"]


def _insert_sql(columns: tuple[str, ...], rows: int = 1) -> str:
    """INSERT of *rows* rows of these columns into the logs table."""
    values = f"({', '.join('?' for _ in columns)})"
    # OR FAIL: a statement of many rows that may stop half way (NOT NULL)
    # would otherwise copy every page it changes into a statement journal,
    # a temporary file past 64 KiB (3 GB of writes per million rows).  A
    # failing statement rolls the whole transaction back (_commit), so what
    # it leaves behind is never committed.
    verb = "INSERT OR FAIL" if rows > 1 else "INSERT"
    return f'{verb} INTO "{_schema.TABLE}" ({", ".join(columns)}) VALUES ' + ", ".join([values] * rows)


_INSERT = _insert_sql(_schema.COLUMNS)
# Rows go in _ROWS_PER_INSERT to a statement: each execution of an INSERT
# opens a cursor on the table and on each of its indexes, and apsw looks the
# statement up again for every row of an executemany.  Counted by callgrind
# on 20,000 rows in 2,000-row transactions (insert and full-text fill): 51K
# instructions a row with one row to a statement, 35K with 20; 10 to 100
# measured alike.  The ids, the rows and a bad row's failure (the whole
# statement, so the batch goes row by row as before) are the one-row INSERT's.
_ROWS_PER_INSERT = 20
_INSERT_MANY = _insert_sql(_schema.COLUMNS, _ROWS_PER_INSERT)
# The same with each row's word signature (janus_utils._words) last, as
# _speedups.decode_rows (or sign_rows) appends it; without the extension rows
# go in without one (NULL, which every search passes).
_SIGNED = (*_schema.COLUMNS, _words.COLUMN)
_INSERT_SIGNED = _insert_sql(_SIGNED)
_INSERT_SIGNED_MANY = _insert_sql(_SIGNED, _ROWS_PER_INSERT)
_TEXT_AT = tuple(_schema.COLUMNS.index(column) for column in ("message", "fields", "exception"))
_WIDTH = len(_schema.COLUMNS)
# A row needs trigrams (_schema.WIDE_INDEX_SQL) only for a character past
# ASCII in one of these: a batch without one skips that statement, which
# reads every row of the batch back (3% of a commit's instructions).
_WIDE_AT = tuple(_schema.COLUMNS.index(column) for column in _schema.WIDE_COLUMNS)
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


# Errors configure() leaves to the flusher thread instead of raising: another
# program holds the database, or the disk is full for now.  Records wait in the
# ring meanwhile; a retry with backoff commits them once the cause is gone.
_WAIT_AT_START = (apsw.BusyError, apsw.LockedError, apsw.FullError, apsw.IOError)

# A file that cannot be made for these reasons can be once there is room.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
# ... and for these, not without the user's doing (a read-only mount, permissions).
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _errno_of(err: BaseException) -> int | None:
    """The errno behind *err*: its own, a RingError's, or that of what caused it."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen.errno
        code = getattr(seen, "details", {}).get("errno") if isinstance(seen, RingError) else None
        if code is not None:
            return int(code)
        seen = seen.__cause__
    return None


def config_error(db_path: str, err: BaseException, message: str | None = None) -> ConfigError:
    """What configure() raises for *err* (chain it ``from err``): a ConfigError saying the
    directory of *db_path* cannot be written, when that is why *err* happened; else one
    with *message* (default: *err*'s own, with its details).

    Unwritable is judged by *err*'s errno when it has one (a ring, lock or
    database file), else, for SQLite's "unable to open database file" (a -wal,
    -shm or -journal it could not create) and "attempt to write a readonly
    database", by whether the directory is writable now.
    """
    directory = os.path.dirname(db_path) or "."
    code = _errno_of(err)
    if (
        code is None
        and isinstance(err, (apsw.CantOpenError, apsw.ReadOnlyError))
        and not os.access(directory, os.W_OK, effective_ids=True)
    ):
        code = errno.EACCES
    if code not in _UNWRITABLE:
        if message is not None:
            return ConfigError(message)
        if isinstance(err, JanusError):
            return ConfigError(err.message, details=err.details)
        return ConfigError(f"{type(err).__name__}: {err}")
    with contextlib.suppress(OSError):
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            code = errno.EROFS
    return ConfigError(
        f"cannot write in {directory!r} ({os.strerror(code)}): configure() needs a directory it "
        "can write, to create the log database there with its -wal, -shm, -ring and "
        "-flusher.lock files; give a db_path in a writable directory (a database on read-only "
        "media can be read with LogStore or janus-logs, which write nothing)",
        details={"directory": directory, "errno": code},
    )

_CHECKPOINT_AFTER_IDLE = 1.0  # seconds without a commit before the WAL is checkpointed
# While idle, the full-text index is merged this many pages per step: every
# commit adds a segment, and a search's lookup of a given row seeks every term
# in every segment (230 µs with thirteen segments, 20 µs with one, on 2,000,000
# rows).  Kept off the ingest path, where FTS5's own automerge keeps segments
# in check.
_IDLE_MERGE_PAGES = 200
# One idle turn runs up to this many steps in one transaction: about as many
# pages as a commit under load may leave in the WAL (_CHECKPOINT_PAGES), which
# each turn's checkpoint then copies.  Every commit makes each reader drop its
# page cache (and its memory map of the file) at its next statement: a search
# led by a user's rows then reads them all again, 2-3x its warm time.  A
# transaction per step, with the WAL cut after each (also a change readers
# drop their cache for), was some twenty such resets a second for the whole
# merge after a burst (seconds at millions of rows).  A step is still the
# most a new record waits: the turn commits as soon as one is in the ring, or
# flush(), stop() or fork() asks for the flusher.
_IDLE_MERGE_STEPS = 20
# Once the index is merged, idle turns build the term bitmaps of the blocks
# below the rollup's mark (janus_utils._termbits), oldest first, each turn
# one transaction of up to this many seconds; a block (some tens of ms) is
# the most a new record waits.
_IDLE_BITS_SECONDS = 0.5
# A flusher that never has a quiet second (a server logging steadily) builds
# one block at most this often when it finds the ring empty: 16,000 ids a
# second keep up with such a server for some 2% of a core, and a burst
# leaves less behind for the quiet turns.
_BUSY_BITS_EVERY = 1.0
_MERGE = f'INSERT INTO "{_schema.FTS_TABLE}"("{_schema.FTS_TABLE}", "rank") VALUES (\'merge\', ?)'
# Under steady load, checkpoint once the WAL holds this many pages (16 MiB of
# 4 KiB pages: measured, SQLite's 1,000 cost a quarter or more of the commit
# rate in checkpoints and their syncs), and on a disk running out of room once
# it holds a quarter of the free space (but at least _CHECKPOINT_MIN_PAGES).
# The WAL can only be reused from its start after a checkpoint, and a
# checkpoint needs room in the database file for what the WAL holds: a WAL
# left to grow under load fills a small disk so that no checkpoint, and so no
# commit, can run again until more is freed than the WAL holds.
_CHECKPOINT_PAGES = 4000
_CHECKPOINT_MIN_PAGES = 64
# The writer's page cache, in KiB (SQLite's default is 2 MiB).  A batch
# inserts at the newest leaf of every index key it holds, so the pages it
# touches are spread over the indexes (2,000 rows from 5,000 users: some
# 1,700 leaves of the user index alone, 2,000 pages a commit): with 2 MiB
# each batch read most of them back from the file.  SQLite allocates the
# cache as pages are used: a small database never fills it.
_CACHE_KIB = 32768
_BUSY_WAIT = 5.0  # seconds one statement waits for a lock another program holds
_START_WAIT = 1.0  # at most this long in configure() for leftovers of a crashed run
_STOP_GRACE = 0.25  # how far past its timeout stop() waits for the thread to end
_LOCK_CHECK_EVERY = 1.0  # seconds between the leader's checks that its lock file is still there
# Longest a waiting flusher goes without beating its heartbeat (a fifth of
# takeover_after if that is less): the one time it takes the GIL while it
# waits for its next commit.
_BEAT_EVERY = 0.1
_TOUCH_EVERY = 3600.0  # seconds between touches of the lock and ring files (age-based tmp cleaners)
# A flusher that is behind (its batch_size chunk came back full) commits up to
# this many chunks in one transaction, at most _BACKLOG_BYTES of records (the
# memory the rows of one transaction take is a few times that).  At a million
# rows a 2,000-row commit writes some 2,000 pages to the WAL, an 8,000-row one
# 0.6 pages per row: the newest leaves a batch touches are shared by its rows.
# bench/scale.py to 3M rows, same session: ingest 1.4-1.7x with 8 (16: faster
# still but not steadier).
_BACKLOG_BATCHES = 8
_BACKLOG_BYTES = 8 << 20
# ...and only with this much free disk: a bigger transaction grows the WAL
# further before a checkpoint, which a nearly full disk may not have room for.
_BACKLOG_ROOM = 16 * _BACKLOG_BYTES
_SAVE_POS = 'INSERT OR REPLACE INTO "janus_ring_state"(ring_id, committed_upto) VALUES (?, ?)'


# Files SQLite opens beside the database by name: whoever controls one of
# them controls what the database reads (a -wal's frames, a hot -journal).
_COMPANIONS = ("-wal", "-shm", "-journal")


def _check_database_file(path: str) -> None:
    """Refuse a file at *path* another user could control; a missing file is fine.

    The same policy as the ring and the lock file: no symlink, a regular file,
    owned by this process's user.  The database may be readable by group or
    others if its owner chose so (it is created 0600), never writable by them.
    lstat only: opening and closing the file would drop the POSIX locks an
    apsw connection in this process may hold on it.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as err:
        raise ConfigError(f"cannot inspect {path!r} ({err.strerror}): check the directory's permissions") from err
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(
            f"{path!r} is a symlink: the log database and its -wal, -shm and -journal files "
            "must be real files, never followed (another user could point a link at a file "
            "of theirs, or at one of yours); use the real path, or remove the link"
        )
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path!r} is not a regular file: choose another db_path")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"{path!r} belongs to uid {info.st_uid}, not to this process (uid {os.geteuid()}): "
            "its owner could read and forge the log records; move it aside, or use a "
            "database in a directory only you can write"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{path!r} is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}): "
            "anyone could forge or destroy its log records; chmod 600 it if you trust "
            "what it holds, or move it aside"
        )


def open_database(path: str, *, synchronous: str = "NORMAL") -> apsw.Connection:
    """Open (creating 0600) and migrate the log database for writing.

    Refuses with ConfigError a database, -wal, -shm or -journal file that is a
    symlink, not a regular file, owned by another user or writable by group or
    others (see _check_database_file).
    """
    for suffix in ("", *_COMPANIONS):
        _check_database_file(path + suffix)
    try:
        # O_EXCL and O_NOFOLLOW: a file or link planted since the check is
        # refused, never opened.  SQLite gives the -wal and -shm files the
        # database file's mode.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        _check_database_file(path)
    else:
        os.fchmod(fd, 0o600)
        os.close(fd)
    flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_NOFOLLOW
    db = apsw.Connection(path, flags=flags)
    try:
        # Before any statement: a database another connection holds must be
        # waited for, not refused at once.
        db.setbusytimeout(int(_BUSY_WAIT * 1000))
        # Lets retention give pages back (incremental_vacuum).  It only takes
        # effect on a new, empty file, before WAL is switched on; on any other it
        # would wait for the write lock for nothing.
        if db.execute("PRAGMA page_count").fetchall()[0][0] == 0:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        _schema.apply_connection_settings(db, synchronous=synchronous)
        # Checkpoints are run by the flusher when idle, not by whichever commit
        # crosses 1,000 pages (that commit would stall).
        db.execute("PRAGMA wal_autocheckpoint=0")
        _writer_settings(db)
        _schema.ensure_schema(db)
        # SQLite created the -wal and -shm files by name: check what it got.
        for suffix in ("", "-wal", "-shm"):
            _check_database_file(path + suffix)
    except BaseException:
        db.close()
        raise
    return db


def _writer_settings(db: apsw.Connection) -> None:
    """The writer's page cache, and a WAL file cut back to the checkpoint size when it restarts.

    A WAL that grew past _CHECKPOINT_PAGES (a reader kept the checkpoint
    from finishing) would otherwise keep its largest size on disk for good.
    """
    db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
    page_size = db.execute("PRAGMA page_size").fetchall()[0][0]
    db.execute(f"PRAGMA journal_size_limit={_CHECKPOINT_PAGES * page_size}")


_rings: dict[str, _ring.Ring] = {}
_ring_files: dict[str, tuple[int, int]] = {}  # path: (device, inode) of the file _rings maps
_retired: list[_ring.Ring] = []  # rings whose file left the path: still mapped (see open_ring)


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def open_ring(path: str, cfg: Config) -> _ring.Ring:
    """The process's one handle on the ring at *path*, opened on first use.

    A ring stays mapped until the process exits: a log call that started
    before shutdown() or a new configure() may still be pushing through it,
    and unmapping it then would crash the process.  A late record lands in
    the shared file and is committed by the next flusher.  If the file at
    *path* is no longer the one mapped (deleted, or replaced with its
    database), the file now there is opened: the other processes of the
    database, a flusher process among them, read that one.
    """
    ring = _rings.get(path)
    spill = cfg.on_full == "block" and cfg.block_timeout is not None and cfg.spill_max_bytes > 0
    if ring is not None and _file_id(path) != _ring_files.get(path):
        _retired.append(ring)
        ring = None
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
        found = _file_id(path)
        if found is not None:
            _ring_files[path] = found
    ring.set_policy("spill" if spill else cfg.on_full, cfg.block_timeout)
    return ring


class _Fenced(Exception):
    """Another flusher has committed records of this batch: this one must not."""

    def __init__(self, upto: int) -> None:
        super().__init__(upto)
        self.upto = upto


class _Detached(Exception):
    """The database file at db_path is not the one the connection has open."""


def _insert_rows(db: apsw.Connection, rows: list[tuple[Any, ...]], signed: bool = False) -> None:
    """``executemany(_INSERT, rows)``, _ROWS_PER_INSERT rows to a statement;
    *signed*: each row ends with its word signature (_INSERT_SIGNED)."""
    width = len(_SIGNED if signed else _schema.COLUMNS)
    whole = len(rows) - len(rows) % _ROWS_PER_INSERT
    # Every row must have the columns: flattened, a short row would shift
    # the values of the next ones instead of being refused.
    flat = speedups.flat_rows(rows, _ROWS_PER_INSERT, width) if whole and native_enabled() else None
    if flat is not None:  # the same values, gathered in C (untracked: no collection walks them)
        db.executemany(_INSERT_SIGNED_MANY if signed else _INSERT_MANY, flat)
        rows = rows[whole:]
    elif whole and set(map(len, rows)) == {width}:
        # One statement's values at a time: a list of them all would be
        # traversed by every garbage collection while it is built.
        chain, n = itertools.chain.from_iterable, _ROWS_PER_INSERT
        many = _INSERT_SIGNED_MANY if signed else _INSERT_MANY
        db.executemany(many, (tuple(chain(rows[i : i + n])) for i in range(0, whole, n)))
        rows = rows[whole:]
    db.executemany(_INSERT_SIGNED if signed else _INSERT, rows)


@contextlib.contextmanager
def _write_transaction(db: apsw.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT: what the transaction reads first is read under the write lock."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(apsw.Error):
                db.execute("ROLLBACK")
        raise


class Flusher:
    """The ring, the flusher thread, the console and the counters of one configured process."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        directory = os.path.dirname(cfg.db_path)
        if not os.path.isdir(directory):
            raise ConfigError(
                f"the directory of db_path does not exist: {directory!r}; create it first"
            )
        # Python's sqlite3 on this database would corrupt it (see _sqlite_guard).
        _sqlite_guard.protect(cfg.db_path)
        self.ring_path = cfg.db_path + "-ring"
        self.lock_path = cfg.db_path + "-flusher.lock"
        # What is wrong now (None once it is resolved), and what went wrong before.
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # time.time() of the latest problem
        self.errors = 0
        self.recent_errors: collections.deque[tuple[float, str]] = collections.deque(maxlen=10)
        self._problem = ""  # what clears last_error: "write", "retention" or "event"
        try:
            self.ring = open_ring(self.ring_path, cfg)
        except RingError as err:
            if err.details.get("errno") in NO_ROOM:
                raise  # configure() waits for room (logger._Pending)
            # What configure() promises: a ConfigError for what waiting cannot fix.
            raise config_error(cfg.db_path, err) from err
        self.decode_rows = speedups.decode_rows if native_enabled() else None
        self.any_non_ascii = speedups.any_non_ascii if native_enabled() else None
        self.sign_rows = getattr(speedups, "sign_rows", None) if native_enabled() else None
        if self.ring.stats().capacity != cfg.ring_size:
            self._report(
                f"ring {self.ring_path} exists with {self.ring.stats().capacity} bytes, not "
                f"ring_size={cfg.ring_size}; using it as it is (remove it while no process "
                "uses it to resize)",
                echo=False,
            )
        self.ring_id = f"{self.ring.stats().ring_id:016x}"
        # Where log calls put records that waited block_timeout for room (_spill).
        self.spill = (
            _spill.SpillWriter(cfg.db_path, cfg.spill_max_bytes, cfg.spill_reserve_bytes)
            if self.ring.policy == "spill"
            else None
        )
        self.console = Console.for_config(cfg, report=self._report)
        self.lock = FileLock(self.lock_path)
        self.resources = _resource.Resources(cfg.service, cfg.host)
        self.db: apsw.Connection | None = None
        self.db_lock = threading.Lock()  # held around each batch and across fork
        self.leader = False
        self._new_token()
        self._impossible_upto: int | None = None  # see _open_db
        # (device, inode) of the database, -wal and -shm the connection uses
        self._db_files: tuple[tuple[int, int] | None, ...] = ()
        self.wake = self._new_wake()
        # A flusher process's status writer (_flusher_process.serve), for the
        # flush() that woke this thread through the ring: called before the
        # release of each commit that follows, with the position released, and
        # with None once caught up if there was nothing to commit.  Nobody
        # flushing, it is never called.
        self.on_status: Callable[[int | None], None] | None = None
        self._status_due = False
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
        self._merge_due = False  # commits since the index was last found merged
        self._bits_due = True  # blocks may lack their term bitmaps (at start: a migrated database)
        self._bits_at = 0.0  # when the last bitmap turn ended
        self._filling = _termbits.Filling(_TEXT_AT)  # the block being filled, built as its last batch commits
        self._wal_pages = 0  # pages in the WAL after the last commit (the WAL hook)
        self._page_size = 4096
        self._checkpoint_at = _CHECKPOINT_PAGES
        self._disk_full = False  # the last write failed with SQLITE_FULL
        self._deadline: float | None = None  # lock waits end here (stop() and configure())
        self._busy_since = 0.0
        self._exit_lock = threading.Lock()
        self._thread_done = False
        self._orphaned = False  # stop() gave up waiting: the thread closes up itself
        self._stopped_as_leader = False
        self._last_commit = 0.0
        self._drop_warned_at = 0
        self.sealer = None
        if cfg.seal_key_file is not None:
            from .seal import Sealer

            # Off by default; on, every batch is sealed in its own transaction.
            self.sealer = Sealer(cfg.seal_key_file, cfg.db_path, report=self._report)
        self.pruner = None
        self._prune_limited = False  # a retention row or size limit: see _read_rows
        if cfg.retention is not None:
            from .retention import AutoPruner

            # Consulted after every batch and when idle.  Each call removes
            # at most what the batches since its last call added plus one
            # batch's worth, so it keeps pace with the flusher while no
            # commit waits long behind it.  With a row or size limit it looks
            # after every batch: the table then stays within max_rows plus
            # the rows of one batch.
            limited = cfg.retention.max_rows is not None or cfg.retention.max_bytes is not None
            self._prune_limited = limited
            self.pruner = AutoPruner(
                cfg.retention,
                archive_dir=cfg.archive_dir,
                every_n_batches=1 if limited else 50,
                chunk_rows=max(cfg.batch_size, 1000),
                report=self._report,
            )

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        # Leftovers of a crashed run are committed before configure() returns
        # when this process can become the flusher at once.
        if self._lock_at_start():
            try:
                try:
                    self._become_leader()
                except (*_WAIT_AT_START, OSError) as err:
                    if isinstance(err, OSError) and err.errno not in NO_ROOM:
                        raise
                    # Nothing the caller could change (a database file not
                    # even created on a full disk): stay the flusher and
                    # let the thread retry; the records wait in the ring.
                    self._failed(err)
                else:
                    with self.db_lock:
                        self._drain_to(self.ring.stats().head, time.monotonic() + _START_WAIT)
            except _ring.Superseded:
                # A flusher that lost its lock file (or was replaced) is still
                # releasing records: follow it; this thread takes over if due.
                self._step_down()
            except Exception as err:
                # Never hold the election lock without a flusher thread: other
                # processes would wait for us for ever.
                self.leader = False
                if self.db is not None:
                    with contextlib.suppress(Exception):
                        self.db.close()
                    self.db = None
                self.lock.release()
                raise config_error(
                    self.cfg.db_path, err, f"cannot use {self.cfg.db_path} as a log database: {type(err).__name__}: {err}"
                ) from err
        self._start_thread()
        self.console.start()

    def _lock_at_start(self) -> bool:
        """Take the election lock if it is free; ConfigError if its file cannot be made.

        On a full disk (no inode for the file) this process is not the
        flusher for now: the thread tries again, as for a full database.
        """
        try:
            return self.lock.acquire(blocking=False)
        except FileHandlerError as err:
            if _errno_of(err) in NO_ROOM:
                self._failed(err)
                return False
            raise config_error(self.cfg.db_path, err) from err

    def _drain_to(self, target: int, deadline: float | None = None) -> None:
        """Commit batches until everything before ring position *target* is stored.

        Bounded by *target*, so a steady stream of new records cannot keep
        configure() or shutdown() running, and by *deadline* (a monotonic
        time, which also ends lock waits): what is left stays in the ring.
        """
        self._deadline = deadline
        try:
            while self.ring.stats().tail < target:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                if not self.ring.beat(self.token) or self._flush_locked() <= 0:
                    return
            # Then what log calls spilled while the ring was full.
            while deadline is None or time.monotonic() < deadline:
                if not self.leader or self._flush_spill_locked(max_batches=1) <= 0:
                    return
        finally:
            self._deadline = None

    def _start_thread(self) -> None:
        self.thread = threading.Thread(target=self._run, name="janus-flusher", daemon=True)
        self.thread.start()

    def stop(self, timeout: float | None = 10.0, *, target: int | None = None) -> int:
        """Stop the thread and commit what was logged before ring position *target*.

        *target* defaults to the ring's head now: records pushed later (by
        threads still logging) never lengthen the wait.  Everything, lock
        waits included, ends within *timeout* seconds; what is not committed
        by then stays in the ring, where the next flusher of the database
        commits it.  Returns the bytes of records before *target* left there.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if target is None:
            target = self.ring.stats().head
        self._deadline = deadline  # a commit waiting for a lock gives up at the deadline
        self.stopping = True
        self.wake.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            # A little past the deadline: a commit that gave up on a lock at
            # the deadline needs a moment to return.
            self.thread.join(None if deadline is None else _remaining(deadline) + _STOP_GRACE)
        self.console.stop(_remaining(deadline))
        with self._exit_lock:
            # Past the deadline the thread may still be in a commit: it then
            # closes the database and gives up the lock itself when it ends.
            self._orphaned = self.thread is not None and not self._thread_done
        if not self._orphaned:
            with self.db_lock:
                if self.leader:
                    with contextlib.suppress(Exception):
                        self._drain_to(target, deadline)
                    self._checkpoint()
                    self._stopped_as_leader = True
                self._close_locked()
        # The ring stays mapped (see _open_ring).
        return max(target - self.ring.stats().tail, 0)

    def _new_wake(self) -> threading.Event:
        """The flusher thread's wake-up call, which also wakes the ring's consumer."""
        return _Wake(self.ring)

    def wait_stats(self, target: int, deadline: float | None) -> None:
        """Wait until stats() counts every commit up to ring position *target*.

        Here nothing to wait for: this process's counters go up before the
        ring is released (see _commit).  A flusher process's are another story
        (RemoteFlusher).
        """

    def set_deadline(self, deadline: float | None) -> None:
        """From now on, a commit waiting for a lock gives up at *deadline* (monotonic)."""
        self._deadline = deadline

    def _close_locked(self) -> None:
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.close()
            self.db = None
        if self.leader:
            self.ring.claim(0, expected=self.token)  # resign: nobody waits for our beat
            if self.lock.locked:  # a leader that took over may not hold it
                self.lock.release()
            self.leader = False

    def records_left(self, target: int) -> int | None:
        """How many records before *target* stop() left in the ring.

        Counted by reading them (nothing is released), which only the process
        that was the flusher may do: elsewhere None.
        """
        if not self._stopped_as_leader:
            return None
        count = 0
        with self.db_lock, contextlib.suppress(Exception):
            self.ring.rewind()
            while self.ring.stats().read_pos < target:
                batch, _ = self.ring.read(self.cfg.batch_size)
                if not batch:
                    break
                count += sum(1 for seq, _ in batch if seq < target)
            self.ring.rewind()
        return count

    # -- the flusher thread ------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            with self._exit_lock:
                self._thread_done = True
                orphaned = self._orphaned
            if orphaned:  # stop() could not wait for this thread's last commit
                with self.db_lock:
                    self._close_locked()

    def _loop(self) -> None:
        cfg = self.cfg
        while not self.stopping:
            try:
                if not self.leader:
                    if not self._elect():
                        self.wake.wait(cfg.election_interval)
                        self.wake.clear()
                        continue
                if not self._still_leader():
                    continue
                n = self._flush_once()
                if self._status_due and n < cfg.batch_size:
                    # Caught up after a flush() woke this thread: a commit said
                    # so before its release; else the status is said now.
                    self._status_due = False
                    if n <= 0:
                        self._say_status(None)
                if n < 0:  # a failed write: back off, the records stay in the ring
                    self._sleep(self._backoff)
                elif n < cfg.batch_size:  # caught up: spill files, then let the next batch gather
                    with self.db_lock:
                        spilled = self._flush_spill_locked() if self.leader else 0
                    if n == 0 and spilled == 0:
                        self._idle()
                    if spilled < 0:
                        self._sleep(self._backoff)
                    elif spilled == 0:
                        self._gather(read_nothing=n == 0)
            except _ring.Superseded as err:
                self._step_down(f"another process flushes {cfg.db_path} now ({err}); this one stepped down")
            except Exception as err:  # the flusher must outlive any single failure
                self._report(f"flusher error: {type(err).__name__}: {err}")
                time.sleep(0.1)

    def _say_status(self, released: int | None) -> None:
        if self.on_status is not None:
            with contextlib.suppress(Exception):  # never a reason to keep records in the ring
                self.on_status(released)

    def _sleep(self, seconds: float) -> None:
        """Sleep through a backoff; only stopping cuts it short (not flush())."""
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            if not self.ring.beat(self.token):
                break  # another process took over: _still_leader steps down
            time.sleep(min(0.05, max(end - time.monotonic(), 0)))
        self.wake.clear()

    def _gather(self, read_nothing: bool = False) -> None:
        """Wait until the next commit is due: commit_interval passed, the ring a
        quarter full, or flush()/shutdown() asked.

        After a turn that read nothing from a ring already a quarter full (the
        oldest record is still being written, by a producer stopped or killed
        mid-push), the fill cannot say a commit is due: only time or a wake
        ends the wait, or the flusher would loop on the same record.

        Committing on size or time, rather than chasing every record, makes
        bigger transactions (cheaper per row, fewer FTS segments) and keeps the
        flusher from taking the GIL from the application at every log call.
        The wait itself is the ring's, without the GIL: the thread takes it
        only to beat its heartbeat (every _BEAT_EVERY s) and when the commit
        is due, not every few milliseconds to look at the ring.
        """
        deadline = time.monotonic() + self.cfg.commit_interval
        stats = self.ring.stats()
        full = stats.capacity // 4
        if read_nothing and stats.head - stats.tail >= full:
            full = stats.capacity + 1  # more than the ring can hold: never "filled"
        beat_every = min(_BEAT_EVERY, self.cfg.takeover_after / 5)
        while not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            waited = self.ring.wait_consumer(full, min(remaining, beat_every))
            if waited == _ring.WAIT_WOKEN or self.wake.is_set():
                self.wake.clear()
                if waited == _ring.WAIT_WOKEN and self.on_status is not None:
                    self._status_due = True
                return
            if not self.ring.beat(self.token):
                return  # another process took over: _still_leader steps down
            if waited == _ring.WAIT_FILLED:
                return

    # -- the election ------------------------------------------------------
    #
    # The lock file elects the flusher; the ring's token and heartbeat let
    # the others see that it stopped.  Neither is trusted for exactly-once:
    # that is _fence's job, inside each commit.

    def _new_token(self) -> None:
        """A random id for this process's flusher, as the ring records its leader."""
        self.token = int.from_bytes(os.urandom(8), "little") | 1
        self._seen = (0, 0)  # the ring's (leader, beat) when last looked at
        self._seen_at = time.monotonic()
        self._lock_checked_at = 0.0
        self._touched_at = 0.0

    def _elect(self) -> bool:
        """Become the flusher: the lock is free, or the elected one stopped beating."""
        if self.lock.acquire(blocking=False):
            self._become_leader()
            return True
        stalled = self._stalled_leader()
        if stalled and self.ring.claim(self.token, expected=stalled):
            # Said at once, and so is the first problem after it (the new
            # flusher's first commit may fail as the old one's did), outside
            # the 10 s limit: a takeover waits takeover_after for a stalled
            # leader, so this adds at most two lines per takeover.
            self._last_report = 0.0
            self._report(
                f"the flusher of {self.cfg.db_path} has not run for {self.cfg.takeover_after:g} s "
                f"(its process stopped or hung): process {os.getpid()} took over"
            )
            self._last_report = 0.0
            self._become_leader(claimed=True)
            return True
        return False

    def _stalled_leader(self) -> int:
        """The token of a leader whose heartbeat has not moved for takeover_after s, else 0.

        Measured on this process's monotonic clock between its own looks at
        the counter, so no clock is shared between processes.  A ring with
        no leader token (none yet, one resigned, or an older version that
        does not beat) is left to the lock file alone.
        """
        stats = self.ring.stats()
        now = time.monotonic()
        seen = (stats.leader, stats.beat)
        if seen != self._seen:
            self._seen, self._seen_at = seen, now
            return 0
        if stats.leader and now - self._seen_at >= self.cfg.takeover_after:
            return stats.leader
        return 0

    def _become_leader(self, *, claimed: bool = False) -> None:
        with self.db_lock:
            if not claimed:
                # The lock file's holder outranks a leader that took over
                # without it: that one sees its beat refused and steps down.
                while True:
                    current = self.ring.stats().leader
                    if current == self.token or self.ring.claim(self.token, expected=current):
                        break
            self.leader = True
            self._lock_checked_at = time.monotonic()
            self._open_db()
            self.ring.rewind()

    def _still_leader(self) -> bool:
        """Beat the heartbeat and keep the lock file; False after stepping down."""
        if not self.ring.beat(self.token):
            self._step_down(
                f"another process took over as the flusher of {self.cfg.db_path} (this one was "
                "stopped or hung, or its lock file was deleted); this one stepped down"
            )
            return False
        now = time.monotonic()
        if now - self._lock_checked_at >= _LOCK_CHECK_EVERY:
            self._lock_checked_at = now
            self._keep_lock(now)
        return self.leader

    def _keep_lock(self, now: float) -> None:
        """Hold the lock file that is at the path now; touch it once in a while.

        A deleted or replaced lock file lets another process lock the new
        file and become a second flusher.  Its commits and ours are fenced,
        so nothing is stored twice, but two flushers waste each other's
        batches: re-lock the file at the path, or step down to whoever did.
        A leader that took over without the lock (its stopped holder still
        has it) takes it once it is free.
        """
        lost = False
        if self.lock.locked and not self.lock.is_at_path():
            self._report(
                f"the flusher lock file {self.lock_path} was deleted or replaced; locking the "
                "file now at that path"
            )
            self.lock.release()
            lost = True
        if not self.lock.locked and not self.lock.acquire(blocking=False):
            # Another process holds the file at the path.  A leader that had
            # the lock steps down to it; one that took over from a stopped
            # holder keeps going until the holder resumes (and steps down).
            if lost:
                self._step_down(f"another process locked {self.lock_path}; this one stepped down")
            return
        if now - self._touched_at >= _TOUCH_EVERY:
            self._touched_at = now
            self.lock.touch()
            with contextlib.suppress(OSError):
                os.utime(self.ring_path, follow_symlinks=False)

    def _step_down(self, reason: str | None = None) -> None:
        with self.db_lock:
            self._step_down_locked(reason)

    def _step_down_locked(self, reason: str | None) -> None:
        """Stop being the flusher: keep nothing, commit nothing more, release the lock."""
        self.leader = False
        self.ring.rewind()
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.close()
            self.db = None
        self.ring.claim(0, expected=self.token)
        if self.lock.locked:
            self.lock.release()
        self._seen_at = time.monotonic()  # give the new leader a full delay
        if reason:
            self._report(reason)

    def _open_db(self) -> None:
        """Open the database and skip ring records it already holds (exactly once)."""
        self.db = open_database(self.cfg.db_path, synchronous=self.cfg.synchronous)
        self.resources.load(self.db)
        self._watch(self.db)
        self._db_files = self._file_ids()
        row = self.db.execute(
            'SELECT committed_upto FROM "janus_ring_state" WHERE ring_id = ?', (self.ring_id,)
        ).fetchall()
        self._impossible_upto = None
        if row:
            stats = self.ring.stats()
            upto = row[0][0]
            if stats.tail < upto <= stats.head:
                # The last flusher committed these rows but died before it
                # released them from the ring: release them now, unread.
                self.ring.release(upto)
            elif upto > stats.head:
                # No flusher can have stored records this ring never held:
                # the row is not this ring's doing (a database copied from
                # elsewhere).  Overwritten by the next commit.
                self._impossible_upto = upto
                self._report(
                    f"{self.cfg.db_path} says records of ring {self.ring_id} up to {upto} are "
                    f"stored, past the ring's head ({stats.head}); ignoring it"
                )
        self.ring.rewind()

    def _flush_once(self) -> int:
        with self.db_lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        """Commit one batch.  Returns rows committed, 0 if none ready, -1 on failure.

        Raises _ring.Superseded when another flusher consumes the ring.
        """
        if self.db is None:
            if not self.leader:
                return 0
            try:
                self._open_db()
            except _ring.Superseded:
                raise
            except Exception as err:
                return self._failed(err)
        if self._disk_full and not self._make_room():
            return -1  # still full: the records wait in the ring
        start = self.ring.stats().read_pos  # where this batch starts: see _fence
        try:
            rows, upto = self._read_rows()
            rows = self.resources.label(rows)
        except BaseException:
            # The batch was read but will not be committed: read it again
            # next time, or the release after the next batch would drop it.
            self.ring.rewind()
            raise
        if not rows and not self.resources.pending:  # an announcement alone is still stored
            if upto != self.ring.stats().tail:  # only torn records were skipped
                self.ring.release(upto)
            return 0
        db = self.db
        assert db is not None
        try:
            self._store(db, rows, start, upto)
        except _Fenced as err:
            self._step_down_locked(
                f"another process has stored records of this ring up to {err.upto}, past this "
                f"flusher's batch (from {start}): it took over; this one stepped down without "
                "committing"
            )
            return 0
        except _Detached as err:
            self._detach_locked(str(err))
            return 0
        except Exception as err:
            self.ring.rewind()
            if not self.ring.beat(self.token):
                # Taken over while this commit waited (it was stopped, or
                # hung): the failure is the new flusher's lock, not news.
                self._step_down_locked(
                    f"another process took over as the flusher of {self.cfg.db_path}; this one "
                    "stepped down without committing"
                )
                return 0
            return self._failed(err)
        changed = self._file_changed()
        if changed:
            # The file was replaced while the transaction ran: the batch may
            # be in the old file only.  Keep it in the ring; it goes into the
            # new file too (never into neither).
            self._detach_locked(changed)
            return 0
        # Counted before the release: flush() returns once the ring's tail
        # passes its target, and stats() read right after must include these
        # (and must not show the problem this commit resolved).
        self.committed += len(rows)
        self.batches += 1
        self._backoff = 0.0
        self._disk_full = False
        if self._problem in ("write", "event"):
            self.last_error = None  # a commit went through: nothing is wrong now
        if self._status_due:
            self._say_status(upto)  # before the release that ends the flush() waiting for it
        self.ring.release(upto)
        self._last_commit = time.monotonic()
        self._batches_since_checkpoint += 1
        self._merge_due = True
        self._bits_due = True
        if self._checkpoint_due():
            self._checkpoint()
        if self.pruner is not None:
            self._prune_step()
        return len(rows) or 1  # 1: an announcement alone was committed; more may follow

    def _read_rows(self) -> tuple[list[tuple[Any, ...]], int]:
        """The rows of the next transaction, and the ring position after them.

        One chunk of ``batch_size`` records while the flusher keeps up.  When
        a chunk comes back full, the ring holds a backlog: more chunks join
        the same transaction, up to _BACKLOG_BATCHES chunks or _BACKLOG_BYTES
        bytes of records.  A commit's cost is mostly the index pages it
        touches (the newest leaf of each user, logger, level and host in the
        batch), which grows much more slowly than the rows, so bigger
        transactions keep the rate up exactly when the flusher is behind.  Not on
        a disk with less than _BACKLOG_ROOM free, nor while
        stop() or configure() drain to a deadline (one batch at a time keeps
        to it), nor under a retention row or size limit (the table holds at
        most one batch over it).

        With the extension the rows come labelled and signed (each ends with
        service, host and its word signature, as _commit inserts it): each
        row is one tuple built once, not one per step.
        """
        size = self.cfg.batch_size
        chunks = _BACKLOG_BATCHES if self._deadline is None and not self._prune_limited else 1
        rows: list[tuple[Any, ...]] = []
        nbytes = 0
        for _ in range(chunks):
            if self.decode_rows is not None:
                n, raw, upto = self.ring.read_raw(size)
                if n > 0:
                    labels = self.resources
                    rows.extend(self.decode_rows(raw, n, decode_row, labels.by_pid, labels.own, _TEXT_AT))
                nbytes += len(raw)
            else:
                batch, upto = self.ring.read(size)
                n = len(batch)
                rows.extend(decode_row(payload) for _, payload in batch)
                nbytes += sum(len(payload) for _, payload in batch)
            if n < size or nbytes >= _BACKLOG_BYTES:
                break
            if chunks > 1 and len(rows) == n and not self._room_for_backlog():
                break  # the first chunk came back full, but the disk is nearly full
        return rows, upto

    def _room_for_backlog(self) -> bool:
        if self._disk_full:
            return False
        try:
            fs = os.statvfs(os.path.dirname(self.cfg.db_path) or ".")
        except OSError:
            return False
        return fs.f_bavail * fs.f_frsize >= _BACKLOG_ROOM

    def _store(
        self, db: apsw.Connection, rows: list[tuple[Any, ...]], start: int, upto: int, key: str | None = None
    ) -> None:
        """Commit the batch; if SQLite refuses a row, commit it row by row.

        *key* names the position stored with it: the ring's (None) or a spill file's.
        """
        try:
            self._commit(db, rows, start, upto, key, one_by_one=False)
        except (_Fenced, _Detached, *_TRANSIENT):
            raise
        except Exception:
            # SQLite refused a row (a constraint, a value out of range): store
            # the batch row by row, each refused row replaced by a record
            # saying why, so one bad record never blocks or loses the others.
            self._commit(db, rows, start, upto, key, one_by_one=True)

    def _commit(
        self,
        db: apsw.Connection,
        rows: list[tuple[Any, ...]],
        start: int,
        upto: int,
        key: str | None,
        *,
        one_by_one: bool,
    ) -> None:
        """Insert *rows*, index them and store the position, in one transaction.

        Rows as wide as _SIGNED end with their word signature already (the
        ring's, from decode_rows); others get it here (with the extension),
        or go in without one.
        """
        key = key or self.ring_id
        with _write_transaction(db):
            self._fence(db, start, key)
            last = db.execute(f'SELECT max(id) FROM "{_schema.TABLE}"').fetchall()[0][0] or 0
            stored, signed = rows, bool(rows) and len(rows[0]) == len(_SIGNED)
            if not signed and self.sign_rows is not None:
                with contextlib.suppress(TypeError, ValueError):  # a row it cannot read: stored without
                    stored, signed = self.sign_rows(rows, _TEXT_AT), True
            if not one_by_one:
                _insert_rows(db, stored, signed)
            else:
                for row in stored:
                    try:
                        with db:  # a savepoint: a refused row leaves nothing behind
                            db.execute(_INSERT_SIGNED if signed else _INSERT, row)
                    except _TRANSIENT:
                        raise
                    except Exception as err:
                        db.execute(_INSERT, unstorable_row(row[:_WIDTH], err))  # without its signature
                        self.unstorable += 1
            # The batch's last id, before the index inserts below move
            # last_insert_rowid (the wide index inserts only some rows).
            upto_id = db.last_insert_rowid()
            db.execute(_INDEX, (last,))
            if one_by_one or self.any_non_ascii is None or self.any_non_ascii(rows, _WIDE_AT):
                db.execute(_schema.WIDE_INDEX_SQL, (last,))  # CJK and emoji rows, also by trigrams
            _rollup.advance_batch(db, rows, last + 1, upto_id)
            self._fill_blocks(db, rows, last + 1, upto_id, one_by_one)
            self.resources.save(db)
            db.execute(_SAVE_POS, (key, upto))
            sealed = self.sealer.seal(db, last, None if one_by_one else rows) if self.sealer is not None else None
        if sealed is not None:
            self.sealer.publish(sealed)  # type: ignore[union-attr]

    def _fence(self, db: apsw.Connection, start: int, key: str) -> None:
        """Under the write lock: commit only into the file at db_path, and only new records.

        The stored position says which records of this ring some flusher has
        committed.  If it is past *start*, another flusher (one that took
        over, or a second one after the lock file was deleted) stored some
        of this batch: committing would store them twice.  A position behind
        *start* is fine: those records were skipped as torn, or went into a
        database file that has since been replaced.
        """
        changed = self._file_changed()
        if changed:
            raise _Detached(changed)
        row = db.execute('SELECT committed_upto FROM "janus_ring_state" WHERE ring_id = ?', (key,)).fetchall()
        if row and row[0][0] > start and (key != self.ring_id or row[0][0] != self._impossible_upto):
            raise _Fenced(row[0][0])

    # -- the database file's identity --------------------------------------
    #
    # SQLite finds the -wal and -shm by name, next to whatever file is at the
    # path now, while an open connection keeps the file it opened.  So after
    # a delete or a `mv backup.db app.db` the connection would write into a
    # file nobody sees, and the old file's WAL would be read as the new
    # file's (a malformed database).

    def _file_ids(self) -> tuple[tuple[int, int] | None, ...]:
        """(device, inode) of the database, -wal and -shm at the path (None: missing)."""
        ids: list[tuple[int, int] | None] = []
        for suffix in ("", "-wal", "-shm"):
            try:
                info = os.stat(self.cfg.db_path + suffix, follow_symlinks=False)
            except OSError:
                ids.append(None)
            else:
                ids.append((info.st_dev, info.st_ino))
        return tuple(ids)

    def _file_changed(self) -> str | None:
        """What is no longer the file the connection uses, or None.  Three stat calls."""
        now = self._file_ids()
        if now == self._db_files:
            return None
        for suffix, was, there in zip(("", "-wal", "-shm"), self._db_files, now):
            if was != there:
                what = "deleted" if there is None else "replaced"
                return f"the log database file {self.cfg.db_path + suffix} was {what} while open"
        return None  # pragma: no cover - the tuples differ somewhere

    def _detach_locked(self, reason: str) -> None:
        """Let go of a database file that is no longer at the path; the next batch opens the one there.

        First the old file's -wal and -shm leave the path (if they still are
        the ones this connection uses), so the file now at the path, or the
        one created there next, never reads the old file's frames.  Then the
        old WAL is checkpointed into the old file (whoever kept it, by a hard
        link or an open descriptor, finds every record committed to it) and
        the connection is closed without deleting anything at the path.
        """
        db, self.db = self.db, None
        self.ring.rewind()
        for suffix, was in zip(("-wal", "-shm"), self._db_files[1:]):
            path = self.cfg.db_path + suffix
            try:
                info = os.stat(path, follow_symlinks=False)
                if was is not None and (info.st_dev, info.st_ino) == was:
                    os.unlink(path)
            except OSError:
                pass
        if db is not None:
            persist = ctypes.c_int(1)
            with contextlib.suppress(Exception):
                db.file_control("main", apsw.SQLITE_FCNTL_PERSIST_WAL, ctypes.addressof(persist))
                db.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
            with contextlib.suppress(Exception):
                db.close()
        self._report(
            f"{reason}: records committed from now on go to the file at {self.cfg.db_path} "
            "(created afresh if none is there)"
        )

    def _failed(self, err: BaseException) -> int:
        self.retries += 1
        self._backoff = min(max(self._backoff * 2, 0.05), 5.0)
        why = _write_lock_holder(self.cfg.db_path, running=True) if isinstance(err, apsw.BusyError) else ""
        self._report(f"cannot write to {self.cfg.db_path}: {type(err).__name__}: {err}{why}", kind="write")
        if isinstance(err, apsw.FullError):
            # Keep the connection: closing it would checkpoint into the full
            # disk.  The next try checkpoints first (see _make_room).
            self._disk_full = True
            return -1
        if not isinstance(err, apsw.BusyError) and self.db is not None:
            # Reopen on the next try: the file may have been replaced or fixed.
            with contextlib.suppress(Exception):
                self.db.close()
            self.db = None
        return -1

    # -- spill files (_spill) ------------------------------------------------

    def _flush_spill_locked(self, max_batches: int = 16) -> int:
        """Commit records that log calls spilled while the ring was full.

        Called when the ring is caught up.  Returns rows committed (0: none
        waiting), -1 on failure.  A file committed to its end, whose writer
        has closed it, is deleted; its stored position stays (names are never
        reused), so a late second flusher is fenced rather than repeating it.
        """
        names = _spill.spill_files(self.cfg.db_path)
        if not names or self.db is None:
            return 0
        db = self.db
        directory = _spill.spill_dir(self.cfg.db_path)
        committed = 0
        for name in names:
            path = os.path.join(directory, name)
            key = _spill.KEY_PREFIX + name
            for _ in range(max_batches):
                row = db.execute(
                    'SELECT committed_upto FROM "janus_ring_state" WHERE ring_id = ?', (key,)
                ).fetchall()
                offset = row[0][0] if row else 0
                chunk = _spill.read_chunk(path, offset, self.cfg.batch_size)
                if chunk is None:
                    break
                if chunk.end > offset:
                    rows = self.resources.label([decode_row(p) for p in chunk.payloads])
                    try:
                        self._store(db, rows, offset, chunk.end, key)
                    except _Fenced as err:
                        self._step_down_locked(
                            f"another process has stored spill file {name} up to {err.upto}, past "
                            f"this flusher's batch (from {offset}): this one stepped down"
                        )
                        return committed
                    except _Detached as err:
                        self._detach_locked(str(err))
                        return committed
                    except Exception as err:
                        return self._failed(err)
                    self.committed += len(rows)
                    self.batches += 1
                    committed += len(rows)
                    if chunk.torn:
                        self._report(f"spill file {name} ended in a cut-short record (its writer died "
                                     "while writing it); the rest of the file was committed", echo=False)
                if chunk.finished:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    break
                if chunk.end == offset:
                    break  # its writer is still adding to it
        return committed

    def _idle(self) -> None:
        with self.db_lock:
            if self.db is not None:
                changed = self._file_changed()
                if changed:
                    self._detach_locked(changed)
                    return
            # Checkpoint once the application has been quiet for a while: a
            # checkpoint copies and syncs the whole WAL, which would compete
            # with a burst that is just starting.  Under steady load the
            # checkpoint by WAL size in _flush_locked bounds the WAL.
            quiet = time.monotonic() - self._last_commit >= _CHECKPOINT_AFTER_IDLE
            merging = self._merge_due and quiet and self._merge_steps()
            building = self._bits_due and (
                (quiet and not self._merge_due and self._term_bits_turn(_IDLE_BITS_SECONDS))
                or (not quiet and time.monotonic() - self._bits_at >= _BUSY_BITS_EVERY and self._term_bits_turn(0.0))
            )
            if self._batches_since_checkpoint and quiet and self._checkpoint() and not merging and not building:
                # Idle, the WAL holds nothing the database lacks: give its
                # blocks back (16 MiB and more at rest, otherwise).  Not
                # between merge turns: cutting the WAL is a change every reader
                # drops its cache for, as for a commit; each turn's checkpoint
                # keeps the WAL to about one turn's pages meanwhile.
                self._truncate_wal()
            if self.pruner is not None:
                self._prune_step()
                if quiet and self.db is not None:
                    with contextlib.suppress(apsw.Error):
                        self.pruner.tidy(self.db)  # FTS merge, free pages back

    def _merge_steps(self) -> bool:
        """Up to _IDLE_MERGE_STEPS FTS5 merge steps of _IDLE_MERGE_PAGES in one transaction;
        the index is merged once a step finds no work.  Whether it merged and work is left."""
        db = self.db
        if db is None or self._disk_full:
            return False
        merged = worked = False
        try:
            with _write_transaction(db):
                for _ in range(_IDLE_MERGE_STEPS):
                    before = db.total_changes()
                    db.execute(_MERGE, (_IDLE_MERGE_PAGES,))
                    if db.total_changes() - before < 2:  # FTS5's "no work done" signal
                        merged = True
                        break
                    worked = True
                    if self._wanted():
                        break
        except apsw.Error:
            return False  # busy or full: the next idle turn tries again
        if merged:
            self._merge_due = False
        if worked or merged:
            # The merge's pages are in the WAL; or an earlier turn's are and
            # this one found the merge done: either way the next checkpoint
            # may cut the WAL now that no turn follows.
            self._batches_since_checkpoint += 1
        return worked and not merged

    def _fill_blocks(self, db: apsw.Connection, rows: list[tuple[Any, ...]], first: int, last: int, one_by_one: bool) -> None:
        """Keep the batch's rows for the bitmaps of the block they fill (janus_utils._termbits.Filling)."""
        if one_by_one or last - first + 1 != len(rows):
            self._filling.reset()
            return
        try:
            self._filling.add(db, rows, first)
        except Exception as err:  # the block is left to the idle turns; the batch goes on
            if isinstance(err, apsw.Error) and not db.in_transaction:
                raise  # SQLite rolled the batch back (a full disk): retried as any failed commit
            self._filling = _termbits.Filling(_TEXT_AT)  # and the tables looked at again
            self._report(f"term bitmaps not built: {type(err).__name__}: {err}")

    def _term_bits_turn(self, seconds: float) -> bool:
        """Build blocks' term bitmaps for up to *seconds* (0: one block) in one transaction;
        whether blocks are left."""
        db = self.db
        if db is None or self._disk_full:
            return False
        self._bits_at = time.monotonic()
        try:
            with _write_transaction(db):
                built, left = _termbits.build(db, self._wanted, seconds)
        except apsw.BusyError:
            return False  # another writer: the next idle turn tries again
        except apsw.Error:
            self._bits_due = False  # full, or worse: the next commit asks again (counts use the index meanwhile)
            return False
        except Exception as err:  # a bug here must not stop the records: counts use the index
            self._bits_due = False
            self._report(f"term bitmaps not built: {type(err).__name__}: {err}")
            return False
        self._bits_due = left
        if built:
            self._batches_since_checkpoint += 1  # the next checkpoint may cut the WAL
        return left

    def _wanted(self) -> bool:
        """Whether the idle work should give way: a record waits, or flush(), stop() or fork() asked."""
        return self.stopping or self.wake.is_set() or self.ring.stats().used > 0

    def _prune_step(self) -> None:
        if self.db is None:
            return
        try:
            if self.pruner.maybe_prune(self.db) is not None:  # type: ignore[union-attr]
                self._bits_due = True  # the blocks it deleted from are to be built again
        except Exception as err:
            self._report(f"retention failed: {type(err).__name__}: {err}", kind="retention")
        else:
            if self._problem == "retention":
                self.last_error = None

    # -- the WAL and lock waits ----------------------------------------------

    def _watch(self, db: apsw.Connection) -> None:
        """Count the WAL's pages after each commit, and wait for locks our way."""
        self._wal_pages = 0
        self._checkpoint_at = _CHECKPOINT_PAGES
        self._page_size = db.execute("PRAGMA page_size").fetchall()[0][0]
        db.set_wal_hook(self._wal_hook)
        db.set_busy_handler(self._busy)

    def _wal_hook(self, db: apsw.Connection, name: str, pages: int) -> int:
        self._wal_pages = pages
        return apsw.SQLITE_OK

    def _checkpoint_due(self) -> bool:
        pages = self._wal_pages
        if pages >= self._checkpoint_at:
            return True
        if pages < _CHECKPOINT_MIN_PAGES:
            return False
        try:
            fs = os.statvfs(os.path.dirname(self.cfg.db_path))
        except OSError:
            return False
        return pages * self._page_size * 4 >= fs.f_bavail * fs.f_frsize

    def _busy(self, tries: int) -> bool:
        """SQLite's busy handler: wait for another program's lock, with backoff.

        Up to _BUSY_WAIT seconds per statement, as a busy timeout would; but
        never past ``_deadline``, so stop() and configure() stay bounded even
        while a commit is already waiting.
        """
        now = time.monotonic()
        if tries == 0:
            self._busy_since = now
        end = self._busy_since + _BUSY_WAIT
        deadline = self._deadline
        if deadline is not None:
            end = min(end, deadline)
        if now >= end:
            return False
        # Waiting on another program's lock is working: keep the heartbeat
        # going (else another process would take over only to wait too), and
        # stop waiting if another process has taken over all the same.
        if not self.ring.beat(self.token):
            return False
        time.sleep(min(0.001 * (tries + 1), 0.025, end - now))
        return True

    def _checkpoint(self) -> bool:
        """A passive checkpoint (it never waits); False if the disk is too full for it."""
        if self.db is None:
            return True
        self._batches_since_checkpoint = 0
        try:
            frames, done = self.db.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        except apsw.FullError as err:
            # No commit until this works: each would grow the WAL into the
            # room the checkpoint needs, and a WAL that is never checkpointed
            # is never reused, so the disk would stay full for good.
            self._disk_full = True
            self._report(f"cannot checkpoint {self.cfg.db_path}: {type(err).__name__}: {err}", kind="write")
            return False
        except apsw.Error:
            return True
        # Complete: the next commit starts the WAL over.  Not complete (a
        # reader still uses its end): try again once it has grown as much again.
        self._checkpoint_at = _CHECKPOINT_PAGES if done >= frames else frames + _CHECKPOINT_PAGES
        return True

    def _make_room(self) -> bool:
        """After SQLITE_FULL: checkpoint before anything else; False while the disk is still full.

        Retrying the commit alone would append to a WAL that cannot be reused
        until it is checkpointed.  A failed checkpoint costs nothing: what it
        wrote into the database file is what the next attempt needs there.
        """
        if not self._checkpoint():
            self.retries += 1
            self._backoff = min(max(self._backoff * 2, 0.05), 5.0)
            return False
        self._truncate_wal()
        self._disk_full = False
        return True

    def _truncate_wal(self) -> None:
        """Checkpoint and cut the WAL file to zero bytes, if no reader holds it (no wait)."""
        if self.db is None:
            return
        with contextlib.suppress(apsw.Error), self._no_wait():
            self.db.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)

    @contextlib.contextmanager
    def _no_wait(self) -> Any:
        saved, self._deadline = self._deadline, time.monotonic()
        try:
            yield
        finally:
            self._deadline = saved

    def _report(self, message: str, *, kind: str = "event", echo: bool = True) -> None:
        """Note a problem in stats() and (with *echo*) on stderr, at most once every 10 s.

        *kind* says what resolves it: "write" and "event" problems are cleared
        from ``last_error`` by the next commit, "retention" ones by the next
        prune that works.  ``errors``, ``last_error_at`` and ``recent_errors``
        keep them.
        """
        self.last_error = message
        self._problem = kind
        self.errors += 1
        self.last_error_at = time.time()
        self.recent_errors.append((self.last_error_at, message))
        now = time.monotonic()
        if echo and now - self._last_report >= 10.0:
            self._last_report = now
            with contextlib.suppress(Exception):
                print(f"janus_utils: {security.sanitize(message)}", file=sys.stderr)

    def warn_spilling(self) -> None:
        spill = self.spill
        assert spill is not None
        self._report(
            f"log ring full for {self.cfg.block_timeout} s (no flusher is committing"
            f"{_write_lock_holder(self.cfg.db_path)}): records go to {spill.path} until it moves "
            f"again ({spill.records} spilled by this process so far)"
        )

    def end_spill(self) -> bool:
        """Close this process's spill file (flush(), shutdown()); True if it has any waiting."""
        spill = self.spill
        if spill is None:
            return False
        if spill.active:
            spill.close()
            self.ring.set_policy("spill", self.cfg.block_timeout)
        return bool(spill.waiting())

    def warn_dropped(self) -> None:
        dropped = self.ring.stats().dropped
        if dropped >= self._drop_warned_at * 2 or dropped - self._drop_warned_at >= 10_000:
            self._drop_warned_at = max(dropped, 1)
            self._report(f"log ring full: {dropped} records dropped so far (on_full={self.cfg.on_full!r})")

    # -- fork --------------------------------------------------------------

    def before_fork(self) -> None:
        # No SQLite connection may cross fork(): close it with no batch in
        # flight; the parent reopens it on its next batch.  wake: an idle
        # turn's merge commits at its next step rather than run on.
        self.wake.set()
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
        self._new_token()  # the parent's token is the parent's
        self.lock = FileLock(self.lock_path)
        self.wake = self._new_wake()
        self._exit_lock = threading.Lock()
        self._thread_done = False
        self.committed = self.batches = self.retries = 0
        if self.spill is not None:
            self.spill.after_fork_child()  # the child spills into a file of its own
            self.ring.set_policy("spill", self.cfg.block_timeout)
        if not self.stopping:
            self._start_thread()
        self.console.after_fork_child()


class _Wake(threading.Event):
    """The flusher's wake-up call (flush(), stop()): also ends the ring's wait in _gather."""

    def __init__(self, ring: _ring.Ring) -> None:
        super().__init__()
        self._ring = ring

    def set(self) -> None:
        super().set()
        self._ring.wake_consumer()


def _write_lock_holder(db_path: str, *, running: bool = False) -> str:
    """Why the database stays locked, if the process holding its write lock is stopped
    (with *running*: whatever that process is doing).

    A flusher stopped (SIGSTOP, a debugger) inside a commit keeps SQLite's WAL
    write lock, a POSIX lock on byte 120 of the -shm file: no process can
    write the database until it continues, whoever takes over.  One that hangs
    inside a commit (a stalled disk, a bug), or another program's long
    transaction, keeps it the same way: after a commit gave up waiting for the
    lock (*running*), naming that process says whom to look at.  A process
    that merely commits holds the lock for moments, so a full ring is blamed
    on a stopped one only.  Read from /proc/locks (Linux); "" when that says
    nothing.
    """
    try:
        shm = os.stat(db_path + "-shm")
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    inode = f":{shm.st_ino}"
    for line in lines:
        parts = line.split()
        # "N: POSIX  ADVISORY  WRITE 1234 fd:00:5678 120 120"
        if len(parts) >= 8 and parts[1] == "POSIX" and parts[3] == "WRITE" and parts[5].endswith(inode):
            try:
                pid, first, last = int(parts[4]), int(parts[6]), parts[7]
                if not first <= 120 <= (int(last) if last != "EOF" else 120):
                    continue
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                state = stat.rsplit(")", 1)[1].split()[0]
            except (OSError, ValueError, IndexError):
                continue
            if state in ("T", "t"):
                return (
                    f" (process {pid} holds its write lock and is stopped: nothing can be written "
                    f"to the database until it continues, kill -CONT {pid})"
                )
            if running:
                waits = ", waiting on its disk" if state == "D" else ""
                return (
                    f" (process {pid} ({name}) holds its write lock{waits}: nothing can be written "
                    "to the database until its transaction ends or it exits)"
                )
    return ""


def _remaining(deadline: float | None) -> float | None:
    """Seconds until *deadline* (a monotonic time), at least 0; None for no deadline."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)
