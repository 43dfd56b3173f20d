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
from janus_utils import _schema
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
        assert {"logs_service_ts", "logs_host_ts"} <= indexes


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
        finally:
            conn.close()
        rows = records(target)
        assert 10 == len(rows) == len({r.id for r in rows})
        assert {"h1", "h2"} == {r.host for r in rows}
        with ju.LogStore(target) as store:
            assert 5 == store.count("record", host="h2")
