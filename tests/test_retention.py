"""Tests for janus_utils.retention: policies, prune, archives, import, search, AutoPruner."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from janus_utils import file_handler as fh
from janus_utils import retention as rt
from janus_utils._schema import apply_connection_settings, database_id, ensure_schema
from janus_utils.error_handling.utils.errors import ConfigError, FileHandlerError
from janus_utils.retention import archive_host

DAY = rt.NS_PER_DAY
HOUR = 3_600 * rt.NS_PER_SECOND
NOW = 1_800_000_000 * rt.NS_PER_SECOND  # 2027-01-15 08:00 UTC
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40

_INSERT = (
    'INSERT INTO "logs" ("ts", "level", "logger", "message", "user_id", "agent_id", "request_id", '
    '"trace_id", "span_id", "pid", "thread", "exception", "fields") '
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

HOST = archive_host()  # in every archive name


def row(ts: int, level: int = INFO, message: str = "hello", **extra: Any) -> tuple[Any, ...]:
    """A row in insert order; unnamed columns get plausible values."""
    values = {
        "logger": "app",
        "user_id": None,
        "agent_id": None,
        "request_id": None,
        "trace_id": None,
        "span_id": None,
        "pid": 4242,
        "thread": "MainThread",
        "exception": None,
        "fields": None,
    }
    values.update(extra)
    return (
        ts,
        level,
        values["logger"],
        message,
        values["user_id"],
        values["agent_id"],
        values["request_id"],
        values["trace_id"],
        values["span_id"],
        values["pid"],
        values["thread"],
        values["exception"],
        values["fields"],
    )


def add_rows(db: apsw.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert rows the way the flusher does: one transaction, FTS filled once per batch."""
    with db:
        start = db.execute('SELECT coalesce(max("id"), 0) FROM "logs"').fetchone()[0]
        db.executemany(_INSERT, rows)
        db.execute(
            'INSERT INTO "logs_fts"("rowid", "message", "fields", "exception") '
            'SELECT "id", "message", "fields", "exception" FROM "logs" WHERE "id" > ?',
            (start,),
        )


def open_db(path: Path, *, incremental: bool = False) -> apsw.Connection:
    db = apsw.Connection(str(path))
    if incremental:
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # before WAL and the tables
    apply_connection_settings(db)
    ensure_schema(db)
    return db


def all_rows(db: apsw.Connection) -> list[tuple[Any, ...]]:
    return db.execute(f'SELECT {rt._COLS_SQL} FROM "logs" ORDER BY "id"').fetchall()


def messages(db: apsw.Connection) -> list[str]:
    return [m for (m,) in db.execute('SELECT "message" FROM "logs" ORDER BY "id"')]


def fts_count(db: apsw.Connection, query: str) -> int:
    return db.execute('SELECT count(*) FROM "logs_fts" WHERE "logs_fts" MATCH ?', (query,)).fetchone()[0]


def check_fts(db: apsw.Connection) -> None:
    """FTS5 compares the index with the content table; raises if they disagree."""
    db.execute("""INSERT INTO "logs_fts"("logs_fts", "rank") VALUES ('integrity-check', 1)""")


def utc_day(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts // rt.NS_PER_SECOND, dt.timezone.utc).date().isoformat()


def archived_records(archive_dir: Path) -> list[dict[str, Any]]:
    return list(rt.iter_archive_records(archive_dir))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[apsw.Connection]:
    connection = open_db(tmp_path / "logs.db")
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def aged_db(db: apsw.Connection) -> apsw.Connection:
    """Four levels, one row per level per day for 40 days; messages name level and age."""
    rows = []
    for days in range(40, 0, -1):
        for level in (DEBUG, INFO, WARNING, ERROR):
            rows.append(row(NOW - days * DAY + HOUR, level, f"L{level} d{days}"))
    add_rows(db, rows)
    return db


class TestParseAge:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("45s", 45 * rt.NS_PER_SECOND),
            ("90m", 90 * 60 * rt.NS_PER_SECOND),
            ("12h", 12 * HOUR),
            ("30d", 30 * DAY),
            ("1w", 7 * DAY),
            (" 2D ", 2 * DAY),
            (5, 5),
            (dt.timedelta(hours=1, microseconds=3), HOUR + 3000),
        ],
    )
    def test_valid(self, text: Any, expected: int) -> None:
        """Whole numbers with s/m/h/d/w, ints (ns) and timedeltas are read."""
        assert expected == rt.parse_age(text)

    @pytest.mark.parametrize("text", ["30", "30x", "1.5d", "-1d", "0d", "", "d", True, 0, None])
    def test_invalid(self, text: Any) -> None:
        """Anything else is a ConfigError."""
        with pytest.raises(ConfigError):
            rt.parse_age(text)

    def test_message_says_how_to_write_it(self) -> None:
        """The error names the units and gives an example."""
        with pytest.raises(ConfigError, match=r"d \(days\).*'30d'"):
            rt.parse_age("30 days")

    @pytest.mark.parametrize("text", ["10000000000w", "1" * 5000 + "d", 2**63, dt.timedelta(days=999_999_999)])
    def test_longer_than_64_bit_nanoseconds(self, text: Any) -> None:
        """An age past 2**63 - 1 ns (292 years) is refused, saying the limit, even with 5000 digits."""
        with pytest.raises(ConfigError, match=r"too long: at most 106751d"):
            rt.parse_age(text)


class TestParseSize:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("500MB", 500_000_000),
            ("2GiB", 2 * 1024**3),
            ("10kb", 10_000),
            ("7 KiB", 7 * 1024),
            ("123", 123),
            ("1B", 1),
            (4096, 4096),
        ],
    )
    def test_valid(self, text: Any, expected: int) -> None:
        """Decimal and binary units, bare numbers and ints are read."""
        assert expected == rt.parse_size(text)

    @pytest.mark.parametrize("text", ["5M", "1.5GB", "abc", "-1MB", 0, "0MB", True])
    def test_invalid(self, text: Any) -> None:
        """Ambiguous units, fractions and non-positive sizes are ConfigErrors."""
        with pytest.raises(ConfigError):
            rt.parse_size(text)

    @pytest.mark.parametrize("text", ["9" * 5000, "9000000 TiB", 2**63])
    def test_larger_than_sqlite_counts(self, text: Any) -> None:
        """A size past 2**63 - 1 bytes is refused, saying the limit."""
        with pytest.raises(ConfigError, match="too large: at most 8EiB"):
            rt.parse_size(text)


class TestRetentionPolicy:
    def test_from_config_converts_friendly_values(self) -> None:
        """Ages, sizes and level names become ns, bytes and level numbers."""
        policy = rt.RetentionPolicy.from_config(
            max_age="30d", max_rows=1000, max_bytes="1MiB", per_level={"ERROR": "365d", "debug": "1d"}
        )
        assert rt.RetentionPolicy(30 * DAY, 1000, 1024**2, {ERROR: 365 * DAY, DEBUG: DAY}) == policy

    def test_age_for_falls_back_to_max_age(self) -> None:
        """Levels without an override use max_age; overridden levels use theirs."""
        policy = rt.RetentionPolicy.from_config(max_age="30d", per_level={"ERROR": "365d"})
        assert (365 * DAY, 30 * DAY, 30 * DAY) == (
            policy.age_for(ERROR),
            policy.age_for(INFO),
            policy.age_for(25),
        )

    def test_unknown_level_is_config_error(self) -> None:
        """A level name that does not exist is a ConfigError."""
        with pytest.raises(ConfigError, match="unknown level"):
            rt.RetentionPolicy.from_config(per_level={"LOUD": "1d"})

    def test_same_level_twice_is_config_error(self) -> None:
        """Naming one level twice (WARN and WARNING) is refused."""
        with pytest.raises(ConfigError, match="twice"):
            rt.RetentionPolicy.from_config(per_level={"WARN": "1d", "WARNING": "2d"})

    @pytest.mark.parametrize(
        "config",
        [dict(per_level={"9" * 30: "1d"}), dict(per_level={2**63: "1d"}), dict(per_level={"9" * 5000: "1d"})],
        ids=["30-digits", "2**63", "5000-digits"],
    )
    def test_level_past_64_bits(self, config: dict[str, Any]) -> None:
        """A level number SQLite cannot hold is a ConfigError saying so."""
        with pytest.raises(ConfigError, match="too large"):
            rt.RetentionPolicy.from_config(**config)

    @pytest.mark.parametrize("values", [dict(max_age=2**63), dict(max_bytes=2**63), dict(max_rows=2**63), dict(per_level={40: 2**63})])
    def test_raw_values_past_64_bits(self, values: dict[str, Any]) -> None:
        """ns and byte counts given as ints must fit SQLite's integers too."""
        with pytest.raises(ConfigError, match="2\\*\\*63"):
            rt.RetentionPolicy(**values)

    @pytest.mark.parametrize("rows", [-1, 1.5, True])
    def test_bad_max_rows(self, rows: Any) -> None:
        """max_rows must be a whole number, 0 or more."""
        with pytest.raises(ConfigError, match="max_rows"):
            rt.RetentionPolicy(max_rows=rows)

    def test_is_empty(self) -> None:
        """A policy with no limit at all is empty."""
        assert (True, False) == (rt.RetentionPolicy().is_empty, rt.RetentionPolicy(max_rows=0).is_empty)


class TestPruneByAge:
    def test_older_than_removes_only_older_rows(self, aged_db: apsw.Connection) -> None:
        """Rows older than the age go; younger rows stay."""
        summary = rt.prune(aged_db, older_than="30d", now_ns=NOW)
        kept_days = sorted({int(m.split("d")[-1]) for m in messages(aged_db)})
        assert (40, list(range(1, 31))) == (summary.rows, kept_days)

    def test_row_exactly_at_cutoff_is_kept(self, db: apsw.Connection) -> None:
        """A row exactly as old as the limit is not yet older than it."""
        add_rows(db, [row(NOW - DAY, message="edge"), row(NOW - DAY - 1, message="old")])
        rt.prune(db, older_than="1d", now_ns=NOW)
        assert ["edge"] == messages(db)

    def test_per_level_overrides(self, aged_db: apsw.Connection) -> None:
        """ERROR kept 365 days, DEBUG 1 day, the rest 10 days."""
        summary = rt.prune(
            aged_db, older_than="10d", per_level={"ERROR": "365d", "DEBUG": "1d"}, now_ns=NOW
        )
        kept = {level: n for level, n in aged_db.execute('SELECT "level", count(*) FROM "logs" GROUP BY "level"')}
        # DEBUG: only d1 (23h old) survives; INFO/WARNING: d1..d10; ERROR: all 40.
        assert ({DEBUG: 1, INFO: 10, WARNING: 10, ERROR: 40}, {DEBUG: 39, INFO: 30, WARNING: 30}) == (
            kept,
            summary.per_level,
        )

    def test_per_level_without_max_age_keeps_other_levels(self, aged_db: apsw.Connection) -> None:
        """With only a DEBUG override, no other level is touched."""
        summary = rt.prune(aged_db, per_level={"DEBUG": "5d"}, now_ns=NOW)
        assert ({DEBUG: 35}, 160 - 35) == (summary.per_level, len(messages(aged_db)))

    def test_summary_time_range(self, aged_db: apsw.Connection) -> None:
        """oldest_ts and newest_ts are those of the removed rows."""
        summary = rt.prune(aged_db, older_than="38d", now_ns=NOW)
        assert (NOW - 40 * DAY + HOUR, NOW - 39 * DAY + HOUR) == (summary.oldest_ts, summary.newest_ts)

    def test_small_chunks_remove_the_same_rows(self, aged_db: apsw.Connection) -> None:
        """Chunks of 7 rows do the same work in more transactions."""
        summary = rt.prune(aged_db, older_than="30d", chunk_rows=7, now_ns=NOW)
        assert (40, 6) == (summary.rows, summary.chunks)

    def test_index_stays_in_step(self, aged_db: apsw.Connection) -> None:
        """Removed rows are gone from the full-text index, kept rows still found."""
        rt.prune(aged_db, older_than="30d", chunk_rows=13, now_ns=NOW)
        check_fts(aged_db)
        assert (0, 4) == (fts_count(aged_db, '"d35"'), fts_count(aged_db, '"d5"'))

    def test_nothing_to_do(self, aged_db: apsw.Connection) -> None:
        """A prune with nothing expired removes nothing and writes no archive."""
        summary = rt.prune(aged_db, older_than="100d", now_ns=NOW)
        assert (0, [], 160) == (summary.rows, summary.archives, len(messages(aged_db)))


class TestPruneBySize:
    def test_max_rows_keeps_newest(self, aged_db: apsw.Connection) -> None:
        """max_rows keeps the newest rows by timestamp."""
        summary = rt.prune(aged_db, max_rows=8, chunk_rows=5, now_ns=NOW)
        assert (152, ["d1", "d2"]) == (summary.rows, sorted({m.split()[1] for m in messages(aged_db)}))

    def test_max_rows_after_age(self, aged_db: apsw.Connection) -> None:
        """The row limit counts what is left after the age limit."""
        summary = rt.prune(aged_db, older_than="30d", max_rows=100, now_ns=NOW)
        assert (60, 100) == (summary.rows, len(messages(aged_db)))

    def test_max_rows_zero_removes_all(self, aged_db: apsw.Connection) -> None:
        """max_rows=0 empties the table."""
        rt.prune(aged_db, max_rows=0, now_ns=NOW)
        assert [] == messages(aged_db)

    def test_max_bytes_removes_oldest_in_proportion(self, db: apsw.Connection) -> None:
        """max_bytes removes the oldest rows in proportion to the excess, and the file uses less."""
        add_rows(db, [row(NOW - 2000 + i, message=f"m{i} " + "word " * 30) for i in range(2000)])
        used = rt._used_bytes(db)
        summary = rt.prune(db, max_bytes=used // 2, now_ns=NOW)
        remaining = messages(db)
        assert (2000 // 2, f"m{summary.rows} " + "word " * 30) == (summary.rows, remaining[0])
        assert rt._used_bytes(db) < used
        check_fts(db)

    def test_under_max_bytes_does_nothing(self, aged_db: apsw.Connection) -> None:
        """A database under the size limit is left alone."""
        assert 0 == rt.prune(aged_db, max_bytes="1GB", now_ns=NOW).rows


class TestPruneArguments:
    def test_no_limit_is_config_error(self, db: apsw.Connection) -> None:
        """Calling prune with no limit at all is refused."""
        with pytest.raises(ConfigError, match="nothing to prune by"):
            rt.prune(db)

    def test_bad_chunk_rows(self, db: apsw.Connection) -> None:
        """chunk_rows must be 1 or more."""
        with pytest.raises(ConfigError, match="chunk_rows"):
            rt.prune(db, older_than="1d", chunk_rows=0)

    def test_prune_path_opens_and_closes(self, tmp_path: Path, aged_db: apsw.Connection) -> None:
        """prune_path works on a path and leaves no connection behind."""
        summary = rt.prune_path(tmp_path / "logs.db", older_than="30d", now_ns=NOW)
        assert (40, 120) == (summary.rows, len(messages(aged_db)))

    def test_prune_path_missing_database(self, tmp_path: Path) -> None:
        """A missing database is a clear FileHandlerError, and is not created."""
        with pytest.raises(FileHandlerError, match="no log database"):
            rt.prune_path(tmp_path / "none.db", older_than="1d")
        assert not (tmp_path / "none.db").exists()

    def test_prune_path_foreign_database(self, tmp_path: Path) -> None:
        """A SQLite file without the log schema is refused."""
        other = apsw.Connection(str(tmp_path / "other.db"))
        other.execute("CREATE TABLE t(x)")
        other.close()
        with pytest.raises(FileHandlerError, match="not a janus log database"):
            rt.prune_path(tmp_path / "other.db", older_than="1d")


class TestDryRun:
    def test_changes_nothing(self, tmp_path: Path, aged_db: apsw.Connection) -> None:
        """A dry run leaves the rows, the index and the archive directory untouched."""
        before = (all_rows(aged_db), fts_count(aged_db, "d35"))
        summary = rt.prune(
            aged_db, older_than="30d", max_rows=10, archive_dir=tmp_path / "arch", dry_run=True, now_ns=NOW
        )
        assert (before, False, True) == (
            (all_rows(aged_db), fts_count(aged_db, "d35")),
            (tmp_path / "arch").exists(),
            summary.dry_run,
        )

    @pytest.mark.parametrize(
        "limits",
        [
            {"older_than": "30d"},
            {"older_than": "10d", "per_level": {"ERROR": "365d", "DEBUG": "1d"}},
            {"max_rows": 50},
            {"per_level": {"DEBUG": "3d"}, "max_rows": 30},
            {"older_than": "20d", "per_level": {"WARNING": "2d"}, "max_rows": 70},
        ],
    )
    def test_predicts_the_real_run(self, aged_db: apsw.Connection, limits: dict[str, Any]) -> None:
        """The dry run's rows, levels and time range are what the real run then removes."""
        dry = rt.prune(aged_db, dry_run=True, now_ns=NOW, **limits)
        real = rt.prune(aged_db, now_ns=NOW, chunk_rows=9, **limits)
        assert (dry.rows, dry.per_level, dry.oldest_ts, dry.newest_ts, dry.bytes_estimate) == (
            real.rows,
            real.per_level,
            real.oldest_ts,
            real.newest_ts,
            real.bytes_estimate,
        )


class TestReclaimSpace:
    def test_incremental_database_shrinks(self, tmp_path: Path) -> None:
        """In auto_vacuum=INCREMENTAL mode the file gives its free pages back after a prune."""
        db = open_db(tmp_path / "inc.db", incremental=True)
        try:
            add_rows(db, [row(NOW - DAY - i, message=f"m{i} " + "x" * 400) for i in range(3000)])
            pages_before = rt._scalar(db, "PRAGMA page_count")
            summary = rt.prune(db, older_than="1h", now_ns=NOW)
            free, pages_after = rt._scalar(db, "PRAGMA freelist_count"), rt._scalar(db, "PRAGMA page_count")
        finally:
            db.close()
        assert (0, True, True) == (free, pages_after < pages_before / 4, summary.pages_reclaimed > 0)

    def test_non_incremental_database_is_left_alone(self, aged_db: apsw.Connection) -> None:
        """Without incremental auto_vacuum nothing is reclaimed (pages are reused instead)."""
        assert 0 == rt.prune(aged_db, older_than="10d", now_ns=NOW).pages_reclaimed


@pytest.fixture
def varied_db(db: apsw.Connection) -> apsw.Connection:
    """Rows using every column, odd values included, over three UTC days."""
    midnight = NOW - NOW % DAY
    add_rows(
        db,
        [
            row(midnight - 3 * DAY + 1, DEBUG, "plain"),
            row(
                midnight - 3 * DAY + 2,
                ERROR,
                "crash in módulo ünïcode \u2603 'quotes' \"double\"",
                logger="app.db",
                user_id="u1",
                agent_id="a1",
                request_id="r1",
                trace_id="0af7651916cd43dd8448eb211c80319c",
                span_id="b7ad6b7169203331",
                pid=2**40,
                thread="worker-7",
                exception='Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad\n',
                fields='{"b": 2,   "a": [1, 2.5, null], "s": "t\\u00e9"}',
            ),
            row(midnight - 2 * DAY + 5, WARNING, "", fields="{}", pid=None, thread=None),
            row(midnight - 2 * DAY + 6, 25, "custom level", exception=""),
            row(midnight - DAY - 1, INFO, "newline\nand\ttab"),
            row(midnight - DAY, INFO, "exactly midnight"),
        ],
    )
    return db


class TestArchive:
    def test_one_archive_per_utc_day(self, tmp_path: Path, varied_db: apsw.Connection) -> None:
        """Archives are named by UTC day and id range, with a valid sidecar each."""
        midnight = NOW - NOW % DAY
        day = lambda n: utc_day(midnight - n * DAY)  # noqa: E731
        summary = rt.prune(varied_db, older_than="1h", archive_dir=tmp_path / "arch", now_ns=NOW)
        names = [p.name for p in summary.archives]
        origin = database_id(varied_db)
        assert origin is not None and 16 == len(origin)
        assert [
            f"janus-logs-{day(3)}.{origin}.{HOST}.0000000000000001-0000000000000002.ndjson.gz",
            f"janus-logs-{day(2)}.{origin}.{HOST}.0000000000000003-0000000000000005.ndjson.gz",
            f"janus-logs-{day(1)}.{origin}.{HOST}.0000000000000006-0000000000000006.ndjson.gz",
        ] == names
        assert [True] * 3 == [fh.verify_sha256(p) for p in summary.archives]

    def test_archive_dir_is_private(self, tmp_path: Path, varied_db: apsw.Connection) -> None:
        """The archive directory is 0700 and archives 0600."""
        old = os.umask(0)
        try:
            summary = rt.prune(varied_db, older_than="1h", archive_dir=tmp_path / "arch", now_ns=NOW)
        finally:
            os.umask(old)
        modes = {oct(os.stat(p).st_mode & 0o777) for p in summary.archives}
        assert ("0o700", {"0o600"}) == (oct(os.stat(tmp_path / "arch").st_mode & 0o777), modes)

    def test_round_trip_preserves_every_column(self, tmp_path: Path, varied_db: apsw.Connection) -> None:
        """Archive then import gives back every row exactly, ids included."""
        before = all_rows(varied_db)
        summary = rt.prune(varied_db, older_than="1h", archive_dir=tmp_path / "arch", now_ns=NOW)
        fresh = open_db(tmp_path / "fresh.db")
        try:
            imported = sum(rt.import_archive(fresh, p) for p in summary.archives)
            after = all_rows(fresh)
            check_fts(fresh)
        finally:
            fresh.close()
        assert (6, before, []) == (imported, after, all_rows(varied_db))

    def test_blob_values_survive(self, tmp_path: Path, db: apsw.Connection) -> None:
        """A BLOB stored in a TEXT column is archived and comes back as the same bytes."""
        add_rows(db, [row(NOW - DAY, message="blob", user_id=b"\x00\xffraw")])
        before = all_rows(db)
        summary = rt.prune(db, older_than="1h", archive_dir=tmp_path / "arch", now_ns=NOW)
        rt.import_archive(db, summary.archives[0])
        assert before == all_rows(db)

    def test_import_twice_inserts_once(self, tmp_path: Path, varied_db: apsw.Connection) -> None:
        """A second import inserts nothing, and search finds each imported row once."""
        summary = rt.prune(varied_db, older_than="1h", archive_dir=tmp_path / "arch", now_ns=NOW)
        first = sum(rt.import_archive(varied_db, p) for p in summary.archives)
        second = sum(rt.import_archive(varied_db, p) for p in summary.archives)
        check_fts(varied_db)
        assert (6, 0, 6, 1, 1) == (
            first,
            second,
            len(all_rows(varied_db)),
            fts_count(varied_db, "módulo"),
            fts_count(varied_db, "ValueError"),
        )

    def test_import_into_live_database_keeps_new_rows(self, tmp_path: Path, aged_db: apsw.Connection) -> None:
        """Importing old rows back beside newer ones keeps both, each indexed once."""
        summary = rt.prune(aged_db, older_than="30d", archive_dir=tmp_path / "arch", now_ns=NOW)
        inserted = sum(rt.import_archive(aged_db, p) for p in summary.archives)
        check_fts(aged_db)
        assert (40, 160, 4, 4) == (inserted, len(messages(aged_db)), fts_count(aged_db, '"d35"'), fts_count(aged_db, '"d5"'))

    def test_import_refuses_tampered_archive(self, tmp_path: Path, varied_db: apsw.Connection) -> None:
        """An archive that fails its checksum is refused and nothing is inserted."""
        summary = rt.prune(varied_db, older_than="1h", archive_dir=tmp_path / "arch", now_ns=NOW)
        target = summary.archives[0]
        records = list(fh.iter_ndjson_gz(target))
        records[0]["message"] = "forged"
        forged = tmp_path / "forged.ndjson.gz"
        with fh.NDJSONGzipWriter(forged) as writer:
            writer.write_many(records)
        os.replace(forged, target)
        with pytest.raises(FileHandlerError) as caught:
            rt.import_archive(varied_db, target)
        assert ("checksum_mismatch", []) == (caught.value.code, all_rows(varied_db))

    def test_import_refuses_reused_id(self, tmp_path: Path, db: apsw.Connection) -> None:
        """An id now held by a different record is refused, and the import is all or nothing."""
        add_rows(db, [row(NOW - 2 * DAY, message="old one"), row(NOW - 2 * DAY + 1, message="old two")])
        summary = rt.prune(db, older_than="1d", archive_dir=tmp_path / "arch", now_ns=NOW)
        # AUTOINCREMENT never hands id 1 out again, but a database rebuilt by
        # other tools (or an archive from another database) can clash.
        with db:
            db.execute("INSERT INTO logs(id, ts, level, logger, message) VALUES (1, ?, 20, 'x', 'new one')", (NOW,))
            db.execute("INSERT INTO logs_fts(rowid, message, fields, exception) VALUES (1, 'new one', NULL, NULL)")
        with pytest.raises(FileHandlerError) as caught:
            rt.import_archive(db, summary.archives[0])
        assert ("archive_id_conflict", ["new one"]) == (caught.value.code, messages(db))

    def test_rerun_after_crash_before_delete_reuses_archive(
        self, tmp_path: Path, aged_db: apsw.Connection, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If rows were archived but not deleted, the re-run reuses that archive instead of copying it."""
        arch = tmp_path / "arch"

        def crash(self: Any, rows: Any) -> list[int]:
            raise KeyboardInterrupt

        with monkeypatch.context() as patch:
            patch.setattr(rt._Engine, "_delete_rows", crash)
            with pytest.raises(KeyboardInterrupt):
                rt.prune(aged_db, older_than="30d", archive_dir=arch, now_ns=NOW)
        first = sorted(p.name for p in rt.list_archives(arch))
        os.unlink(fh.sidecar_path(arch / first[0]))  # as if killed before the sidecar too
        summary = rt.prune(aged_db, older_than="30d", archive_dir=arch, now_ns=NOW)
        assert (40, first, 40) == (
            summary.rows,
            sorted(p.name for p in arch.iterdir() if not p.name.endswith(".sha256")),
            len(archived_records(arch)),
        )
        assert fh.verify_sha256(arch / first[0])

    def test_never_overwrites_a_different_archive(self, tmp_path: Path, aged_db: apsw.Connection) -> None:
        """An existing archive of the same name but other content is kept; the new one gets a suffix."""
        arch = tmp_path / "arch"
        dry = rt.prune(aged_db, older_than="39d", archive_dir=arch, now_ns=NOW, dry_run=True)
        assert 4 == dry.rows
        day = utc_day(NOW - 40 * DAY + HOUR)
        squatter = arch / f"janus-logs-{day}.{database_id(aged_db)}.{HOST}.0000000000000001-0000000000000004.ndjson.gz"
        fh.ensure_private_dir(arch)
        with fh.NDJSONGzipWriter(squatter) as writer:
            writer.write({"id": 999, "ts": 0, "level": 20, "logger": "x", "message": "other"})
        summary = rt.prune(aged_db, older_than="39d", archive_dir=arch, now_ns=NOW)
        assert ([f"janus-logs-{day}.{database_id(aged_db)}.{HOST}.0000000000000001-0000000000000004.1.ndjson.gz"], [999]) == (
            [p.name for p in summary.archives],
            [r["id"] for r in fh.iter_ndjson_gz(squatter)],
        )

    def test_stale_temp_files_are_cleared(self, tmp_path: Path, aged_db: apsw.Connection) -> None:
        """Temp files of dead writers in the archive directory are removed by the next prune."""
        arch = tmp_path / "arch"
        fh.ensure_private_dir(arch)
        dead_pid = 2**22 + 12345  # above the default pid_max: never a live process
        stale = arch / f".janus-logs-2026-11-27.1-9.ndjson.gz.{dead_pid}.{'a' * 16}.tmp"
        stale.write_bytes(b"partial")
        rt.prune(aged_db, older_than="30d", archive_dir=arch, now_ns=NOW)
        assert not stale.exists()


def write_archive(directory: Path, records: list[dict[str, Any]], name: str = "janus-logs-2027-01-14.1-9.ndjson.gz") -> Path:
    """An archive (with its .sha256) holding *records* exactly as given, as a foreign tool would write it."""
    directory.mkdir(exist_ok=True)
    data = gzip.compress("".join(json.dumps(record) + "\n" for record in records).encode("ascii"))
    (directory / name).write_bytes(data)
    fh.sidecar_path(directory / name).write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    return directory / name


GOOD = {"id": 7, "ts": NOW - DAY, "level": 20, "logger": "app", "message": "fine", "fields": '{"a": 1}'}


class TestImportValidation:
    @pytest.mark.parametrize(
        ("column", "value", "reason"),
        [
            ("id", 2**63 - 1, "not a record id, 1 to 2\\*\\*53"),
            ("id", 2**53 + 1, "not a record id"),
            ("id", 0, "not a record id"),
            ("id", -5, "not a record id"),
            ("id", "7", "not a record id"),
            ("id", 7.0, "not a record id"),
            ("ts", "yesterday", "ts 'yesterday' is not UTC nanoseconds"),
            ("ts", -1, "ts -1 is not UTC nanoseconds"),
            ("ts", 2**63, "is not UTC nanoseconds"),
            ("ts", 1.5, "is not UTC nanoseconds"),
            ("ts", None, "is not UTC nanoseconds"),
            ("level", "HIGH", "level 'HIGH' is not a level number"),
            ("level", -10, "is not a level number"),
            ("level", True, "is not a level number"),
            ("pid", "1234", "is not a process id"),
            ("logger", None, "logger is null"),
            ("message", ["a"], "message \\['a'\\] is not text"),
            ("message", {"$base64": "!!!"}, "not valid base64"),
            ("message", {"$base64": 5}, "not valid base64"),
            ("user_id", 42, "user_id 42 is not text"),
            ("thread", "bad\ud800", "lone surrogate"),
            ("fields", {"a": 1}, "is not JSON object text"),
            ("fields", "[1, 2]", "is not JSON object text"),
            ("fields", "not json", "is not JSON object text"),
            ("fields", "[" * 100_000, "is not JSON object text"),
        ],
        ids=lambda value: repr(value)[:20],
    )
    def test_bad_column_refuses_the_archive_naming_line_and_column(
        self, tmp_path: Path, db: apsw.Connection, column: str, value: Any, reason: str
    ) -> None:
        """A record janus would never write refuses the whole archive; its line and why are said."""
        add_rows(db, [row(NOW, message="already here")])
        before = all_rows(db)
        sequence = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'logs'").fetchall()
        path = write_archive(tmp_path / "arch", [dict(GOOD, id=2), {**GOOD, "id": 3, column: value}])
        with pytest.raises(FileHandlerError, match=f"line 2 of .*: .*{reason}.*nothing from this archive") as caught:
            rt.import_archive(db, path)
        after = (all_rows(db), db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'logs'").fetchall())
        assert ("archive_invalid_record", column, (before, sequence)) == (
            caught.value.code,
            caught.value.details["column"],
            after,
        )

    def test_highest_id_accepted_leaves_room_for_the_flusher(self, tmp_path: Path, db: apsw.Connection) -> None:
        """An id of 2**53 imports, and later records are numbered after it, far below the limit."""
        path = write_archive(tmp_path / "arch", [dict(GOOD, id=rt.MAX_IMPORTED_ID)])
        assert 1 == rt.import_archive(db, path)
        add_rows(db, [row(NOW, message="logged after the import")])
        check_fts(db)
        assert [rt.MAX_IMPORTED_ID, rt.MAX_IMPORTED_ID + 1] == [r[0] for r in all_rows(db)]

    def test_null_optional_columns_and_blobs_are_accepted(self, tmp_path: Path, db: apsw.Connection) -> None:
        """Only id, ts, level, logger and message are needed; text columns may be $base64 bytes."""
        blob = {"$base64": "AP9yYXc="}
        path = write_archive(tmp_path / "arch", [dict(GOOD, fields=None, pid=None, user_id=blob, exception=None)])
        assert 1 == rt.import_archive(db, path)
        assert b"\x00\xffraw" == all_rows(db)[0][5]


class TestDamagedRowsInTheDatabase:
    """Rows an older import let in: prune and archive search must not stop at them."""

    @pytest.fixture
    def damaged_db(self, db: apsw.Connection) -> apsw.Connection:
        add_rows(db, [row(NOW - 3 * DAY, message="good old"), row(NOW, message="good new")])
        with db:
            for ts, level, message in (("yesterday", 20, "bad ts"), (NOW - 2 * DAY, "HIGH", "bad level"), (1.5, 40, "real ts")):
                db.execute(
                    "INSERT INTO logs(ts, level, logger, message) VALUES (?, ?, 'app', ?)", (ts, level, message)
                )
            db.execute("INSERT INTO logs_fts(rowid, message) SELECT id, message FROM logs WHERE id > 2")
        return db

    def test_prune_everything_with_archive(self, tmp_path: Path, damaged_db: apsw.Connection) -> None:
        """max_rows=0 removes and archives damaged rows too; a level that is not a number counts as 0."""
        summary = rt.prune(damaged_db, max_rows=0, archive_dir=tmp_path / "arch", now_ns=NOW)
        archived = sorted(r["message"] for r in archived_records(tmp_path / "arch"))
        assert (5, [], ["bad level", "bad ts", "good new", "good old", "real ts"], 1) == (
            summary.rows,
            all_rows(damaged_db),
            archived,
            summary.per_level[0],
        )
        json.dumps(summary.to_dict())

    @pytest.mark.parametrize("archive", [False, True], ids=["keys-only", "archived"])
    def test_auto_pruner_removes_them_too(self, tmp_path: Path, damaged_db: apsw.Connection, archive: bool) -> None:
        """The flusher's pruner does not stop at a damaged row: max_rows=0 empties the table."""
        pruner = rt.AutoPruner(
            rt.RetentionPolicy(max_rows=0), archive_dir=tmp_path / "arch" if archive else None, every_n_batches=1
        )
        removed = 0
        while (summary := pruner.maybe_prune(damaged_db)) is not None:
            removed += summary.rows
        assert (5, []) == (removed, all_rows(damaged_db))

    def test_archive_search_skips_what_it_cannot_compare(self, tmp_path: Path, damaged_db: apsw.Connection) -> None:
        """Searching archives with damaged records: a level filter and a time range pass them over."""
        rt.prune(damaged_db, max_rows=0, archive_dir=tmp_path / "arch", now_ns=NOW)
        found = rt.search_archives(tmp_path / "arch", None, level="INFO", since_ns=NOW - 10 * DAY)
        assert ["good old", "good new"] == [r["message"] for r in found]


SECRET = "sk_live_51Hx0quokkaZanzibar7f3a9c"  # a Stripe-like key: tokens sk, live, 51hx0quokkazanzibar7f3a9c


def file_bytes(db_path: Path) -> dict[str, bytes]:
    """The raw bytes of the database file, its WAL and its shared-memory index, as they are on disk."""
    return {suffix: Path(f"{db_path}{suffix}").read_bytes() for suffix in ("", "-wal", "-shm") if Path(f"{db_path}{suffix}").exists()}


def leaks(db_path: Path, text: str) -> list[str]:
    """Where *text* (as written, or lowercased as the index keeps it) is still found in the files."""
    needles = {text.encode(), text.lower().encode(), text.split("_")[-1].lower().encode()}
    return sorted(name or "db" for name, data in file_bytes(db_path).items() if any(n in data for n in needles))


def shadow_leaks(db: apsw.Connection, text: str) -> list[str]:
    """The FTS5 shadow tables that still hold *text*'s last token, read through SQL."""
    token = text.split("_")[-1].lower().encode()
    found = []
    for table, column in (("logs_fts_data", "block"), ("logs_fts_idx", "term")):
        for (value,) in db.execute(f"SELECT {column} FROM {table}"):
            if value is not None and token in (value if isinstance(value, bytes) else str(value).encode()):
                found.append(table)
                break
    return found


@pytest.fixture
def secret_db(tmp_path: Path) -> Iterator[tuple[apsw.Connection, Path]]:
    """Twenty batches the way the flusher writes them, user 42's records holding SECRET; a reader stays open."""
    path = tmp_path / "secret.db"
    db = open_db(path, incremental=True)
    reader = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)  # keeps the -wal file in place
    try:
        for batch in range(20):
            add_rows(
                db,
                [
                    row(NOW - DAY + batch * 100 + n, message=f"charged with {SECRET}" if n % 9 == 0 else f"served {batch} {n}",
                        user_id="42" if n % 9 == 0 else "7", fields=json.dumps({"key": SECRET}) if n % 9 == 0 else None)
                    for n in range(100)
                ],
            )
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        yield db, path
    finally:
        reader.close()
        db.close()


class TestErasure:
    def test_ordinary_prune_leaves_the_text_on_disk(self, secret_db: tuple[apsw.Connection, Path]) -> None:
        """The issue's finding, kept as the control: after a prune to 0 rows the key is still in the files."""
        db, path = secret_db
        rt.prune(db, max_rows=0, now_ns=NOW)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert ([], True) == (all_rows(db), bool(leaks(path, SECRET) or shadow_leaks(db, SECRET)))

    def test_secure_prune_leaves_it_nowhere(self, secret_db: tuple[apsw.Connection, Path]) -> None:
        """prune(secure=True) to 0 rows: not in the db file, the WAL or the FTS shadow tables."""
        db, path = secret_db
        assert leaks(path, SECRET)  # it was there
        summary = rt.prune(db, max_rows=0, now_ns=NOW, secure=True)
        check_fts(db)
        assert (2000, True, [], [], [], 0) == (
            summary.rows,
            summary.secure,
            all_rows(db),
            leaks(path, SECRET),
            shadow_leaks(db, SECRET),
            os.path.getsize(f"{path}-wal"),
        )

    def test_secure_prune_clears_what_an_ordinary_one_left(self, secret_db: tuple[apsw.Connection, Path]) -> None:
        """A later secure prune with nothing due still scrubs the text an ordinary prune left behind."""
        db, path = secret_db
        rt.prune(db, max_rows=0, now_ns=NOW)
        summary = rt.prune(db, max_rows=0, now_ns=NOW, secure=True)
        assert (0, [], []) == (summary.rows, leaks(path, SECRET), shadow_leaks(db, SECRET))

    def test_erase_one_user(self, tmp_path: Path, secret_db: tuple[apsw.Connection, Path]) -> None:
        """erase(user_id=42) removes exactly that user's records, leaves no trace of them, keeps the rest searchable."""
        db, path = secret_db
        summary = rt.erase(db, user_id=42)
        check_fts(db)
        assert (240, 1760, {"7"}, [], []) == (
            summary.rows,
            len(all_rows(db)),
            {r[5] for r in all_rows(db)},
            leaks(path, SECRET),
            shadow_leaks(db, SECRET),
        )
        assert (1760, 0) == (fts_count(db, '"served"'), fts_count(db, '"charged"'))

    def test_erase_rewrites_the_archives(self, tmp_path: Path, secret_db: tuple[apsw.Connection, Path]) -> None:
        """Archives holding the user's records are rewritten without them, checksums valid; one left empty goes."""
        db, path = secret_db
        arch = tmp_path / "arch"
        rt.prune(db, max_rows=1000, archive_dir=arch, chunk_rows=500, now_ns=NOW)
        only_theirs = write_archive(arch, [dict(GOOD, id=90_001, user_id="42", message=SECRET)], "janus-logs-2027-01-10.90001-90001.ndjson.gz")
        summary = rt.erase(db, user_id="42", archive_dir=arch)
        remaining = [r for p in rt.list_archives(arch) for r in fh.iter_ndjson_gz(p)]
        # The 1,000 oldest went to two archives: 120 of them user 42's, plus the one only_theirs holds.
        assert (120, 121, [only_theirs], 2, True) == (
            summary.rows,
            summary.archived_rows,
            summary.archives_removed,
            len(summary.archives_rewritten),
            all(fh.verify_sha256(p) for p in rt.list_archives(arch)),
        )
        assert (880, set(), False) == (
            len(remaining),
            {r["user_id"] for r in remaining} - {"7"},
            any(SECRET.encode() in gzip.open(p).read() for p in rt.list_archives(arch)),
        )
        fresh = open_db(tmp_path / "restored.db")
        try:
            assert 880 == sum(rt.import_archive(fresh, p) for p in rt.list_archives(arch))
        finally:
            fresh.close()

    def test_erase_with_nobody_to_erase_still_scrubs(self, secret_db: tuple[apsw.Connection, Path]) -> None:
        """An unknown user erases nothing; the files are scrubbed of earlier deletes all the same."""
        db, path = secret_db
        rt.prune(db, max_rows=0, now_ns=NOW)
        assert (0, []) == (rt.erase(db, user_id="nobody").rows, leaks(path, SECRET))

    def test_reader_holding_the_wal_is_reported(self, secret_db: tuple[apsw.Connection, Path]) -> None:
        """A reader in a transaction keeps old copies in the WAL: erase deletes, then says so (scrub_incomplete)."""
        db, path = secret_db
        db.setbusytimeout(10)
        holder = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            holder.execute("BEGIN")
            holder.execute("SELECT count(*) FROM logs").fetchall()
            with pytest.raises(FileHandlerError) as caught:
                rt.erase(db, user_id="42")
            holder.execute("COMMIT")
        finally:
            holder.close()
        assert ("scrub_incomplete", 1760) == (caught.value.code, len(all_rows(db)))
        rt.scrub(db)  # once the reader is gone
        assert [] == leaks(path, SECRET)

    @pytest.mark.parametrize("user", ["", True, None, 4.2, "bad\ud800"])
    def test_bad_user_id(self, db: apsw.Connection, user: Any) -> None:
        """user_id must be a user's id as logged."""
        with pytest.raises(ConfigError, match="user_id"):
            rt.erase(db, user_id=user)


class TestArchiveReading:
    @pytest.fixture
    def arch(self, tmp_path: Path, aged_db: apsw.Connection) -> Path:
        """Archives of the 20 oldest days, one file per chunk-day."""
        add_rows(aged_db, [row(NOW - 25 * DAY, ERROR, "Disk FULL on /var", logger="app.db.pool", exception="OSError")])
        rt.prune(aged_db, older_than="20d", archive_dir=tmp_path / "arch", chunk_rows=6, now_ns=NOW)
        return tmp_path / "arch"

    def test_iter_all(self, arch: Path) -> None:
        """Every archived record is streamed once, oldest day first."""
        records = archived_records(arch)
        days = [int(r["message"].split("d")[-1]) for r in records if r["message"].startswith("L")]
        assert (81, sorted(days, reverse=True)) == (len(records), days)

    def test_iter_time_range(self, arch: Path) -> None:
        """since is inclusive and until exclusive."""
        since, until = NOW - 35 * DAY + HOUR, NOW - 33 * DAY + HOUR
        records = list(rt.iter_archive_records(arch, since_ns=since, until_ns=until))
        assert ({since, since + DAY}, 8) == ({r["ts"] for r in records}, len(records))

    def test_list_ignores_temp_and_sidecars(self, arch: Path) -> None:
        """Only complete archives are listed; temp files and sidecars are not."""
        (arch / ".janus-logs-2027-01-01.1-2.ndjson.gz.1.0000000000000000.tmp").write_bytes(b"x")
        listed = rt.list_archives(arch)
        assert all(p.name.endswith(".ndjson.gz") and not p.name.startswith(".") for p in listed)

    def test_search_text_is_case_insensitive_and_all_terms(self, arch: Path) -> None:
        """Every term must occur, in any case, in message, fields or exception."""
        found = rt.search_archives(arch, "disk oserror")
        assert ["Disk FULL on /var"] == [r["message"] for r in found]

    def test_search_level_is_a_minimum(self, arch: Path) -> None:
        """level=WARNING finds WARNING and ERROR records."""
        found = rt.search_archives(arch, level="WARNING", limit=None)
        assert {WARNING, ERROR} == {r["level"] for r in found}

    def test_search_logger_includes_children(self, arch: Path) -> None:
        """logger='app.db' finds app.db.pool but not app."""
        assert (1, 0) == (
            len(rt.search_archives(arch, logger="app.db")),
            len(rt.search_archives(arch, logger="app.d")),
        )

    def test_search_limit(self, arch: Path) -> None:
        """At most limit results come back."""
        assert (5, 81) == (len(rt.search_archives(arch, limit=5)), len(rt.search_archives(arch, limit=None)))

    def test_missing_directory(self, tmp_path: Path) -> None:
        """A missing archive directory is a clear FileHandlerError."""
        with pytest.raises(FileHandlerError, match="not a directory"):
            list(rt.iter_archive_records(tmp_path / "nope"))


class TestAutoPruner:
    def test_looks_on_first_call_then_every_n(self, aged_db: apsw.Connection) -> None:
        """Without a backlog it acts on call 1, n+1, 2n+1, ..."""
        pruner = rt.AutoPruner(rt.RetentionPolicy(max_age=30 * DAY), every_n_batches=3, chunk_rows=100, clock=lambda: NOW)
        results = [pruner.maybe_prune(aged_db) for _ in range(3)]
        assert ([40, None, None], 120) == ([r.rows if r else None for r in results], len(messages(aged_db)))

    def test_one_chunk_per_call_until_caught_up(self, aged_db: apsw.Connection) -> None:
        """Each call removes at most one chunk; a backlog is worked off on consecutive calls."""
        pruner = rt.AutoPruner(rt.RetentionPolicy(max_age=30 * DAY), every_n_batches=1000, chunk_rows=15, clock=lambda: NOW)
        sizes = [s.rows if s else None for s in (pruner.maybe_prune(aged_db) for _ in range(5))]
        assert ([15, 15, 10, None, None], 120) == (sizes, len(messages(aged_db)))

    def test_max_rows(self, aged_db: apsw.Connection) -> None:
        """Repeated calls bring the table down to max_rows and then stop."""
        pruner = rt.AutoPruner(rt.RetentionPolicy(max_rows=100), every_n_batches=1, chunk_rows=25, clock=lambda: NOW)
        results = [pruner.maybe_prune(aged_db) for _ in range(5)]
        assert ([25, 25, 10, None, None], 100) == ([r.rows if r else None for r in results], len(messages(aged_db)))

    def test_does_not_count_when_ids_show_room(self, aged_db: apsw.Connection) -> None:
        """Under the row limit by max(id)-min(id), no COUNT(*) is run."""
        statements: list[str] = []

        def trace(cursor: Any, sql: str, bindings: Any) -> bool:
            statements.append(sql)
            return True

        pruner = rt.AutoPruner(rt.RetentionPolicy(max_rows=1000), every_n_batches=1, clock=lambda: NOW)
        aged_db.exec_trace = trace
        try:
            result = pruner.maybe_prune(aged_db)
        finally:
            aged_db.exec_trace = None
        assert (None, []) == (result, [s for s in statements if "count(" in s.lower()])

    def test_tracks_count_without_recounting(self, aged_db: apsw.Connection) -> None:
        """After one exact count, growth is bounded by new ids: under the limit it does not count again."""
        policy = rt.RetentionPolicy(max_rows=130, per_level={DEBUG: 5 * DAY})
        pruner = rt.AutoPruner(policy, every_n_batches=1, clock=lambda: NOW)
        first = pruner.maybe_prune(aged_db)  # 35 DEBUG rows: ids now sparse, max-min says 159
        second = pruner.maybe_prune(aged_db)  # counts once: 125
        statements: list[str] = []

        def trace(cursor: Any, sql: str, bindings: Any) -> bool:
            statements.append(sql)
            return True

        aged_db.exec_trace = trace
        try:
            third = pruner.maybe_prune(aged_db)
            add_rows(aged_db, [row(NOW, message=f"new {i}") for i in range(3)])
            fourth = pruner.maybe_prune(aged_db)
        finally:
            aged_db.exec_trace = None
        assert (35, None, None, None, []) == (
            first.rows if first else None,
            second,
            third,
            fourth,
            [s for s in statements if "count(" in s.lower()],
        )

    def test_max_bytes_prunes_below_the_limit(self, db: apsw.Connection) -> None:
        """Over max_bytes it prunes down to about 90 % of the limit, then rests."""
        add_rows(db, [row(NOW - 3000 + i, message=f"m{i} " + "word " * 30) for i in range(3000)])
        used = rt._used_bytes(db)
        pruner = rt.AutoPruner(rt.RetentionPolicy(max_bytes=used // 2), every_n_batches=1, chunk_rows=400, clock=lambda: NOW)
        removed = 0
        while (summary := pruner.maybe_prune(db)) is not None:
            removed += summary.rows
        kept = math.floor(0.9 * (used // 2) * 3000 / used)  # rows of average size in 90 % of the limit
        assert (3000 - kept, None) == (removed, pruner.maybe_prune(db))

    def test_archives_what_it_removes(self, tmp_path: Path, aged_db: apsw.Connection) -> None:
        """With an archive directory every removed row is archived."""
        pruner = rt.AutoPruner(
            rt.RetentionPolicy(max_age=30 * DAY), tmp_path / "arch", every_n_batches=1, chunk_rows=16, clock=lambda: NOW
        )
        while pruner.maybe_prune(aged_db) is not None:
            pass
        assert 40 == len(archived_records(tmp_path / "arch"))

    def test_empty_policy_refused(self) -> None:
        """A policy that removes nothing is a ConfigError."""
        with pytest.raises(ConfigError):
            rt.AutoPruner(rt.RetentionPolicy())


# --------------------------------------------------------------------------- #
# Killed in the middle of a prune
# --------------------------------------------------------------------------- #

TOKENS = 20_000


@pytest.fixture
def token_db(tmp_path: Path) -> Path:
    """20,000 rows over about a week, each with a unique searchable token; the connection is closed."""
    path = tmp_path / "tokens.db"
    db = open_db(path)
    try:
        start = NOW - 10 * DAY
        add_rows(
            db,
            [
                row(start + i * 30 * rt.NS_PER_SECOND, (DEBUG, INFO, WARNING, ERROR)[i % 4], f"event tok{i:05d} happened",
                    fields=json.dumps({"n": i}))
                for i in range(TOKENS)
            ],
        )
    finally:
        db.close()
    return path


Sabotage = Callable[[], dict[str, Any]]


def prune_in_child(db_path: Path, arch: Path, sabotage: Sabotage) -> int:
    """Fork a child that sets up its sabotage then prunes everything; returns -signal or exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 99
        try:
            extra = sabotage()
            rt.prune_path(db_path, older_than="1d", archive_dir=arch, chunk_rows=1000, now_ns=NOW, **extra)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_on_call(n: int, func: Callable[..., Any]) -> Callable[..., Any]:
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == n:
            kill_self()
        return func(*args, **kwargs)

    return wrapper


def sabotage_after_chunks() -> dict[str, Any]:
    """Killed once the third chunk has committed."""
    return {"progress": lambda summary: kill_self() if summary.chunks == 3 else None}


def sabotage_before_delete() -> dict[str, Any]:
    """Killed with the fourth chunk archived but not deleted."""
    rt._Engine._delete_rows = kill_on_call(4, rt._Engine._delete_rows)  # type: ignore[method-assign]
    return {}


def sabotage_before_archive_rename() -> dict[str, Any]:
    """Killed with an archive written and synced but not yet renamed into place."""
    fh._publish = kill_on_call(5, fh._publish)  # type: ignore[assignment]
    return {}


def sabotage_before_sidecar() -> dict[str, Any]:
    """Killed with an archive in place but its .sha256 not yet written."""
    fh._publish = kill_on_call(6, fh._publish)  # type: ignore[assignment]
    return {}


def sabotage_mid_archive() -> dict[str, Any]:
    """Killed half way through writing compressed archive data."""
    real = fh._HashingFile.write
    calls = {"n": 0}

    def write(self: Any, data: bytes) -> int:
        if len(data) > 1000:  # compressed records, not the header or trailer
            calls["n"] += 1
        if calls["n"] == 3:
            real(self, data[: len(data) // 2])
            kill_self()
        return real(self, data)

    fh._HashingFile.write = write  # type: ignore[method-assign]
    return {}


def tokens_in_db(db_path: Path) -> list[str]:
    db = apsw.Connection(str(db_path))
    try:
        return [m.split()[1] for (m,) in db.execute('SELECT "message" FROM "logs"')]
    finally:
        db.close()


def tokens_in_archives(arch: Path) -> list[str]:
    if not arch.exists():
        return []
    return [r["message"].split()[1] for r in rt.iter_archive_records(arch)]


@pytest.mark.slow
class TestKilledDuringPrune:
    @pytest.mark.parametrize(
        "sabotage",
        [
            sabotage_after_chunks,
            sabotage_before_delete,
            sabotage_before_archive_rename,
            sabotage_before_sidecar,
            sabotage_mid_archive,
        ],
    )
    def test_no_record_lost_and_rerun_completes(self, tmp_path: Path, token_db: Path, sabotage: Sabotage) -> None:
        """Killed anywhere, every record is in the database or a complete archive; a re-run finishes the job."""
        arch = tmp_path / "arch"
        assert -signal.SIGKILL == prune_in_child(token_db, arch, sabotage)

        in_db, in_archives = tokens_in_db(token_db), tokens_in_archives(arch)
        everything = {f"tok{i:05d}" for i in range(TOKENS)}
        assert (everything, True, True) == (
            set(in_db) | set(in_archives),
            0 < len(in_db) < TOKENS,
            len(set(in_archives)) == len(in_archives),
        )

        summary = rt.prune_path(token_db, older_than="1d", archive_dir=arch, chunk_rows=1000, now_ns=NOW)
        assert (len(in_db), [], everything) == (
            summary.rows,
            tokens_in_db(token_db),
            set(tokens_in_archives(arch)),
        )
        assert [] == [p.name for p in arch.iterdir() if p.name.endswith(".tmp")]
        self.assert_imports_exactly_once(tmp_path, arch)

    def test_killed_from_outside_after_first_archive(self, tmp_path: Path, token_db: Path) -> None:
        """A SIGKILL from another process, once the first archive exists, loses nothing."""
        arch = tmp_path / "arch"
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 99
            try:
                rt.prune_path(token_db, older_than="1d", archive_dir=arch, chunk_rows=500, now_ns=NOW)
                code = 0
            finally:
                os._exit(code)
        try:
            while not (arch.exists() and rt.list_archives(arch)):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    pid = 0
                    break
                time.sleep(0.001)
        finally:
            if pid:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        everything = {f"tok{i:05d}" for i in range(TOKENS)}
        assert everything == set(tokens_in_db(token_db)) | set(tokens_in_archives(arch))
        rt.prune_path(token_db, older_than="1d", archive_dir=arch, chunk_rows=500, now_ns=NOW)
        assert ([], everything) == (tokens_in_db(token_db), set(tokens_in_archives(arch)))
        self.assert_imports_exactly_once(tmp_path, arch)

    @staticmethod
    def assert_imports_exactly_once(tmp_path: Path, arch: Path) -> None:
        """Importing every archive gives each record once, each findable once."""
        fresh = open_db(tmp_path / "restored.db")
        try:
            for path in rt.list_archives(arch):
                rt.import_archive(fresh, path)
            check_fts(fresh)
            count, distinct = fresh.execute('SELECT count(*), count(DISTINCT "message") FROM "logs"').fetchone()
            hits = [fts_count(fresh, f"tok{i:05d}") for i in range(0, TOKENS, 997)]
        finally:
            fresh.close()
        assert (TOKENS, TOKENS, [1] * len(hits)) == (count, distinct, hits)
