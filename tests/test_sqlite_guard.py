"""Python's sqlite3 on the log database in the logging process: refused before it can corrupt it,
and LogStore (apsw, the flusher's own SQLite) as the supported way to read it there."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

import janus_utils as ju
from janus_utils.error_handling import ConfigError, JanusError, SearchQueryError, SQLiteConflictError


@pytest.fixture
def janus(tmp_path: Path) -> Iterator[Path]:
    db = tmp_path / "app.db"
    ju.configure(db, console=False)
    ju.get_logger("g").info("first", user_id="7")
    assert ju.flush(timeout=30)
    yield db
    ju.shutdown()


class TestRefused:
    def test_every_spelling_of_the_database_is_refused(self, janus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Path, relative path, URI (read-only too), symlink, hard link, -wal and -shm."""
        (tmp_path / "link.db").symlink_to(janus)
        os.link(janus, tmp_path / "hard.db")
        monkeypatch.chdir(tmp_path)
        spellings = [
            (str(janus), False),
            (janus, False),
            ("app.db", False),
            (f"file:{janus}?mode=ro", True),
            (f"file://localhost{janus}?mode=ro&cache=private", True),
            ("file:%61pp.db", True),
            (str(tmp_path / "link.db"), False),
            (str(tmp_path / "hard.db"), False),
            (f"{janus}-wal", False),
            (f"{janus}-shm", False),
        ]
        for name, uri in spellings:
            with pytest.raises(SQLiteConflictError) as info:
                sqlite3.connect(name, uri=uri)
            assert isinstance(info.value, ConfigError) and isinstance(info.value, JanusError)
        assert "janus_utils.LogStore" in str(info.value)
        assert "two SQLite libraries" in str(info.value)

    def test_other_databases_are_untouched(self, janus: Path, tmp_path: Path) -> None:
        """Only the configured database is guarded."""
        for name in (":memory:", "", str(tmp_path / "other.db"), "file:mem1?mode=memory"):
            sqlite3.connect(name, uri=name.startswith("file:")).close()

    def test_the_guard_outlives_shutdown(self, tmp_path: Path) -> None:
        """Once a process has written a database, its ring may still carry records for it."""
        db = tmp_path / "app.db"
        ju.configure(db, console=False)
        ju.shutdown()
        with pytest.raises(SQLiteConflictError):
            sqlite3.connect(db)


READERS_WHILE_LOGGING = textwrap.dedent(
    """
    import json, sqlite3, sys, threading
    import janus_utils as ju

    db, count = sys.argv[1], int(sys.argv[2])
    ju.configure(db, console=False, block_timeout=None)
    stop = threading.Event()
    tally = {"attempts": 0, "refused": 0, "opened": 0, "other": []}

    def reader():
        while not stop.is_set():
            tally["attempts"] += 1
            try:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            except ju.JanusError:
                tally["refused"] += 1
                continue
            except Exception as err:
                tally["other"].append(repr(err))
                continue
            tally["opened"] += 1
            try:
                conn.execute("SELECT count(*) FROM logs").fetchall()
            except Exception:
                pass
            conn.close()

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    log = ju.get_logger("app")
    for i in range(count):
        log.info("tok-%d", i)
    ok = ju.flush()
    stop.set()
    for t in threads:
        t.join()
    stats = ju.stats()
    ju.shutdown()
    print(json.dumps({"flushed": ok, "last_error": stats["last_error"], **tally}))
    """
)


@pytest.mark.slow
class TestTheReproduction:
    def test_stdlib_readers_in_the_logging_process_get_the_error_and_nothing_is_corrupted(
        self, tmp_path: Path
    ) -> None:
        """Two threads connecting with sqlite3 in a loop while 100,000 records are logged."""
        db = tmp_path / "app.db"
        count = 100_000
        out = subprocess.run(
            [sys.executable, "-c", READERS_WHILE_LOGGING, str(db), str(count)],
            capture_output=True, text=True, timeout=600, check=True,
        )
        tally = json.loads(out.stdout)
        assert tally["flushed"] is True
        assert 0 == tally["opened"] and [] == tally["other"]
        assert tally["attempts"] == tally["refused"] > 0
        assert tally["last_error"] is None
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            assert "ok" == conn.execute("PRAGMA integrity_check").fetchall()[0][0]
            got = conn.execute("SELECT message FROM logs").fetchall()
        finally:
            conn.close()
        numbers = sorted(int(m.split("-")[1]) for (m,) in got)
        assert list(range(count)) == numbers  # 0 lost, 0 duplicated


class TestLogStoreSql:
    def test_raw_sql_reads_rows_as_dicts_in_the_logging_process(self, janus: Path) -> None:
        with ju.LogStore(janus) as store:
            rows = store.sql('SELECT "level", "message", "user_id" FROM "logs" WHERE "user_id" = ?', ("7",))
            named = store.sql('SELECT count(*) AS n FROM "logs" WHERE "level" >= :lv', {"lv": 20})
        assert [{"level": 20, "message": "first", "user_id": "7"}] == rows
        assert [{"n": 1}] == named

    def test_writes_are_refused(self, janus: Path) -> None:
        with ju.LogStore(janus) as store:
            with pytest.raises(SearchQueryError, match="only reads"):
                store.sql('DELETE FROM "logs"')
            assert 1 == store.sql('SELECT count(*) AS n FROM "logs"')[0]["n"]

    def test_bad_sql_is_a_clear_error(self, janus: Path) -> None:
        with ju.LogStore(janus) as store:
            with pytest.raises(SearchQueryError, match="invalid SQL"):
                store.sql("SELEC nothing")
            with pytest.raises(SearchQueryError, match="invalid SQL"):
                store.sql('SELECT * FROM "logs" WHERE id = ?', ())
