"""LogStore's cursor reads for live views and exporters: get, after, counts_after, newest_*, trace_id."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import BASE_TS, make_row, open_writer, write_batch
from janus_utils import LogStore
from janus_utils.error_handling import JanusError


@pytest.fixture
def db(make_log_db: Callable[..., Path]) -> Path:
    rows = [
        make_row(f"tick {n} timeout" if n % 3 == 0 else f"tick {n}", ts=BASE_TS + n, level=40 if n % 2 else 20,
                 logger="svc.db" if n % 4 == 0 else "svc.api", trace_id="abc" if n in (3, 4) else None)
        for n in range(1, 21)
    ]
    return make_log_db(rows)


class TestGet:
    def test_by_id(self, db: Path) -> None:
        """get() returns the record with that id, every column."""
        with LogStore(db) as store:
            record = store.get(7)
        assert (7, "tick 7", BASE_TS + 7) == (record.id, record.message, record.ts) if record else None

    def test_missing_is_none(self, db: Path) -> None:
        """An id never stored (or pruned) is None, not an error."""
        with LogStore(db) as store:
            assert store.get(999) is None

    def test_not_an_int_is_refused(self, db: Path) -> None:
        """An id that is not an int is a SearchQueryError saying so."""
        with LogStore(db) as store, pytest.raises(JanusError, match="record id"):
            store.get("7")  # type: ignore[arg-type]


class TestAfter:
    def test_newest_after_cursor(self, db: Path) -> None:
        """after(cursor) gives the newest records above the cursor, newest first, and the next cursor."""
        with LogStore(db) as store:
            records, matched, cursor = store.after(15, limit=10)
        assert ([20, 19, 18, 17, 16], 5, 20) == ([r.id for r in records], matched, cursor)

    def test_sample_under_a_flood(self, db: Path) -> None:
        """More new records than limit: the newest limit of them, and how many matched in all."""
        with LogStore(db) as store:
            records, matched, cursor = store.after(0, limit=3)
        assert ([20, 19, 18], 20, 20) == ([r.id for r in records], matched, cursor)

    def test_query_and_filters(self, db: Path) -> None:
        """The full-text query and filters apply, as in search()."""
        with LogStore(db) as store:
            records, matched, _ = store.after(5, "timeout", limit=2, level="ERROR")
        assert ([15, 9], 2) == ([r.id for r in records], matched)

    def test_nothing_new(self, db: Path) -> None:
        """At the newest id: no records, nothing matched, the same cursor."""
        with LogStore(db) as store:
            assert ([], 0, 20) == store.after(20)

    def test_follows_new_commits(self, db: Path) -> None:
        """Records committed after a read come with the next call, none twice."""
        with LogStore(db) as store:
            _, _, cursor = store.after(0, limit=1)
            writer = open_writer(db)
            try:
                write_batch(writer, [make_row("late", ts=BASE_TS)])
            finally:
                writer.close()
            records, matched, cursor = store.after(cursor)
        assert (["late"], 1, 21) == ([r.message for r in records], matched, cursor)

    def test_a_user_filter_or_scope_gives_only_records_above_the_cursor(self, make_log_db: Callable[..., Path]) -> None:
        """after() by user (a filter or a scope, the live view of one user) reads above the
        cursor, newest first, as without one: not the user's records from the start."""
        rows = [make_row(f"n{n}", ts=BASE_TS + n, user_id="12" if n % 2 else "7") for n in range(1, 61)]
        db = make_log_db(rows)
        with LogStore(db) as store:
            by_filter = store.after(50, user_id="12", limit=3)
            by_int = store.after(50, user_id=12, limit=10)
        with LogStore(db, scope={"user_id": "12"}) as scoped:
            by_scope = scoped.after(50, limit=10)
        assert ([59, 57, 55], 5, 60) == ([r.id for r in by_filter[0]], by_filter[1], by_filter[2])
        for records, matched, cursor in (by_int, by_scope):
            assert ([59, 57, 55, 53, 51], 5, 60) == ([r.id for r in records], matched, cursor)


class TestCounts:
    def test_counts_after_by_level_and_logger(self, db: Path) -> None:
        """counts_after() counts the rows above the cursor by (level, logger)."""
        with LogStore(db) as store:
            counts, cursor = store.counts_after(16)
        assert ({(20, "svc.api"): 1, (40, "svc.api"): 2, (20, "svc.db"): 1}, 20) == (counts, cursor)

    def test_newest(self, db: Path, make_log_db: Callable[..., Path]) -> None:
        """newest_id() and newest_ts(); 0 and None for an empty database."""
        with LogStore(db) as store, LogStore(make_log_db([])) as empty:
            assert (20, BASE_TS + 20, 0, None) == (store.newest_id(), store.newest_ts(), empty.newest_id(), empty.newest_ts())


class TestTraceFilter:
    def test_trace_id(self, db: Path) -> None:
        """trace_id filters like request_id (without an index: bound it by time on big databases)."""
        with LogStore(db) as store:
            assert [4, 3] == [r.id for r in store.search(trace_id="abc")]
            assert 2 == store.count(trace_id="abc", since=str((BASE_TS) // 10**9))


class TestHistogramAfter:
    def test_counts_only_records_after_the_id(self, db: Path) -> None:
        """histogram(after_id=...) counts the records committed after that id, with the filters."""
        with LogStore(db) as store:
            everything = store.histogram("1h", "level", after_id=15)
            errors = store.histogram("1h", "level", after_id=15, level="ERROR")
        assert ([{"INFO": 3, "ERROR": 2}], [{"ERROR": 2}]) == ([c for _, c in everything], [c for _, c in errors])


class TestVersion1:
    def test_cursor_reads_on_a_version_1_database(self, tmp_path: Path) -> None:
        """get(), after() and histogram(after_id=) read a database from before service/host, unmigrated."""
        import apsw

        from janus_utils import _schema

        db = tmp_path / "v1.db"
        conn = apsw.Connection(str(db))
        _schema.apply_connection_settings(conn)
        with conn:
            conn.execute(_schema.MIGRATIONS[0])
            conn.execute("PRAGMA user_version=1")
            for n in range(3):
                conn.execute('INSERT INTO logs(ts, level, logger, message) VALUES (?, 40, "old", ?)', (BASE_TS + n, f"m{n}"))
        conn.close()
        with LogStore(db) as store:
            record = store.get(2)
            found, matched, cursor = store.after(1)
            buckets = store.histogram("1h", "level", after_id=1)
        assert ("m1", None, [3, 2], 2, 3, [{"ERROR": 2}]) == (
            record.message if record else None, record.service if record else "?",
            [r.id for r in found], matched, cursor, [c for _, c in buckets],
        )
