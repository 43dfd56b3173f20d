"""The rollup: count() and histogram() answered from per-minute counts equal counting the rows."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import apsw
import pytest

import janus_utils as ju
from janus_utils import _rollup, _schema
from janus_utils._flusher import open_database

LOGGERS = ("app", "app.db", "appx", "b", "app.db.pool")
MINUTE = 60_000_000_000


def _insert(db: apsw.Connection, rng: random.Random, n: int) -> None:
    rows = [
        (rng.randrange(-5 * MINUTE, 90 * MINUTE), rng.choice((10, 20, 30, 40, 50)), rng.choice(LOGGERS), "m")
        for _ in range(n)
    ]
    db.executemany('INSERT INTO "logs"("ts", "level", "logger", "message") VALUES (?, ?, ?, ?)', rows)


def _random_filters(rng: random.Random) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    if rng.random() < 0.5:
        filters["level"] = rng.choice((10, 20, 30, 40, 50, 60))
    if rng.random() < 0.5:
        filters["logger"] = rng.choice(("app", "app.db", "appx", "b", "c"))
    if rng.random() < 0.5:
        filters["since"] = rng.randrange(-6 * MINUTE, 91 * MINUTE) / 1e9
    if rng.random() < 0.5:
        low = filters.get("since", -7 * MINUTE / 1e9) * 1e9
        filters["until"] = (low + rng.randrange(1, 40 * MINUTE)) / 1e9
    return filters


class _NoRollup:
    def groups(self, *args: Any, **kwargs: Any) -> None:
        return None


def _check_spans(path: Path) -> None:
    """Every row up to the mark lies in a span whose ids and ts hold it (what id_range() relies on)."""
    db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        outside = db.execute(
            """SELECT "id", "ts" FROM "logs" WHERE "id" <= (SELECT "value" FROM "janus_rollup_state"
               WHERE "key" = 'covered_upto') AND NOT EXISTS (SELECT 1 FROM "janus_spans"
               WHERE "logs"."id" BETWEEN "min_id" AND "max_id" AND "logs"."ts" BETWEEN "min_ts" AND "max_ts")"""
        ).fetchall()
    finally:
        db.close()
    assert [] == outside


def _check_against_rows(path: Path, rng: random.Random, trials: int = 60) -> None:
    _check_spans(path)
    with ju.LogStore(path) as fast, ju.LogStore(path) as slow:
        slow._rollup = _NoRollup()  # type: ignore[assignment]
        for _ in range(trials):
            filters = _random_filters(rng)
            assert slow.count(**filters) == fast.count(**filters), filters
            bucket = rng.choice(("1m", "5m", "1h", "90s"))
            by = rng.choice(("level", "logger"))
            assert slow.histogram(bucket, by, **filters) == fast.histogram(bucket, by, **filters), (bucket, by, filters)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "logs.db"


class TestRollup:
    def test_counts_match_rows_after_batches_deletes_and_edits(self, db_path: Path) -> None:
        """Batches the flusher counted, rows past the mark, deletes, edits and restores below it: counts stay exact."""
        rng = random.Random(15)
        db = open_database(str(db_path))
        try:
            for _ in range(3):
                with db:
                    _insert(db, rng, 700)
                    _rollup.advance(db)
            with db:
                _insert(db, rng, 300)  # past the mark: counted from the rows
            with db:  # as retention deletes: the rollup is told, as the full-text index is
                gone = [row[0] for row in db.execute('SELECT "id" FROM "logs" WHERE "id" % 5 = 0')]
                _rollup.count_deleted(db, json.dumps(gone))
                db.execute('DELETE FROM "logs" WHERE "id" % 5 = 0')
            db.execute('UPDATE "logs" SET "level" = 45, "ts" = "ts" + 7 * 60000000000 WHERE "id" % 11 = 0')
            # Re-inserted below the mark with their own ids, as an archive import does.
            with db:
                db.execute(
                    """INSERT INTO "logs"("id", "ts", "level", "logger", "message")
                       VALUES (5, 3, 20, 'app', 'back'), (10, -70000000000, 40, 'b', 'back')"""
                )
                _rollup.count_inserted(db, [5, 10])
        finally:
            db.close()
        _check_against_rows(db_path, rng)

    def test_a_damaged_row_sends_readers_to_the_rows(self, db_path: Path) -> None:
        """A row whose ts or level has the wrong type is not counted by value: readers count the rows."""
        rng = random.Random(16)
        db = open_database(str(db_path))
        try:
            with db:
                _insert(db, rng, 500)
                _rollup.advance(db)
            _rollup.count_deleted(db, "[3]")
            db.execute('DELETE FROM "logs" WHERE "id" = 3')
            db.execute("""INSERT INTO "logs"("id", "ts", "level", "logger", "message") VALUES (3, 'yesterday', 'HIGH', 'app', 'x')""")
            _rollup.count_inserted(db, [3])
            _rollup.count_deleted(db, "[3]")
            db.execute('DELETE FROM "logs" WHERE "id" = 3')
            db.execute("""INSERT INTO "logs"("id", "ts", "level", "logger", "message") VALUES (3, 'yesterday', 20, 'app', 'x')""")
            _rollup.count_inserted(db, [3])
            state = dict(db.execute('SELECT "key", "value" FROM "janus_rollup_state"').fetchall())
        finally:
            db.close()
        assert 1 == state["irregular"]
        with ju.LogStore(db_path) as store:
            assert _rollup.Rollup(store._rows).groups("", level=None, logger=None, since=None, until=None, width=None) is None
            assert 500 == store.count()
        _check_against_rows(db_path, rng, trials=20)

    def test_the_migration_counts_the_rows_already_stored(self, db_path: Path) -> None:
        """A database of the previous version gets its rollup filled by the migration, exactly."""
        rng = random.Random(17)
        db = apsw.Connection(str(db_path))
        try:
            with db:
                for version in range(_schema.SCHEMA_VERSION):
                    if "janus_rollup" in _schema.MIGRATIONS[version]:
                        break
                    db.execute(_schema.MIGRATIONS[version])
                db.execute(f"PRAGMA user_version={version}")
                _insert(db, rng, 1500)
                db.execute("""INSERT INTO "logs"("ts", "level", "logger", "message") VALUES (1, 20, 'app', 'x')""")
        finally:
            db.close()
        db = open_database(str(db_path))  # migrates
        try:
            state = dict(db.execute('SELECT "key", "value" FROM "janus_rollup_state"').fetchall())
            total = db.execute('SELECT sum("n") FROM "janus_rollup"').fetchall()[0][0]
        finally:
            db.close()
        assert (1501, 0, 1501) == (state["covered_upto"], state["irregular"], total)
        _check_against_rows(db_path, rng)  # the spans as well: the migrations fill them too

    def test_the_spans_migration_spans_the_rows_already_stored(self, db_path: Path) -> None:
        """A database from before the spans gets them from its rows, however their ts are ordered."""
        rng = random.Random(19)
        db = apsw.Connection(str(db_path))
        try:
            with db:
                for version in range(_schema.SCHEMA_VERSION):
                    if _schema.SPAN_TABLE in _schema.MIGRATIONS[version]:
                        break
                    db.execute(_schema.MIGRATIONS[version])
                db.execute(f"PRAGMA user_version={version}")
                _insert(db, rng, 40_000)
                # What the previous version's flusher did: counted, no spans written.
                for sql, param in zip(_rollup._ADVANCE, (0, 0, 40_000)):
                    db.execute(sql, (param,))
                _insert(db, rng, 10)  # past its mark
        finally:
            db.close()
        db = open_database(str(db_path))  # migrates
        try:
            spans = db.execute('SELECT count(*), max("max_id") FROM "janus_spans"').fetchall()[0]
        finally:
            db.close()
        assert (3, 40_000) == spans  # runs of SPAN_IDS ids, up to the mark
        _check_against_rows(db_path, rng)

    def test_a_time_range_finds_edited_and_restored_rows(self, db_path: Path) -> None:
        """A row whose ts is edited, or restored with an old ts below the mark, is found by its new time."""
        db = open_database(str(db_path))
        try:
            with db:
                db.executemany(
                    'INSERT INTO "logs"("ts", "level", "logger", "message") VALUES (?, 20, \'app\', ?)',
                    [(MINUTE + n * 10**9, f"word{n % 7} m") for n in range(3000)],
                )
                db.execute('INSERT INTO "logs_fts"(rowid, message, fields, exception) SELECT id, message, fields, exception FROM "logs"')
                _rollup.advance(db)
            db.execute('UPDATE "logs" SET "ts" = 5 WHERE "id" = 1500')
            with db:
                db.execute('INSERT INTO "logs_fts"("logs_fts", rowid, message, fields, exception) '
                           'SELECT \'delete\', id, message, fields, exception FROM "logs" WHERE id = 2000')
                _rollup.count_deleted(db, "[2000]")
                db.execute('DELETE FROM "logs" WHERE "id" = 2000')
                db.execute('INSERT INTO "logs"("id", "ts", "level", "logger", "message") VALUES (2000, 7, 20, \'app\', \'m\')')
                db.execute('INSERT INTO "logs_fts"(rowid, message, fields, exception) VALUES (2000, \'m\', NULL, NULL)')
                _rollup.count_inserted(db, [2000])
        finally:
            db.close()
        _check_spans(db_path)
        with ju.LogStore(db_path) as store:
            assert [2000, 1500] == [record.id for record in store.search("m", since=0, until=1e-8)]
            assert 2 == store.count("m", since=0, until=1e-8)

    def test_the_flusher_keeps_it_up_to_date(self, db_path: Path) -> None:
        """Records logged through configure() are in the rollup once flushed, up to the newest id."""
        ju.configure(db_path, console=False)
        try:
            log = ju.get_logger("svc.rollup")
            for n in range(2500):
                (log.info if n % 3 else log.error)("record %s", n)
            assert ju.flush(timeout=30)
        finally:
            ju.shutdown()
        with ju.LogStore(db_path) as store:
            newest = store.newest_id()
            state = dict((row["key"], row["value"]) for row in store.sql('SELECT * FROM "janus_rollup_state"'))
            assert newest == state["covered_upto"]
            assert 2500 == store.count(logger="svc.rollup")
            assert 834 == store.count(logger="svc", level="ERROR")
        _check_spans(db_path)

    def test_a_batch_with_cjk_rows_is_counted_from_the_batch(self, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The wide index inserts only the CJK rows: the batch's ids are still the log table's."""
        reread: list[int] = []
        advance = _rollup.advance
        monkeypatch.setattr(_rollup, "advance", lambda db: reread.append(1) or advance(db))
        ju.configure(db_path, console=False, commit_interval=3600)
        try:
            log = ju.get_logger("svc.wide")
            for n in range(50):
                log.info("注文 %s 失敗" if n == 20 else "order %s failed", n)
            assert ju.flush(timeout=30)
        finally:
            ju.shutdown()
        assert not reread  # not re-read with GROUP BY: counted from the rows in hand
        with ju.LogStore(db_path) as store:
            assert 50 == store.count(logger="svc.wide")
            assert 1 == len(store.search("注文", logger="svc.wide"))

    def test_prune_and_erase_keep_it_exact(self, db_path: Path) -> None:
        """Rows removed by retention's prune and erase leave the rollup's counts equal to the rows'."""
        from janus_utils import retention

        rng = random.Random(18)
        db = open_database(str(db_path))
        try:
            with db:
                _insert(db, rng, 3000)
                db.execute('UPDATE "logs" SET "user_id" = \'u7\' WHERE "id" % 9 = 0')
                db.execute(
                    'INSERT INTO "logs_fts"(rowid, message, fields, exception) '
                    'SELECT id, message, fields, exception FROM "logs"'
                )
                _rollup.advance(db)
            retention.prune(db, max_rows=2000)
            retention.erase(db, user_id="u7")
        finally:
            db.close()
        with ju.LogStore(db_path) as store:
            assert 0 == store.count(user_id="u7")
            assert store.count() < 2000
        _check_against_rows(db_path, rng, trials=30)

    def test_a_batch_without_records_counts_nothing(self, db_path: Path) -> None:
        """A commit of process announcements alone (no record) leaves the rollup as it was."""
        db = open_database(str(db_path))
        try:
            with db:
                _rollup.advance_batch(db, [], 1, 0)
            state = dict(db.execute('SELECT "key", "value" FROM "janus_rollup_state"').fetchall())
        finally:
            db.close()
        assert (0, 0) == (state["covered_upto"], state["irregular"])
