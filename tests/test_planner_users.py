"""A user's records through the bucketed user index: the same records as a brute-force scan."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

import janus_utils as ju
from janus_utils import _rollup, _schema
from janus_utils._flusher import open_database
from janus_utils._timeparse import ts_datetime
from janus_utils.retention import erase

BASE = 1_700_000_000 * 10**9
STEP = 10**9
SPREAD = 700  # ids this far apart: some 47 rows a bucket, 90-odd buckets
# Exact matching: each of these is its own user and no other's.
ODD_USERS = ("a b", "a b ", "A B", "üser", "u\x00ser", "u", "", "u1 ", "'; --", "用户")
USERS = ("u1", "u2", "rare", *ODD_USERS)


def _rows(rng: random.Random, count: int) -> list[tuple[Any, ...]]:
    rows = []
    for n in range(count):
        ts = BASE + n * STEP
        if rng.random() < 0.03:
            ts -= rng.randrange(1, 600) * STEP  # late: logged long before it was committed
        elif n % 211 == 0:
            ts += 10_000 * STEP  # a clock ahead: newer than rows committed long after
        user: str | None
        if n % 53 == 0:
            user = "rare"
        elif n % 7 == 0:
            user = rng.choice(ODD_USERS)
        else:
            user = rng.choice(("u1", "u2", None))
        level = rng.choice((10, 20, 20, 30, 40))
        words = " ".join(rng.choices(("alpha", "bravo", "cache", "delta"), k=3))
        rows.append((1 + n * SPREAD + rng.randrange(SPREAD), ts, level, rng.choice(("svc", "svc.db", "job")), words, user))
    return rows


def _fill(db: apsw.Connection, rows: list[tuple[Any, ...]], *, rollup: bool = True) -> None:
    """Store *rows* as the flusher does; without *rollup* (a database of an older schema) the
    rollup is left behind, for the rows above its mark are counted from the table."""
    insert = 'INSERT INTO "logs"("id", "ts", "level", "logger", "message", "user_id") VALUES (?, ?, ?, ?, ?, ?)'
    index = 'INSERT INTO "logs_fts"(rowid, message, fields, exception) SELECT id, message, fields, exception FROM "logs" WHERE id > ?'
    for start in range(0, len(rows), 500):
        with db:
            done = db.execute('SELECT coalesce(max("id"), 0) FROM "logs"').fetchall()[0][0]
            db.executemany(insert, rows[start : start + 500])
            db.execute(index, (done,))
            if rollup:
                _rollup.advance(db)


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("users") / "logs.db"
    db = open_database(str(path))
    try:
        _fill(db, _rows(random.Random(15), 4_000))
        with db:  # a damaged row: its ts is text, which SQLite sorts after every number
            db.execute(
                """INSERT INTO "logs"("id", "ts", "level", "logger", "message", "user_id")
                VALUES (?, 'late', 20, 'svc', 'alpha', 'u1')""",
                (5_000 * SPREAD,),
            )
            db.execute('INSERT INTO "logs_fts"(rowid, message) VALUES (?, ?)', (5_000 * SPREAD, "alpha"))
    finally:
        db.close()
    yield path


def _order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """SQLite's order of (ts, id): numbers before text."""
    ts = row[1]
    return (isinstance(ts, str), ts, row[0])


def _expected(path: Path, user: str, extra: str = "", params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        # NOT INDEXED: a scan of every row, whatever the indexes.
        return db.execute(
            f'SELECT "id", "ts", "message" FROM "logs" NOT INDEXED WHERE "user_id" = ? {extra}', (user, *params)
        ).fetchall()
    finally:
        db.close()


class TestUserIndex:
    def test_the_rows_span_many_buckets(self, db_path: Path) -> None:
        """The fixture exercises the bucketed reads: many buckets, and the index that serves them."""
        with ju.LogStore(db_path) as store:
            assert _schema.USER_INDEX in store._index_names()
            assert "logs_user_ts" not in store._index_names()
            assert store.newest_id() >> _schema.USER_BUCKET_BITS > 50

    @pytest.mark.parametrize("order", ["newest", "oldest"])
    @pytest.mark.parametrize("user", USERS + ("nobody",))
    def test_a_users_records_are_the_scans(self, db_path: Path, user: str, order: str) -> None:
        """Newest or oldest first, any limit: exactly the user's records in (ts, id) order."""
        expected = sorted(_expected(db_path, user), key=_order, reverse=order == "newest")
        with ju.LogStore(db_path) as store:
            for limit in (1, 7, 100, None):
                found = store.search(user_id=user, order=order, limit=limit)  # type: ignore[arg-type]
                assert [row[0] for row in expected[:limit]] == [record.id for record in found], limit
            assert len(expected) == store.count(user_id=user)
            histogram = store.histogram("1d", by="user_id", user_id=user)
            assert len(expected) == sum(sum(counts.values()) for _, counts in histogram)

    @pytest.mark.parametrize("order", ["newest", "oldest"])
    def test_other_filters_and_time_ranges_are_applied(self, db_path: Path, order: str) -> None:
        """A user with a level, a logger or a time range: the scan's records, in order."""
        since, until = BASE + 1_000 * STEP, BASE + 1_400 * STEP
        cases = [
            ({"level": 30}, 'AND "level" >= 30', ()),
            ({"logger": "svc"}, """AND ("logger" = 'svc' OR "logger" LIKE 'svc.%')""", ()),
            ({"since": ts_datetime(since), "until": ts_datetime(until)}, 'AND "ts" >= ? AND "ts" < ?', (since, until)),
        ]
        with ju.LogStore(db_path) as store:
            for user in ("u1", "rare", "a b"):
                for filters, extra, params in cases:
                    expected = sorted(_expected(db_path, user, extra, params), key=_order, reverse=order == "newest")
                    for limit in (1, 30, None):
                        found = store.search(user_id=user, order=order, limit=limit, **filters)  # type: ignore[arg-type]
                        assert [row[0] for row in expected[:limit]] == [r.id for r in found], (user, filters, limit)

    def test_a_full_text_search_of_a_user(self, db_path: Path) -> None:
        """Words and a user: the user's matching records, newest id first, counted alike."""
        with ju.LogStore(db_path) as store:
            for user in ("u1", "rare", "üser", "u\x00ser"):
                expected = sorted(
                    (row[0] for row in _expected(db_path, user) if "alpha" in row[2].split()), reverse=True
                )
                assert expected[:100] == [r.id for r in store.search("alpha", user_id=user, limit=100)]
                assert len(expected) == store.count("alpha", user_id=user)

    def test_a_scope_of_one_user_sees_only_theirs(self, db_path: Path) -> None:
        """A store scoped to a user reads that user's records, through the same index."""
        expected = sorted(_expected(db_path, "a b"), key=_order, reverse=True)
        with ju.LogStore(db_path, scope={"user_id": "a b"}) as store:
            assert [row[0] for row in expected[:20]] == [r.id for r in store.search(limit=20)]
            assert len(expected) == store.count()
            assert [] == store.search(user_id="u1")

    def test_erase_takes_exactly_the_users_records(self, db_path: Path, tmp_path: Path) -> None:
        """erase() finds every record of the user through the index, and no one else's."""
        copy = tmp_path / "logs.db"
        copy.write_bytes(db_path.read_bytes())
        copy.chmod(0o600)
        before = {user: len(_expected(copy, user)) for user in USERS}
        db = open_database(str(copy))
        try:
            summary = erase(db, user_id="a b", chunk_rows=7)
        finally:
            db.close()
        assert before["a b"] == summary.rows > 0
        after = {user: len(_expected(copy, user)) for user in USERS}
        assert {**before, "a b": 0} == after


def test_a_database_with_the_old_user_index_is_migrated(tmp_path: Path) -> None:
    """The (user_id, ts) index is replaced by the bucketed one; the records found stay the same."""
    step = next(version for version, sql in _schema.MIGRATIONS.items() if sql is _schema._USER_BUCKETS)
    path = tmp_path / "old.db"
    db = apsw.Connection(str(path))
    try:
        with db:
            for version in range(step):
                db.execute(_schema.MIGRATIONS[version])
            db.execute(f"PRAGMA user_version={step}")
        _fill(db, _rows(random.Random(7), 1_500), rollup=False)  # today's rollup writes newer tables
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
        assert "logs_user_ts" in indexes and _schema.USER_INDEX not in indexes
    finally:
        db.close()
    path.chmod(0o600)
    with ju.LogStore(path) as store:
        before = {user: [r.id for r in store.search(user_id=user, limit=None)] for user in USERS}
    db = open_database(str(path))
    try:
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
        assert "logs_user_ts" not in indexes and _schema.USER_INDEX in indexes
        assert [] == db.execute("PRAGMA integrity_check").fetchall()[1:]
    finally:
        db.close()
    with ju.LogStore(path) as store:
        assert before == {user: [r.id for r in store.search(user_id=user, limit=None)] for user in USERS}
        assert sum(map(len, before.values())) > 0
