"""Read, search and follow a janus log database while the flusher is writing it.

:class:`LogStore` opens the database read-only.  In WAL mode a reader never
blocks the writer and the writer never blocks a reader, so a LogStore can run
beside a live application: every statement is its own short read transaction
and every result is fetched whole before it is handed out, so no snapshot is
held open while the caller works (a held snapshot would stop checkpoints from
recycling the WAL).  The schema is never created or migrated from here.

Times: ``since``/``until`` take what :mod:`janus_utils._timeparse` reads (a
datetime, epoch seconds, ISO 8601, ``"15m"``, ``"yesterday"``...); a naive time
is UTC.  ``since`` is inclusive and ``until`` exclusive, so windows can be laid
end to end.

Order: without a query "newest" and "oldest" sort by ``ts``.  With a query they
follow the record id, the order the flusher committed records in, which is the
time order for everything the flusher writes; walking the full-text index by
id lets SQLite stop after the first *limit* matches instead of sorting them all.

One LogStore is meant for one thread at a time; open one per thread.
"""

from __future__ import annotations

import copy
import itertools
import json
import json.scanner
import math
import operator
import os
import re
import sys
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import datetime, timezone
from typing import Any, Literal, TypedDict, TypeVar, Unpack

import apsw

from . import _words
from ._fts import (
    check_query_size,
    compile_tree,
    escape_query,
    excluded_only,
    quote_all,
    required_tokens,
    required_words,
    split_wide,
    wide_tree,
)
from ._levels import level_name, parse_level
from ._record import native_enabled
from ._snippet import snippet_phrases
from ._planner import WALK_TS, Planner, Streams
from ._reading import open_for_reading
from ._rollup import Rollup, bucket_floor_sql
from ._schema import (
    COLUMNS,
    EVERY_USER_BUCKET,
    FTS_TABLE,
    ID_SPAN_SQL,
    LEVEL_INDEX_FLOOR,
    SCHEMA_VERSION,
    TABLE,
    TERM_BLOCKS_TABLE,
    USER_BUCKET_BITS,
    USER_INDEX,
    WIDE_TABLE,
    user_buckets_within,
    user_match_sql,
)
from ._termbits import Counts
from ._termbits import count as count_terms
from ._termbits import plain_terms, plain_tokenizer
from ._timeparse import TimeSpec, format_ts, parse_duration, parse_time, ts_datetime
from .error_handling.utils.errors import FileHandlerError, SearchQueryError
from .file_handler import sqlite_path

__all__ = [
    "DEFAULT_TIMEOUT",
    "HISTOGRAM_BY",
    "HISTOGRAM_NONE",
    "HISTOGRAM_OTHER",
    "LEVEL_INVALID",
    "SNIPPET_END",
    "SNIPPET_START",
    "FieldValue",
    "Filters",
    "Histogram",
    "IdValue",
    "LogStore",
    "Order",
    "Record",
    "StoreStats",
]

# snippet(): the matched words are wrapped in these, the cut-off ends marked
# with an ellipsis; about this many words are shown around the best hit.
SNIPPET_START = "["
SNIPPET_END = "]"
SNIPPET_ELLIPSIS = "…"
SNIPPET_WORDS = 12
# When most rows' snippets could not be made in C (LogStore._snippets_pay),
# every this many searches try again.
SNIPPET_RETRY = 32
# The first id window of a query read as one condition (LogStore._tree_rows).
_TREE_WINDOW = 4096

Order = Literal["newest", "oldest", "rank"]
_ORDERS = ("newest", "oldest", "rank")

FieldValue = str | int | float | bool | None
"""What a ``fields={"key": value}`` filter compares with: a JSON scalar."""

IdValue = str | int
"""What a ``user_id``, ``agent_id`` or ``request_id`` filter takes: the id as text, or
an int as it was logged (``user_id=42`` finds the records logged with ``42`` or ``"42"``)."""

# histogram(by=...): the only columns it may group by, never user text.
HISTOGRAM_BY: dict[str, str] = {
    "level": "level", "logger": "logger", "user_id": "user_id", "service": "service", "host": "host",
}
HISTOGRAM_OTHER = "(other)"  # the values outside the top N, summed
HISTOGRAM_NONE = "(none)"  # records without a user_id
# stats() and histogram(by="level") name a level that is not an integer (a damaged row) so.
LEVEL_INVALID = "(invalid)"

Histogram = list[tuple[datetime, dict[str, int]]]
"""(bucket start as an aware UTC datetime, {value: count}), oldest bucket first."""


class Filters(TypedDict, total=False):
    """The filters every LogStore query method takes as keyword arguments."""

    level: int | str | None  # minimum level: "WARNING", "warn", 30
    logger: str | None  # the logger and its children: "svc" is svc and svc.db, not svcx
    user_id: IdValue | None
    agent_id: IdValue | None
    request_id: IdValue | None
    service: str | None  # the service that logged it (configure(service=...))
    host: str | None  # the machine it was logged on
    trace_id: str | None  # not indexed: bound it with since/until on a big database
    since: TimeSpec | None  # inclusive
    until: TimeSpec | None  # exclusive
    fields: Mapping[str, FieldValue] | None  # equality on keys of the JSON fields


_T = f'"{TABLE}"'
_F = f'"{FTS_TABLE}"'
_RECORD_COLUMNS = ("id", *COLUMNS)
_ADDED_IN_V2 = ("service", "host")  # a version 1 database (read, never migrated here) lacks them
_TEXT_COLUMNS = frozenset(column for column in COLUMNS if column not in ("ts", "level", "pid"))
_V = TypeVar("_V")

# A filter that matches fewer rows than this through its index makes a full-text
# search start from those rows instead of walking the index's matches.
_NARROW = 256
_BATCH = 1000
# _candidates: the share of a user's id buckets read first is the planner's
# expectation times this margin, and only when that is under _WINDOW_AT_MOST.
_WINDOW_MARGIN = 1.25
_WINDOW_AT_MOST = 0.8
_MAX_INT64 = 2**63 - 1  # SQLite's integers: a bound parameter must fit
DEFAULT_TIMEOUT = 30.0  # seconds one statement may run before it is stopped
_PROGRESS_STEPS = 1000
_CACHE_KIB = 32 * 1024  # each LogStore's page cache, at most
# How much of the database file a LogStore reads through a memory map: all of
# it, on a 64-bit build (a page then costs a memory access where a read()
# copies it from the OS page cache: a narrow filter's rows lie one a page all
# over a big file).  SQLite maps what it reads, up to the file's size, and
# reads with read() when mmap fails.  The file may shrink under a reader only
# by a checkpoint after a VACUUM or incremental_vacuum, which SQLite makes
# only once no reader's snapshot holds the pages past the new end.  A file
# cut by anything else (or an I/O error) would stop the process with SIGBUS
# rather than an error; a 32-bit build keeps read().
_MMAP_BYTES = 1 << 40 if sys.maxsize > 2**32 else 0


@dataclass(frozen=True, slots=True)
class Record:
    """One log record as stored.  ``fields`` is the parsed JSON object ({} when none).

    A ``fields`` text that is not a JSON object is kept as ``{"_unparsed": text}``.
    ``snippet`` is set by a full-text search: the best-matching passage with
    each hit between SNIPPET_START and SNIPPET_END (``[`` and ``]``).
    """

    id: int
    ts: int
    level: int
    logger: str
    message: str
    user_id: str | None = None
    agent_id: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    pid: int | None = None
    thread: str | None = None
    exception: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    service: str | None = None
    host: str | None = None
    snippet: str | None = None

    def __hash__(self) -> int:
        # fields is a dict, so the generated hash would fail; id and ts identify a record.
        return hash((self.id, self.ts))

    @property
    def level_name(self) -> str:
        return level_name(self.level)

    @property
    def time(self) -> datetime:
        """``ts`` as an aware UTC datetime (microseconds; ``ts`` keeps the nanoseconds)."""
        return ts_datetime(self.ts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``time`` is ISO 8601 UTC, ``snippet`` only after a query."""
        data: dict[str, Any] = {
            "id": self.id,
            "ts": self.ts,
            "time": format_ts(self.ts),
            "level": self.level,
            "level_name": self.level_name,
            "logger": self.logger,
            "message": self.message,
            "user_id": self.user_id,
            "agent_id": self.agent_id,
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "pid": self.pid,
            "thread": self.thread,
            "fields": self.fields,
            "exception": self.exception,
            "service": self.service,
            "host": self.host,
        }
        if self.snippet is not None:
            data["snippet"] = self.snippet
        return data


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What ``janus-logs stats`` shows: counts, the time covered and the size on disk."""

    records: int
    by_level: dict[str, int]  # level name -> count, lowest level first
    by_logger: dict[str, int]  # logger -> count, most records first
    first_ts: int | None
    last_ts: int | None
    db_bytes: int  # page_count * page_size
    wal_bytes: int  # the -wal file, 0 when there is none

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "by_level": self.by_level,
            "by_logger": self.by_logger,
            "first_ts": self.first_ts,
            "first_time": format_ts(self.first_ts) if self.first_ts is not None else None,
            "last_ts": self.last_ts,
            "last_time": format_ts(self.last_ts) if self.last_ts is not None else None,
            "db_bytes": self.db_bytes,
            "wal_bytes": self.wal_bytes,
        }


# json.loads is this scanner between two whitespace scans and a check that
# nothing follows: a third of its time on a record's fields.  Text the scanner
# does not read from its first character to its last (whitespace around it,
# anything after it, an error) goes to json.loads as it always did.
_scan_json = json.scanner.make_scanner(json.JSONDecoder())


def _parse_fields(text: str | bytes | None) -> dict[str, Any]:
    if not text:
        return {}
    if not isinstance(text, str):
        text = _as_text(text)
    try:
        value, end = _scan_json(text, 0)
        if end != len(text):
            raise ValueError(end)
    except (StopIteration, ValueError, RecursionError):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return {"_unparsed": text}
    return value if isinstance(value, dict) else {"_unparsed": text}


# Where each column sits in a row of _RECORD_COLUMNS, for the type check below.
_TS, _LEVEL, _PID, _FIELDS = (_RECORD_COLUMNS.index(name) for name in ("ts", "level", "pid", "fields"))
_TEXTS = tuple(_RECORD_COLUMNS.index(name) for name in COLUMNS if name not in ("ts", "level", "pid", "fields"))
_TEXT_VALUES = operator.itemgetter(*_TEXTS)
_TEXT_TYPES = frozenset((str, type(None)))
_INVALID = "_invalid"  # the fields key that keeps what a damaged row really held

# Rows into Records in C (_native/records.c), which knows where the columns
# checked by _well_typed sit; the same Records from _record otherwise.
try:
    from . import _records as _c_records
except ImportError:  # pragma: no cover - a build without the extension
    _c_records = None
if _c_records is not None and _c_records.LAYOUT != (_RECORD_COLUMNS.index("id"), _TS, _LEVEL, _PID, _FIELDS):
    _c_records = None  # pragma: no cover - built for other columns
_SLOT_OFFSETS = (
    _c_records.slot_offsets(Record, tuple(f.name for f in dataclass_fields(Record))) if _c_records is not None else ()
)


def _record(row: tuple[Any, ...], snippet: str | bytes | None = None) -> Record:
    if type(snippet) is bytes:
        snippet = _as_text(snippet)  # read as bytes: text that is not UTF-8 (LogStore._decoding)
    if _well_typed(row):
        # The columns are Record's first fields, in order (tests/test_store.py):
        # passed by position, they cost half what keywords from a dict do.
        return Record(*row[:_FIELDS], _parse_fields(row[_FIELDS]), *row[_FIELDS + 1 :], snippet=snippet)
    values = dict(zip(_RECORD_COLUMNS, row))
    values["fields"] = _parse_fields(values["fields"])
    _repair(values)
    return Record(**values, snippet=snippet)


def _records_of(rows: list[tuple[Any, ...]], *, with_snippet: bool) -> list[Record]:
    """A Record per row (its snippet last *with_snippet*): in C when built, the same Records."""
    if _c_records is not None and native_enabled():
        return _c_records.build(rows, Record, _SLOT_OFFSETS, _parse_fields, _record, with_snippet)
    if with_snippet:
        return [_record(row[:-1], row[-1]) for row in rows]
    return [_record(row) for row in rows]


def _well_typed(row: tuple[Any, ...]) -> bool:
    """Whether every column holds what the flusher writes (the common case, checked cheaply)."""
    ts = row[_TS]
    return (
        len(row) == len(_RECORD_COLUMNS)
        and type(ts) is int
        and -_MAX_INT64 - 1 <= ts <= _MAX_INT64  # an archive's JSON may hold any int
        and type(row[_LEVEL]) is int
        and (row[_PID] is None or type(row[_PID]) is int)
        and _TEXT_TYPES.issuperset(map(type, _TEXT_VALUES(row)))
    )


def _repair(values: dict[str, Any]) -> None:
    """Make a damaged row a Record that every reader can print, keeping the bad values in fields.

    A row written by something else (an old import, another program) may hold
    "yesterday" as its ts or "HIGH" as its level: such a value reads as 0 (a
    pid as None), and what the row really held is kept in
    ``fields["_invalid"]``, so one bad row neither stops a search nor hides.
    A BLOB in a text column reads as text, undecodable bytes escaped.
    """
    invalid: dict[str, str] = {}
    for column in ("ts", "level", "pid"):
        value = values[column]
        if (type(value) is int and (column != "ts" or abs(value) <= _MAX_INT64)) or (column == "pid" and value is None):
            continue
        invalid[column] = value if isinstance(value, str) else repr(value)
        values[column] = None if column == "pid" else _as_int(value)
    for column in COLUMNS:
        value = values[column]
        if column not in ("ts", "level", "pid", "fields") and value is not None and type(value) is not str:
            values[column] = _as_text(value)
    for column in ("logger", "message"):
        if values[column] is None:
            values[column] = ""
    if invalid:
        values["fields"] = {**values["fields"], _INVALID: invalid}


def _as_int(value: object) -> int:
    """A ts or level SQLite returned as REAL (or worse) as the int a Record needs; 0 when none fits."""
    if isinstance(value, float) and math.isfinite(value) and abs(value) <= _MAX_INT64:
        return int(value)
    return 0


def _as_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def _text(value: object, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SearchQueryError(f"{name} must be text, not {type(value).__name__}")
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SearchQueryError(f"{name} {text!r} is not valid Unicode text") from exc
    return text


_MAX_ID = 2**63 - 1  # the highest id SQLite assigns


class _Selection:
    """One compiled request: the full-text expression, the filters and how to run them."""

    __slots__ = (
        "bounds", "driver", "estimates", "facts", "fts", "params", "probe_names", "probes", "query", "raw", "tree",
        "where",
    )

    def __init__(self) -> None:
        self.query: str | None = None  # the text as given, for messages
        self.fts: str | None = None  # the MATCH expression; "" when nothing is searchable
        self.raw = False
        self.where: list[str] = []  # conditions on the logs row
        self.params: list[Any] = []
        # Conditions an index answers alone, tried to pick where a search starts.
        self.probes: list[tuple[str, list[Any]]] = []
        self.probe_names: list[str] = []  # each probe's filter, by its name in facts
        self.bounds: tuple[int | None, int | None] = (None, None)  # ids a full-text walk stays within
        self.driver: str | None = None  # "fts" or "logs" once chosen
        self.estimates: dict[str, float] = {}  # the planner's, once chosen (FtsPlan.estimates)
        # A query read as one condition (_fts.wide_tree): (the tree, its place in where).
        self.tree: tuple[Any, int] | None = None
        # The filters by name, for the planner and the rollup: level (int),
        # logger ((name, name + ".", name + "/")), since / until (ns), and
        # "other" when anything else filters the rows.
        self.facts: dict[str, Any] = {}

    def add(self, condition: str, *params: Any, probe: str = "") -> None:
        self.where.append(condition)
        self.params.extend(params)
        if probe:
            self.probes.append((condition, list(params)))
            self.probe_names.append(probe)


class LogStore:
    """A read-only view of a janus log database: search, count, tail and stats.

    ``LogStore(path)`` raises FileHandlerError when the file is missing, is not
    a SQLite database or is not a janus log database.  Every method raises
    SearchQueryError for a bad argument or query and FileHandlerError when
    reading fails; no SQLite error escapes as it is.  Use it as a context
    manager or call close().

    A query larger than MAX_QUERY_CHARS, MAX_QUERY_TERMS or MAX_PREFIX_TERMS
    (see janus_utils._fts) is refused before it runs (code
    ``query_too_large``), and no single statement runs longer than *timeout*
    seconds (default 30; None for no limit): it is stopped and raises
    SearchQueryError with code ``search_timeout``.

    A database on read-only media (a backup mount, a copied-off disk) is read
    too, from its file alone (``immutable`` is then True); one whose ``-wal``
    there may hold records the file does not is refused with FileHandlerError
    saying how to read it (see janus_utils._reading).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_ms: int = 5000,
        timeout: float | None = DEFAULT_TIMEOUT,
        scope: Mapping[str, Any] | None = None,
    ) -> None:
        # Set first: a scope that cannot be understood opens nothing.
        self.scope = _check_scope(scope)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf
        ):
            raise SearchQueryError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
        self.timeout = timeout
        self._deadline: float | None = None
        self.path = sqlite_path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._db: apsw.Connection | None = None
        self.immutable = False  # True: read-only media, the database file alone is read
        self._json_path_escapes: bool | None = None
        self._rollup: Rollup | None = None
        self._text_as_bytes = False  # see _record_columns
        self._snippet_misses = 0.0  # share of rows C could not snippet, of late (_snippets_pay)
        self._snippet_tries = 0
        self._term_counts = Counts()  # done blocks' counts of words (janus_utils._termbits)
        self._plans: Planner | None = None
        self._indexes: set[str] | None = None
        self._confirm: str | None = None  # the temporary full-text table, once made ("" when it cannot be)
        if not os.path.isfile(self.path):
            if os.path.isdir(self.path):
                what = "is a directory"
            elif os.path.lexists(self.path):
                what = "is not a regular file (a symlink loop, a pipe or a device?)"
            else:
                what = "does not exist"
            raise FileHandlerError(
                f"no log database at {self.path}: it {what}; check the path "
                "(janus-logs takes it from --db or JANUS_LOG_DB)",
                details={"path": self.path},
            )
        try:
            # A WAL reader waits only while the writer recovers or resets the
            # WAL index; busy_timeout_ms bounds how long that may take.  On
            # read-only media the file alone is read (see janus_utils._reading).
            self._db, self.immutable = open_for_reading(self.path, busy_timeout_ms)
        except apsw.Error as exc:
            raise self._read_error(exc) from exc
        try:
            # Called every _PROGRESS_STEPS virtual-machine steps, FTS5's index
            # reads included: how a statement past its deadline is stopped.
            self._db.set_progress_handler(self._past_deadline, _PROGRESS_STEPS)
            self._fts_columns = self._check_schema()  # first: it says what a bad file is
            # Where the index's columns sit in a search's rows, for _made_snippets (() if not all do).
            self._snippet_at: tuple[int, ...] = (
                tuple(_RECORD_COLUMNS.index(column) for column in self._fts_columns)
                if all(column in _RECORD_COLUMNS and column not in _ADDED_IN_V2 for column in self._fts_columns)
                else ()
            )
            # A search led by a narrow filter reads its rows one page each, all
            # over a big file (4,000 rows of a user in 10M: 4,000 pages); SQLite's
            # default 2 MiB cache keeps none of them for the next search.  Pages
            # are cached as they are read, so a small database uses little.
            self._db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            if _MMAP_BYTES:
                self._db.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        if self._db is not None:
            db, self._db = self._db, None
            db.close()

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._db is None else "open"
        return f"<LogStore {self.path!r} {state}>"

    # ------------------------------------------------------------ errors
    def _read_error(self, exc: apsw.Error) -> FileHandlerError:
        details = {"path": self.path, "sqlite_error": type(exc).__name__}
        if isinstance(exc, apsw.NotADBError):
            message = f"{self.path} is not a SQLite database, so not a janus log database"
        elif isinstance(exc, apsw.BusyError):
            message = (
                f"the log database {self.path} stayed locked for more than "
                f"{self._busy_timeout_ms} ms: try again"
            )
        elif isinstance(exc, apsw.CorruptError):
            message = f"the log database {self.path} is damaged: {exc}"
        elif isinstance(exc, (apsw.CantOpenError, apsw.PermissionsError, apsw.ReadOnlyError)):
            message = f"cannot open the log database {self.path} for reading: {exc}"
        else:
            message = f"reading the log database {self.path} failed: {exc}"
        return FileHandlerError(message, details=details)

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    @contextmanager
    def _reading(self, selection: _Selection | None = None) -> Iterator[apsw.Connection]:
        if self._db is None:
            raise FileHandlerError(f"this LogStore ({self.path}) is closed")
        # A read inside a read (the planner's estimates inside a search) keeps the
        # outer deadline: the whole search has the one timeout.
        outer = self._deadline
        if outer is None and self.timeout is not None:
            self._deadline = time.monotonic() + self.timeout
        try:
            yield self._db
        except apsw.InterruptError as exc:
            raise SearchQueryError(
                f"the search ran longer than {self.timeout:g} s and was stopped: narrow it with a "
                "time range, a level or a logger, search for fewer prefix* terms, or allow a longer timeout",
                code="search_timeout",
                details={"timeout": self.timeout},
            ) from exc
        except apsw.SQLError as exc:
            if selection is not None and selection.fts:
                hint = (
                    "check the FTS5 syntax (quotes, parentheses, AND/OR/NOT, NEAR), "
                    "or search without raw mode to have the text made safe"
                    if selection.raw
                    else "rephrase it with plain words"
                )
                reason = str(exc).removeprefix("SQLError: ")
                raise SearchQueryError(
                    f"invalid full-text query {selection.query!r} ({reason}): {hint}",
                    details={"query": selection.query, "fts": selection.fts},
                ) from exc
            raise self._read_error(exc) from exc
        except apsw.Error as exc:
            raise self._read_error(exc) from exc
        finally:
            self._deadline = outer

    def _rows(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        # fetchall: the read transaction ends before the rows are handed out.
        with self._reading() as db:
            return db.execute(sql, params).fetchall()

    # Text another program stored that is not UTF-8 (SQLite keeps any bytes
    # as TEXT) cannot be decoded by apsw: the statement that met it fails with
    # UnicodeDecodeError.  From then on this store reads the record's text
    # columns as bytes (CAST AS BLOB), which a Record decodes with the bad
    # bytes escaped (_repair), and the statement is run again.
    def _record_columns(self) -> str:
        """The SELECT list of a Record's columns (a version 1 database lacks some)."""
        names = []
        for column in _RECORD_COLUMNS:
            name = f'{_T}."{column}"'
            if column in _ADDED_IN_V2 and not self._has_resources:
                name = "NULL"
            elif self._text_as_bytes and column in _TEXT_COLUMNS:
                name = f"CAST({name} AS BLOB)"
            names.append(name)
        return ", ".join(names)

    def _text_sql(self, expression: str) -> str:
        """*expression* (text handed to Python), as bytes once this store has met text that is not UTF-8."""
        return f"CAST({expression} AS BLOB)" if self._text_as_bytes else expression

    def _decoding(self, read: Callable[[], _V]) -> _V:
        """*read*(), run again with text read as bytes if it met text that is not UTF-8."""
        try:
            return read()
        except UnicodeDecodeError:
            if self._text_as_bytes:
                raise
            self._text_as_bytes = True
            self._select_record = self._record_columns()
            return read()

    def _check_schema(self) -> tuple[str, ...]:
        with self._reading() as db:
            version = int(db.execute("PRAGMA user_version").fetchall()[0][0])  # type: ignore[arg-type]
            names = {
                row[0]
                for row in db.execute(
                    "SELECT name FROM sqlite_schema WHERE name IN (?, ?)", (TABLE, FTS_TABLE)
                )
            }
            columns = tuple(str(row[1]) for row in db.execute(f"PRAGMA table_info({_F})"))
            self._has_wide = bool(
                db.execute("SELECT 1 FROM sqlite_schema WHERE name = ?", (WIDE_TABLE,)).fetchall()
            )
            self._has_term_bits = bool(
                db.execute("SELECT 1 FROM sqlite_schema WHERE name = ?", (TERM_BLOCKS_TABLE,)).fetchall()
            )
            table_columns = {str(row[1]) for row in db.execute(f"PRAGMA table_info({_T})")}
            # The word tests (_prefilter, _signature, term bitmaps) read text as unicode61
            # does with its defaults: an index made with another tokenizer (porter,
            # separators=...) may match a row that holds none of the query's words
            # ("running" finds "runs").
            self._plain_tokens = plain_tokenizer(db)
        self._has_resources = all(column in table_columns for column in _ADDED_IN_V2)
        self._has_words = _words.COLUMN in table_columns and self._plain_tokens
        # octet_length() came in SQLite 3.43 (the search prefilter's ASCII test).
        self._has_octet_length = tuple(int(n) for n in apsw.sqlite_lib_version().split(".")[:2]) >= (3, 43)
        self._select_record = self._record_columns()
        if version > SCHEMA_VERSION:
            raise FileHandlerError(
                f"{self.path} has log schema version {version}, newer than this "
                f"janus_utils reads ({SCHEMA_VERSION}): upgrade janus_utils",
                details={"path": self.path, "version": version},
            )
        if version < 1 or names != {TABLE, FTS_TABLE}:
            raise FileHandlerError(
                f"{self.path} is a SQLite database but not a janus log database "
                f"(no {TABLE!r} and {FTS_TABLE!r} tables)",
                details={"path": self.path},
            )
        return columns

    # ------------------------------------------------------------ compiling
    def _select(self, query: str | None, raw: bool, filters: Filters) -> _Selection:
        unknown = sorted(set(filters) - set(Filters.__annotations__))
        if unknown:
            raise TypeError(
                f"unknown filter {', '.join(unknown)}: use {', '.join(Filters.__annotations__)}"
            )
        selection = self._filters(**filters)
        if query is not None:
            if not isinstance(query, str):
                raise SearchQueryError(f"query must be text, not {type(query).__name__}")
            if query.strip():
                check_query_size(query)  # the length, before the text is parsed at all
                selection.query = query
                selection.raw = raw
                if raw:
                    selection.fts = _text(query, "query")
                elif (tree := wide_tree(query, self._fts_columns)) is not None:
                    # A CJK or emoji term under OR or in a column filter: the whole query as one condition.
                    condition, params = self._tree_condition(tree)
                    selection.tree = (tree, len(selection.where))
                    selection.add(condition, *params)
                    selection.facts["other"] = True  # counts come from the rows, not the rollup
                else:
                    query, wide = split_wide(query)
                    for term, excluded_term in wide:
                        self._wide_term(selection, term, excluded_term)
                    selection.fts = escape_query(query, self._fts_columns)
                    excluded = excluded_only(query, self._fts_columns) if selection.fts == "" else None
                    if wide and not selection.fts:
                        selection.fts = None  # the CJK or emoji terms alone select (and exclusions beside them)
                    if excluded is not None:
                        # Only exclusions (-debug, NOT health): every record but the matches.
                        check_query_size(query, excluded)
                        selection.fts = None
                        selection.add(f'{_T}."id" NOT IN (SELECT "rowid" FROM {_F} WHERE {_F} MATCH ?)', excluded)
                        selection.facts["other"] = True
                if selection.fts is not None:
                    check_query_size(query, selection.fts)
        return selection

    def _wide_term(self, selection: _Selection, term: str, excluded: bool) -> None:
        """A term holding CJK or emoji: a substring of the message, fields or exception (see _fts.split_wide)."""
        condition, params = self._wide_condition(term)
        selection.add(f"NOT ({condition})" if excluded else condition, *params)
        selection.facts["other"] = True

    def _tree_condition(self, tree: Any, ids: tuple[int, int] | None = None) -> tuple[str, list[Any]]:
        """A query read as one condition (_fts.compile_tree); each index lookup in it kept to
        the rows *ids* (lowest, highest) when given: what it gathers stays that window's."""
        within = f' AND "rowid" BETWEEN {int(ids[0])} AND {int(ids[1])}' if ids else ""
        condition, params = compile_tree(
            tree,
            lambda expression: self._fts_condition(expression, within),
            lambda term, columns: self._wide_condition(term, columns, within),
        )
        return f"({condition})", params

    def _wide_condition(
        self, term: str, columns: tuple[str, ...] | None = None, within: str = ""
    ) -> tuple[str, list[Any]]:
        """The rows holding *term* (CJK or emoji) as a substring of *columns* (None: all three);
        *within*, more conditions on the trigram index's rowid."""
        if self._has_wide and len(term) >= 3:
            match = '"' + term.replace('"', '""') + '"'
            if columns is not None:
                match = "{" + " ".join(f'"{column}"' for column in columns) + "} : " + match
            return f'{_T}."id" IN (SELECT "rowid" FROM "{WIDE_TABLE}" WHERE "{WIDE_TABLE}" MATCH ?{within})', [match]
        # Under three characters trigrams cannot look it up: each row holding
        # such characters (few, in most logs) is read instead.
        names = columns or ("message", "fields", "exception")
        found = " OR ".join(f'instr(coalesce({_T}."{column}", \'\'), ?) > 0' for column in names)
        rows = f'{_T}."id" IN (SELECT "rowid" FROM "{WIDE_TABLE}") AND ' if self._has_wide else ""
        return f"({rows}({found}))", [term] * len(names)

    def _fts_condition(self, expression: str, within: str = "") -> tuple[str, list[Any]]:
        """The rows matching the FTS5 *expression*: a part of a query compiled by _fts.compile_tree;
        *within*, more conditions on the index's rowid."""
        check_query_size(expression, expression)
        return f'{_T}."id" IN (SELECT "rowid" FROM {_F} WHERE {_F} MATCH ?{within})', [expression]

    def _filters(
        self,
        *,
        level: int | str | None = None,
        logger: str | None = None,
        user_id: IdValue | None = None,
        agent_id: IdValue | None = None,
        request_id: IdValue | None = None,
        service: str | None = None,
        host: str | None = None,
        trace_id: str | None = None,
        since: TimeSpec | None = None,
        until: TimeSpec | None = None,
        fields: Mapping[str, FieldValue] | None = None,
    ) -> _Selection:
        selection = _Selection()
        self._scoped(selection)
        if level is not None:
            number = _level_number(level)
            if number >= LEVEL_INDEX_FLOOR:
                # The index's own term as written, so SQLite may use the partial index.
                selection.add(f'{_T}."level" >= ? AND {_T}."level" >= {LEVEL_INDEX_FLOOR}', number, probe="level")
            else:
                # No index holds these levels: counting its rows would read the table.
                selection.add(f'{_T}."level" >= ?', number)
            selection.facts["level"] = number
        if logger is not None:
            name = _text(logger, "logger").rstrip(".")
            if not name:
                raise SearchQueryError("logger must be a logger name like 'app' or 'app.db'")
            # The logger or its children, as ranges so that the index is used:
            # every name starting "app." sorts between "app." and "app/".
            selection.add(
                f'({_T}."logger" = ? OR ({_T}."logger" >= ? AND {_T}."logger" < ?))',
                name,
                name + ".",
                name + "/",
                probe="logger",
            )
            selection.facts["logger"] = (name, name + ".", name + "/")
        for column, wanted in (("user_id", user_id), ("agent_id", agent_id), ("request_id", request_id)):
            if wanted is not None:
                condition = user_match_sql() if column == "user_id" else f'{_T}."{column}" = ?'
                selection.add(condition, _text(wanted, column), probe=column)
                selection.facts[column] = selection.params[-1]
                selection.facts["other"] = True
        for column, wanted in (("service", service), ("host", host)):
            if wanted is not None:
                if not self._has_resources:  # a version 1 database: no record has one
                    selection.add("0")
                elif column == "host":
                    condition, params = self._host_match(_text(wanted, column))
                    selection.add(condition, *params, probe=column)
                else:
                    selection.add(f'{_T}."{column}" = ?', _text(wanted, column), probe=column)
                selection.facts["other"] = True
        if trace_id is not None:
            # No index: never a probe, which would scan the whole table.
            selection.add(f'{_T}."trace_id" = ?', _text(trace_id, "trace_id"))
            selection.facts["other"] = True
        now = datetime.now(timezone.utc)  # one clock reading for since and until
        low = parse_time(since, now=now) if since is not None else None
        high = parse_time(until, now=now) if until is not None else None
        if low is not None and high is not None and low >= high:
            raise SearchQueryError(
                f"since ({format_ts(low)}) must be before until ({format_ts(high)})"
            )
        if low is not None and high is not None:
            # One probe for the window: its rows counted once, not each side's.
            selection.add(f'{_T}."ts" >= ? AND {_T}."ts" < ?', low, high, probe="time")
        elif low is not None:
            selection.add(f'{_T}."ts" >= ?', low, probe="time")
        elif high is not None:
            selection.add(f'{_T}."ts" < ?', high, probe="time")
        if low is not None:
            selection.facts["since"] = low
        if high is not None:
            selection.facts["until"] = high
        if fields:
            selection.facts["other"] = True
            if not isinstance(fields, Mapping):
                raise SearchQueryError("fields must be a mapping like {'status': 500}")
            for key, value in fields.items():
                self._field_filter(selection, key, value)
        return selection

    def _scoped(self, selection: _Selection) -> None:
        """AND the store's scope into *selection*: every query starts from it, so none can widen it."""
        low_level = self.scope.get("level", LEVEL_INDEX_FLOOR) < LEVEL_INDEX_FLOOR
        for condition, params in self._scope_conditions():
            # A level below the level index's floor is no probe: counting it would read the table.
            unindexed = low_level and condition.startswith(f'{_T}."level"')
            selection.add(condition, *params, probe="" if unindexed else "scope")
        if self.scope:
            # The per-minute counts know level and logger only: a scoped count
            # or histogram reads the rows (the scope's own indexes drive it).
            selection.facts["other"] = True

    def _scope_conditions(self) -> list[tuple[str, list[Any]]]:
        conditions: list[tuple[str, list[Any]]] = []
        scope = self.scope
        for column in ("user_id", "agent_id", "service", "host"):
            if column in scope:
                if column == "host" and self._has_resources:
                    conditions.append(self._host_match(scope[column]))
                    continue
                condition = user_match_sql() if column == "user_id" else f'{_T}."{column}" = ?'
                conditions.append((condition, [scope[column]]))
        if "level" in scope:
            # typeof: a damaged row's text level must not pass as "high".
            floor = f' AND {_T}."level" >= {LEVEL_INDEX_FLOOR}' if scope["level"] >= LEVEL_INDEX_FLOOR else ""
            conditions.append(
                (f"""{_T}."level" >= ? AND typeof({_T}."level") = 'integer'{floor}""", [scope["level"]])
            )
        if "logger" in scope:
            name = scope["logger"]
            conditions.append(
                (f'({_T}."logger" = ? OR ({_T}."logger" >= ? AND {_T}."logger" < ?))', [name, name + ".", name + "/"])
            )
        return conditions

    def _host_match(self, host: str) -> tuple[str, list[Any]]:
        """``host = ?`` for the rows of "logs", and where they may lie: the runs of spans that
        may hold the host (janus_utils._rollup.Rollup.host_ranges) and the rows past them.
        No index holds the hosts (see _schema): a host absent from the spans costs one
        read of the spans and of the newest rows, not a scan of the table."""
        if self._rollup is None:
            self._rollup = Rollup(self._rows)
        found = self._rollup.host_ranges(host)
        if found is None or found[1] is None:
            return f'{_T}."host" = ?', [host]  # may be anywhere: as broad as no filter
        covered, ranges = found
        where = " OR ".join([f'{_T}."id" > ?', *(f'{_T}."id" BETWEEN ? AND ?' for _ in ranges)])
        # One id range around them all as well, bounded on both sides: the only form
        # SQLite reads rows by (an OR of ranges, or a range open above, loses to
        # walking the time index newest first, through every row when none passes).
        low = min([covered + 1, *(pair[0] for pair in ranges)])
        return (
            f'({_T}."host" = ? AND {_T}."id" BETWEEN ? AND {_MAX_ID} AND ({where}))',
            [host, low, covered, *(bound for pair in ranges for bound in pair)],
        )

    def _scope_where(self, prefix: str = "AND") -> tuple[str, list[Any]]:
        """The scope as SQL for the few queries that are not built from a selection."""
        conditions = self._scope_conditions()
        if not conditions:
            return "", []
        return f" {prefix} " + " AND ".join(c for c, _ in conditions), [p for _, ps in conditions for p in ps]

    def _field_filter(self, selection: _Selection, key: object, value: object) -> None:
        path = self._json_path(key)
        # A damaged fields text must not make json_extract fail the whole search.
        fields = f'CASE WHEN json_valid({_T}."fields") THEN {_T}."fields" END'
        if value is None:
            selection.add(f"json_type({fields}, ?) = 'null'", path)
        elif isinstance(value, bool):
            selection.add(f"json_type({fields}, ?) = ?", path, "true" if value else "false")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            selection.add(f"json_type({fields}, ?) IN ('integer', 'real')", path)
            selection.add(f"json_extract({fields}, ?) = ?", path, value)
        elif isinstance(value, str):
            selection.add(f"json_type({fields}, ?) = 'text'", path)
            selection.add(f"json_extract({fields}, ?) = ?", path, _text(value, f"fields[{key!r}]"))
        else:
            raise SearchQueryError(
                f"fields[{key!r}] must be text, a number, true/false or None, "
                f"not {type(value).__name__}"
            )

    def _json_path(self, key: object) -> str:
        if not isinstance(key, str):
            raise SearchQueryError(f"field names must be text, not {type(key).__name__}")
        _text(key, "field name")
        label = json.dumps(key, ensure_ascii=False)
        if label[1:-1] != key and not self._escapes_in_json_paths():
            raise SearchQueryError(
                f"field name {key!r} has a quote, backslash or control character, "
                "which this SQLite cannot match in a JSON path: filter on another field"
            )
        # The key goes in as a quoted label of a bound path, so "." "[" "$" in it
        # are plain characters, and nothing of it reaches the SQL text.
        return "$." + label

    def _escapes_in_json_paths(self) -> bool:
        if self._json_path_escapes is None:
            found = self._rows(r"""SELECT json_extract('{"a\"b": 1}', '$."a\"b"')""")
            self._json_path_escapes = found[0][0] == 1
        return self._json_path_escapes

    # ------------------------------------------------------------ running
    def _choose_driver(
        self, selection: _Selection, limit: int | None = None, after_id: int | None = None, in_memory: bool = False
    ) -> tuple[str, list[Any]]:
        """Where a full-text search starts: the index's matches, or a narrow filter's rows (_planner);
        *in_memory*: those rows would be matched in the temporary table (_confirmed)."""
        if selection.driver is None and after_id is not None and not selection.where:
            selection.driver = "fts"  # only the matches after the cursor: nothing to choose
        if selection.driver is None:
            facts = selection.facts
            id_range = None
            if "since" in facts or "until" in facts:
                if self._rollup is None:
                    self._rollup = Rollup(self._rows)
                id_range = self._rollup.id_range(facts.get("since"), facts.get("until"))
            assert selection.fts is not None
            plan = self._planner().fts(
                selection.fts, selection.probes, selection.probe_names, limit, id_range,
                prefiltered=bool(self._prefilter(selection.fts)), in_memory=in_memory,
            )
            selection.driver = plan.driver
            selection.bounds = (plan.low_id, plan.high_id)
            selection.estimates = plan.estimates
            if plan.narrow is not None:
                selection.probes = [plan.narrow]
        if selection.driver == "logs":
            return selection.probes[0]
        return ("", [])

    def _prefilter(self, fts: str) -> str:
        """A condition on the logs row that every match of *fts* passes (see _fts.required_words); "" if none.

        A filter's row that fails it is dropped before the full-text index is
        asked about it: a word and the ASCII test cost a row some 2 µs, a
        lookup in the index 100 µs and more.  Rows whose text is not plain
        ASCII (or not text) always pass: the tokenizer folds what LIKE does not.
        length() counts a UTF-8 sequence as one character and stops at a NUL,
        so it differs from octet_length() for both.  What it counts alone, a
        lone byte of 0x80 and above, the tokenizer reads as one character of
        U+0080 and above (ª, ², µ...), none folding to ASCII: a word's ASCII
        letters in the index are still a run of bytes LIKE sees.  A scan for
        such bytes (GLOB) took 14.0 ms where this takes 8.4, on a user's 4,000
        rows at ten million; tests/test_planner.py tries every such byte.
        """
        words = required_words(fts)
        if not words or not self._has_octet_length or not self._plain_tokens:
            return ""
        columns = [f'{_T}."{column}"' for column in self._fts_columns]
        other = " OR ".join(
            f"({c} IS NOT NULL AND (typeof({c}) = 'blob' OR octet_length({c}) <> length({c})))"
            for c in columns
        )
        # LIKE is case-blind for ASCII; the words are [a-z0-9]+, safe to write as literals.
        holds = " AND ".join("(" + " OR ".join(f"{c} LIKE '%{word}%'" for c in columns) + ")" for word in words)
        return f"({other} OR ({holds}))"

    def _signature(self, fts: str) -> str:
        """A condition on the logs row's word signature (janus_utils._words) that every match
        of *fts* passes: its whole ASCII tokens' bits are set; "" when it has none."""
        tokens = required_tokens(fts)
        if not tokens or not self._has_words:
            return ""
        return _words.condition(_T, _words.mask(tokens))

    def _planner(self) -> Planner:
        if self._plans is None:
            self._plans = Planner(self._rows, TABLE, FTS_TABLE)
        return self._plans

    def _sql(
        self,
        selection: _Selection,
        columns: str,
        *,
        column_params: tuple[Any, ...] = (),
        after_id: int | None = None,
        upto_id: int | None = None,
        order: str | None = None,
        limit: int | None = None,
        group: str | None = None,
        walk_ts: bool = False,
        unmatched: bool = False,
    ) -> tuple[str, list[Any]]:
        """One SELECT over the selection; *order* is one of _ORDERS, "id" or "id_desc".

        *walk_ts*: read the rows through the time index (the planner found the
        filters broad), whatever SQLite would choose.  *unmatched*: a search led
        by a narrow filter without the full-text index, the rows that may match
        (see _confirmed).
        """
        params: list[Any] = list(column_params)
        where: list[str] = []
        if selection.fts is None:
            source = f'FROM {_T} INDEXED BY "logs_ts"' if walk_ts else f"FROM {_T}"
            id_column = f'{_T}."id"'
        else:
            narrow, narrow_params = self._choose_driver(selection, limit, after_id)
            if narrow:
                # Start from the few rows of a narrow filter, check each against
                # the index: the subquery makes SQLite use that filter's index.
                source = f'FROM {_T}' if unmatched else f'FROM {_T} CROSS JOIN {_F} ON {_F}."rowid" = {_T}."id"'
                id_column = f'{_T}."id"'
                signature = self._signature(selection.fts)
                if signature and user_match_sql() in narrow:
                    # In the user index (covering): rows that cannot match are never read.
                    narrow = f"{narrow} AND {signature}"
                where.append(f'{_T}."id" IN (SELECT "id" FROM {_T} WHERE {narrow})')
                params.extend(narrow_params)
                if signature:
                    where.append(signature)  # before the prefilter: an integer test, not a scan of text
                prefilter = self._prefilter(selection.fts)
                if prefilter:
                    where.append(prefilter)
            else:
                # Walk the index's matches by rowid: newest first costs no sort.
                source = f'FROM {_F} CROSS JOIN {_T} ON {_T}."id" = {_F}."rowid"'
                id_column = f'{_F}."rowid"'
            if not (narrow and unmatched):
                where.append(f"{_F} MATCH ?")
                params.append(selection.fts)
            low_id, high_id = selection.bounds
            if low_id is not None:
                where.append(f"{id_column} >= ?")
                params.append(low_id)
            if high_id is not None:
                where.append(f"{id_column} <= ?")
                params.append(high_id)
        where.extend(selection.where)
        params.extend(selection.params)
        if after_id is not None:
            where.append(f"{id_column} > ?")
            params.append(after_id)
        if upto_id is not None:
            where.append(f"{id_column} <= ?")
            params.append(upto_id)
        sql = [f"SELECT {columns}", source]
        if where:
            sql.append("WHERE " + "\n  AND ".join(where))
        if group:
            sql.append(f"GROUP BY {group}")
        if order == "rank":
            sql.append(f'ORDER BY {_F}."rank"')
        elif order == "id":
            sql.append(f"ORDER BY {id_column}")
        elif order == "id_desc":
            sql.append(f"ORDER BY {id_column} DESC")
        elif order is not None:
            direction = "DESC" if order == "newest" else "ASC"
            if selection.fts is None and selection.tree is None:  # a query follows the ids
                sql.append(f'ORDER BY {_T}."ts" {direction}, {_T}."id" {direction}')
            else:
                sql.append(f"ORDER BY {id_column} {direction}")
        if limit is not None:
            sql.append("LIMIT ?")
            params.append(limit)
        return "\n".join(sql), params

    def _run(self, selection: _Selection, build: Callable[[], tuple[str, list[Any]]]) -> list[tuple[Any, ...]]:
        """Run *build*'s SQL; an escaped query SQLite still refuses is retried fully quoted."""

        def work(db: apsw.Connection) -> list[tuple[Any, ...]]:
            sql, params = build()
            return db.execute(sql, params).fetchall()

        return self._run_with(selection, work)

    def _run_with(
        self, selection: _Selection, work: Callable[[apsw.Connection], list[tuple[Any, ...]]]
    ) -> list[tuple[Any, ...]]:
        """Run *work* on the connection; an escaped query SQLite still refuses is retried fully quoted."""
        if selection.fts == "":
            return []  # a query with nothing searchable in it matches nothing
        try:
            with self._reading(selection) as db:
                return work(db)
        except SearchQueryError as exc:
            if selection.raw or selection.query is None or exc.code == "search_timeout":
                raise
            fallback = quote_all(selection.query)
            if fallback == selection.fts:
                raise
            selection.fts = fallback
            if not fallback:
                return []
            with self._reading(selection) as db:
                return work(db)

    def _records(
        self,
        selection: _Selection,
        *,
        order: str,
        limit: int | None,
        after_id: int | None = None,
        upto_id: int | None = None,
    ) -> list[Record]:
        rows = self._decoding(lambda: self._record_rows(selection, order, limit, after_id, upto_id))
        return _records_of(rows, with_snippet=bool(selection.fts))

    # FTS5's snippet() over this external-content index reads each row again
    # through the logs table and tokenizes its text two or three times: at
    # 10M rows some 5 of a rare word's 8 µs a returned row.  For the queries
    # and text it can (janus_utils._snippet, ASCII text), C makes
    # the same snippet from the text the search already read
    # (_native/records.c); FTS5 still makes the others.
    def _snippets_here(self, fts: str | None) -> bool:
        """Whether a search for *fts* reads its rows with a NULL snippet that _made_snippets fills."""
        return bool(
            fts
            and _c_records is not None
            and native_enabled()
            and not self._text_as_bytes
            and self._plain_tokens  # the C tokens are unicode61's ASCII runs: not porter's, not tokenchars
            and self._snippet_at
            and snippet_phrases(fts) is not None
            and self._snippets_pay()
        )

    def _snippets_pay(self) -> bool:
        """Whether rows are mostly snippeted in C: a row that is not (text not ASCII) costs a
        lookup of its own, so when most of the last searches' rows were not, FTS5 makes them
        in the search's statement, and every SNIPPET_RETRY-th search tries C again."""
        if self._snippet_misses < 0.5:
            return True
        self._snippet_tries += 1
        return self._snippet_tries % SNIPPET_RETRY == 0

    def _made_snippets(
        self, db: apsw.Connection, selection: _Selection, rows: list[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """*rows* (their snippet last, NULL) with FTS5's snippet of the query as it ran, made from their text."""
        assert _c_records is not None and selection.fts
        phrases = snippet_phrases(selection.fts)  # the query as it ran: a refused one is retried quoted
        if phrases is None:
            missing = list(range(len(rows)))
        else:
            rows, missing = _c_records.snippets(
                rows, self._snippet_at, phrases, SNIPPET_START, SNIPPET_END, SNIPPET_ELLIPSIS, SNIPPET_WORDS
            )
        # Half the last searches' share: a few such rows do not turn C off, most of them do.
        self._snippet_misses = (self._snippet_misses + len(missing) / len(rows)) / 2
        if missing:
            # Text not ASCII and the like: FTS5's own, a seek by rowid each.
            sql = f'SELECT {self._text_sql(f"snippet({_F}, -1, ?, ?, ?, ?)")} FROM {_F} WHERE {_F} MATCH ? AND "rowid" = ?'
            params = [SNIPPET_START, SNIPPET_END, SNIPPET_ELLIPSIS, SNIPPET_WORDS, selection.fts, None]
            for index in missing:
                row = rows[index]
                params[-1] = row[0]
                found = db.execute(sql, params).fetchall()
                rows[index] = (*row[:-1], found[0][0] if found else None)
        return rows

    def _record_rows(
        self, selection: _Selection, order: str, limit: int | None, after_id: int | None, upto_id: int | None
    ) -> list[tuple[Any, ...]]:
        columns = self._select_record
        column_params: tuple[Any, ...] = ()
        here = self._snippets_here(selection.fts)
        if here:
            columns += ", NULL"  # _made_snippets fills it
        elif selection.fts:
            columns += ", " + self._text_sql(f"snippet({_F}, -1, ?, ?, ?, ?)")
            column_params = (SNIPPET_START, SNIPPET_END, SNIPPET_ELLIPSIS, SNIPPET_WORDS)

        def finish(db: apsw.Connection, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
            return self._made_snippets(db, selection, rows) if here and rows else rows

        if selection.tree is not None and order in ("newest", "oldest") and limit:
            return self._run_with(selection, lambda db: self._tree_rows(db, selection, columns, order, limit,
                                                                        after_id, upto_id))
        streams = None
        if selection.fts is None and order in ("newest", "oldest") and limit and after_id is None and upto_id is None:
            streams = self._planner().streams(
                selection.facts, selection.probes, selection.probe_names, limit, self._index_names()
            )
        if isinstance(streams, Streams):
            rows = self._run(selection, lambda: self._streams_sql(selection, streams, columns, order, limit))
        elif (
            streams is None and limit and order in ("newest", "oldest") and after_id is None and upto_id is None
            and self._by_user_buckets(selection)
        ):  # the buckets are read by time, whole: not an id window (after()) or id order
            rows = self._run_with(selection, lambda db: self._user_rows(db, selection, columns, order, limit))
        elif selection.fts and order != "rank":
            rows = self._run_with(
                selection,
                lambda db: finish(db, self._confirmed(db, selection, column_params, order, limit, after_id, upto_id)),
            )
        else:

            def work(db: apsw.Connection) -> list[tuple[Any, ...]]:
                sql, params = self._sql(
                    selection,
                    columns,
                    column_params=column_params,
                    after_id=after_id,
                    upto_id=upto_id,
                    order=order,
                    limit=limit,
                    walk_ts=streams == WALK_TS,
                )
                return finish(db, db.execute(sql, params).fetchall())

            rows = self._run_with(selection, work)
        return rows

    def _tree_rows(
        self,
        db: apsw.Connection,
        selection: _Selection,
        columns: str,
        order: str,
        limit: int,
        after_id: int | None,
        upto_id: int | None,
    ) -> list[tuple[Any, ...]]:
        """The newest (or oldest) *limit* rows of a query read as one condition, by id.

        Each index lookup in the condition gathers its matches before the
        first row is tested: every row holding "error" for "error OR 注文", a
        third of the database and a second at a million rows.  So the rows
        are read in id windows from the wanted end, 4,096 ids then four times
        more each time, with every lookup kept to its window, until *limit*
        rows are found: a common word's newest matches lie in the first."""
        assert selection.tree is not None
        tree, at = selection.tree
        low, high = db.execute(ID_SPAN_SQL).fetchall()[0]
        if low is None:
            return []
        low, high = max(int(low), (after_id or 0) + 1), min(int(high), _MAX_ID if upto_id is None else upto_id)
        rows: list[tuple[Any, ...]] = []
        size = _TREE_WINDOW
        newest = order == "newest"
        while low <= high and len(rows) < limit:
            lo, hi = (max(low, high - size + 1), high) if newest else (low, min(high, low + size - 1))
            window = copy.copy(selection)
            window.where, window.params = list(selection.where), list(selection.params)
            condition, params = self._tree_condition(tree, (lo, hi))
            window.where[at] = condition  # the same parameters, in the same places
            window.add(f'{_T}."id" BETWEEN {lo} AND {hi}')
            sql, bound = self._sql(window, columns, order="id_desc" if newest else "id", limit=limit - len(rows))
            rows += db.execute(sql, bound).fetchall()
            if newest:
                high = lo - 1
            else:
                low = hi + 1
            size *= 4
        return rows

    def _by_user_buckets(self, selection: _Selection) -> bool:
        """Whether a filter-only search is one user's records read bucket by bucket (_user_rows):
        a user filter leads (no agent or request, whose indexes are narrower) and USER_INDEX exists."""
        return (
            selection.fts is None
            and user_match_sql() in selection.where
            and not {"agent_id", "request_id"} & selection.facts.keys()
            and USER_INDEX in self._index_names()
        )

    def _user_rows(
        self, db: apsw.Connection, selection: _Selection, columns: str, order: str, limit: int
    ) -> list[tuple[Any, ...]]:
        """The newest (or oldest) *limit* of a user's records that pass the selection.

        USER_INDEX orders a user's rows by time within each id bucket, not
        overall: SQLite alone would read all of them and sort.  Read instead
        the buckets nearest the wanted end, a widening run of them (1, 4,
        16... buckets), until *limit* rows are found; the other buckets then
        give only rows beyond the last of those in time (one seek each, none
        as a rule: ids follow time).  Only id and ts are read until the end
        (from the index alone when the user is the only filter), and SQLite
        compares and orders, so a damaged row's value sorts as it does
        everywhere else.
        """
        low, high = db.execute(ID_SPAN_SQL).fetchall()[0]
        if low is None:
            return []
        bits = USER_BUCKET_BITS
        first, last = int(low) >> bits, int(high) >> bits
        newest = order == "newest"
        direction = "DESC" if newest else "ASC"
        ordered = f'ORDER BY {_T}."ts" {direction}, {_T}."id" {direction} LIMIT ?'
        every = user_match_sql()

        def read(lo: int, hi: int, beyond: Any = None) -> list[tuple[Any, ...]]:
            """(id, ts) of the selection's rows in buckets lo..hi, in order; *beyond*: only those past that ts."""
            where = [
                user_buckets_within(condition, lo << bits, hi << bits) if condition == every else condition
                for condition in selection.where
            ]
            params = list(selection.params)
            if beyond is not None:
                where.append(f'{_T}."ts" {">" if newest else "<"} ?')
                params.append(beyond)
            sql = f'SELECT {_T}."id", {_T}."ts" FROM {_T} WHERE ' + " AND ".join(where) + " " + ordered
            return db.execute(sql, [*params, limit]).fetchall()

        width = 1
        while True:
            lo, hi = (max(first, last - width + 1), last) if newest else (first, min(last, first + width - 1))
            found = read(lo, hi)
            done = lo == first if newest else hi == last
            if len(found) >= limit or done:
                break
            width *= 4
        if not done:
            found += read(first, lo - 1, found[-1][1]) if newest else read(hi + 1, last, found[-1][1])
        if not found:
            return []
        ids = json.dumps([row[0] for row in found])
        return db.execute(
            f'SELECT {columns} FROM {_T} WHERE {_T}."id" IN (SELECT "value" FROM json_each(?)) {ordered}', [ids, limit]
        ).fetchall()

    def _confirmed(
        self,
        db: apsw.Connection,
        selection: _Selection,
        snippet_params: tuple[Any, ...],
        order: str,
        limit: int | None,
        after_id: int | None,
        upto_id: int | None,
        counting: bool = False,
    ) -> list[tuple[Any, ...]]:
        """A full-text search's rows (each with its snippet, NULL without *snippet_params*), order
        and limit applied; with *counting*, one row holding how many match (order and limit unused).

        When a narrow filter leads, its rows that may match (LogStore._prefilter)
        are copied in batches into a temporary full-text table (one batch at a
        time, so it stays in SQLite's cache: "in memory" below) with the same
        columns and tokenizer, and the query runs there: the same FTS5
        code on the same text decides the match and makes the snippet, for
        some 10 µs a row, where looking each row up in the big index seeks
        every query term in every segment (250 µs with twelve segments).
        """
        columns = self._select_record
        full = columns + ", " + (self._text_sql(f"snippet({_F}, -1, ?, ?, ?, ?)") if snippet_params else "NULL")

        def everything() -> list[tuple[Any, ...]]:
            if counting:
                sql, params = self._sql(selection, "count(*)")
            elif selection.driver == "fts" and order in ("newest", "id_desc") and limit:
                high = min((b for b in (selection.bounds[1], upto_id) if b is not None), default=None)
                if high is not None:
                    return self._newest_below(db, selection, full, snippet_params, after_id, high, limit)
                sql, params = self._sql(
                    selection, full, column_params=snippet_params, after_id=after_id, order=order, limit=limit
                )
            else:
                sql, params = self._sql(
                    selection, full, column_params=snippet_params, after_id=after_id, upto_id=upto_id,
                    order=order, limit=limit,
                )
            return db.execute(sql, params).fetchall()

        in_memory = bool(self._confirm_table(db))
        self._choose_driver(selection, limit, after_id, in_memory)
        table = self._confirm_table(db) if selection.driver == "logs" else ""
        if not table:
            return everything()
        assert selection.fts is not None
        descending = order in ("newest", "id_desc")
        text = ", ".join(f'{_T}."{column}"' for column in self._fts_columns)
        holds = ", ".join(f'"{column}"' for column in self._fts_columns)
        # One statement copies a batch, inside SQLite: FTS5 writes its pending terms
        # out at the end of every statement, so a row per statement cost a segment a
        # row (28 against 10 µs a row, with the match and snippet).
        copy = (
            f'INSERT INTO temp."{table}"("rowid", {holds}) SELECT "id", {text} FROM {_T} '
            'WHERE "id" IN (SELECT "value" FROM json_each(?))'
        )
        snippet_sql = self._text_sql(f'snippet("{table}", -1, ?, ?, ?, ?)') if snippet_params else "NULL"
        batch = _BATCH if limit is None else min(limit + 16, _BATCH)
        found: list[tuple[Any, ...]] = []
        if counting:
            columns, limit = f'{_T}."id"', None
        sql, params = self._sql(selection, columns, after_id=after_id, upto_id=upto_id, order=order, unmatched=True)
        total = 0
        # One statement read in batches: the filter's rows are gathered once, and
        # reading stops when enough of them match.
        cursor = self._candidates(db, selection, sql, params, descending, limit)
        try:
            while limit is None or len(found) < limit:
                rows = list(itertools.islice(cursor, batch))
                if not rows:
                    break
                by_id = {row[0]: row for row in rows}
                # Emptied first as well: a search stopped half way (its timeout) leaves rows.
                db.execute(f'DELETE FROM temp."{table}"')
                try:
                    db.execute(copy, (json.dumps(list(by_id)),))
                    if counting:
                        total += db.execute(
                            f'SELECT count(*) FROM temp."{table}" WHERE "{table}" MATCH ?', (selection.fts,)
                        ).fetchall()[0][0]
                        continue
                    wanted = -1 if limit is None else limit - len(found)
                    matched = db.execute(
                        f'SELECT "rowid", {snippet_sql} FROM temp."{table}" '
                        f'WHERE "{table}" MATCH ? ORDER BY "rowid" {"DESC" if descending else "ASC"} LIMIT ?',
                        (*snippet_params, selection.fts, wanted),
                    ).fetchall()
                finally:
                    db.execute(f'DELETE FROM temp."{table}"')
                found.extend((*by_id[rowid], snippet) for rowid, snippet in matched)
                batch = min(batch * 4, _BATCH)
        finally:
            cursor.close()
        return [(total,)] if counting else found

    def _candidates(
        self,
        db: apsw.Connection,
        selection: _Selection,
        sql: str,
        params: list[Any],
        descending: bool,
        limit: int | None,
    ) -> Iterator[tuple[Any, ...]]:
        """The rows of _confirmed's *sql*, in its order.

        Led by a user's rows (USER_INDEX), the statement gathers them from
        every id bucket before it hands out the first (SQLite orders them by
        id): a user's 2,000 rows in 305 buckets at ten million rows, where the
        newest 100 matches may lie in the newest half.  When the planner
        expects the limit's matches well within the user's rows (as many as
        the query matches among all rows, pro rata), the buckets at the wanted
        end that should hold them, with a margin, are read first; the rest,
        only if they fall short.  The same statement with bounds on the
        buckets: the same rows in the same order either way.
        """
        narrow = selection.probes[0][0] if selection.driver == "logs" and selection.probes else ""
        estimates = selection.estimates
        share = 1.0
        if limit is not None and user_match_sql() in narrow and EVERY_USER_BUCKET in sql and estimates.get("rows"):
            expected = estimates.get("filter", 0.0) * estimates.get("matches", 0.0) / estimates["rows"]
            share = _WINDOW_MARGIN * limit / expected if expected > 0 else 1.0
        if share >= _WINDOW_AT_MOST:
            return self._closing(db.execute(sql, params))
        low, high = db.execute(ID_SPAN_SQL).fetchall()[0]
        if low is None:
            return self._closing(db.execute(sql, params))  # no rows (emptied since the planner looked)
        bits = USER_BUCKET_BITS
        first, last = int(low) >> bits, int(high) >> bits
        wanted = max(1, math.ceil(share * (last - first + 1)))
        if descending:
            windows = [(last - wanted + 1, last), (first, last - wanted)]
        else:
            windows = [(first, first + wanted - 1), (first + wanted, last)]

        def read() -> Iterator[tuple[Any, ...]]:
            for lo, hi in windows:
                if lo > hi:
                    continue  # the first window held every bucket (a bucket list would still hold lo)
                part = user_buckets_within(sql, lo << bits, hi << bits)
                yield from self._closing(db.execute(part, params))

        return read()

    @staticmethod
    def _closing(cursor: apsw.Cursor) -> Iterator[tuple[Any, ...]]:
        """*cursor*'s rows, the cursor closed when they end or the reader is closed."""
        try:
            yield from cursor
        finally:
            cursor.close()

    def _newest_below(
        self,
        db: apsw.Connection,
        selection: _Selection,
        columns: str,
        column_params: tuple[Any, ...],
        after_id: int | None,
        high: int,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        """The newest *limit* matches with an id up to *high* (and above *after_id*), newest first.

        FTS5 walks a term's matches newest first from the newest of all: below
        an upper bound, it steps through every match above it first (the
        middle of ten million rows: 20 ms and more for common words), while
        oldest first it seeks to a lower bound.  So the matches are read
        oldest first in id windows below *high*, each four times wider than
        the last, until *limit* are found; then their rows, in one window.
        """
        low_id = selection.bounds[0]
        floor = max(low_id if low_id is not None else 1, after_id + 1 if after_id is not None else 1)
        saved = selection.bounds
        found: list[int] = []
        try:
            top, width = high, 16 * limit
            while top >= floor and len(found) < limit:
                bottom = max(floor, top - width + 1)
                # One lower and one upper bound on the rowid: FTS5 seeks to the lower one.
                selection.bounds = (bottom, top)
                sql, params = self._sql(selection, f"{_F}.\"rowid\"", order="id")
                found.extend(row[0] for row in reversed(db.execute(sql, params).fetchall()))
                top, width = bottom - 1, width * 4
            if not found:
                return []
            found = found[:limit]
            selection.bounds = (found[-1], found[0])
            sql, params = self._sql(selection, columns, column_params=column_params, order="id")
            rows = db.execute(sql, params).fetchall()
        finally:
            selection.bounds = saved
        rows.reverse()
        return rows

    def _confirm_table(self, db: apsw.Connection) -> str:
        """The temporary table (temp schema) _confirmed copies rows into, made once: "" when the index's
        options are not ones it can copy (a tokenizer is named, nothing else is)."""
        if self._confirm is None:
            self._confirm = ""
            found = db.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (FTS_TABLE,)).fetchall()
            definition = str(found[0][0]) if found else ""
            options = re.findall(r'(\w+)\s*=\s*("[^"]*"|\'[^\']*\'|\w+)', definition)
            names = {name.lower() for name, _ in options}
            tokenize = [value for name, value in options if name.lower() == "tokenize"]
            if names <= {"content", "content_rowid", "tokenize", "columnsize", "prefix"} and len(tokenize) <= 1:
                columns = ", ".join(f'"{column}"' for column in self._fts_columns)
                tokenizer = f", tokenize={tokenize[0]}" if tokenize else ""
                try:
                    db.execute(f'CREATE VIRTUAL TABLE temp."janus_confirm" USING fts5({columns}{tokenizer}, columnsize=0)')
                except apsw.SQLError:
                    return ""  # a tokenizer this process lacks: each row is looked up in the index
                self._confirm = "janus_confirm"
        return self._confirm

    def _index_names(self) -> set[str]:
        if self._indexes is None:
            found = self._rows("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = ?", (TABLE,))
            self._indexes = {str(row[0]) for row in found}
        return self._indexes

    def _streams_sql(
        self, selection: _Selection, streams: Streams, columns: str, order: str, limit: int
    ) -> tuple[str, list[Any]]:
        """One newest-first (or oldest-first) read per value of a filter through its index, merged."""
        direction = "DESC" if order == "newest" else "ASC"
        where = " AND ".join([f'{_T}."{streams.column}" = ?', *selection.where])
        arm = (
            f'SELECT * FROM (SELECT {columns} FROM {_T} INDEXED BY "{streams.index}" WHERE {where} '
            f'ORDER BY {_T}."ts" {direction}, {_T}."id" {direction} LIMIT ?)'
        )
        params: list[Any] = []
        for value in streams.values:
            params.extend([value, *selection.params, limit])
        sql = (
            "SELECT * FROM (" + " UNION ALL ".join([arm] * len(streams.values)) + ")"
            f' ORDER BY "ts" {direction}, "id" {direction} LIMIT ?'
        )
        params.append(limit)
        return sql, params

    def _max_id(self) -> int:
        return int(self._rows(f'SELECT coalesce(max("id"), 0) FROM {_T}')[0][0])

    # ------------------------------------------------------------ public API
    def search(
        self,
        query: str | None = None,
        *,
        level: int | str | None = None,
        logger: str | None = None,
        user_id: IdValue | None = None,
        agent_id: IdValue | None = None,
        request_id: IdValue | None = None,
        service: str | None = None,
        host: str | None = None,
        trace_id: str | None = None,
        since: TimeSpec | None = None,
        until: TimeSpec | None = None,
        fields: Mapping[str, FieldValue] | None = None,
        limit: int | None = 100,
        order: Order = "newest",
        raw: bool = False,
    ) -> list[Record]:
        """The records matching *query* and every filter, *limit* of them (None: all).

        *query* is full-text (FTS5) over message, fields and exception.  By
        default it is made safe (see janus_utils._fts): words, "phrases",
        AND/OR/NOT, prefix* and NEAR() work, stray punctuation is searched as
        words.  ``raw=True`` passes FTS5 syntax through unchanged; an invalid
        raw query raises SearchQueryError.  A blank query means no text filter.
        *order* is "newest" (default), "oldest" or "rank" (best match first,
        needs a query).
        """
        _check_limit(limit, "limit", none_ok=True)
        if order not in _ORDERS:
            raise SearchQueryError(f"order must be one of {', '.join(_ORDERS)}, not {order!r}")
        selection = self._select(
            query,
            raw,
            Filters(
                level=level,
                logger=logger,
                user_id=user_id,
                agent_id=agent_id,
                request_id=request_id,
                service=service,
                host=host,
                trace_id=trace_id,
                since=since,
                until=until,
                fields=fields,
            ),
        )
        if order == "rank" and selection.tree is not None:
            raise SearchQueryError(
                "order='rank' ranks by the full-text index, and this query's CJK or emoji terms are "
                "OR-ed or in a column filter (found as substrings, without a rank): use order='newest' or 'oldest'",
                code="rank_unavailable",
            )
        if order == "rank" and selection.fts is None:
            raise SearchQueryError(
                "order='rank' sorts by relevance to a query: give a query, "
                "or use order='newest' or 'oldest'"
            )
        if limit == 0:
            return []
        return self._records(selection, order=order, limit=limit)

    def count(self, query: str | None = None, *, raw: bool = False, **filters: Unpack[Filters]) -> int:
        """How many records match; the same query and filters as search()."""
        selection = self._select(query, raw, filters)
        counted = self._rolled_up(selection, "", None)
        if counted is not None:
            return sum(number for _, _, number in counted)
        if selection.fts and not selection.where:
            terms = plain_terms(selection.fts) if self._has_term_bits and self._plain_tokens else None
            if terms:
                # Words only: blocks' bitmaps where they have them (janus_utils._termbits).
                fts, counts = selection.fts, self._term_counts
                rows = self._run_with(selection, lambda db: [(count_terms(db, terms, fts, counts),)])
                return int(rows[0][0]) if rows else 0
            # The index alone counts its matches: no row is read (retention
            # and import keep the index and the rows in step).
            rows = self._run(selection, lambda: (f"SELECT count(*) FROM {_F} WHERE {_F} MATCH ?", [selection.fts]))
            return int(rows[0][0]) if rows else 0
        if selection.fts:
            # The filter's rows are copied, text and all: text that is not UTF-8 is read as bytes.
            rows = self._decoding(
                lambda: self._run_with(
                    selection, lambda db: self._confirmed(db, selection, (), "id", None, None, None, counting=True)
                )
            )
        else:
            rows = self._run(selection, lambda: self._sql(selection, "count(*)"))
        return int(rows[0][0]) if rows else 0

    def counts_indexed(self, query: str | None = None, *, raw: bool = False, **filters: Unpack[Filters]) -> bool:
        """Whether count() and histogram() (by level or logger, whole-minute buckets) of this
        selection read per-minute counts rather than the rows: no query, and no filter
        but level, logger, since and until (see janus_utils._rollup)."""
        selection = self._select(query, raw, filters)
        if selection.fts is not None or selection.facts.get("other"):
            return False
        if self._rollup is None:
            self._rollup = Rollup(self._rows)
        return self._rollup.usable()

    def _rolled_up(
        self, selection: _Selection, key: str, width: int | None
    ) -> list[tuple[Any, Any, int]] | None:
        """Counts from the rollup (janus_utils._rollup) when the selection allows; else None."""
        if selection.fts is not None or selection.facts.get("other") or key not in ("", "level", "logger"):
            return None
        if self._rollup is None:
            self._rollup = Rollup(self._rows)
        facts = selection.facts
        try:
            return self._rollup.groups(
                key,
                level=facts.get("level"),
                logger=facts.get("logger"),
                since=facts.get("since"),
                until=facts.get("until"),
                width=width,
            )
        except UnicodeDecodeError:
            return None  # a logger name that is not UTF-8: the rows are counted, text read as bytes

    def histogram(
        self,
        bucket: str = "1h",
        by: str = "level",
        *,
        query: str | None = None,
        raw: bool = False,
        top: int = 10,
        after_id: int | None = None,
        **filters: Unpack[Filters],
    ) -> Histogram:
        """Counts per time bucket and value of *by*, oldest bucket first, empty buckets left out.

        *bucket* is a duration ("1m", "1h", "1d", also "5m"...); buckets are
        aligned to the epoch, UTC.  *by* is "level" (keys are level names),
        "logger" or "user_id" (HISTOGRAM_NONE for records without one).  Values
        outside the *top* most frequent overall are summed as HISTOGRAM_OTHER.
        *after_id* counts only records committed after that record id: the
        newest N records of a big database are a primary-key range, which is
        far cheaper to count than a time range.
        """
        column = HISTOGRAM_BY.get(by)
        if column is None:
            raise SearchQueryError(f"by must be one of {', '.join(HISTOGRAM_BY)}, not {by!r}")
        width = parse_duration(bucket) if isinstance(bucket, str) else 0
        if width <= 0:
            raise SearchQueryError(f"bucket must be a duration like '1m', '1h' or '1d', not {bucket!r}")
        _check_limit(top, "top")
        selection = self._select(query, raw, filters)
        value = f'{_T}."{column}"'
        # Closing the id range as well makes SQLite walk it rather than an
        # index of a broad filter (level >= WARNING is millions of rows).
        upto_id = self._max_id() if after_id is not None else None
        start = bucket_floor_sql(f'{_T}."ts"')
        rolled = self._rolled_up(selection, column, width) if after_id is None else None
        rows = rolled if rolled is not None else self._decoding(
            lambda: self._run(
                selection,
                lambda: self._sql(
                    selection,
                    f"{start} AS bucket_start, {value if by == 'level' else self._text_sql(value)}, count(*)",
                    column_params=(width, width, width),
                    after_id=after_id,
                    upto_id=upto_id,
                    group=f"bucket_start, {value}",
                ),
            )
        )
        totals: dict[str, int] = {}
        named: list[tuple[int, str, int]] = []
        for bucket_start, raw_value, number in rows:
            if type(bucket_start) is not int:  # a damaged row's ts, read by SQLite as a number
                bucket_start = _as_int(bucket_start)
            if raw_value is None:
                name = HISTOGRAM_NONE
            elif by == "level":
                name = _level_label(raw_value)
            else:
                name = _as_text(raw_value)
            totals[name] = totals.get(name, 0) + number
            named.append((bucket_start, name, number))
        kept = set(sorted(totals, key=lambda name: (-totals[name], name))[:top])
        buckets: dict[int, dict[str, int]] = {}
        for bucket_start, name, number in named:
            key = name if name in kept else HISTOGRAM_OTHER
            counts = buckets.setdefault(bucket_start, {})
            counts[key] = counts.get(key, 0) + number
        return [(ts_datetime(start_ts), buckets[start_ts]) for start_ts in sorted(buckets)]

    def tail(
        self,
        n: int = 20,
        follow: bool = False,
        *,
        poll_interval: float = 0.1,
        cursor: int | None = None,
        **filters: Unpack[Filters],
    ) -> Generator[Record, None, None]:
        """The last *n* matching records oldest first, then with *follow* each new one.

        Like ``tail -f``: with ``follow=True`` the generator polls every
        *poll_interval* seconds (each poll a fresh read, so new WAL commits are
        seen) and never ends by itself; stop iterating, or close() it, to stop.
        The cursor is the id of the last record seen: ``tail(cursor=record.id)``
        yields every matching record after it (*n* is then ignored), so a
        follower can resume where it stopped without gaps or repeats.
        The last *n* are counted when tail() is called, and everything
        committed after that is followed.  Filters are those of search();
        errors in them raise here, not on the first next().
        """
        _check_limit(n, "n")
        if cursor is not None and (isinstance(cursor, bool) or not isinstance(cursor, int)):
            raise SearchQueryError(f"cursor must be a record id (an int), not {cursor!r}")
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)) or not poll_interval > 0:
            raise SearchQueryError(f"poll_interval must be a positive number of seconds, not {poll_interval!r}")
        selection = self._select(None, False, filters)
        # The starting point is now, not the first next(): records committed
        # between the call and the first next() are followed, not lost.
        start = self._max_id() if cursor is None else None
        return self._tail(selection, n, follow, float(poll_interval), cursor, start)

    def _tail(
        self,
        selection: _Selection,
        n: int,
        follow: bool,
        poll_interval: float,
        cursor: int | None,
        start: int | None,
    ) -> Generator[Record, None, None]:
        if start is not None:
            position = start
            if n:
                newest = self._records(selection, order="id_desc", limit=n, upto_id=position)
                yield from reversed(newest)
        else:
            assert cursor is not None
            position = cursor
        while True:
            # Rows up to max(id) are committed and no later commit can take a
            # smaller id (prune removes only the oldest), so after reading them
            # the position moves past rows the filters skipped as well.
            newest_id = self._max_id()
            while position < newest_id:
                batch = self._records(
                    selection, order="id", limit=_BATCH, after_id=position, upto_id=newest_id
                )
                position = batch[-1].id if len(batch) == _BATCH else newest_id
                yield from batch
            if not follow:
                return
            time.sleep(poll_interval)

    def get(self, record_id: int) -> Record | None:
        """The record with this id, or None when there is none (never stored, or pruned)."""
        if isinstance(record_id, bool) or not isinstance(record_id, int):
            raise SearchQueryError(f"a record id is an int, not {record_id!r}")
        scope, params = self._scope_where()
        rows = self._decoding(
            lambda: self._rows(f"SELECT {self._select_record} FROM {_T} WHERE {_T}.\"id\" = ?{scope}", (record_id, *params))
        )
        return _record(rows[0]) if rows else None

    def after(
        self,
        cursor: int,
        query: str | None = None,
        *,
        limit: int = 100,
        raw: bool = False,
        **filters: Unpack[Filters],
    ) -> tuple[list[Record], int, int]:
        """What a live view shows next: records committed after the record id *cursor*.

        Returns ``(records, matched, new_cursor)``: the newest *limit* matching
        records with an id above *cursor*, newest first; how many match in all
        (more than *limit* means the caller is shown a sample); and the id to
        pass next time, so that nothing committed later is missed or repeated.
        Unlike tail(), it takes a full-text *query* and never reads more than
        *limit* records, however many arrived.
        """
        if isinstance(cursor, bool) or not isinstance(cursor, int):
            raise SearchQueryError(f"cursor must be a record id (an int), not {cursor!r}")
        _check_limit(limit, "limit")
        selection = self._select(query, raw, filters)
        newest = self._max_id()
        if newest <= cursor or limit == 0:
            return [], 0, max(newest, cursor)
        records = self._records(selection, order="id_desc", limit=limit, after_id=cursor, upto_id=newest)
        matched = len(records)
        if matched == limit:
            rows = self._run(
                selection, lambda: self._sql(selection, "count(*)", after_id=cursor, upto_id=newest)
            )
            matched = int(rows[0][0]) if rows else matched
        return records, matched, newest

    def counts_after(self, cursor: int) -> tuple[dict[tuple[int, str], int], int]:
        """Records committed after the record id *cursor*, counted by (level, logger).

        Returns the counts and the newest id, the cursor for next time: what a
        metrics exporter adds to its counters on each scrape.  Reads only the
        new rows (a range of the primary key).
        """
        if isinstance(cursor, bool) or not isinstance(cursor, int):
            raise SearchQueryError(f"cursor must be a record id (an int), not {cursor!r}")
        newest = self._max_id()
        if newest <= cursor:
            return {}, max(newest, cursor)
        scope, params = self._scope_where()
        rows = self._decoding(
            lambda: self._rows(
                f'SELECT {_T}."level", {self._text_sql(f"{_T}.logger")}, count(*) FROM {_T} '
                f'WHERE {_T}."id" > ? AND {_T}."id" <= ?{scope} GROUP BY {_T}."level", {_T}."logger"',
                (cursor, newest, *params),
            )
        )
        counts: dict[tuple[int, str], int] = {}
        for level, logger, n in rows:
            # A damaged row's level reads as 0 and its logger as text, as in every Record.
            key = (level if type(level) is int else _as_int(level), logger if type(logger) is str else _as_text(logger))
            counts[key] = counts.get(key, 0) + int(n)
        return counts, newest

    def newest_id(self) -> int:
        """The id of the last record committed (0 for an empty database): a cursor for after()."""
        return self._max_id()

    def newest_ts(self) -> int | None:
        """The ts of the newest record (one index lookup), or None for an empty database."""
        if self.scope:
            return self.stats().last_ts
        return self._rows(f'SELECT max("ts") FROM {_T}')[0][0]

    def export(
        self,
        query: str | None = None,
        *,
        raw: bool = False,
        limit: int | None = None,
        batch_size: int = _BATCH,
        newest_first: bool = False,
        **filters: Unpack[Filters],
    ) -> Generator[Record, None, None]:
        """Every matching record, oldest (lowest id) first, read in batches.

        Records committed after the export started are not included.  Each
        batch is its own short read, so a long export never holds the WAL and
        memory stays that of one batch.  *newest_first* walks from the highest
        id down (how ``janus-logs search --limit 0`` streams every match).
        """
        _check_limit(limit, "limit", none_ok=True)
        _check_limit(batch_size, "batch_size")
        if batch_size == 0:
            raise SearchQueryError("batch_size must be at least 1")
        selection = self._select(query, raw, filters)
        upto = self._max_id()
        return self._export(selection, limit, batch_size, upto, newest_first)

    def _export(
        self, selection: _Selection, limit: int | None, batch_size: int, upto: int, newest_first: bool = False
    ) -> Generator[Record, None, None]:
        position = upto if newest_first else 0
        remaining = limit
        while remaining is None or remaining > 0:
            size = batch_size if remaining is None else min(batch_size, remaining)
            if newest_first:
                batch = self._records(selection, order="id_desc", limit=size, upto_id=position)
            else:
                batch = self._records(selection, order="id", limit=size, after_id=position, upto_id=upto)
            yield from batch
            if len(batch) < size:
                return
            position = batch[-1].id - 1 if newest_first else batch[-1].id
            if remaining is not None:
                remaining -= len(batch)

    def stats(
        self, query: str | None = None, *, raw: bool = False, **filters: Unpack[Filters]
    ) -> StoreStats:
        """Counts by level and logger, the first and last ts, and the size on disk."""
        selection = self._select(query, raw, filters)
        by_level_rows = self._run(
            selection, lambda: self._sql(selection, f'{_T}."level", count(*)', group=f'{_T}."level"')
        )
        by_logger_rows = self._decoding(
            lambda: self._run(
                selection,
                lambda: self._sql(selection, f'{self._text_sql(f"{_T}.logger")}, count(*)', group=f'{_T}."logger"'),
            )
        )
        # Only integer ts count: a damaged row's "yesterday" sorts after every number.
        if selection.where or selection.fts is not None:
            valid = f"""CASE WHEN typeof({_T}."ts") = 'integer' THEN {_T}."ts" END"""
            bounds = self._run(selection, lambda: self._sql(selection, f"min({valid}), max({valid})"))
        else:
            # Separate subqueries: each is one index lookup, together a full scan.
            first, last = (
                f"""(SELECT "ts" FROM {_T} WHERE "ts" BETWEEN ? AND ? AND typeof("ts") = 'integer'
                    ORDER BY "ts" {direction} LIMIT 1)"""
                for direction in ("ASC", "DESC")
            )
            bounds = self._rows(f"SELECT {first}, {last}", (-_MAX_INT64 - 1, _MAX_INT64) * 2)
        first_ts, last_ts = bounds[0] if bounds else (None, None)
        page_count = self._rows("PRAGMA page_count")[0][0]
        page_size = self._rows("PRAGMA page_size")[0][0]
        try:
            wal_bytes = os.path.getsize(self.path + "-wal")
        except OSError:
            wal_bytes = 0
        by_level: dict[str, int] = {}
        for level, number in sorted(by_level_rows, key=_level_order):
            name = _level_label(level)
            by_level[name] = by_level.get(name, 0) + number
        loggers: dict[str, int] = {}
        for name, number in by_logger_rows:
            text = name if type(name) is str else _as_text(name)
            loggers[text] = loggers.get(text, 0) + number
        by_logger = dict(sorted(loggers.items(), key=lambda item: (-item[1], item[0])))
        return StoreStats(
            records=sum(by_level.values()),
            by_level=by_level,
            by_logger=by_logger,
            first_ts=first_ts,
            last_ts=last_ts,
            db_bytes=page_count * page_size,
            wal_bytes=wal_bytes,
        )

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[dict[str, Any]]:
        """Run read-only SQL on the database: its rows as ``{column: value}`` dicts.

        The way to query a log database with your own SQL (an admin page,
        ``pandas.DataFrame(store.sql(...))``) from a process that logs into
        it: Python's ``sqlite3`` is refused there, because two SQLite
        libraries in one process corrupt the database; this runs on apsw,
        the library the flusher writes with.  The connection is read-only:
        a statement that writes raises SearchQueryError.  ``params`` bind
        ``?`` (a sequence) or ``:name`` (a mapping) placeholders.  A store
        opened with a scope refuses it: SQL of one's own could read anything.
        """
        if self.scope:
            raise SearchQueryError(
                "LogStore.sql() reads the whole database, so a store opened with a scope refuses it: "
                "use search(), count(), histogram(), tail() or export()",
                code="scope_refused",
            )
        with self._reading() as db:
            try:
                cursor = db.execute(query, params)
                rows = []
                for row in cursor:
                    # Per row: a query of several statements has their columns each.
                    rows.append(dict(zip((d[0] for d in cursor.getdescription()), row)))
                return rows
            except apsw.ReadOnlyError as exc:
                raise SearchQueryError(
                    f"LogStore.sql() only reads; this statement writes: {query!r}",
                    details={"query": query},
                ) from exc
            except (apsw.SQLError, apsw.BindingsError) as exc:
                reason = str(exc).removeprefix("SQLError: ")
                raise SearchQueryError(
                    f"invalid SQL {query!r} ({reason})", details={"query": query}
                ) from exc
            except UnicodeDecodeError as exc:
                raise SearchQueryError(
                    f"a value read by {query!r} is TEXT that is not UTF-8 (written by another program): "
                    "select it as CAST(column AS BLOB) to read its bytes",
                    details={"query": query},
                    code="text_not_utf8",
                ) from exc


SCOPE_KEYS = ("user_id", "agent_id", "logger", "level", "service", "host")


def _check_scope(scope: Mapping[str, Any] | None) -> dict[str, Any]:
    """A scope as LogStore applies it: user_id, agent_id, service, host as text; logger a prefix; level a floor."""
    if scope is None:
        return {}
    if not isinstance(scope, Mapping):
        raise SearchQueryError(f"scope must be a mapping like {{'user_id': 42}}, not {type(scope).__name__}")
    checked: dict[str, Any] = {}
    for key, value in scope.items():
        if key not in SCOPE_KEYS:
            raise SearchQueryError(f"scope cannot hold {key!r}: use {', '.join(SCOPE_KEYS)}")
        if value is None or isinstance(value, bool) or isinstance(value, (list, tuple, set, dict)):
            raise SearchQueryError(f"scope {key} must be one value (text or a number), not {value!r}")
        if key == "level":
            checked[key] = _level_number(value)
        elif key == "logger":
            name = _text(str(value), "scope logger").rstrip(".")
            if not name:
                raise SearchQueryError("scope logger must be a logger name like 'app' or 'app.db'")
            checked[key] = name
        else:
            # Stored as text (an int user id 42 is stored as "42").
            checked[key] = _text(value if isinstance(value, str) else str(value), f"scope {key}")
    return checked


def _level_order(row: tuple[Any, ...]) -> tuple[int, Any]:
    """Sorts stored levels: numbers by value, then anything a damaged row holds."""
    level = row[0]
    return (0, level) if type(level) is int else (1, repr(level))


def _level_label(level: object) -> str:
    return level_name(level) if type(level) is int else LEVEL_INVALID


def _level_number(level: int | str) -> int:
    """A level filter as a number SQLite can compare: 0 to 2**63 - 1."""
    text = level.strip() if isinstance(level, str) else ""
    try:
        # A long digit string is refused before int() meets its 4300-digit limit.
        number = _MAX_INT64 + 1 if text.isdigit() and len(text) > 20 else parse_level(level)
    except ValueError as exc:
        raise SearchQueryError(str(exc), details={"level": repr(level)[:40]}) from exc
    if number > _MAX_INT64:
        raise SearchQueryError(
            f"level {repr(level)[:40]} is too large: give a level name like WARNING or a number below 2**63"
        )
    return number


def _check_limit(value: object, name: str, *, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT64:
        raise SearchQueryError(f"{name} must be a whole number from 0 to 2**63 - 1, not {repr(value)[:40]}")
