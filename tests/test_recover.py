"""janus-logs recover: records a SIGKILLed application left in the ring are committed once, with no application running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import apsw
import pytest

from conftest import run_cli

RECORDS = 3000

APP = textwrap.dedent(
    """
    import sys, time
    import janus_utils as ju
    db, count = sys.argv[1], int(sys.argv[2])
    # Commits only when the ring is a quarter full or an hour passed: the records stay in the ring.
    ju.configure(db, console=False, commit_interval=3600)
    log = ju.get_logger("crash")
    for i in range(count):
        log.info("token tok%06d", i)
    print("ready", flush=True)
    time.sleep(600)
    """
)


def _killed_app(db: Path, count: int) -> None:
    """Run an application that logs *count* records, and SIGKILL it once they are all logged."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-c", APP, str(db), str(count)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        assert "ready" == process.stdout.readline().strip()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)


def _tokens(db: Path) -> tuple[int, int]:
    """(rows holding a token, distinct tokens) in the database."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(
            "SELECT count(*), count(DISTINCT message) FROM logs WHERE message LIKE 'token tok%'"
        ).fetchall()[0]
    finally:
        conn.close()


class TestRecover:
    def test_killed_application_records_are_committed_exactly_once(self, tmp_path: Path) -> None:
        """After SIGKILL the records wait; search says how many; recover commits each once; a second recover nothing."""
        db = tmp_path / "app.db"
        _killed_app(db, RECORDS)
        assert (0, 0) == _tokens(db)

        search = run_cli(["search", "tok000001", "--db", str(db)], tmp_path)
        assert 1 == search.returncode
        assert f"{RECORDS:,} records wait in" in search.stderr.decode() and b"recover" in search.stderr

        first = run_cli(["recover", "--db", str(db), "--json"], tmp_path)
        assert (0, RECORDS) == (first.returncode, json.loads(first.stdout)["committed"])
        assert (RECORDS, RECORDS) == _tokens(db)

        second = run_cli(["recover", "--db", str(db)], tmp_path)
        assert (1, (RECORDS, RECORDS)) == (second.returncode, _tokens(db))
        again = run_cli(["search", "tok000001", "--db", str(db)], tmp_path)
        assert (0, b"") == (again.returncode, again.stderr)

    def test_an_application_started_later_does_not_repeat_them(self, tmp_path: Path) -> None:
        """recover, then an application configuring the database: still once each."""
        db = tmp_path / "app.db"
        _killed_app(db, RECORDS)
        assert 0 == run_cli(["recover", "--db", str(db)], tmp_path).returncode
        code = f"import janus_utils as ju; ju.configure({str(db)!r}, console=False); ju.shutdown()"
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert (RECORDS, RECORDS) == _tokens(db)

    def test_running_application_is_left_to_commit(self, tmp_path: Path) -> None:
        """While an application is the flusher, recover does nothing and says why."""
        db = tmp_path / "app.db"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        process = subprocess.Popen([sys.executable, "-c", APP, str(db), "10"], stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert process.stdout is not None and "ready" == process.stdout.readline().strip()
            result = run_cli(["recover", "--db", str(db)], tmp_path)
            assert 1 == result.returncode and b"a running process is the flusher" in result.stdout
            assert (0, 0) == _tokens(db)
        finally:
            process.kill()
            process.wait(30)

    def test_missing_database_and_ring(self, tmp_path: Path) -> None:
        result = run_cli(["recover", "--db", str(tmp_path / "none.db")], tmp_path)
        assert 2 == result.returncode and b"no log database" in result.stderr
