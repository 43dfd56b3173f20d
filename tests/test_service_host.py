"""service and host: set per process, filled in by the flusher, filterable, migrated, kept apart in archives."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import apsw
import pytest

import janus_utils as ju
from conftest import FILL_FTS_SQL, INSERT_SQL, before_migration, make_row
from janus_utils import _rollup, _schema
from janus_utils._flusher import open_database
from janus_utils.cli import main as cli_main
from janus_utils.retention import ARCHIVE_PATTERN, import_archive, prune_path


def records(db: Path, **filters: object) -> list[ju.Record]:
    with ju.LogStore(db) as store:
        return store.search(limit=None, order="oldest", **filters)  # type: ignore[arg-type]


class TestColumns:
    def test_configured_service_and_host(self, tmp_path: Path, log_call_path: str) -> None:
        """configure(service=, host=) lands in every record's columns, through either path."""
        db = tmp_path / "s.db"
        ju.configure(db, console=False, service="billing", host="web-1")
        try:
            ju.get_logger("a").info("plain")
            ju.get_logger("a").error("with exc", exc_info=ValueError("x"))
            ju.flush()
        finally:
            ju.shutdown()
        assert [("billing", "web-1")] * 2 == [(r.service, r.host) for r in records(db)]

    def test_defaults_are_otel_service_name_and_hostname(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without options: $OTEL_SERVICE_NAME and the machine's hostname."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
        db = tmp_path / "d.db"
        ju.configure(db, console=False)
        try:
            ju.get_logger("a").info("x")
            ju.flush()
        finally:
            ju.shutdown()
        (rec,) = records(db)
        assert ("checkout", socket.gethostname()) == (rec.service, rec.host)

    def test_bad_service_is_refused(self, tmp_path: Path) -> None:
        """An empty or non-text service is a ConfigError naming the option."""
        with pytest.raises(ju.JanusError, match="service"):
            ju.configure(tmp_path / "x.db", service="")

    def test_each_process_its_own_service(self, tmp_path: Path) -> None:
        """Two processes with different services writing one database: each row says whose it is."""
        db = tmp_path / "m.db"
        code = textwrap.dedent(
            """
            import sys, janus_utils as ju
            ju.configure(sys.argv[1], console=False, service=sys.argv[2])
            for n in range(200):
                ju.get_logger("w").info("n %d", n)
            ju.flush()
            """
        )
        procs = [subprocess.Popen([sys.executable, "-c", code, str(db), name]) for name in ("api", "worker")]
        assert [0, 0] == [p.wait(60) for p in procs]
        by_service = {}
        for rec in records(db):
            by_service.setdefault(rec.service, set()).add(rec.pid)
        assert {"api", "worker"} == set(by_service)
        assert by_service["api"].isdisjoint(by_service["worker"])
        assert 200 == len(records(db, service="api")) == len(records(db, service="worker"))

    def test_forked_child_is_announced(self, tmp_path: Path) -> None:
        """A child forked after configure() has its own pid labelled, and no announcement is stored."""
        db = tmp_path / "f.db"
        ju.configure(db, console=False, service="forker", host="h")
        try:
            pid = os.fork()
            if pid == 0:
                try:
                    ju.get_logger("child").info("from the child")
                    ju.flush(10)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            ju.flush()
        finally:
            ju.shutdown()
        (rec,) = records(db, logger="child")
        assert (pid, "forker", "h") == (rec.pid, rec.service, rec.host)
        assert [] == records(db, logger="janus.process")
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            pids = {row[0] for row in conn.execute('SELECT pid FROM "janus_processes"')}
        finally:
            conn.close()
        assert {os.getpid(), pid} <= pids


class TestFilters:
    @pytest.fixture
    def db(self, tmp_path: Path) -> Path:
        path = tmp_path / "f.db"
        for service, host in (("api", "h1"), ("worker", "h2")):
            ju.configure(path, console=False, service=service, host=host)
            ju.get_logger("x").warning("from %s", service)
            ju.shutdown()
        return path

    def test_logstore_filters(self, db: Path) -> None:
        """search/count take service= and host=; to_dict has them."""
        assert ["from api"] == [r.message for r in records(db, service="api")]
        assert ["from worker"] == [r.message for r in records(db, host="h2")]
        with ju.LogStore(db) as store:
            assert 0 == store.count(service="api", host="h2")
            assert {"service": "worker", "host": "h2"}.items() <= store.search(host="h2")[0].to_dict().items()

    def test_cli_filters_and_export(self, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """janus-logs search/export --service/--host; exports carry both columns."""
        assert 0 == cli_main(["search", "--db", str(db), "--service", "worker", "--json"])
        (line,) = capsys.readouterr().out.splitlines()
        assert ("worker", "h2") == (json.loads(line)["service"], json.loads(line)["host"])
        assert 0 == cli_main(["export", "--db", str(db), "--format", "ndjson", "--host", "h1"])
        (line,) = capsys.readouterr().out.splitlines()
        assert "api" == json.loads(line)["service"]


class TestMigration:
    def test_version_1_database_is_migrated_and_read(self, tmp_path: Path) -> None:
        """A version 1 database: LogStore reads it as it is, configure() migrates it, old rows keep NULL."""
        db = tmp_path / "old.db"
        conn = apsw.Connection(str(db))
        _schema.apply_connection_settings(conn)
        with conn:
            conn.execute(_schema.MIGRATIONS[0])
            conn.execute("PRAGMA user_version=1")
            conn.execute(
                'INSERT INTO logs(ts, level, logger, message) VALUES (1700000000000000000, 30, "old", "before")'
            )
        conn.close()
        (old,) = records(db)
        assert (None, None) == (old.service, old.host)
        assert [] == records(db, service="x")
        ju.configure(db, console=False, service="new", host="h")
        try:
            ju.get_logger("new").warning("after")
            ju.flush()
        finally:
            ju.shutdown()
        assert [(None, None), ("new", "h")] == [(r.service, r.host) for r in records(db)]
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            assert _schema.SCHEMA_VERSION == conn.execute("PRAGMA user_version").fetchall()[0][0]
            indexes = {row[1] for row in conn.execute("PRAGMA index_list(logs)")}
        finally:
            conn.close()
        assert "logs_service_ts" in indexes
        assert "logs_host_ts" not in indexes  # the spans say where a host's rows lie


class TestArchives:
    def test_archives_of_two_hosts_do_not_collide(self, tmp_path: Path) -> None:
        """Two databases prune into one directory: distinct names; both import into a third without conflict."""
        archive = tmp_path / "archive"
        dbs = []
        for host in ("h1", "h2"):
            db = tmp_path / f"{host}.db"
            ju.configure(db, console=False, service="svc", host=host)
            for n in range(5):
                ju.get_logger("x").info("%s record %d", host, n)
            ju.shutdown()
            summary = prune_path(db, max_rows=0, archive_dir=archive)
            assert 5 == summary.rows
            dbs.append(db)
        names = sorted(p.name for p in archive.glob("*.ndjson.gz"))
        assert 2 == len(names)
        assert 2 == len({ARCHIVE_PATTERN.match(n)["db"] for n in names})  # type: ignore[index]
        target = tmp_path / "all.db"
        ju.configure(target, console=False)
        ju.shutdown()
        conn = apsw.Connection(str(target))
        try:
            assert [5, 5] == [import_archive(conn, archive / n) for n in names]
            assert [0, 0] == [import_archive(conn, archive / n) for n in names]
            # No flusher ran after the imports: they counted their rows and gave them spans themselves.
            covered = conn.execute("""SELECT "value" FROM "janus_rollup_state" WHERE "key" = 'covered_upto'""")
            assert [(10,)] == covered.fetchall()
            spans = conn.execute('SELECT "min_id", "max_id", "host" FROM "janus_spans" ORDER BY 1').fetchall()
            assert {"h1", "h2"} == {host for _, _, host in spans}
        finally:
            conn.close()
        rows = records(target)
        assert 10 == len(rows) == len({r.id for r in rows})
        assert {"h1", "h2"} == {r.host for r in rows}
        with ju.LogStore(target) as store:
            assert 5 == store.count("record", host="h2")
            assert 10 == store.count()

    def test_an_archive_imports_into_a_database_of_the_previous_version(self, tmp_path: Path) -> None:
        """import_archive brings the database to this version first: its rows need the new columns."""
        source = tmp_path / "src.db"
        ju.configure(source, console=False, host="h1")
        for n in range(5):
            ju.get_logger("x").info("record %d", n, user_id="u1")
        ju.shutdown()
        archive = tmp_path / "archive"
        assert 5 == prune_path(source, max_rows=0, archive_dir=archive).rows
        (name,) = [p for p in archive.glob("*.ndjson.gz")]
        conn = apsw.Connection(str(tmp_path / "old.db"))
        try:
            with conn:
                before_migration(conn, _schema._SPAN_HOSTS)
            assert 5 == import_archive(conn, name)
            assert [(_schema.SCHEMA_VERSION,)] == conn.execute("PRAGMA user_version").fetchall()
        finally:
            conn.close()
        with ju.LogStore(tmp_path / "old.db") as store:
            assert 5 == store.count("record", host="h1", user_id="u1")


class TestHostSpans:
    """No index holds the hosts: each span keeps its rows' one host, and a host filter reads
    only the spans that may hold it, and the rows past them (see _schema, _SPAN_HOSTS)."""

    @staticmethod
    def _database(path: Path) -> None:
        db = open_database(str(path))
        span_ids, _rollup.SPAN_IDS = _rollup.SPAN_IDS, 50  # many spans
        # Batches as the flusher commits them: long runs of the local host, a run of
        # another, batches of mixed hosts, rows without one.
        plan = ["h1"] * 6 + ["h2"] * 2 + ["h1"] * 3 + ["mixed", "h1", None, "h1", "mixed", "h1"]
        try:
            n = 0
            for batch, host in enumerate(plan):
                rows = []
                for k in range(30):
                    row_host = ("h1", "h3", None)[k % 3] if host == "mixed" else host
                    rows.append(make_row(f"word{k % 4} batch{batch}", ts=1_700_000_000 * 10**9 + n, host=row_host))
                    n += 1
                with db:
                    last = db.execute('SELECT coalesce(max("id"), 0) FROM "logs"').fetchall()[0][0]
                    db.executemany(INSERT_SQL, rows)
                    db.execute(FILL_FTS_SQL, (last,))
                    _rollup.advance_batch(db, rows, last + 1, last + len(rows))
            with db:  # another program's rows past the mark: no span says where they are
                last = db.execute('SELECT max("id") FROM "logs"').fetchall()[0][0]
                db.executemany(INSERT_SQL, [make_row("word1 late", host=h) for h in ("h4", "h2", "h1")])
                db.execute(FILL_FTS_SQL, (last,))
            with db:  # an edit moves a row of h1's spans to h5
                db.execute("""UPDATE "logs" SET "host" = 'h5' WHERE "id" = 10""")
        finally:
            _rollup.SPAN_IDS = span_ids
            db.close()

    @pytest.mark.parametrize("max_ranges", [32, 1])
    def test_host_filters_find_what_a_scan_finds(self, tmp_path: Path, max_ranges: int) -> None:
        """Searches, counts and scopes by host give exactly the rows whose host it is, however
        the spans lie, and a host absent from the spans reads only the newest rows."""
        path = tmp_path / "logs.db"
        self._database(path)
        db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        saved, _rollup.MAX_HOST_RANGES = _rollup.MAX_HOST_RANGES, max_ranges
        try:
            hosts = dict(db.execute('SELECT "host", count(*) FROM "logs" GROUP BY 1').fetchall())
            assert {"h1", "h2", "h3", "h4", "h5", None} == set(hosts)
            with ju.LogStore(path) as store:
                narrowed = 0
                for host in ("h1", "h2", "h3", "h4", "h5", "absent", ""):
                    expected = [
                        r[0] for r in db.execute(
                            'SELECT "id" FROM "logs" WHERE "host" = ? ORDER BY "ts" DESC, "id" DESC', (host,)
                        )
                    ]
                    assert expected == [r.id for r in store.search(host=host, limit=None)], host
                    assert expected[:7] == [r.id for r in store.search(host=host, limit=7)], host
                    assert len(expected) == store.count(host=host)
                    words = [
                        r[0] for r in db.execute(
                            'SELECT "id" FROM "logs" WHERE "host" = ? AND "id" IN '
                            """(SELECT rowid FROM "logs_fts" WHERE "logs_fts" MATCH 'word1') ORDER BY "id" DESC""",
                            (host,),
                        )
                    ]
                    assert words == [r.id for r in store.search("word1", host=host, limit=None)], host
                    with ju.LogStore(path, scope={"host": host}) as scoped:
                        assert expected == [r.id for r in scoped.search(limit=None)], host
                    narrowed += "BETWEEN" in store._host_match(host)[0]
                assert narrowed  # some hosts were looked for in a part of the spans only
                # "absent" is looked for only in the spans of several or unknown hosts and past them.
                condition, params = store._host_match("absent")
                where = condition.replace('"logs"."host" = ? AND ', "")
                looked_at = db.execute(f'SELECT count(*) FROM "logs" WHERE {where}', params[1:]).fetchall()[0][0]
                assert 0 < looked_at < sum(hosts.values()) // (2 if max_ranges > 1 else 1)
        finally:
            _rollup.MAX_HOST_RANGES = saved
            db.close()

    def test_an_edit_clears_only_the_span_it_lands_in(self, tmp_path: Path) -> None:
        """A row moved past the mark, or given its own span's host, leaves every span its host;
        a row given another host clears the one span holding it; filters still match a scan."""
        path = tmp_path / "logs.db"
        self._database(path)
        db = apsw.Connection(str(path))
        try:
            spans = 'SELECT "min_id", "host" FROM "janus_spans" ORDER BY "min_id"'
            before = db.execute(spans).fetchall()
            h1 = [low for low, host in before if host == "h1"]
            inside = db.execute('SELECT "max_id" FROM "janus_spans" WHERE "min_id" = ?', (h1[1],)).fetchall()[0][0]
            with db:
                top = db.execute('SELECT max("id") FROM "logs"').fetchall()[0][0]
                db.execute('UPDATE "logs" SET "id" = ? WHERE "id" = ?', (top + 1000, h1[0]))  # past the mark
                db.execute("""UPDATE "logs" SET "host" = 'h1' WHERE "id" = ?""", (h1[1],))  # the same host
            assert before == db.execute(spans).fetchall()
            with db:
                db.execute("""UPDATE "logs" SET "host" = 'h2' WHERE "id" = ?""", (inside,))
            after = dict(db.execute(spans).fetchall())
            assert {low: host for low, host in before if low != h1[1]} == {
                low: host for low, host in after.items() if low != h1[1]
            }
            assert after[h1[1]] is None
            with ju.LogStore(path) as store:
                for host in ("h1", "h2", "h3"):
                    expected = [r[0] for r in db.execute('SELECT "id" FROM "logs" WHERE "host" = ?', (host,))]
                    assert sorted(expected) == sorted(r.id for r in store.search(host=host, limit=None)), host
        finally:
            db.close()

    def test_the_flusher_keeps_one_span_for_one_host(self, tmp_path: Path) -> None:
        """Records of one host make spans that name it; a host filter on it is no narrower than none."""
        db = tmp_path / "s.db"
        ju.configure(db, console=False, host="web-1")
        try:
            for n in range(50):
                ju.get_logger("a").info("record %d", n)
            ju.flush()
        finally:
            ju.shutdown()
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            assert {("web-1",)} == set(conn.execute('SELECT "host" FROM "janus_spans"').fetchall())
        finally:
            conn.close()
        with ju.LogStore(db) as store:
            assert ('"logs"."host" = ?', ["web-1"]) == store._host_match("web-1")
            assert 50 == store.count(host="web-1")
            assert 0 == store.count(host="web-2")

    def test_a_version_9_database_gets_span_hosts(self, tmp_path: Path) -> None:
        """The migration fills each span's host from its rows (NULL for several) and drops the index."""
        path = tmp_path / "old.db"
        db = apsw.Connection(str(path))
        try:
            with db:
                before_migration(db, _schema._SPAN_HOSTS)
                insert = 'INSERT INTO "logs"("id", "ts", "level", "logger", "message", "host") VALUES (?, 1, 20, \'a\', \'m\', ?)'
                db.executemany(insert, [(1, "a"), (2, "a"), (3, None), (20000, "a"), (20001, "b")])
                db.execute("""UPDATE "janus_rollup_state" SET "value" = 20001 WHERE "key" = 'covered_upto'""")
                db.execute("""INSERT INTO "janus_spans" VALUES (1, 3, 1, 1), (20000, 20001, 1, 1)""")
            _schema.ensure_schema(db)
            assert [(1, "a"), (20000, None)] == db.execute('SELECT "min_id", "host" FROM "janus_spans"').fetchall()
            assert not db.execute("""SELECT 1 FROM sqlite_schema WHERE name = 'logs_host_ts'""").fetchall()
        finally:
            db.close()


def test_a_version_9_database_is_filtered_by_host_through_its_index(tmp_path: Path) -> None:
    """A database not yet migrated has no span hosts: a host filter reads the host index as before."""
    path = tmp_path / "old.db"
    db = apsw.Connection(str(path))
    try:
        with db:
            before_migration(db, _schema._SPAN_HOSTS)
            db.executemany(INSERT_SQL, [make_row(f"m{n}", host=("a", "b")[n % 2]) for n in range(20)])
            db.execute(FILL_FTS_SQL, (0,))
            db.execute("""UPDATE "janus_rollup_state" SET "value" = 20 WHERE "key" = 'covered_upto'""")
            db.execute("""INSERT INTO "janus_spans" VALUES (1, 20, 1, 1)""")
    finally:
        db.close()
    with ju.LogStore(path) as store:
        assert ('"logs"."host" = ?', ["b"]) == store._host_match("b")
        assert 10 == len(store.search(host="b", limit=None)) == store.count(host="b")
        assert 0 == store.count(host="c")
