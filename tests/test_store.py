"""Tests of janus_utils.store (LogStore, Record) and janus_utils._timeparse."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import apsw
import pytest

import conftest
from conftest import BASE_TS, make_row, open_writer, write_batch
from janus_utils._schema import COLUMNS
from janus_utils._timeparse import format_ts, parse_duration, parse_time
from janus_utils.error_handling import JanusError
from janus_utils.error_handling.utils.errors import FileHandlerError, SearchQueryError
from janus_utils import store as store_module
from janus_utils.store import HISTOGRAM_NONE, HISTOGRAM_OTHER, LEVEL_INVALID, SNIPPET_END, SNIPPET_START, LogStore, Record

T = TypeVar("T")
MINUTE = 60 * 1_000_000_000
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
NOW_NS = 1_714_564_800 * 1_000_000_000


def next_within(iterator: Iterator[T], seconds: float = 30.0) -> T:
    """next(iterator), failing the test instead of hanging if nothing ever comes."""
    box: list[tuple[bool, Any]] = []

    def advance() -> None:
        try:
            box.append((True, next(iterator)))
        except BaseException as exc:  # handed to the test thread
            box.append((False, exc))

    thread = threading.Thread(target=advance, daemon=True)
    thread.start()
    thread.join(seconds)
    if not box:
        pytest.fail(f"no record within {seconds} s: the follower never saw the commit")
    ok, value = box[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


# Nine records one minute apart, written the way the flusher writes them.
CORPUS: list[dict[str, Any]] = [
    dict(message="connection reset by peer", logger="app.net", level=40),
    dict(message="connection refused", logger="app.net", level=30),
    dict(message="payment accepted", logger="app.pay", user_id="u1", fields=json.dumps({"status": 200, "order": 42})),
    dict(message="payment declined", logger="app.pay", level=30, user_id="u2", fields=json.dumps({"status": 402, "card": "visa"})),
    dict(message="user login ok", logger="app", user_id="u1", request_id="r1"),
    dict(
        message="user login failed",
        logger="app.auth",
        level=30,
        user_id="u2",
        request_id="r2",
        exception="Traceback (most recent call last):\nValueError: bad password",
    ),
    dict(message="cache warm", logger="appx", level=10),
    dict(message="db timeout", logger="app.db", level=50, agent_id="a1", fields=json.dumps({"host": "db-01", "retry": True, 'we"ird.key': "yes"})),
    dict(message="slow query", logger="app.db", level=30, fields=json.dumps({"ms": 1500.5, "note": None, "code": "200"})),
]


@pytest.fixture
def corpus_db(make_log_db: Callable[..., Path]) -> Path:
    """A database holding CORPUS, record i at BASE_TS + i minutes (ids 1..9)."""
    return make_log_db([make_row(ts=BASE_TS + i * MINUTE, **spec) for i, spec in enumerate(CORPUS)])


@pytest.fixture
def store(corpus_db: Path) -> Iterator[LogStore]:
    """A LogStore over corpus_db, closed afterwards."""
    with LogStore(corpus_db) as opened:
        yield opened


def ids(records: list[Record]) -> list[int]:
    return [record.id for record in records]


class TestTimeParsing:
    @pytest.mark.parametrize(
        ("text", "before_now"),
        [
            ("30s", timedelta(seconds=30)),
            ("15m", timedelta(minutes=15)),
            ("2h", timedelta(hours=2)),
            ("7d", timedelta(days=7)),
            ("1w", timedelta(weeks=1)),
            ("1.5h", timedelta(minutes=90)),
            ("15min", timedelta(minutes=15)),
            ("2 hours", timedelta(hours=2)),
            ("3 days ago", timedelta(days=3)),
            ("  10M ", timedelta(minutes=10)),
            ("now", timedelta(0)),
        ],
    )
    def test_relative(self, text: str, before_now: timedelta) -> None:
        """A duration means that long before now."""
        expected = NOW_NS - int(before_now.total_seconds()) * 1_000_000_000
        assert expected == parse_time(text, now=NOW)

    def test_today_and_yesterday(self) -> None:
        """today and yesterday are UTC midnights."""
        midnight = 1_714_521_600 * 1_000_000_000
        assert (midnight, midnight - 86_400 * 1_000_000_000) == (
            parse_time("today", now=NOW),
            parse_time("Yesterday", now=NOW),
        )

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("2024-05-01T12:00:00Z", NOW_NS),
            ("2024-05-01T14:00:00+02:00", NOW_NS),
            ("2024-05-01 12:00", NOW_NS),
            ("2024-05-01T12:00:00.000000123Z", NOW_NS + 123),
            ("2024-05-01", NOW_NS - 12 * 3600 * 1_000_000_000),
            ("1714564800", NOW_NS),
            ("1714564800.5", NOW_NS + 500_000_000),
            (1714564800, NOW_NS),
            (1714564800.25, NOW_NS + 250_000_000),
            (NOW, NOW_NS),
            (datetime(2024, 5, 1, 12, 0), NOW_NS),
            (datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))), NOW_NS),
        ],
    )
    def test_absolute(self, value: Any, expected: int) -> None:
        """ISO 8601, epoch seconds and datetimes; naive means UTC."""
        assert expected == parse_time(value, now=NOW)

    @pytest.mark.parametrize("value", ["", "soon", "5 parsecs", "2024-13-01", "-", "1e400", True, None, [1], float("nan"), 10**20])
    def test_bad_values_name_the_accepted_forms(self, value: Any) -> None:
        """Anything else raises SearchQueryError listing the accepted forms."""
        with pytest.raises(SearchQueryError) as caught:
            parse_time(value, now=NOW)
        assert "15m" in caught.value.message and "ISO 8601" in caught.value.message

    def test_duration(self) -> None:
        """parse_duration reads the histogram bucket sizes."""
        assert [60, 3600, 86400] == [parse_duration(t) // 1_000_000_000 for t in ("1m", "1h", "1d")]

    @pytest.mark.parametrize("text", ["9" * 400 + "d", "106752d", "1" + "0" * 30 + "s"])
    def test_duration_past_64_bits(self, text: str) -> None:
        """A duration 64-bit nanoseconds cannot hold is refused with the limit, not an OverflowError."""
        with pytest.raises(SearchQueryError, match=r"too long: at most 106751d"):
            parse_duration(text)

    def test_since_of_400_nines_days(self) -> None:
        """--since '999...d' (400 nines) is a SearchQueryError, and its message stays short."""
        with pytest.raises(SearchQueryError) as caught:
            parse_time("9" * 400 + "d", now=NOW)
        assert len(caught.value.message) < 200

    def test_format_round_trips(self) -> None:
        """format_ts with nine digits reads back as the same ts."""
        assert NOW_NS + 123 == parse_time(format_ts(NOW_NS + 123, digits=9))


class TestOpening:
    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a FileHandlerError naming the path; nothing is created."""
        path = tmp_path / "nope.db"
        with pytest.raises(FileHandlerError) as caught:
            LogStore(path)
        assert str(path) in caught.value.message and not path.exists()

    def test_non_utf8_path(self, tmp_path: Path) -> None:
        """A path SQLite cannot be given (not UTF-8) is a FileHandlerError saying so."""
        with pytest.raises(FileHandlerError, match="not valid UTF-8"):
            LogStore(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.db"))

    def test_directory(self, tmp_path: Path) -> None:
        """A directory is refused clearly."""
        with pytest.raises(FileHandlerError, match="is a directory"):
            LogStore(tmp_path)

    def test_not_sqlite(self, tmp_path: Path) -> None:
        """A file that is not SQLite says so."""
        path = tmp_path / "text.db"
        path.write_text("hello, I am not a database" * 100)
        with pytest.raises(FileHandlerError, match="not a SQLite database"):
            LogStore(path)

    def test_sqlite_but_not_janus(self, tmp_path: Path) -> None:
        """Another application's SQLite database is refused, not migrated."""
        path = tmp_path / "other.db"
        db = apsw.Connection(str(path))
        db.execute("CREATE TABLE t(x)")
        db.close()
        with pytest.raises(FileHandlerError, match="not a janus log database"):
            LogStore(path)
        db = apsw.Connection(str(path))
        try:
            assert [("t",)] == db.execute("SELECT name FROM sqlite_schema").fetchall()
        finally:
            db.close()

    def test_newer_schema(self, make_log_db: Callable[..., Path]) -> None:
        """A schema newer than this janus_utils asks for an upgrade."""
        path = make_log_db()
        db = apsw.Connection(str(path))
        db.execute("PRAGMA user_version=99")
        db.close()
        with pytest.raises(FileHandlerError, match="upgrade janus_utils"):
            LogStore(path)

    def test_errors_are_janus_errors(self, tmp_path: Path) -> None:
        """Opening errors derive from JanusError."""
        with pytest.raises(JanusError):
            LogStore(tmp_path / "missing.db")

    def test_closed_store(self, corpus_db: Path) -> None:
        """Using a closed store raises FileHandlerError; closing twice is fine."""
        store = LogStore(corpus_db)
        store.close()
        store.close()
        with pytest.raises(FileHandlerError, match="closed"):
            store.search()

    def test_context_manager_closes(self, corpus_db: Path) -> None:
        """Leaving the with block closes the store."""
        with LogStore(corpus_db) as store:
            assert 9 == store.count()
        assert "closed" in repr(store)

    def test_read_only(self, corpus_db: Path) -> None:
        """The connection is read-only: nothing can be written through it."""
        with LogStore(corpus_db) as store:
            assert store._db is not None
            with pytest.raises(apsw.ReadOnlyError):
                store._db.execute("DELETE FROM logs")
            assert 9 == store.count()

    def test_reader_not_blocked_by_open_write_transaction(self, corpus_db: Path) -> None:
        """While the writer is mid-transaction the reader sees the last commit, at once."""
        writer = open_writer(corpus_db)
        try:
            with LogStore(corpus_db, busy_timeout_ms=100) as store:
                writer.execute("BEGIN IMMEDIATE")
                writer.executemany(conftest.INSERT_SQL, [make_row("uncommitted")])
                assert 9 == store.count()
                assert [] == store.search("uncommitted")
                writer.execute("COMMIT")
                assert 10 == store.count()
        finally:
            writer.close()

    def test_reads_the_file_through_a_memory_map_on_64_bit(self, corpus_db: Path) -> None:
        """A 64-bit build maps the database file: a page costs a memory access, not a read()."""
        with LogStore(corpus_db) as store:
            assert store._db is not None
            mapped = store._db.execute("PRAGMA mmap_size").fetchall()[0][0]
            assert (mapped > 0) == (sys.maxsize > 2**32)

    def test_a_reader_survives_the_file_shrinking_under_it(self, make_log_db: Callable[..., Path]) -> None:
        """Rows deleted, VACUUM, the WAL checkpointed (the file cut short): an open store reads on."""
        path = make_log_db([make_row(f"row {n} " + "x" * 2000, user_id=f"u{n % 3}") for n in range(600)])
        with LogStore(path) as store:
            assert 200 == store.count(user_id="u1")
            assert 200 == len(store.search(user_id="u1", limit=None))
            size = path.stat().st_size
            writer = open_writer(path)
            try:
                writer.execute("DELETE FROM logs WHERE id > 30")
                writer.execute("INSERT INTO logs_fts(logs_fts) VALUES ('rebuild')")
                writer.execute("VACUUM")
                writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                writer.close()
            assert path.stat().st_size < size // 4
            assert 10 == store.count(user_id="u1")
            assert [r.id for r in store.search(user_id="u1", limit=None)] == sorted(
                (n + 1 for n in range(30) if n % 3 == 1), reverse=True
            )
            assert 30 == len(store.search("row", limit=None))


class TestRecord:
    def test_to_dict(self, store: LogStore) -> None:
        """to_dict has every column, the level name, ISO time and parsed fields."""
        record = store.search(request_id="r1")[0]
        assert {
            "id": 5,
            "ts": BASE_TS + 4 * MINUTE,
            "time": "2023-11-14T22:17:20.000000Z",
            "level": 20,
            "level_name": "INFO",
            "logger": "app",
            "message": "user login ok",
            "user_id": "u1",
            "agent_id": None,
            "request_id": "r1",
            "trace_id": None,
            "span_id": None,
            "pid": 1234,
            "thread": "MainThread",
            "fields": {},
            "exception": None,
            "service": None,
            "host": None,
        } == record.to_dict()

    def test_time_is_utc_datetime(self, store: LogStore) -> None:
        """Record.time is an aware UTC datetime."""
        record = store.search(request_id="r1")[0]
        assert datetime(2023, 11, 14, 22, 17, 20, tzinfo=timezone.utc) == record.time

    def test_fields_parsed(self, store: LogStore) -> None:
        """fields come back as a dict."""
        assert {"status": 402, "card": "visa"} == store.search(user_id="u2", logger="app.pay")[0].fields

    def test_unparsable_fields_kept(self, make_log_db: Callable[..., Path]) -> None:
        """A fields text that is not a JSON object is kept under _unparsed."""
        with LogStore(make_log_db([make_row(fields="not json"), make_row(fields="[1]")])) as store:
            assert [{"_unparsed": "[1]"}, {"_unparsed": "not json"}] == [r.fields for r in store.search()]

    @pytest.mark.parametrize(
        "text",
        [
            '{"status": 200, "path": "/a"}',
            ' {"status": 200}',
            '{"status": 200}\n',
            '{"status": 200} extra',
            '{"a": 1}{"b": 2}',
            '\ufeff{"a": 1}',
            '{"a": NaN, "b": -Infinity}',
            '{"a": {"b": [1, 2.5, null, true]}, "c": "\\u00e9"}',
            '{"a": 1, "a": 2}',
            '{"a": 1',
            '"text"',
            "12",
            "null",
            "{}",
        ],
    )
    def test_fields_read_as_json_loads_reads_them(self, make_log_db: Callable[..., Path], text: str) -> None:
        """Whitespace around, data after, a BOM, NaN, nesting: the fields are what json.loads makes of the text."""
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        expected = value if isinstance(value, dict) else {"_unparsed": text}
        with LogStore(make_log_db([make_row("x", fields=text)])) as store:
            assert [expected] == [r.fields for r in store.search()]
            assert [expected] == [r.fields for r in store.search("x")]

    def test_columns_are_the_first_fields_of_a_record_in_order(self) -> None:
        """A row becomes a Record by position: the stored columns must stay Record's first fields."""
        assert ("id", *COLUMNS) == tuple(f.name for f in dataclasses.fields(Record))[: len(COLUMNS) + 1]

    def test_snippet_marks_hits(self, store: LogStore) -> None:
        """A query's snippet wraps each hit in SNIPPET_START and SNIPPET_END."""
        record = store.search("refused")[0]
        assert f"connection {SNIPPET_START}refused{SNIPPET_END}" == record.snippet
        assert "snippet" in record.to_dict()

    def test_no_snippet_without_query(self, store: LogStore) -> None:
        """Without a query there is no snippet key."""
        assert "snippet" not in store.search(limit=1)[0].to_dict()

    def test_frozen(self, store: LogStore) -> None:
        """Records are immutable."""
        record = store.search(limit=1)[0]
        with pytest.raises(AttributeError):
            record.message = "changed"  # type: ignore[misc]


class TestDamagedRows:
    """Rows an older import let in ("yesterday" as ts, "HIGH" as level): every reader still works."""

    @pytest.fixture
    def damaged(self, make_log_db: Callable[..., Path]) -> Iterator[LogStore]:
        rows = [
            make_row("good one", ts=BASE_TS),
            make_row("bad ts", ts="yesterday"),
            make_row("bad level", ts=BASE_TS + MINUTE, level="HIGH"),
            make_row("real ts", ts=1.5, level=20.5),
            make_row("blob logger", ts=BASE_TS + 2 * MINUTE, logger=b"\xffapp", user_id=b"\x00u", pid="x"),
            make_row("deep fields", ts=BASE_TS + 3 * MINUTE, fields="[" * 100_000 + "]" * 100_000),
        ]
        with LogStore(make_log_db(rows)) as store:
            yield store

    def test_search_reads_every_row_and_keeps_what_was_wrong(self, damaged: LogStore) -> None:
        """A damaged value reads as 0 (pid as None) and the stored value is kept in fields["_invalid"]."""
        records = {r.message: r for r in damaged.search(order="oldest")}
        assert (0, 0, {"ts": "yesterday"}) == (records["bad ts"].ts, records["bad ts"].level - 20, records["bad ts"].fields["_invalid"])
        assert (BASE_TS + MINUTE, 0, {"level": "HIGH"}) == (
            records["bad level"].ts,
            records["bad level"].level,
            records["bad level"].fields["_invalid"],
        )
        assert (1, 20, {"ts": "1.5", "level": "20.5"}) == (
            records["real ts"].ts,
            records["real ts"].level,
            records["real ts"].fields["_invalid"],
        )
        blob = records["blob logger"]
        assert ("\\xffapp", "\x00u", None, {"pid": "x"}) == (blob.logger, blob.user_id, blob.pid, blob.fields["_invalid"])
        assert "_unparsed" in records["deep fields"].fields
        json.dumps([r.to_dict() for r in records.values()])

    def test_full_text_search_tail_and_export(self, damaged: LogStore) -> None:
        """The query path, tail and export read damaged rows as search does."""
        assert {"bad ts", "bad level"} == {r.message for r in damaged.search("bad")}
        assert 6 == len(list(damaged.tail(10))) == len(list(damaged.export()))

    def test_stats_and_histogram(self, damaged: LogStore) -> None:
        """stats counts a level that is not an integer as LEVEL_INVALID; times come from integer ts only."""
        stats = damaged.stats()
        assert (6, 2, BASE_TS, BASE_TS + 3 * MINUTE) == (
            stats.records,
            stats.by_level[LEVEL_INVALID],
            stats.first_ts,
            stats.last_ts,
        )
        assert {"app": 5, "\\xffapp": 1} == stats.by_logger
        filtered = damaged.stats(since=BASE_TS // 1_000_000_000)
        assert (BASE_TS, BASE_TS + 3 * MINUTE) == (filtered.first_ts, filtered.last_ts)
        assert 6 == sum(sum(counts.values()) for _, counts in damaged.histogram("1h", "level"))

    def test_cursor_reads(self, damaged: LogStore) -> None:
        """get(), after() and counts_after() (the console's and the metrics' reads) take damaged rows too."""
        counts, newest = damaged.counts_after(0)
        records, matched, _ = damaged.after(0)
        assert (6, 6, {"level": "HIGH"}) == (newest, matched, damaged.get(3).fields["_invalid"])  # type: ignore[union-attr]
        assert (6, 1, 1) == (sum(counts.values()), counts[(0, "app")], counts[(20, "\\xffapp")])


@pytest.mark.skipif(store_module._c_records is None, reason="janus_utils._records is not built")
class TestRecordsInC:
    """_records.build makes the Records store._record makes, whatever the rows hold."""

    ROWS: list[tuple[Any, ...]] = [
        (1, BASE_TS, 20, "app", "plain", None, None, None, None, None, 7, "T", None, '{"a": 1}', None, "h"),
        (2, BASE_TS, 40, "app.db", "with all", "u", "ag", "rq", "tr", "sp", None, "T", "Traceback", "", "svc", None),
        (3, BASE_TS, 20, "app", "no fields", None, None, None, None, None, 7, "T", None, None, None, None),
        (4, BASE_TS, 20, "app", "bad json", None, None, None, None, None, 7, "T", None, "{oops", None, None),
        (5, "yesterday", 20, "app", "bad ts", None, None, None, None, None, 7, "T", None, None, None, None),
        (6, 2**63, 20, "app", "ts past int64", None, None, None, None, None, 7, "T", None, None, None, None),
        (7, BASE_TS, 20.5, "app", "real level", None, None, None, None, None, 7, "T", None, None, None, None),
        (8, BASE_TS, 20, b"\xffapp", "blob logger", None, None, None, None, None, "x", "T", None, None, None, None),
        (9, BASE_TS, 20, "app", None, None, None, None, None, None, None, None, None, b'{"b": 2}', None, None),
        (10, True, 20, "app", "bool ts", None, None, None, None, None, 7, "T", None, None, None, None),
    ]

    def _both(self, rows: list[tuple[Any, ...]], with_snippet: bool) -> tuple[list[Record], list[Record]]:
        made = store_module._c_records.build(
            rows, Record, store_module._SLOT_OFFSETS, store_module._parse_fields, store_module._record, with_snippet
        )
        if with_snippet:
            return made, [store_module._record(row[:-1], row[-1]) for row in rows]
        return made, [store_module._record(row) for row in rows]

    def test_the_same_records_as_python(self) -> None:
        made, expected = self._both(self.ROWS, False)
        assert expected == made
        assert [dataclasses.asdict(r) for r in expected] == [dataclasses.asdict(r) for r in made]
        assert all(type(r) is Record for r in made)
        snippets = ["[plain]", None, b"\xff bytes", "x", None, "y", None, "z", None, "w"]
        made, expected = self._both([(*row, snip) for row, snip in zip(self.ROWS, snippets)], True)
        assert expected == made
        assert "\\xff bytes" == made[2].snippet

    def test_records_hold_their_values_and_nothing_leaks(self) -> None:
        """Each value is referenced once more per Record, and once less when it goes."""
        message = "".join(["held ", "message"])  # a str of its own
        row = (1, BASE_TS, 20, "app", message, None, None, None, None, None, 7, "T", None, None, None, None)
        before = sys.getrefcount(message)
        made = store_module._c_records.build([row] * 100, Record, store_module._SLOT_OFFSETS,
                                             store_module._parse_fields, store_module._record, False)
        assert before + 100 == sys.getrefcount(message)
        del made
        assert before == sys.getrefcount(message)

    def test_a_row_of_the_wrong_width_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="row 1"):
            store_module._c_records.build([self.ROWS[0], self.ROWS[0][:-1]], Record, store_module._SLOT_OFFSETS,
                                          store_module._parse_fields, store_module._record, False)
        with pytest.raises(TypeError, match="not an object slot"):
            store_module._c_records.slot_offsets(Record, ("level_name",))  # a property


class TestTextNotUtf8:
    """TEXT that is not UTF-8 (another program's UPDATE; SQLite keeps any bytes): every reader works."""

    @pytest.fixture
    def store(self, make_log_db: Callable[..., Path]) -> Iterator[LogStore]:
        rows = [make_row(f"plain {i} words", ts=BASE_TS + i * MINUTE, user_id="u1") for i in range(6)]
        path = make_log_db(rows)
        db = apsw.Connection(str(path))
        # Row 2: invalid bytes in the message, the logger, the user and the fields.
        db.execute(
            "UPDATE logs SET message = CAST(X'706c61696e20ff20776f726473' AS TEXT), "
            "logger = CAST(X'617070ff' AS TEXT), user_id = CAST(X'7531ff' AS TEXT), "
            "fields = CAST(X'7b2261223a2022ff227d' AS TEXT) WHERE id = 2"
        )
        db.execute("INSERT INTO logs_fts(logs_fts) VALUES('rebuild')")
        db.close()
        with LogStore(path) as store:
            yield store

    def test_records_read_with_the_bad_bytes_escaped(self, store: LogStore) -> None:
        """Search (free text, filters, both), get, tail, export and after all return every row."""
        bad = store.get(2)
        assert bad is not None
        # The fields are kept as read: "\\xff" is no JSON escape.
        assert ("plain \\xff words", "app\\xff", "u1\\xff", {"_unparsed": '{"a": "\\xff"}'}) == (
            bad.message, bad.logger, bad.user_id, bad.fields
        )
        assert list(range(6, 0, -1)) == [r.id for r in store.search()]
        assert list(range(6, 0, -1)) == [r.id for r in store.search("plain words")]
        snippets = {r.id: r.snippet for r in store.search("plain")}
        assert f"{SNIPPET_START}plain{SNIPPET_END} \\xff words" == snippets[2]
        assert [1, 3, 4, 5, 6] == sorted(r.id for r in store.search("words", logger="app"))
        assert [3, 2] == [r.id for r in store.search("words", level="INFO", until=BASE_TS // 10**9 + 150, limit=2)]
        assert 6 == len(list(store.tail(10))) == len(list(store.export())) == store.after(0)[1]
        # Rows that are UTF-8 read as before.
        assert "plain 5 words" == store.get(6).message  # type: ignore[union-attr]

    def test_counts(self, store: LogStore) -> None:
        """stats, histograms and counts_after name the bad logger with its bytes escaped."""
        assert {"app": 5, "app\\xff": 1} == store.stats().by_logger
        assert {"app": 5, "app\\xff": 1} == {
            name: n for _, counts in store.histogram("1d", "logger") for name, n in counts.items()
        }
        counts, newest = store.counts_after(0)
        assert (6, 5, 1) == (newest, counts[(20, "app")], counts[(20, "app\\xff")])
        assert (6, 6) == (store.count("plain"), store.count())

    def test_a_count_whose_filter_leads_reads_the_text_as_bytes(self, make_log_db: Callable[..., Path]) -> None:
        """A fresh store: count() with a narrow filter copies the rows' text, and meets the bad bytes first."""
        rows = [make_row(f"plain {i} words", ts=BASE_TS + i * MINUTE, request_id=f"r{i}") for i in range(2000)]
        path = make_log_db(rows)
        db = apsw.Connection(str(path))
        db.execute("UPDATE logs SET message = CAST(X'706c61696e20ff20776f726473' AS TEXT) WHERE id = 301")
        db.execute("INSERT INTO logs_fts(logs_fts) VALUES('rebuild')")
        db.close()
        with LogStore(path) as store:
            assert 1 == store.count("words", request_id="r300")

    def test_own_sql_says_what_to_do(self, store: LogStore) -> None:
        with pytest.raises(SearchQueryError, match="CAST") as info:
            store.sql("SELECT message FROM logs WHERE id = 2")
        assert "text_not_utf8" == info.value.code
        assert [{"m": b"plain \xff words"}] == store.sql("SELECT CAST(message AS BLOB) AS m FROM logs WHERE id = 2")


class TestFilters:
    def test_no_filter_newest_first(self, store: LogStore) -> None:
        """By default the newest records come first."""
        assert [9, 8, 7, 6, 5, 4, 3, 2, 1] == ids(store.search())

    def test_oldest_first(self, store: LogStore) -> None:
        """order='oldest' reverses it."""
        assert [1, 2, 3] == ids(store.search(order="oldest", limit=3))

    @pytest.mark.parametrize(("level", "expected"), [("ERROR", [8, 1]), ("error", [8, 1]), (40, [8, 1]), ("40", [8, 1]), ("CRIT", [8]), ("WARN", [9, 8, 6, 4, 2, 1])])
    def test_level_minimum(self, store: LogStore, level: Any, expected: list[int]) -> None:
        """level is a minimum, by name, alias or number."""
        assert expected == ids(store.search(level=level))

    @pytest.mark.parametrize(
        ("logger", "expected"),
        [("app", [9, 8, 6, 5, 4, 3, 2, 1]), ("app.", [9, 8, 6, 5, 4, 3, 2, 1]), ("app.db", [9, 8]), ("appx", [7]), ("app.d", []), ("ap", [])],
    )
    def test_logger_prefix(self, store: LogStore, logger: str, expected: list[int]) -> None:
        """logger matches the name and its dotted children only."""
        assert expected == ids(store.search(logger=logger))

    def test_user_agent_request(self, store: LogStore) -> None:
        """user_id, agent_id and request_id are equality filters."""
        assert ([5, 3], [8], [6]) == (
            ids(store.search(user_id="u1")),
            ids(store.search(agent_id="a1")),
            ids(store.search(request_id="r2")),
        )

    def test_since_until(self, store: LogStore) -> None:
        """since is inclusive and until exclusive, in any accepted form."""
        since = datetime(2023, 11, 14, 22, 15, 20, tzinfo=timezone.utc)  # record 3
        until = "2023-11-14T22:18:20Z"  # record 6, excluded
        assert [5, 4, 3] == ids(store.search(since=since, until=until))
        assert [2, 1] == ids(store.search(until=(BASE_TS + 2 * MINUTE) / 1e9))

    def test_relative_since(self, make_log_db: Callable[..., Path]) -> None:
        """since='1h' keeps records of the last hour."""
        now = datetime.now(timezone.utc)
        recent = parse_time(now - timedelta(minutes=10))
        old = parse_time(now - timedelta(hours=3))
        with LogStore(make_log_db([make_row("old", ts=old), make_row("recent", ts=recent)])) as store:
            assert ["recent"] == [r.message for r in store.search(since="1h")]

    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            ({"status": 402}, [4]),
            ({"status": 402.0}, [4]),
            ({"status": "402"}, []),
            ({"code": "200"}, [9]),
            ({"code": 200}, []),
            ({"ms": 1500.5}, [9]),
            ({"retry": True}, [8]),
            ({"retry": 1}, []),
            ({"note": None}, [9]),
            ({"card": "visa", "status": 402}, [4]),
            ({"card": "visa", "status": 200}, []),
            ({'we"ird.key': "yes"}, [8]),
            ({"missing": None}, []),
        ],
    )
    def test_fields(self, store: LogStore, fields: dict[str, Any], expected: list[int]) -> None:
        """fields compares JSON values with their type; keys are plain text."""
        assert expected == ids(store.search(fields=fields))

    def test_combination(self, store: LogStore) -> None:
        """Every filter applies at once, with a query too."""
        assert [6] == ids(
            store.search(
                "login",
                level="WARNING",
                logger="app",
                user_id="u2",
                request_id="r2",
                since=BASE_TS / 1e9,
                until="2023-11-15",
            )
        )
        assert [4] == ids(store.search("payment", logger="app.pay", fields={"status": 402}, level=30))

    def test_limit(self, store: LogStore) -> None:
        """limit caps the results; None means all and 0 none."""
        assert (2, 9, 0) == (len(store.search(limit=2)), len(store.search(limit=None)), len(store.search(limit=0)))

    def test_query_newest_and_oldest(self, store: LogStore) -> None:
        """With a query, newest and oldest follow the record id."""
        assert ([2, 1], [1, 2]) == (ids(store.search("connection")), ids(store.search("connection", order="oldest")))

    def test_rank_order(self, make_log_db: Callable[..., Path]) -> None:
        """order='rank' puts the best match first."""
        rows = [make_row("timeout once among many other words here"), make_row("timeout timeout timeout")]
        with LogStore(make_log_db(rows)) as store:
            assert [2, 1] == ids(store.search("timeout", order="rank"))

    def test_blank_query_means_no_text_filter(self, store: LogStore) -> None:
        """A blank query lists records by the filters alone."""
        assert 9 == len(store.search("   "))

    def test_query_with_nothing_searchable_finds_nothing(self, store: LogStore) -> None:
        """Punctuation alone matches nothing, without an error."""
        assert ([], 0) == (store.search("-- *"), store.count("-- *"))


class TestBadArguments:
    @pytest.mark.parametrize(
        "kwargs",
        [
            dict(level="LOUD"),
            dict(level=-1),
            dict(level=True),
            dict(logger=""),
            dict(logger="."),
            dict(logger="bad\ud800"),
            dict(user_id=3.5),
            dict(since="whenever"),
            dict(since="1h", until="2h"),
            dict(order="random"),
            dict(order="rank"),
            dict(limit=-1),
            dict(limit="10"),
            dict(limit=2**63),
            dict(level=2**63),
            dict(level="9" * 5000),
            dict(fields={"a": [1, 2]}),
            dict(fields={"a": {"b": 1}}),
            dict(fields={1: "x"}),
            dict(fields=["a"]),
            dict(query=b"bytes"),
            dict(query="bad\ud800", raw=True),
        ],
        ids=repr,
    )
    def test_search_query_error(self, store: LogStore, kwargs: dict[str, Any]) -> None:
        """Every bad argument is a SearchQueryError with a message saying what to do."""
        with pytest.raises(SearchQueryError):
            store.search(**kwargs)

    def test_unknown_filter(self, store: LogStore) -> None:
        """An unknown filter name is a TypeError naming it."""
        with pytest.raises(TypeError, match="colour"):
            store.count(colour="red")  # type: ignore[call-arg]

    def test_tail_validates_before_iterating(self, store: LogStore) -> None:
        """tail() checks its arguments when called, not at the first next()."""
        with pytest.raises(SearchQueryError):
            store.tail(level="LOUD")
        with pytest.raises(SearchQueryError):
            store.tail(poll_interval=0)
        with pytest.raises(SearchQueryError):
            store.tail(cursor="5")  # type: ignore[arg-type]


class TestSearchDrivers:
    """A full-text search starts from the index or from a narrow filter: same answers."""

    @pytest.fixture
    def big(self, make_log_db: Callable[..., Path]) -> Iterator[LogStore]:
        rows = [
            make_row(
                f"common word {'rare' if i % 50 == 0 else 'plain'}",
                ts=BASE_TS + i,
                user_id="many",
                request_id="narrow" if i % 100 == 0 else f"r{i}",
                level=40 if i % 3 == 0 else 20,
            )
            for i in range(600)
        ]
        with LogStore(make_log_db(rows)) as store:
            yield store

    def test_narrow_filter(self, big: LogStore) -> None:
        """A request_id with few rows gives the same newest matches as a brute-force check."""
        found = big.search("common", request_id="narrow", level="ERROR")
        expected = [i + 1 for i in range(599, -1, -1) if i % 100 == 0 and i % 3 == 0]
        assert expected == ids(found)

    def test_broad_filter(self, big: LogStore) -> None:
        """A user_id with many rows walks the index newest first."""
        found = big.search("rare", user_id="many", limit=5)
        assert [i + 1 for i in range(599, -1, -1) if i % 50 == 0][:5] == ids(found)

    def test_narrow_rank_and_count(self, big: LogStore) -> None:
        """rank order and count work from a narrow filter too."""
        assert (6, 6) == (len(big.search("common", request_id="narrow", order="rank")), big.count("common", request_id="narrow"))

    def test_newest_search_needs_no_sort(self, big: LogStore) -> None:
        """The newest-first full-text plan walks the index by rowid: no temporary sort."""
        from janus_utils.store import Filters

        selection = big._select("rare", False, Filters(level=20, logger="app"))
        sql, params = big._sql(selection, big._select_record, order="newest", limit=100)
        assert big._db is not None
        plan = " | ".join(row[3] for row in big._db.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert plan.startswith("SCAN logs_fts") and "TEMP B-TREE" not in plan, plan


class TestCountHistogramStats:
    def test_count(self, store: LogStore) -> None:
        """count takes the same query and filters as search."""
        assert (9, 2, 3, 1) == (
            store.count(),
            store.count("connection"),
            store.count(logger="app.pay", level=20) + store.count(agent_id="a1"),
            store.count("payment", fields={"status": 200}),
        )

    def test_histogram_by_level(self, store: LogStore) -> None:
        """Buckets are aligned to the epoch and hold counts per level name."""
        histogram = store.histogram("5m", "level")
        start = datetime(2023, 11, 14, 22, 10, tzinfo=timezone.utc)
        assert [
            (start, {"ERROR": 1, "WARNING": 1}),
            (start + timedelta(minutes=5), {"INFO": 2, "WARNING": 2, "DEBUG": 1}),
            (start + timedelta(minutes=10), {"CRITICAL": 1, "WARNING": 1}),
        ] == histogram

    def test_histogram_by_user_top(self, store: LogStore) -> None:
        """Values beyond top are summed as HISTOGRAM_OTHER, missing ones are HISTOGRAM_NONE."""
        histogram = store.histogram("1h", "user_id", top=1)
        assert [{HISTOGRAM_NONE: 5, HISTOGRAM_OTHER: 4}] == [counts for _, counts in histogram]

    def test_histogram_by_logger_filtered(self, store: LogStore) -> None:
        """Filters and a query apply to the histogram."""
        histogram = store.histogram("1d", "logger", query="payment OR login", level=30)
        assert [{"app.pay": 1, "app.auth": 1}] == [counts for _, counts in histogram]

    @pytest.mark.parametrize("kwargs", [dict(by="message"), dict(by="level; DROP"), dict(bucket="0m"), dict(bucket="soon"), dict(top=-1)])
    def test_histogram_bad_arguments(self, store: LogStore, kwargs: dict[str, Any]) -> None:
        """by is whitelisted and bucket must be a positive duration."""
        with pytest.raises(SearchQueryError):
            store.histogram(**kwargs)

    def test_stats(self, store: LogStore) -> None:
        """stats counts by level and logger and gives the time span and size."""
        stats = store.stats()
        assert 9 == stats.records
        assert {"DEBUG": 1, "INFO": 2, "WARNING": 4, "ERROR": 1, "CRITICAL": 1} == stats.by_level
        assert ("app.db", 2) == next(iter(stats.by_logger.items()))
        assert (BASE_TS, BASE_TS + 8 * MINUTE) == (stats.first_ts, stats.last_ts)
        assert stats.db_bytes > 0 and stats.wal_bytes >= 0
        assert "2023-11-14T22:13:20.000000Z" == stats.to_dict()["first_time"]

    def test_stats_filtered_and_empty(self, store: LogStore, make_log_db: Callable[..., Path]) -> None:
        """stats takes filters; an empty database has no time span."""
        assert {"app.pay": 2} == store.stats(logger="app.pay").by_logger
        with LogStore(make_log_db()) as empty:
            stats = empty.stats()
            assert (0, None, None) == (stats.records, stats.first_ts, stats.last_ts)


class TestTail:
    def test_last_n_oldest_first(self, store: LogStore) -> None:
        """tail(n) is the last n records, oldest first, and then it ends."""
        assert [7, 8, 9] == ids(list(store.tail(3)))

    def test_filters(self, store: LogStore) -> None:
        """tail takes search's filters."""
        assert [3, 4] == ids(list(store.tail(5, logger="app.pay")))

    def test_cursor_resumes_after(self, store: LogStore) -> None:
        """tail(cursor=id) yields every record after that id, n ignored."""
        assert [6, 7, 8, 9] == ids(list(store.tail(1, cursor=5)))

    def test_zero_and_empty(self, store: LogStore, make_log_db: Callable[..., Path]) -> None:
        """n=0 gives nothing; an empty database gives nothing."""
        with LogStore(make_log_db()) as empty:
            assert ([], []) == (list(store.tail(0)), list(empty.tail(5)))

    def test_follow_sees_new_commit(self, corpus_db: Path) -> None:
        """With follow, a record committed after the tail started is yielded."""
        writer = open_writer(corpus_db)
        try:
            with LogStore(corpus_db) as store:
                follower = store.tail(1, follow=True, poll_interval=0.01)
                assert 9 == next_within(follower).id
                write_batch(writer, [make_row("fresh record")])
                assert "fresh record" == next_within(follower).message
                write_batch(writer, [make_row("skipped", level=10), make_row("wanted", level=40)])
                assert "skipped" == next_within(follower).message
                follower.close()
        finally:
            writer.close()

    def test_follow_with_filter_skips_non_matching(self, corpus_db: Path) -> None:
        """A filtered follower yields only matching new records."""
        writer = open_writer(corpus_db)
        try:
            with LogStore(corpus_db) as store:
                follower = store.tail(0, follow=True, poll_interval=0.01, level="ERROR")
                write_batch(writer, [make_row("quiet", level=10)] * 3 + [make_row("loud", level=40)])
                assert "loud" == next_within(follower).message
                follower.close()
        finally:
            writer.close()

    def test_close_stops_and_store_stays_usable(self, store: LogStore) -> None:
        """Closing the generator stops it; the store keeps working."""
        follower = store.tail(2, follow=True)
        assert 8 == next(follower).id
        follower.close()
        with pytest.raises(StopIteration):
            next(follower)
        assert 9 == store.count()

    def test_follow_concurrent_writer_process(self, make_log_db: Callable[..., Path]) -> None:
        """Against a writer process, follow yields every committed record exactly once."""
        path = make_log_db()
        batches, per_batch = 20, 100
        context = multiprocessing.get_context("spawn")
        writer = context.Process(target=conftest.write_tokens_process, args=(str(path), batches, per_batch))
        with LogStore(path) as store:
            everything = store.tail(0, follow=True, cursor=0, poll_interval=0.01)
            info_only = store.tail(0, follow=True, cursor=0, poll_interval=0.01, level="INFO")
            writer.start()
            try:
                seen = [next_within(everything).message.split()[1] for _ in range(batches * per_batch)]
                seen_info = [next_within(info_only).message.split()[1] for _ in range(batches * per_batch // 2)]
            finally:
                everything.close()
                info_only.close()
                writer.join(60)
        assert 0 == writer.exitcode
        assert [f"tok{n:06d}" for n in range(batches * per_batch)] == seen
        assert [f"tok{n:06d}" for n in range(0, batches * per_batch, 2)] == seen_info


class TestExport:
    def test_everything_oldest_first(self, store: LogStore) -> None:
        """export yields every record by id, in batches of any size."""
        assert list(range(1, 10)) == ids(list(store.export(batch_size=2)))

    def test_query_filters_limit(self, store: LogStore) -> None:
        """export takes a query, filters and a limit."""
        assert ([3, 4], [1], [4]) == (
            ids(list(store.export("payment"))),
            ids(list(store.export(limit=1))),
            ids(list(store.export("payment OR login", level=30, logger="app.pay", batch_size=1))),
        )

    def test_stops_at_records_present_at_start(self, corpus_db: Path) -> None:
        """Records committed during an export are left for the next one."""
        writer = open_writer(corpus_db)
        try:
            with LogStore(corpus_db) as store:
                exported = store.export(batch_size=4)
                first = next(exported)
                write_batch(writer, [make_row("late")])
                assert list(range(1, 10)) == [first.id, *ids(list(exported))]
        finally:
            writer.close()

    def test_bad_batch_size(self, store: LogStore) -> None:
        """batch_size must be at least 1."""
        with pytest.raises(SearchQueryError):
            store.export(batch_size=0)


class TestNoBareSqliteErrors:
    def test_damaged_fields_do_not_break_field_filters(self, make_log_db: Callable[..., Path]) -> None:
        """A row whose fields is not JSON is skipped by a fields filter, not an error."""
        rows = [make_row(fields="{broken"), make_row(fields='{"a": 1}')]
        with LogStore(make_log_db(rows)) as store:
            assert [2] == ids(store.search(fields={"a": 1}))

    def test_database_deleted_under_reader(self, corpus_db: Path) -> None:
        """A database replaced by garbage gives a JanusError, not an apsw error."""
        with LogStore(corpus_db) as store:
            for suffix in ("-wal", "-shm"):
                if os.path.exists(str(corpus_db) + suffix):
                    os.remove(str(corpus_db) + suffix)
            with open(corpus_db, "r+b") as handle:
                handle.write(b"\x00" * 4096 * 4)
            try:
                store.search()
                store.stats()
            except JanusError:
                pass
