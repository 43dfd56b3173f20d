"""The level index holds WARNING and above only: each query meant for it uses it, results are unchanged."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import apsw
import pytest

import janus_utils as ju
from janus_utils import _rollup, retention
from janus_utils._flusher import open_database
from janus_utils._schema import LEVEL_INDEX_FLOOR


def _plan(db: apsw.Connection, sql: str, params: list[Any] | tuple[Any, ...]) -> str:
    return " | ".join(str(row[3]) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "logs.db"
    rng = random.Random(30)
    db = open_database(str(path))
    try:
        with db:
            db.executemany(
                'INSERT INTO "logs"("ts", "level", "logger", "message") VALUES (?, ?, ?, ?)',
                [(n * 10**9, rng.choice((10, 20, 20, 20, 30, 40)), "app", "m") for n in range(2000)],
            )
            _rollup.advance(db)
            # Past the rollup's mark: a custom level below WARNING, and a damaged row's text level.
            db.execute("""INSERT INTO "logs"("ts", "level", "logger", "message") VALUES (5, 25, 'app', 'm')""")
            db.execute("""INSERT INTO "logs"("ts", "level", "logger", "message") VALUES (6, 'HIGH', 'app', 'm')""")
            db.execute('INSERT INTO "logs_fts"(rowid, message, fields, exception) SELECT id, message, fields, exception FROM "logs"')
    finally:
        db.close()
    return path


class TestLevelIndex:
    def test_the_index_holds_warning_and_above(self, db_path: Path) -> None:
        """The migration leaves a partial index: the INFO and DEBUG records are not in it."""
        db = apsw.Connection(str(db_path))
        try:
            sql = db.execute("""SELECT "sql" FROM sqlite_schema WHERE "name" = 'logs_level_ts'""").fetchall()[0][0]
            indexed = db.execute(
                f'SELECT count(*) FROM "logs" INDEXED BY "logs_level_ts" WHERE "level" >= {LEVEL_INDEX_FLOOR}'
            ).fetchall()[0][0]
            warning = db.execute(f'SELECT count(*) FROM "logs" NOT INDEXED WHERE "level" >= {LEVEL_INDEX_FLOOR}').fetchall()[0][0]
        finally:
            db.close()
        assert f'WHERE "level" >= {LEVEL_INDEX_FLOOR}' in sql
        assert warning == indexed

    def test_a_warning_filter_is_probed_and_streamed_through_it(self, db_path: Path) -> None:
        """level >= WARNING: the planner's probe, value seeks and streams read the partial index."""
        with ju.LogStore(db_path) as store:
            db = store._db
            assert db is not None
            selection = store._select(None, False, {"level": "ERROR"})
            (condition, params), = selection.probes
            assert "logs_level_ts" in _plan(db, f'SELECT 1 FROM "logs" WHERE {condition} LIMIT 5', params)
            assert [40, "HIGH"] == store._planner()._values("level", 40)
            streams = ju.store.Streams("logs_level_ts", "level", [40])
            sql, bound = store._streams_sql(selection, streams, '"logs"."id", "logs"."ts"', "newest", 5)
            assert "logs_level_ts" in _plan(db, sql, bound)
            # And the records are those of a scan.
            scan = db.execute(
                """SELECT "id" FROM "logs" NOT INDEXED WHERE "level" >= 40 ORDER BY "ts" DESC, "id" DESC LIMIT 7"""
            ).fetchall()
            assert [row[0] for row in scan] == [record.id for record in store.search(level="ERROR", limit=7)]

    def test_a_level_below_warning_is_no_probe(self, db_path: Path) -> None:
        """level >= INFO: no index holds it, so it is never counted through one; results are a scan's."""
        with ju.LogStore(db_path) as store:
            selection = store._select(None, False, {"level": "INFO"})
            assert [] == selection.probes
            with ju.LogStore(db_path, scope={"level": "INFO"}) as scoped:
                assert [] == scoped._select(None, False, {}).probes
                db = store._db
                assert db is not None
                integer = """SELECT count(*) FROM "logs" NOT INDEXED WHERE "level" >= 20 AND typeof("level") = 'integer'"""
                assert db.execute(integer).fetchall()[0][0] == scoped.count()
            scan = db.execute(
                """SELECT "id" FROM "logs" NOT INDEXED WHERE "level" >= 20 ORDER BY "ts" DESC, "id" DESC LIMIT 9"""
            ).fetchall()
            assert [row[0] for row in scan] == [record.id for record in store.search(level="INFO", limit=9)]

    def test_retention_finds_every_level_and_reads_the_index_for_warning_and_above(self, db_path: Path) -> None:
        """Levels below WARNING come from the rollup and the rows past its mark; the expired ranges
        of WARNING and above read the level index."""
        db = open_database(str(db_path))
        try:
            assert [10, 20, 25, 30, 40, "HIGH"] == retention._levels_present(db)
            rules = [(10, 10**12), (40, 10**12), ("HIGH", 10**12)]
            plan = _plan(db, retention._expired_rows_sql(rules), [v for rule in rules for v in (*rule, 5)] + [5])
            assert plan.count("logs_level_ts") == 2
            summary = retention.prune(db, per_level={"DEBUG": "1s", "ERROR": "1s"}, now_ns=3000 * 10**9)
            left = db.execute('SELECT count(*) FROM "logs" WHERE "level" IN (10, 40)').fetchall()[0][0]
        finally:
            db.close()
        assert 0 == left
        assert summary.rows > 0
