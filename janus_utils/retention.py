"""Log retention: delete old records by age, level, count or size, archiving them first.

How a prune works, and why it is crash-safe:

1. The rows to remove are chosen oldest first (by ``ts``, then ``id``): first
   those older than the age for their level, then the oldest others until the
   row count is under ``max_rows`` and the database under ``max_bytes``.
2. They are handled in chunks of ``chunk_rows``.  With an archive directory,
   each chunk is written to gzip NDJSON files (one per UTC day of ``ts``)
   through a temp file that is fsynced and renamed into place, with a
   ``.sha256`` sidecar, *before* anything is deleted.
3. Then one short write transaction removes the chunk from the full-text
   index (FTS5 ``'delete'`` with the original values) and from ``logs``.

A prune killed at any point therefore leaves every record in the database, in
a complete archive, or in both; never in neither.  A record in both is
harmless: a re-run finds the archive it wrote before and reuses it, and
:func:`import_archive` skips ids it already has.

Concurrency: each chunk is its own transaction, so the flusher waits at most one
chunk.  Two prunes on one database at once are safe (a chunk deletes only rows
still identical to what was archived) but may archive some rows twice.

The full-text index must be filled in the same transaction as the rows it
indexes: deleting a row that was never indexed would damage the index.

Erasure.  An ordinary delete leaves the deleted text in the database file (in
freed space and in the full-text index's old segments) and in the WAL until
they are overwritten.  ``prune(secure=True)`` and :func:`erase` (one user's
records) delete with ``PRAGMA secure_delete`` and then :func:`scrub`: the
index is rewritten without the deleted entries (FTS5 ``'optimize'``), the
whole database is rewritten (``VACUUM``, which also clears what earlier
ordinary deletes left) and the WAL is checkpointed and emptied.  This is
erasure from the files; copies made elsewhere (backups, snapshots, the disk
blocks a file once used, the ring file of records not yet overwritten) are
out of its reach.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from . import _words
from ._fts import check_query_size, matcher
from ._levels import level_name, parse_level
from ._record import native_enabled, speedups
from ._rollup import advance, count_deleted, count_inserted
from ._schema import (
    COLUMNS,
    FTS_TABLE,
    LEVEL_INDEX_FLOOR,
    ROLLUP_STATE_TABLE,
    ROLLUP_TABLE,
    SCHEMA_VERSION,
    TABLE,
    WIDE_INDEX_SQL,
    WIDE_TABLE,
    apply_connection_settings,
    database_id,
    ensure_schema,
    user_match_sql,
    wide_index_sql,
)
from .error_handling.utils.errors import ConfigError, FileHandlerError
from .file_handler import (
    NDJSONGzipWriter,
    atomic_write,
    ensure_private_dir,
    fsync_dir,
    iter_ndjson_gz,
    iter_ndjson_gz_lines,
    remove_stale_temp_files,
    sha256_file,
    sidecar_path,
    sqlite_path,
)

__all__ = [
    "ARCHIVE_PATTERN",
    "AutoPruner",
    "EraseSummary",
    "MAX_IMPORTED_ID",
    "PruneSummary",
    "RetentionPolicy",
    "erase",
    "erase_path",
    "import_archive",
    "iter_archive_records",
    "list_archives",
    "merge_index",
    "parse_age",
    "parse_size",
    "prune",
    "prune_path",
    "reclaim_space",
    "scrub",
    "search_archives",
]

NS_PER_SECOND = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_SECOND
# SQLite's integers are 64-bit: ids, ts, levels, ages and sizes must fit.
MAX_INT64 = 2**63 - 1
# The highest id import accepts.  The flusher's AUTOINCREMENT continues after
# the highest id in the table and fails for good at 2**63 - 1: an imported id
# near that would stop all logging.  2**53 leaves 99.9 % of the id space (at a
# million records a second, 290,000 years) and keeps ids exact for JSON readers.
MAX_IMPORTED_ID = 2**53

# Every column of a stored row, in archive order: the id first, then the schema's.
ALL_COLUMNS: tuple[str, ...] = ("id", *COLUMNS)
_REQUIRED = frozenset({"id", "ts", "level", "logger", "message"})

# janus-logs-<UTC day>.<database id>.<host>.<lowest id>-<highest id>[.<n>].ndjson.gz.
# The database id (16 hex digits, random per database) keeps the archives of two
# databases apart, the host those of a database copied to another machine (a
# cloned image, a restored backup), whose ids go on from the same numbers.  Ids
# are zero-padded to ID_DIGITS, so that ls and zcat * list them in order.
# Archives of older versions lack the host, the padding or the database id.
ID_DIGITS = 16
ARCHIVE_PATTERN = re.compile(
    r"^janus-logs-(?P<day>\d{4}-\d{2}-\d{2})\.(?:(?P<db>[0-9a-f]{16})\.)?"
    r"(?:(?P<host>[a-z0-9][a-z0-9-]{0,62})\.)?"
    r"(?P<low>\d+)-(?P<high>\d+)(?:\.(?P<n>\d+))?\.ndjson\.gz$"
)


def archive_host(name: str | None = None) -> str:
    """*name* (default: this machine's hostname) as it goes into an archive name: [a-z0-9-], at most 63."""
    import socket

    text = re.sub(r"[^a-z0-9-]+", "-", (name if name is not None else socket.gethostname()).lower()).strip("-")
    return text[:63].strip("-") or "host"

_AGE_UNITS = {
    "s": NS_PER_SECOND,
    "m": 60 * NS_PER_SECOND,
    "h": 3_600 * NS_PER_SECOND,
    "d": NS_PER_DAY,
    "w": 7 * NS_PER_DAY,
}
_AGE_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)

_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$", re.IGNORECASE)

Progress = Callable[["PruneSummary"], None]


# --------------------------------------------------------------------------- #
# Friendly values
# --------------------------------------------------------------------------- #


def parse_age(value: str | int | _dt.timedelta) -> int:
    """Turn ``"45s"``, ``"90m"``, ``"12h"``, ``"30d"`` or ``"1w"`` into nanoseconds.

    An ``int`` is taken as nanoseconds already; a ``timedelta`` is converted.
    Ages must be positive whole numbers of their unit.
    """
    if isinstance(value, bool):
        raise ConfigError(f"an age must be like '30d', not {value!r}")
    if isinstance(value, _dt.timedelta):
        ns = (value.days * 86_400 + value.seconds) * NS_PER_SECOND + value.microseconds * 1000
    elif isinstance(value, int):
        ns = value
    elif isinstance(value, str):
        match = _AGE_RE.match(value)
        if match is None:
            raise ConfigError(
                f"cannot read the age {_shown(value)}: write a whole number and a unit, "
                "s (seconds), m (minutes), h (hours), d (days) or w (weeks), e.g. '30d'"
            )
        ns = _whole_number(match[1]) * _AGE_UNITS[match[2].lower()]
    else:
        raise ConfigError(f"an age must be a string like '30d', not {type(value).__name__}")
    if ns <= 0:
        raise ConfigError(f"an age must be more than zero, got {_shown(value)}")
    if ns > MAX_INT64:
        raise ConfigError(
            f"the age {_shown(value)} is too long: at most 106751d (292 years), "
            "what 64-bit nanoseconds hold"
        )
    return ns


def parse_size(value: str | int) -> int:
    """Turn ``"500MB"``, ``"2GiB"``, ``"10kb"`` or an ``int`` of bytes into bytes.

    KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024; case does
    not matter.  Bare ``K``/``M``/``G`` are refused as ambiguous.
    """
    if isinstance(value, bool):
        raise ConfigError(f"a size must be like '500MB', not {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        unit = match[2].lower() if match else ""
        if match is None or (unit and unit not in _SIZE_UNITS):
            raise ConfigError(
                f"cannot read the size {_shown(value)}: write a whole number and a unit, "
                "B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), "
                "e.g. '500MB'"
            )
        size = _whole_number(match[1]) * _SIZE_UNITS.get(unit, 1)
    else:
        raise ConfigError(f"a size must be a string like '500MB' or an int, not {type(value).__name__}")
    if size <= 0:
        raise ConfigError(f"a size must be more than zero, got {_shown(value)}")
    if size > MAX_INT64:
        raise ConfigError(f"the size {_shown(value)} is too large: at most 8EiB, what SQLite can count")
    return size


def _long_digits(value: object) -> bool:
    return isinstance(value, str) and value.strip().isdigit() and len(value.strip()) > 20


def _is_int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _whole_number(digits: str) -> int:
    """Decimal *digits* as an int; past 2**63 only "too large" matters, so no huge int is built."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 20 else MAX_INT64 + 1


def _shown(value: object) -> str:
    """*value* for a message: its repr, cut to one readable line."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}... ({len(text)} chars)"


def _parse_level(level: int | str) -> int:
    try:
        # Long digit strings are refused before int() meets its 4300-digit limit.
        number = MAX_INT64 + 1 if _long_digits(level) else parse_level(level)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if number > MAX_INT64:
        raise ConfigError(f"level {_shown(level)} is too large: a level is a number below 2**63, like 40")
    return number


# --------------------------------------------------------------------------- #
# Policy and summary
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class RetentionPolicy:
    """What to keep: an age limit (per level if wanted), a row limit and a size limit.

    Ages are nanoseconds.  ``per_level`` maps a level number to the age its
    records are kept for, overriding ``max_age`` for exactly that level; levels
    without an override use ``max_age`` (kept forever by age if it is None).
    """

    max_age: int | None = None
    max_rows: int | None = None
    max_bytes: int | None = None
    per_level: Mapping[int, int] = field(default_factory=dict)
    # Keep rows a sink (janus_utils.ship) has not shipped yet, whatever their age.
    ship_wait: bool = True

    def __post_init__(self) -> None:
        for name in ("max_age", "max_bytes"):
            value = getattr(self, name)
            if value is not None and not _is_int_in(value, 1, MAX_INT64):
                raise ConfigError(f"{name} must be a positive int below 2**63 or None, got {_shown(value)}")
        rows = self.max_rows
        if rows is not None and not _is_int_in(rows, 0, MAX_INT64):
            raise ConfigError(f"max_rows must be a whole number of rows (0 or more, below 2**63), got {_shown(rows)}")
        for level, age in self.per_level.items():
            if not _is_int_in(level, 0, MAX_INT64) or not _is_int_in(age, 1, MAX_INT64):
                raise ConfigError(
                    f"per_level must map level numbers to positive ages in ns (below 2**63), "
                    f"got {_shown(level)}: {_shown(age)}; "
                    "use RetentionPolicy.from_config() for names like 'ERROR': '365d'"
                )

    @classmethod
    def from_config(
        cls,
        max_age: str | int | _dt.timedelta | None = None,
        max_rows: int | None = None,
        max_bytes: str | int | None = None,
        per_level: Mapping[int | str, str | int | _dt.timedelta] | None = None,
        ship_wait: bool = True,
    ) -> RetentionPolicy:
        """Build a policy from friendly values: ``max_age="30d"``, ``per_level={"ERROR": "365d"}``.

        ``ship_wait=False`` lets retention delete rows no sink has shipped yet.
        """
        if not isinstance(ship_wait, bool):
            raise ConfigError(f"ship_wait must be True or False, not {ship_wait!r}")
        levels: dict[int, int] = {}
        for level, age in (per_level or {}).items():
            number = _parse_level(level)
            if number in levels:
                raise ConfigError(f"per_level names level {level!r} twice: give each level once")
            levels[number] = parse_age(age)
        return cls(
            max_age=None if max_age is None else parse_age(max_age),
            max_rows=max_rows,
            max_bytes=None if max_bytes is None else parse_size(max_bytes),
            per_level=levels,
            ship_wait=ship_wait,
        )

    @property
    def is_empty(self) -> bool:
        """True when the policy would never remove anything."""
        return self.max_age is None and self.max_rows is None and self.max_bytes is None and not self.per_level

    def age_for(self, level: int) -> int | None:
        """How long records of *level* are kept, in ns (None: not limited by age)."""
        return self.per_level.get(level, self.max_age)


@dataclass
class PruneSummary:
    """What a prune removed (or, with ``dry_run``, would remove)."""

    rows: int = 0
    per_level: dict[int, int] = field(default_factory=dict)
    oldest_ts: int | None = None
    newest_ts: int | None = None
    archives: list[Path] = field(default_factory=list)
    dry_run: bool = False
    bytes_estimate: int = 0  # database bytes the removed rows took, from the average row size
    chunks: int = 0
    pages_reclaimed: int = 0
    held_back: int = 0  # rows due for removal but kept: a sink has not shipped them (ship_wait)
    secure: bool = False  # deleted with secure_delete, then scrubbed (prune(secure=True))

    def _add(self, level: int, count: int, oldest: int | None, newest: int | None) -> None:
        if count <= 0:
            return
        self.rows += count
        self.per_level[level] = self.per_level.get(level, 0) + count
        if oldest is not None and (self.oldest_ts is None or oldest < self.oldest_ts):
            self.oldest_ts = oldest
        if newest is not None and (self.newest_ts is None or newest > self.newest_ts):
            self.newest_ts = newest

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, levels by name (for the CLI and for logging the summary)."""
        return {
            "rows": self.rows,
            "per_level": {level_name(level): n for level, n in sorted(self.per_level.items())},
            "oldest_ts": self.oldest_ts,
            "newest_ts": self.newest_ts,
            "archives": [str(p) for p in self.archives],
            "dry_run": self.dry_run,
            "bytes_estimate": self.bytes_estimate,
            "chunks": self.chunks,
            "pages_reclaimed": self.pages_reclaimed,
            "held_back": self.held_back,
            "secure": self.secure,
        }


# --------------------------------------------------------------------------- #
# SQL
# --------------------------------------------------------------------------- #

_COLS_SQL = ", ".join(f'"{c}"' for c in ALL_COLUMNS)
_IDS = 'SELECT "value" FROM json_each(?)'

_SELECT_BY_IDS = f'SELECT {_COLS_SQL} FROM "{TABLE}" WHERE "id" IN ({_IDS})'
_OLDEST_ROWS = (
    f'SELECT {_COLS_SQL} FROM "{TABLE}" WHERE "id" IN '
    f'(SELECT "id" FROM "{TABLE}" ORDER BY "ts", "id" LIMIT ?) ORDER BY "ts", "id"'
)
# The external-content index forgets a row only when told its original values.
_FTS_DELETE = (
    f'INSERT INTO "{FTS_TABLE}"("{FTS_TABLE}", "rowid", "message", "fields", "exception") '
    f'SELECT \'delete\', "id", "message", "fields", "exception" FROM "{TABLE}" WHERE "id" IN ({_IDS})'
)
_WIDE_INSERT = wide_index_sql(f'"id" IN ({_IDS})')
# The trigram index forgets its rows here, not by a trigger: a trigger would
# make every delete need an SQLite with contentless_delete (3.43+), the
# sqlite3 shell's and Python's own among them.
_WIDE_DELETE = f'DELETE FROM "{WIDE_TABLE}" WHERE "rowid" IN ({_IDS})'
_DELETE = f'DELETE FROM "{TABLE}" WHERE "id" IN ({_IDS})'
_INSERT = f'INSERT INTO "{TABLE}" ({_COLS_SQL}) VALUES ({", ".join("?" * len(ALL_COLUMNS))})'
# With each row's word signature (janus_utils._words) last, as _speedups.sign_rows appends it.
_INSERT_SIGNED = (
    f'INSERT INTO "{TABLE}" ({_COLS_SQL}, "{_words.COLUMN}") VALUES ({", ".join("?" * (len(ALL_COLUMNS) + 1))})'
)
_FTS_INSERT = (
    f'INSERT INTO "{FTS_TABLE}"("rowid", "message", "fields", "exception") '
    f'SELECT "id", "message", "fields", "exception" FROM "{TABLE}" WHERE "id" IN ({_IDS})'
)
# One range per level, each already in (ts, id) order, merged and cut to the
# chunk.  WARNING and above: an index-only range of the ("level", "ts") index,
# cheap even when old rows of long-kept levels sit in front of the expired
# ones.  Below, which that index does not hold: the time index's oldest rows,
# those of the level kept.
_EXPIRED_RANGE = (
    f'SELECT "ts", "id" FROM (SELECT "ts", "id" FROM "{TABLE}" '
    'WHERE "level" = ? AND "ts" < ?{indexed} ORDER BY "ts", "id" LIMIT ?)'
)


def _level_indexed(level: object) -> str:
    """The level index's own WHERE term, for a query on a level it holds (SQLite then uses it); else ""."""
    # Text and blobs (a damaged row's level) sort above every number, so the index holds them.
    held = isinstance(level, (str, bytes)) or (isinstance(level, (int, float)) and level >= LEVEL_INDEX_FLOOR)
    return f' AND "level" >= {LEVEL_INDEX_FLOOR}' if held else ""


def _expired_ranges(rules: list[tuple[Any, int]]) -> str:
    return " UNION ALL ".join(_EXPIRED_RANGE.format(indexed=_level_indexed(level)) for level, _ in rules)


def _expired_rows_sql(rules: list[tuple[Any, int]]) -> str:
    ranges = _expired_ranges(rules)
    return (
        f'SELECT {_COLS_SQL} FROM "{TABLE}" WHERE "id" IN '
        f'(SELECT "id" FROM ({ranges}) ORDER BY "ts", "id" LIMIT ?) ORDER BY "ts", "id"'
    )


@contextmanager
def _write_transaction(db: apsw.Connection) -> Iterator[None]:
    """A short write transaction; BEGIN IMMEDIATE so the busy timeout applies up front."""
    if db.in_transaction:
        with db:  # nested in the caller's transaction: a savepoint
            yield
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _scalar(db: apsw.Connection, sql: str, bindings: tuple[Any, ...] = ()) -> Any:
    row = db.execute(sql, bindings).fetchone()
    return None if row is None else row[0]


def _first_row(db: apsw.Connection, sql: str, bindings: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    return tuple(db.execute(sql, bindings).fetchall()[0])


def _levels_present(db: apsw.Connection) -> list[Any]:
    """The distinct levels in the table, lowest first, without reading every row.

    WARNING and above: one seek each in the level index.  Below, which that
    index does not hold: the rollup's levels (janus_utils._rollup) and those of
    the rows past its mark; the table is read only when the rollup cannot say.
    """
    high: list[Any] = []
    floor = f'"level" >= {LEVEL_INDEX_FLOOR}'
    level = _scalar(db, f'SELECT min("level") FROM "{TABLE}" WHERE {floor}')
    while level is not None:
        high.append(level)
        level = _scalar(db, f'SELECT min("level") FROM "{TABLE}" WHERE "level" > ? AND {floor}', (level,))
    below = f'"level" < {LEVEL_INDEX_FLOOR}'
    try:
        state = dict(db.execute(f'SELECT "key", "value" FROM "{ROLLUP_STATE_TABLE}"').fetchall())
    except apsw.SQLError:
        state = {}
    covered = state.get("covered_upto")
    if state.get("irregular", 1) != 0 or type(covered) is not int:
        low = [row[0] for row in db.execute(f'SELECT DISTINCT "level" FROM "{TABLE}" WHERE {below} ORDER BY 1')]
        return low + high
    found = {row[0] for row in db.execute(f'SELECT DISTINCT "level" FROM "{ROLLUP_TABLE}" WHERE {below} AND "n" > 0')}
    found.update(
        row[0] for row in db.execute(f'SELECT DISTINCT "level" FROM "{TABLE}" WHERE "id" > ? AND {below}', (covered,))
    )
    return sorted(found) + high


def _used_bytes(db: apsw.Connection) -> int:
    """Bytes of the database file in use: pages minus free pages (the WAL is not counted)."""
    page_size = _scalar(db, "PRAGMA page_size")
    pages = _scalar(db, "PRAGMA page_count")
    free = _scalar(db, "PRAGMA freelist_count")
    return int((pages - free) * page_size)


def _row_count(db: apsw.Connection) -> int:
    return int(_scalar(db, f'SELECT count(*) FROM "{TABLE}"'))


def reclaim_space(db: apsw.Connection, *, max_pages: int | None = None, step_pages: int = 1024) -> int:
    """Give free pages back to the file system with ``PRAGMA incremental_vacuum``.

    Works only on databases in ``auto_vacuum=INCREMENTAL`` mode (set before the
    tables are created, or followed by one VACUUM); elsewhere it returns 0 and
    freed pages are simply reused by later inserts.  Runs in steps of
    *step_pages*, each its own short transaction, up to *max_pages* in all.
    Returns the number of pages released.
    """
    if _scalar(db, "PRAGMA auto_vacuum") != 2:
        return 0
    released = 0
    while max_pages is None or released < max_pages:
        free = _scalar(db, "PRAGMA freelist_count")
        want = min(free, step_pages) if max_pages is None else min(free, step_pages, max_pages - released)
        if want <= 0:
            break
        with _write_transaction(db):
            # One page per step of the statement: it must be run to the end.
            db.execute(f"PRAGMA incremental_vacuum({int(want)})").fetchall()
        now_free = _scalar(db, "PRAGMA freelist_count")
        if now_free >= free:
            break
        released += free - now_free
    return released


def merge_index(db: apsw.Connection, *, step_pages: int = 500, max_steps: int | None = None) -> int:
    """Fold the full-text index's delete markers away with FTS5 ``'merge'``, in short steps.

    Deleting from an FTS5 index adds delete markers: until segments are merged
    the index grows rather than shrinks (measured: 200K rows, half deleted, the
    index went from 9.8 to 13 MB, and to 4.9 MB after merging).  Each step
    merges about *step_pages* pages in its own transaction; stops when a step
    finds nothing to do or after *max_steps*.  Returns the steps that did work.
    """
    steps = 0
    while max_steps is None or steps < max_steps:
        before = db.total_changes()
        with _write_transaction(db):
            # Negative: merge even levels with fewer than 'usermerge' segments.
            db.execute(f'INSERT INTO "{FTS_TABLE}"("{FTS_TABLE}", "rank") VALUES (\'merge\', ?)', (-step_pages,))
        if db.total_changes() - before < 2:  # FTS5's documented "no work done" signal
            break
        steps += 1
    return steps


# --------------------------------------------------------------------------- #
# Archive records
# --------------------------------------------------------------------------- #


def _json_default(value: Any) -> Any:
    # SQLite is dynamically typed: a BLOB stored in a TEXT column must survive too.
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"a {type(value).__name__} value cannot be archived")


def _decode_value(value: Any) -> Any:
    """A ``{"$base64": ...}`` value as its bytes; one that is not valid base64 is kept as it is."""
    if isinstance(value, dict) and set(value) == {"$base64"} and isinstance(value["$base64"], str):
        try:
            return base64.b64decode(value["$base64"], validate=True)
        except ValueError:  # binascii.Error
            return value
    return value


def _decode_record(record: dict[str, Any]) -> dict[str, Any]:
    for key, value in record.items():
        if type(value) is dict:
            record[key] = _decode_value(value)
    return record


# What import accepts, column by column: exactly what the flusher and prune
# write.  Text columns may also hold bytes (a BLOB, archived as $base64).
_TEXT_REQUIRED = ("logger", "message")


def _column_problem(column: str, value: Any) -> str | None:
    """Why *value* cannot be stored in *column*; None when it can."""
    if isinstance(value, dict) and set(value) == {"$base64"}:
        return f"{column} is marked $base64 but is not valid base64"
    if column in ("id", "ts", "level", "pid"):
        if column == "pid" and value is None:
            return None
        low, high, what = {
            "id": (1, MAX_IMPORTED_ID, "a record id, 1 to 2**53"),
            "ts": (0, MAX_INT64, "UTC nanoseconds since 1970, 0 to 2**63 - 1"),
            "level": (0, MAX_INT64, "a level number such as 20 or 40 (0 to 2**63 - 1)"),
            "pid": (0, MAX_INT64, "a process id, or null"),
        }[column]
        if not _is_int_in(value, low, high):
            return f"{column} {_shown(value)} is not {what}"
        return None
    if column == "fields":
        if value is None:
            return None
        if not isinstance(value, str) or not _is_utf8(value):
            return f"fields {_shown(value)} is not JSON object text"
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            parsed = None
        return None if isinstance(parsed, dict) else f"fields {_shown(value)} is not JSON object text"
    if value is None and column in _TEXT_REQUIRED:
        return f"{column} is null, but every record has one"
    if value is None or isinstance(value, bytes) or (isinstance(value, str) and _is_utf8(value)):
        return None
    return f"{column} {_shown(value)} is not text" + (" (it has a lone surrogate)" if isinstance(value, str) else "")


def _stored_int(value: Any) -> int:
    """A ts or level as read from a row; a damaged row's "yesterday" or "HIGH" counts as 0, as LogStore reads it."""
    if type(value) is int:
        return value
    if isinstance(value, float) and math.isfinite(value) and abs(value) <= MAX_INT64:
        return int(value)
    return 0


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value if isinstance(value, str) else json.dumps(value, default=repr)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _record_row(record: dict[str, Any], path: Path, line: int | None = None) -> tuple[Any, ...]:
    """An archived record as a row tuple in ALL_COLUMNS order, every column checked."""
    where = f"{str(path)!r}" if line is None else f"line {line} of {str(path)!r}"
    unknown = set(record) - set(ALL_COLUMNS)
    if unknown:
        raise FileHandlerError(
            f"{where} has columns this janus_utils does not know ({', '.join(sorted(unknown))}): "
            "it was written by a newer version; upgrade janus_utils to import it"
        )
    missing = _REQUIRED - set(record)
    if missing:
        raise FileHandlerError(
            f"a record at {where} lacks {', '.join(sorted(missing))}: "
            "this is not a janus log archive, or it is damaged"
        )
    row = tuple(_decode_value(record.get(c)) for c in ALL_COLUMNS)
    for column, value in zip(ALL_COLUMNS, row):
        problem = _column_problem(column, value)
        if problem is not None:
            raise FileHandlerError(
                f"{where}: {problem}; nothing from this archive was imported "
                "(janus never writes such a record: the archive was changed or made elsewhere)",
                code="archive_invalid_record",
                details={"path": str(path), "line": line, "column": column},
            )
    return row


def _day_of(ts: int) -> str:
    return (_dt.date(1970, 1, 1) + _dt.timedelta(days=ts // NS_PER_DAY)).isoformat()


def _archive_sort_key(path: Path) -> tuple[str, str, int, int, str, int]:
    match = ARCHIVE_PATTERN.match(path.name)
    assert match is not None
    return (
        match["day"], match["db"] or "", int(match["low"]), int(match["high"]), match["host"] or "", int(match["n"] or 0)
    )


def list_archives(archive_dir: str | Path) -> list[Path]:
    """The complete archives in *archive_dir*, oldest day first (temp files never match)."""
    directory = Path(archive_dir)
    if not directory.is_dir():
        raise FileHandlerError(f"{str(directory)!r} is not a directory: pass the archive directory")
    found = [p for p in directory.iterdir() if ARCHIVE_PATTERN.match(p.name) and p.is_file()]
    return sorted(found, key=_archive_sort_key)


# --------------------------------------------------------------------------- #
# The pruning engine
# --------------------------------------------------------------------------- #


class _Engine:
    """One prune's view of the database: its cutoffs, and how to remove one chunk."""

    def __init__(
        self,
        db: apsw.Connection,
        policy: RetentionPolicy,
        archive_dir: Path | None,
        now_ns: int,
    ) -> None:
        self.db = db
        self.policy = policy
        self.archive_dir = archive_dir
        self.now_ns = now_ns
        self.db_id = database_id(db)
        self.rules: list[tuple[int, int]] = []  # (level, cutoff ts): older is expired
        for level in _levels_present(db):
            age = policy.age_for(level)
            if age is not None:
                self.rules.append((level, now_ns - age))
        # Rows above the lowest shipping cursor are kept for the sinks (ship_wait).
        self.ship_floor: tuple[int, str] | None = None
        if policy.ship_wait:
            from .ship._shipper import unshipped_floor

            self.ship_floor = unshipped_floor(db)
        self.last_held = 0  # rows the last choice kept for a sink
        self.held_any = False  # some choice kept rows for a sink

    # -- choosing rows ------------------------------------------------------

    def _not_unshipped(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        if self.ship_floor is None:
            return rows
        floor = self.ship_floor[0]
        kept = [row for row in rows if row[0] <= floor]
        self.last_held = len(rows) - len(kept)
        self.held_any = self.held_any or self.last_held > 0
        return kept

    def expired_rows(self, limit: int) -> list[tuple[Any, ...]]:
        """Up to *limit* of the oldest rows past the age for their level."""
        if not self.rules:
            return []
        bindings: list[Any] = []
        for level, cutoff in self.rules:
            bindings += [level, cutoff, limit]
        bindings.append(limit)
        return self._not_unshipped(self.db.execute(_expired_rows_sql(self.rules), bindings).fetchall())

    def oldest_rows(self, limit: int) -> list[tuple[Any, ...]]:
        return self._not_unshipped(self.db.execute(_OLDEST_ROWS, (limit,)).fetchall())

    def count_held(self) -> int:
        """How many rows past their age are kept for a sink (with only row and size limits: the last choice's)."""
        if self.ship_floor is None or not self.held_any:
            return 0
        if not self.rules:
            return self.last_held
        expired = " OR ".join(['("level" = ? AND "ts" < ?)'] * len(self.rules))
        bindings = [self.ship_floor[0], *(value for rule in self.rules for value in rule)]
        return int(_scalar(self.db, f'SELECT count(*) FROM "{TABLE}" WHERE "id" > ? AND ({expired})', tuple(bindings)))

    # -- removing rows ------------------------------------------------------

    def remove(self, rows: list[tuple[Any, ...]], summary: PruneSummary) -> int:
        """Archive (if asked) then delete *rows*; returns how many were deleted."""
        if self.archive_dir is not None:
            summary.archives.extend(self._archive_rows(rows))
        deleted = self._delete_rows(rows)
        gone = set(deleted)
        per_level: dict[int, list[int]] = {}
        for row in rows:
            if row[0] in gone:
                per_level.setdefault(_stored_int(row[2]), []).append(_stored_int(row[1]))
        for level, stamps in per_level.items():
            summary._add(level, len(stamps), min(stamps), max(stamps))
        summary.chunks += 1
        return len(deleted)

    def _delete_rows(self, rows: list[tuple[Any, ...]]) -> list[int]:
        """One transaction: drop from the index and the table the rows still as archived."""
        ids = json.dumps([row[0] for row in rows])
        wanted = {row[0]: row for row in rows}
        with _write_transaction(self.db):
            # Only rows still identical to what was read (and archived) go: another
            # prune may have removed some, and an id may even have been reused since.
            current = self.db.execute(_SELECT_BY_IDS, (ids,)).fetchall()
            same = [row[0] for row in current if wanted.get(row[0]) == row]
            if same:
                same_ids = json.dumps(same)
                self.db.execute(_FTS_DELETE, (same_ids,))
                self.db.execute(_WIDE_DELETE, (same_ids,))
                count_deleted(self.db, same_ids)  # the rollup forgets them as the index does
                self.db.execute(_DELETE, (same_ids,))
        return same

    def _archive_rows(self, rows: list[tuple[Any, ...]]) -> list[Path]:
        """Write *rows* (ordered by ts) to one complete archive per UTC day."""
        assert self.archive_dir is not None
        written: list[Path] = []
        for day, group in itertools.groupby(rows, key=lambda r: _stored_int(r[1]) // NS_PER_DAY):
            written.append(self._archive_day(_day_of(day * NS_PER_DAY), list(group)))
        return written

    def _archive_day(self, day: str, rows: list[tuple[Any, ...]]) -> Path:
        path = self._write_archive_day(day, rows)
        # A sealed database's chain entries for these rows go beside them, so
        # that janus-logs verify --archives checks the archive end to end.
        from .seal import archive_entries

        archive_entries(self.db, path, min(row[0] for row in rows), max(row[0] for row in rows))
        return path

    def _write_archive_day(self, day: str, rows: list[tuple[Any, ...]]) -> Path:
        assert self.archive_dir is not None
        ids = [row[0] for row in rows]
        origin = f"{self.db_id}." if self.db_id else ""
        stem = f"janus-logs-{day}.{origin}{archive_host()}.{min(ids):0{ID_DIGITS}d}-{max(ids):0{ID_DIGITS}d}"
        for n in itertools.count():
            path = self.archive_dir / (f"{stem}.ndjson.gz" if n == 0 else f"{stem}.{n}.ndjson.gz")
            if path.exists():
                # A re-run after a crash between archiving and deleting finds
                # its own earlier archive here: reuse it rather than write a copy.
                if _archive_holds(path, rows):
                    return path
                continue
            try:
                with NDJSONGzipWriter(path, default=_json_default) as writer:
                    writer.write_many(dict(zip(ALL_COLUMNS, row)) for row in rows)
            except FileHandlerError as exc:
                if exc.code == "file_exists":  # another prune won the name just now
                    continue
                raise
            return path
        raise AssertionError("unreachable")


def _archive_holds(path: Path, rows: list[tuple[Any, ...]]) -> bool:
    """Whether the archive at *path* is complete and holds exactly these *rows*."""
    try:
        archived = {r[0]: r for r in (_record_row(rec, path) for rec in iter_ndjson_gz(path))}
    except FileHandlerError:
        return False  # damaged or foreign: leave it alone, pick another name
    if len(archived) != len(rows) or any(archived.get(row[0]) != tuple(row) for row in rows):
        return False
    if not sidecar_path(path).exists():
        # Killed between the rename and the checksum: the data is complete
        # (it was fsynced before the rename and just read back whole).
        atomic_write(sidecar_path(path), f"{sha256_file(path)}  {path.name}\n")
    return True


def _row_limit(policy: RetentionPolicy, count: int, used: int, *, low_water: float = 1.0) -> int | None:
    """The row count to get down to, from max_rows and (via the average row size) max_bytes.

    Translating bytes into rows once per run is what makes the size limit
    converge: freed pages and FTS5 delete markers show up in the file size only
    later, so re-measuring after every chunk would keep deleting.
    """
    limits: list[int] = []
    if policy.max_rows is not None:
        limits.append(policy.max_rows)
    if policy.max_bytes is not None and count > 0 and used > policy.max_bytes:
        limits.append(math.floor(low_water * policy.max_bytes * count / used))
    return min(limits) if limits else None


def _resolve_policy(
    older_than: str | int | _dt.timedelta | None,
    max_rows: int | None,
    max_bytes: str | int | None,
    per_level: Mapping[int | str, str | int | _dt.timedelta] | None,
) -> RetentionPolicy:
    policy = RetentionPolicy.from_config(
        max_age=older_than, max_rows=max_rows, max_bytes=max_bytes, per_level=per_level
    )
    if policy.is_empty:
        raise ConfigError(
            "nothing to prune by: give older_than (e.g. '30d'), max_rows, max_bytes (e.g. '500MB') "
            "or per_level (e.g. {'DEBUG': '1d'})"
        )
    return policy


def _check_chunk_rows(chunk_rows: int) -> int:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be a whole number of rows, 1 or more, got {chunk_rows!r}")
    return chunk_rows


def prune(
    db: apsw.Connection,
    *,
    older_than: str | int | _dt.timedelta | None = None,
    max_rows: int | None = None,
    max_bytes: str | int | None = None,
    per_level: Mapping[int | str, str | int | _dt.timedelta] | None = None,
    archive_dir: str | Path | None = None,
    dry_run: bool = False,
    chunk_rows: int = 5000,
    now_ns: int | None = None,
    progress: Progress | None = None,
    ship_wait: bool = True,
    secure: bool = False,
) -> PruneSummary:
    """Remove old log records, oldest first, in short transactions; archive them first if asked.

    Rows go if older than *older_than* (or the *per_level* age for their
    level, e.g. ``{"ERROR": "365d", "DEBUG": "1d"}``), then the oldest others
    until at most *max_rows* remain, then until the database is under
    *max_bytes* (estimated from page counts and the average row size, so
    approximate).  Rows a sink (janus_utils.ship) has not shipped yet are
    kept, and counted in ``held_back``, unless *ship_wait* is False.  With
    *archive_dir* every removed row is first written, every column kept, to
    a complete gzip NDJSON archive there.  With *dry_run*
    nothing changes and the summary says what would go.  *progress* is called
    with the running summary after each committed chunk.  With *secure* the
    removed text is erased from the database's files, not only unlinked:
    secure_delete, then :func:`scrub` (which raises FileHandlerError, code
    ``scrub_incomplete``, if a reader kept the WAL from being emptied).

    Example: ``prune(db, older_than="30d", per_level={"ERROR": "365d"}, archive_dir="archive")``
    """
    policy = _resolve_policy(older_than, max_rows, max_bytes, per_level)
    if not ship_wait:
        policy = dataclasses.replace(policy, ship_wait=False)
    chunk_rows = _check_chunk_rows(chunk_rows)
    now = time.time_ns() if now_ns is None else now_ns
    directory = None if archive_dir is None else Path(archive_dir)
    if directory is not None and not dry_run:
        ensure_private_dir(directory)
        remove_stale_temp_files(directory)
    engine = _Engine(db, policy, directory, now)
    count = _row_count(db)
    used = _used_bytes(db)
    row_bytes = used / count if count else 0.0
    limit = _row_limit(policy, count, used)
    if dry_run:
        summary = _plan(engine, count, limit)
    else:
        with _secure_delete(db, secure):
            summary = _run(engine, limit, chunk_rows, progress)
            summary.secure = secure
            if secure:
                # Even when nothing was due now: what earlier ordinary prunes left goes too.
                scrub(db)
    summary.bytes_estimate = round(summary.rows * row_bytes)
    return summary


@contextmanager
def _secure_delete(db: apsw.Connection, on: bool) -> Iterator[None]:
    """``PRAGMA secure_delete`` for the block: deleted content is overwritten with zeros."""
    if not on:
        yield
        return
    before = _scalar(db, "PRAGMA secure_delete")
    db.execute("PRAGMA secure_delete=ON")
    try:
        yield
    finally:
        db.execute(f"PRAGMA secure_delete={int(before)}")


# How often scrub() tries to empty the WAL; each try waits up to the busy timeout for readers.
_CHECKPOINT_TRIES = 3


def scrub(db: apsw.Connection) -> None:
    """Leave no copy of deleted records in the database file, its index or its WAL.

    Rewrites the full-text index without its deleted entries (FTS5
    ``'optimize'``), rewrites the whole database (``VACUUM``: the free space
    earlier deletes left is not copied) and checkpoints the WAL into it and
    empties it (``wal_checkpoint(TRUNCATE)``).  The database is locked for
    writing meanwhile (the flusher waits, records stay in the ring); VACUUM
    needs free disk space the size of the database.  Raises FileHandlerError
    (code ``scrub_incomplete``) when readers kept the WAL from being emptied:
    old copies are then still in ``<db>-wal``; run it again once they are gone.
    """
    with _write_transaction(db):
        db.execute(f'INSERT INTO "{FTS_TABLE}"("{FTS_TABLE}") VALUES (\'optimize\')')
    db.execute("VACUUM")
    for _ in range(_CHECKPOINT_TRIES):
        busy, _log, _done = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
        if not busy:
            return
    raise FileHandlerError(
        f"the records are deleted, but copies remain in {db.filename}-wal while another connection "
        "reads the database: run the command again when no search or tail is running",
        code="scrub_incomplete",
    )


def _run(engine: _Engine, limit: int | None, chunk_rows: int, progress: Progress | None) -> PruneSummary:
    summary = PruneSummary()
    while rows := engine.expired_rows(chunk_rows):
        engine.remove(rows, summary)
        if progress is not None:
            progress(summary)
    if limit is not None:
        # Counted again: the age phase removed rows and the flusher added some.
        excess = _row_count(engine.db) - limit
        while excess > 0 and (rows := engine.oldest_rows(min(chunk_rows, excess))):
            engine.remove(rows, summary)
            excess -= len(rows)  # progress even if another prune took some of them
            if progress is not None:
                progress(summary)
    if summary.rows:
        merge_index(engine.db)
        summary.pages_reclaimed = reclaim_space(engine.db)
    summary.held_back = engine.count_held()
    return summary


def _plan(engine: _Engine, count: int, limit: int | None) -> PruneSummary:
    """The dry run: the same choice of rows, counted with read-only queries."""
    db = engine.db
    summary = PruneSummary(dry_run=True)
    # Rows not shipped yet would be kept (ship_wait): leave them out of the count too.
    floor = engine.ship_floor[0] if engine.ship_floor is not None else 2**63 - 1
    for level, cutoff in engine.rules:
        n, oldest, newest = _first_row(
            db,
            f'SELECT count(*), min("ts"), max("ts") FROM "{TABLE}" WHERE "level" = ? AND "ts" < ? AND "id" <= ?'
            + _level_indexed(level),
            (level, cutoff, floor),
        )
        summary._add(level, n, oldest, newest)
    if limit is not None and count - summary.rows > limit:
        expired = " OR ".join(['("level" = ? AND "ts" < ?)'] * len(engine.rules)) or "0"
        bindings: list[Any] = [v for rule in engine.rules for v in rule]
        bindings.append(count - summary.rows - limit)
        for level, n, oldest, newest in db.execute(
            f'SELECT "level", count(*), min("ts"), max("ts") FROM '
            f'(SELECT "level", "ts" FROM "{TABLE}" WHERE NOT ({expired}) ORDER BY "ts", "id" LIMIT ?) '
            'GROUP BY "level"',
            bindings,
        ):
            summary._add(level, n, oldest, newest)
    summary.chunks = 0
    return summary


def prune_path(path: str | Path, **kwargs: Any) -> PruneSummary:
    """:func:`prune` on the log database at *path*, opening and closing its own connection."""
    db = _open_existing(Path(path))
    try:
        return prune(db, **kwargs)
    finally:
        db.close()


@dataclass
class EraseSummary:
    """What :func:`erase` removed: records from the database, and from the archives it rewrote."""

    user_id: str
    rows: int = 0  # records erased from the database
    archived_rows: int = 0  # records removed from archives
    archives_rewritten: list[Path] = field(default_factory=list)
    archives_removed: list[Path] = field(default_factory=list)  # held nothing else: deleted

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "rows": self.rows,
            "archived_rows": self.archived_rows,
            "archives_rewritten": [str(p) for p in self.archives_rewritten],
            "archives_removed": [str(p) for p in self.archives_removed],
        }


def erase(
    db: apsw.Connection, *, user_id: str | int, archive_dir: str | Path | None = None, chunk_rows: int = 5000
) -> EraseSummary:
    """Erase every record whose ``user_id`` is *user_id*: from the database's files, and from archives.

    The records are deleted with secure_delete and the database is then
    scrubbed (see :func:`scrub`), so their text is left nowhere in the
    database file, its full-text index or its WAL; scrub runs even when no
    record matches, clearing what earlier ordinary deletes left behind.  With
    *archive_dir*, every archive there holding such a record is rewritten
    without it (its old .sha256 removed first, so a crash part way leaves an
    archive without a checksum, never one that fails it), and an archive left
    empty is deleted.  Archives elsewhere, and copies of any file, are not
    touched: erase from each archive directory, and from backups, separately.
    Records that only mention the user in their text are not matched.

    Example: ``erase(db, user_id="42", archive_dir="archive")``
    """
    user = _user_text(user_id)
    chunk_rows = _check_chunk_rows(chunk_rows)
    directory = None if archive_dir is None else Path(archive_dir)
    archives = [] if directory is None else list_archives(directory)  # a wrong path fails before anything goes
    summary = EraseSummary(user)
    with _secure_delete(db, True):
        # Until none is left: the flusher may commit more of this user's records meanwhile.
        while ids := [row[0] for row in db.execute(_USER_IDS, (user, chunk_rows))]:
            id_list = json.dumps(ids)
            with _write_transaction(db):
                db.execute(_FTS_DELETE, (id_list,))
                db.execute(_WIDE_DELETE, (id_list,))
                count_deleted(db, id_list)  # the rollup forgets them as the index does
                db.execute(_DELETE, (id_list,))
            summary.rows += len(ids)
        scrub(db)
    for path in archives:
        _erase_from_archive(path, user, summary)
    return summary


# In no particular order: every chunk is deleted before the next is read.
_USER_IDS = f'SELECT "id" FROM "{TABLE}" WHERE {user_match_sql()} LIMIT ?'


def _user_text(user_id: object) -> str:
    """A user_id as the logger stores it (text); an int is taken as its digits."""
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise ConfigError(f"user_id must be text (or an int), not {type(user_id).__name__}")
    text = str(user_id)
    if not text or not _is_utf8(text):
        raise ConfigError(f"user_id must be a user's id as logged, like '42', not {_shown(user_id)}")
    return text


def _erase_from_archive(path: Path, user: str, summary: EraseSummary) -> None:
    """Rewrite the archive at *path* without *user*'s records (two passes: nothing is held in memory)."""

    def theirs(record: dict[str, Any]) -> bool:
        return _as_text(_decode_value(record.get("user_id"))) == user

    found = sum(1 for record in iter_ndjson_gz(path) if theirs(record))
    if not found:
        return
    total = sum(1 for _ in iter_ndjson_gz(path, verify=False))
    side = sidecar_path(path)
    if side.exists():
        side.unlink()  # first: a crash from here on leaves an archive read unverified, not a mismatch
    if found == total:
        path.unlink()
        summary.archives_removed.append(path)
    else:
        kept = (record for record in iter_ndjson_gz(path, verify=False) if not theirs(record))
        with NDJSONGzipWriter(path, overwrite=True) as writer:
            writer.write_many(kept)
        summary.archives_rewritten.append(path)
    fsync_dir(path.parent)
    summary.archived_rows += found


def erase_path(path: str | Path, **kwargs: Any) -> EraseSummary:
    """:func:`erase` on the log database at *path*, opening and closing its own connection."""
    db = _open_existing(Path(path))
    try:
        return erase(db, **kwargs)
    finally:
        db.close()


def _open_existing(path: Path) -> apsw.Connection:
    if not path.is_file():
        raise FileHandlerError(f"no log database at {str(path)!r}: check the --db path")
    try:
        db = apsw.Connection(sqlite_path(path), flags=apsw.SQLITE_OPEN_READWRITE)
    except apsw.Error as exc:
        raise FileHandlerError(f"cannot open the log database {str(path)!r}: {exc}") from exc
    try:
        try:
            apply_connection_settings(db)
        except apsw.NotADBError as exc:
            raise FileHandlerError(f"{str(path)!r} is not a SQLite database, so not a janus log database") from exc
        found = _scalar(db, "PRAGMA user_version")
        if not found:
            raise FileHandlerError(f"{str(path)!r} is not a janus log database (no log schema in it)")
        if found > SCHEMA_VERSION:
            raise FileHandlerError(
                f"{str(path)!r} has log schema version {found}, newer than this janus_utils "
                f"understands ({SCHEMA_VERSION}): upgrade janus_utils"
            )
        ensure_schema(db)
    except BaseException:
        db.close()
        raise
    return db


# --------------------------------------------------------------------------- #
# Automatic pruning from the flusher
# --------------------------------------------------------------------------- #


def _apart_unshipped(rows: list[tuple[Any, ...]], floor: tuple[int, str] | None) -> tuple[list[tuple[Any, ...]], int]:
    """(the rows a sink has shipped, how many others there were): rows or keys, the id first."""
    if floor is None:
        return rows, 0
    kept = [row for row in rows if row[0] <= floor[0]]
    return kept, len(rows) - len(kept)


class AutoPruner:
    """Enforces a policy from the flusher thread, after each batch, keeping pace with it.

    :meth:`maybe_prune` looks every *every_n_batches* calls (every call while
    it is working off a backlog) and removes what is due, oldest first: up to
    as many rows as were added since it last looked, plus one chunk of
    *chunk_rows* (and at most four chunks in one call).  So it never falls
    behind the flusher, and a backlog shrinks by a chunk each time.  Called
    after each batch with a row limit, the table stays within max_rows plus
    the rows of the last batch.

    When nothing is due it costs a handful of index seeks: it counts the
    table only when an upper bound on the row count (from ``max(id) -
    min(id)`` and its own bookkeeping) says a limit may be passed, and only
    once while no other connection writes (``PRAGMA data_version``): its
    bookkeeping is exact then.  Without an archive directory it reads only
    the ids, timestamps and levels of the rows it removes.  The size limit is
    applied with hysteresis: once over *max_bytes* it prunes down to 90 % of
    it and measures again only after the table has grown.

    Deleting from the full-text index leaves delete markers; one merge step
    of *merge_pages* pages runs for every ten chunks removed, and
    :meth:`tidy`, for when the flusher is quiet, merges further and gives
    free pages back to the file system.  Use it from one thread; errors (a
    full archive disk) propagate to the caller, which should report them and
    carry on writing.
    """

    LOW_WATER = 0.9
    MAX_CHUNKS_PER_CALL = 4
    CHUNKS_PER_MERGE = 10

    def __init__(
        self,
        policy: RetentionPolicy,
        archive_dir: str | Path | None = None,
        every_n_batches: int = 100,
        chunk_rows: int = 1000,
        *,
        vacuum_pages: int = 256,
        merge_pages: int = 256,
        clock: Callable[[], int] = time.time_ns,
        report: Callable[[str], None] | None = None,
    ) -> None:
        if policy.is_empty:
            raise ConfigError("this retention policy removes nothing: set max_age, per_level, max_rows or max_bytes")
        if isinstance(every_n_batches, bool) or not isinstance(every_n_batches, int) or every_n_batches < 1:
            raise ConfigError(f"every_n_batches must be 1 or more, got {every_n_batches!r}")
        self.policy = policy
        self.archive_dir = None if archive_dir is None else Path(archive_dir)
        self.every_n_batches = every_n_batches
        self.chunk_rows = _check_chunk_rows(chunk_rows)
        self.vacuum_pages = vacuum_pages
        self.merge_pages = merge_pages
        self.clock = clock
        self._calls = 0
        self._backlog = False
        self._dir_ready = False
        self._by_age = policy.max_age is not None or bool(policy.per_level)
        self._last_high: int | None = None  # max(id) when it last looked
        self._count: int | None = None  # exact row count when last known...
        self._count_max_id = 0  # ...and max(id) then: growth since is bounded by ids issued
        self._count_db: apsw.Connection | None = None  # ...on this connection...
        self._count_version: int | None = None  # ...while data_version was this
        self._bytes_target: int | None = None  # rows to get down to for max_bytes
        self._bytes_recheck_at = 0  # estimated count at which to measure the size again
        self._removed_since_merge = 0
        self._untidy = False  # rows were removed since tidy() last finished
        # Rows due for removal but kept because a sink has not shipped them.
        self.held_back = 0
        self.report = report
        self._held_reported_at: float | None = None

    def maybe_prune(self, db: apsw.Connection) -> PruneSummary | None:
        """Remove what the policy says is due, within this call's limit; None when nothing was done."""
        self._calls += 1
        if not self._backlog and (self._calls - 1) % self.every_n_batches:
            return None
        high = int(_scalar(db, f'SELECT max("id") FROM "{TABLE}"') or 0)
        added = 0 if self._last_high is None else max(high - self._last_high, 0)
        self._last_high = high
        limit = min(self.chunk_rows + added, self.MAX_CHUNKS_PER_CALL * self.chunk_rows)
        summary = self._prune_up_to(db, limit)
        self._backlog = summary is not None
        return summary

    def tidy(self, db: apsw.Connection) -> bool:
        """A little upkeep after removals, for when the flusher is quiet; False once there is none left.

        One FTS5 merge step and up to *vacuum_pages* free pages given back
        (in auto_vacuum=INCREMENTAL databases) per call, each in its own
        short transaction.
        """
        if not self._untidy:
            return False
        merged = merge_index(db, step_pages=self.merge_pages, max_steps=1)
        reclaimed = reclaim_space(db, max_pages=self.vacuum_pages)
        self._untidy = bool(merged or reclaimed)
        return self._untidy

    def _engine(self, db: apsw.Connection) -> _Engine:
        if self.archive_dir is not None and not self._dir_ready:
            ensure_private_dir(self.archive_dir)
            remove_stale_temp_files(self.archive_dir)
            self._dir_ready = True
        return _Engine(db, self.policy, self.archive_dir, self.clock())

    def _prune_up_to(self, db: apsw.Connection, limit: int) -> PruneSummary | None:
        """Expired rows first, then the oldest over the row and size limits: at most *limit* rows.

        Rows a sink has not shipped yet are kept (ship_wait), counted in held_back.
        """
        summary = PruneSummary()
        engine = self._engine(db) if self._by_age or self.archive_dir is not None else None
        if engine is not None:
            floor = engine.ship_floor
        elif self.policy.ship_wait:
            from .ship._shipper import unshipped_floor

            floor = unshipped_floor(db)
        else:
            floor = None
        held = 0
        if engine is not None and engine.rules:
            rows, kept = _apart_unshipped(self._expired(db, engine, limit), floor)
            held += kept
            self._remove(db, engine, rows, summary)
        room = limit - summary.rows
        if room > 0:
            excess = self._excess(db)
            if excess > 0:
                rows, kept = _apart_unshipped(self._oldest(db, engine, min(room, excess)), floor)
                held += kept
                self._remove(db, engine, rows, summary)
        self._note_held(engine, floor, held + (engine.last_held if engine is not None else 0))
        if not summary.chunks:
            return None
        self._untidy = True
        self._removed_since_merge += summary.rows
        if self._removed_since_merge >= self.CHUNKS_PER_MERGE * self.chunk_rows:
            self._removed_since_merge = 0
            merge_index(db, step_pages=self.merge_pages, max_steps=1)
        return summary

    def _note_held(self, engine: _Engine | None, floor: tuple[int, str] | None, held: int) -> None:
        """Keep held_back current; say (once, then every 10 minutes) that rows are kept for a sink."""
        if floor is None or not held:
            self.held_back = 0
            self._held_reported_at = None
            return
        if engine is not None:
            engine.held_any = True
            engine.last_held = max(engine.last_held, held)
            held = engine.count_held() or held
        self.held_back = held
        now = time.monotonic()
        if self.report is not None and (self._held_reported_at is None or now - self._held_reported_at >= 600):
            self._held_reported_at = now
            shipped, sink = floor
            self.report(
                f"retention keeps {held:,} rows it would remove: not shipped yet to {sink} "
                f"(shipped up to id {shipped}); they go once shipped, or set retention ship_wait=False"
            )

    def _expired(self, db: apsw.Connection, engine: _Engine, limit: int) -> list[tuple[Any, ...]]:
        if self.archive_dir is not None:
            return engine.expired_rows(limit)
        bindings: list[Any] = []
        for level, cutoff in engine.rules:
            bindings += [level, cutoff, limit]
        bindings.append(limit)
        return db.execute(_expired_keys_sql(engine.rules), bindings).fetchall()

    def _oldest(self, db: apsw.Connection, engine: _Engine | None, limit: int) -> list[tuple[Any, ...]]:
        if self.archive_dir is not None:
            assert engine is not None
            return engine.oldest_rows(limit)
        return db.execute(_OLDEST_KEYS, (limit,)).fetchall()

    def _remove(
        self, db: apsw.Connection, engine: _Engine | None, rows: list[tuple[Any, ...]], summary: PruneSummary
    ) -> None:
        """Archive (with an archive directory) and delete *rows*: full rows, or (id, ts, level) keys."""
        if not rows:
            return
        if self.archive_dir is not None:
            assert engine is not None
            deleted = engine.remove(rows, summary)
        else:
            deleted = _remove_keys(db, rows, summary)
        if self._count is not None:
            self._count = max(0, self._count - deleted)

    def _estimated_count(self, db: apsw.Connection) -> tuple[int, bool]:
        """An upper bound on the row count, without counting, and whether it is exact.

        It is exact when this connection counted before and no other one has
        written since: only its own rows (contiguous new ids) and removals
        changed the count.
        """
        low, high = _first_row(db, f'SELECT min("id"), max("id") FROM "{TABLE}"')
        if high is None:
            self._count = None  # empty: count again, ids may restart from any point
            return 0, True
        bound = int(high - low + 1)
        exact = False
        if self._count is not None and high >= self._count_max_id:
            kept = self._count + int(high) - self._count_max_id
            exact = self._count_db is db and _scalar(db, "PRAGMA data_version") == self._count_version
            bound = min(bound, kept)
        return bound, exact

    def _exact_count(self, db: apsw.Connection) -> int:
        with db:  # one read snapshot for both numbers
            self._count_max_id = int(_scalar(db, f'SELECT max("id") FROM "{TABLE}"') or 0)
            count = self._count = _row_count(db)
        self._count_db = db
        self._count_version = _scalar(db, "PRAGMA data_version")
        return count

    def _excess(self, db: apsw.Connection) -> int:
        """How many oldest rows max_rows and max_bytes want gone now (0: none)."""
        policy = self.policy
        if policy.max_rows is None and policy.max_bytes is None:
            return 0
        estimate, exact = self._estimated_count(db)
        count: int | None = estimate if exact else None
        excess = 0
        if policy.max_rows is not None and estimate > policy.max_rows:
            count = self._exact_count(db) if count is None else count
            excess = count - policy.max_rows
        if policy.max_bytes is not None:
            if self._bytes_target is None and estimate >= self._bytes_recheck_at:
                used = _used_bytes(db)
                if used > policy.max_bytes:
                    count = self._exact_count(db) if count is None else count
                    self._bytes_target = _row_limit(
                        RetentionPolicy(max_bytes=policy.max_bytes), count, used, low_water=self.LOW_WATER
                    )
            if self._bytes_target is not None:
                count = self._exact_count(db) if count is None else count
                if count > self._bytes_target:
                    excess = max(excess, count - self._bytes_target)
                else:
                    # Reached: measure again once the table has grown by 5 % of the
                    # target, by when freed pages show in the page counts.
                    self._bytes_recheck_at = count + max(self.chunk_rows, self._bytes_target // 20)
                    self._bytes_target = None
        return excess


# The auto-pruner without an archive needs only these of the rows it removes.
_KEYS = '"id", "ts", "level"'
_OLDEST_KEYS = f'SELECT {_KEYS} FROM "{TABLE}" ORDER BY "ts", "id" LIMIT ?'
_PRESENT_IDS = f'SELECT "id" FROM "{TABLE}" WHERE "id" IN ({_IDS})'


def _expired_keys_sql(rules: list[tuple[Any, int]]) -> str:
    ranges = _expired_ranges(rules)
    return (
        f'SELECT {_KEYS} FROM "{TABLE}" WHERE "id" IN '
        f'(SELECT "id" FROM ({ranges}) ORDER BY "ts", "id" LIMIT ?) ORDER BY "ts", "id"'
    )


def _remove_keys(db: apsw.Connection, keys: list[tuple[Any, ...]], summary: PruneSummary) -> int:
    """Delete the rows of these (id, ts, level) keys still there, index first; one transaction."""
    wanted = {key[0]: key for key in keys}
    with _write_transaction(db):
        # Another prune may have taken some since they were chosen.
        ids = json.dumps([row[0] for row in db.execute(_PRESENT_IDS, (json.dumps(list(wanted)),))])
        db.execute(_FTS_DELETE, (ids,))
        db.execute(_WIDE_DELETE, (ids,))
        count_deleted(db, ids)  # the rollup forgets them as the index does
        db.execute(_DELETE, (ids,))
    gone = json.loads(ids)
    per_level: dict[int, list[int]] = {}
    for row_id in gone:
        _, ts, level = wanted[row_id]
        per_level.setdefault(_stored_int(level), []).append(_stored_int(ts))
    for level, stamps in per_level.items():
        summary._add(level, len(stamps), min(stamps), max(stamps))
    summary.chunks += 1
    return len(gone)


# --------------------------------------------------------------------------- #
# Archives: import, read, search
# --------------------------------------------------------------------------- #


def _signer(db: apsw.Connection) -> Callable[[list[tuple[Any, ...]], tuple[str, ...]], list[tuple[Any, ...]] | None]:
    """sign(rows, their columns) -> the rows with their word signature (janus_utils._words) appended,
    or None: rows go in without one (NULL) into a table without the column or without the extension."""
    has_column = any(row[1] == _words.COLUMN for row in db.execute(f'PRAGMA table_info("{TABLE}")').fetchall())
    sign_rows = getattr(speedups, "sign_rows", None) if has_column and native_enabled() else None

    def sign(rows: list[tuple[Any, ...]], columns: tuple[str, ...]) -> list[tuple[Any, ...]] | None:
        if sign_rows is None:
            return None
        try:
            return sign_rows(rows, tuple(columns.index(c) for c in ("message", "fields", "exception")))
        except (TypeError, ValueError):
            return None

    return sign


def import_archive(db: apsw.Connection, path: str | Path, *, batch_rows: int = 2000) -> int:
    """Load an archive back into the database, keeping ids; returns the rows inserted.

    The checksum sidecar, if present, is verified before anything is read.
    Every column of every record is checked against what janus writes: ids
    from 1 to MAX_IMPORTED_ID (2**53, far below the 2**63 - 1 at which the
    flusher could assign no more), ts and level non-negative integers, text
    columns text (or $base64 bytes), fields JSON object text.  One archive
    imports whole or not at all (one transaction): a record that fails a
    check refuses the whole archive (code ``archive_invalid_record``, the
    message names its line and column), so a bad record can never reach the
    database.  Rows whose id is already there with identical content are
    skipped, so importing twice inserts nothing the second time; the
    full-text index is filled for exactly the rows inserted.  An id held by
    a *different* record is refused (code ``archive_id_conflict``): import
    into another database instead.  Ids above the database's highest move
    its id sequence forward: the flusher continues after them.

    An archive of another database (its name carries that database's id, as
    every archive written by this version does) is imported with new ids, so
    the archives of several hosts can be gathered in one database; a record
    already there (same ts, pid, host, logger and message) is skipped.
    """
    archive = Path(path)
    if not archive.is_file():
        raise FileHandlerError(f"no archive at {str(archive)!r}: check the path")
    ensure_schema(db)  # rows go in with this version's columns, counts and spans
    records = iter_ndjson_gz_lines(archive, verify=True)
    match = ARCHIVE_PATTERN.match(archive.name)
    origin = match["db"] if match else None
    here = database_id(db)
    if origin and here and origin != here:
        return _import_foreign(db, archive, records, batch_rows)
    sign = _signer(db)
    inserted = 0
    with _write_transaction(db):
        while batch := list(itertools.islice(records, batch_rows)):
            rows: dict[int, tuple[Any, ...]] = {}
            for line, record in batch:
                row = _record_row(record, archive, line)
                if rows.setdefault(row[0], row) != row:
                    raise _conflict(archive, row[0])
            ids = json.dumps(list(rows))
            for existing in db.execute(_SELECT_BY_IDS, (ids,)).fetchall():
                row_id = int(existing[0])  # type: ignore[arg-type]  # an INTEGER PRIMARY KEY
                if rows.pop(row_id) != existing:
                    raise _conflict(archive, row_id)
            if not rows:
                continue
            signed = sign(list(rows.values()), ("id", *COLUMNS))
            db.executemany(_INSERT if signed is None else _INSERT_SIGNED, list(rows.values()) if signed is None else signed)
            db.execute(_FTS_INSERT, (json.dumps(list(rows)),))
            db.execute(_WIDE_INSERT, (json.dumps(list(rows)),))
            count_inserted(db, list(rows))  # ids below the rollup's mark are counted there
            inserted += len(rows)
        advance(db)  # and those past it, as a flusher's next batch would
    return inserted


# A record of another database, already here: same time, process, host and text.
_SAME_RECORD = (
    f'SELECT 1 FROM "{TABLE}" WHERE "ts" = ? AND "pid" IS ? AND "host" IS ? '
    f'AND "logger" = ? AND "message" = ? LIMIT 1'
)
_INSERT_NEW_ID = f'INSERT INTO "{TABLE}" ({", ".join(COLUMNS)}) VALUES ({", ".join("?" * len(COLUMNS))})'
_INSERT_NEW_ID_SIGNED = (
    f'INSERT INTO "{TABLE}" ({", ".join(COLUMNS)}, "{_words.COLUMN}") VALUES ({", ".join("?" * (len(COLUMNS) + 1))})'
)
_FTS_AFTER = (
    f'INSERT INTO "{FTS_TABLE}"("rowid", "message", "fields", "exception") '
    f'SELECT "id", "message", "fields", "exception" FROM "{TABLE}" WHERE "id" > ?'
)


def _import_foreign(
    db: apsw.Connection, archive: Path, records: Iterator[tuple[int, dict[str, Any]]], batch_rows: int
) -> int:
    """Import another database's archive: its ids mean nothing here, so rows get new ones.

    A record already present (the same ts, pid, host, logger and message) is
    skipped, so importing twice inserts nothing the second time.
    """
    sign = _signer(db)
    inserted = 0
    with _write_transaction(db):
        while batch := list(itertools.islice(records, batch_rows)):
            rows = []
            for line, record in batch:
                row = dict(zip(ALL_COLUMNS, _record_row(record, archive, line)))
                key = (row["ts"], row["pid"], row["host"], row["logger"], row["message"])
                if not db.execute(_SAME_RECORD, key).fetchall():
                    rows.append(tuple(row[c] for c in COLUMNS))
            if not rows:
                continue
            last = db.execute(f'SELECT coalesce(max("id"), 0) FROM "{TABLE}"').fetchall()[0][0]
            signed = sign(rows, COLUMNS)
            db.executemany(_INSERT_NEW_ID if signed is None else _INSERT_NEW_ID_SIGNED, rows if signed is None else signed)
            db.execute(_FTS_AFTER, (last,))
            db.execute(WIDE_INDEX_SQL, (last,))
            inserted += len(rows)
        # Counted and given spans now: a database filled only by imports has
        # no flusher to do it, and would read every row for counts and hosts.
        advance(db)
    return inserted


def _conflict(archive: Path, row_id: int) -> FileHandlerError:
    return FileHandlerError(
        f"id {row_id} in {str(archive)!r} already belongs to a different record in this database "
        "(ids were reused after the table was emptied); nothing was imported: import into a "
        "separate database instead",
        code="archive_id_conflict",
    )


def iter_archive_records(
    archive_dir: str | Path,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    verify: bool = True,
) -> Iterator[dict[str, Any]]:
    """Stream the records of every archive in *archive_dir*, oldest day first.

    *since_ns* is inclusive, *until_ns* exclusive; archives whose day lies
    outside the range are not opened.  Within a day records come archive by
    archive, so they are only roughly in time order.  With *verify* each
    archive is checked against its sidecar first.
    """
    for path in list_archives(archive_dir):
        match = ARCHIVE_PATTERN.match(path.name)
        assert match is not None
        day_start = (_dt.date.fromisoformat(match["day"]) - _dt.date(1970, 1, 1)).days * NS_PER_DAY
        if until_ns is not None and day_start >= until_ns:
            continue
        if since_ns is not None and day_start + NS_PER_DAY <= since_ns:
            continue
        for record in iter_ndjson_gz(path, verify=verify):
            ts = record.get("ts")
            if type(ts) is not int and (since_ns is not None or until_ns is not None):
                continue  # a damaged record has no time to be in a range by
            if since_ns is not None and ts < since_ns:
                continue
            if until_ns is not None and ts >= until_ns:
                continue
            yield _decode_record(record)


def search_archives(
    archive_dir: str | Path,
    text: str | None = None,
    level: int | str | None = None,
    logger: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    limit: int | None = 100,
) -> list[dict[str, Any]]:
    """A fallback search over archived records, by streaming every archive in the range.

    No index is used, but *text* means what it means to LogStore.search
    (janus_utils._fts.matcher): words and "phrases" of the message, fields or
    exception (not substrings: ``look`` does not find ``lookup``), AND, OR,
    NOT, -word, prefix*, NEAR and column:term; no ranking.  *level* is a minimum (``"WARNING"`` finds
    WARNING and above); *logger* matches that logger and its children
    (``"app"`` finds ``app.db``).  Results come in archive order, oldest
    first, at most *limit* of them (None: all).  A *text* longer or with more
    words than a search may take raises SearchQueryError, as LogStore does.
    """
    if text:
        check_query_size(text)  # each term is a scan of every record read
    matches = matcher(text) if text and text.strip() else None
    min_level = None if level is None else _parse_level(level)
    found: list[dict[str, Any]] = []
    if limit is not None and limit <= 0:
        return found
    for record in iter_archive_records(archive_dir, since_ns=since_ns, until_ns=until_ns):
        # A damaged record's level reads as 0 and its logger as text, as LogStore reads them.
        level = record.get("level")
        if min_level is not None and (level if type(level) is int else 0) < min_level:
            continue
        if logger is not None:
            name = _as_text(record.get("logger"))
            if name != logger and not name.startswith(logger + "."):
                continue
        if matches is not None and not matches(
            {key: _as_text(record[key]) for key in ("message", "fields", "exception") if record.get(key) is not None}
        ):
            continue
        found.append(record)
        if limit is not None and len(found) >= limit:
            break
    return found
