"""One flusher per database, whatever happens to the election: deleted lock files, stopped
flushers, producers that died mid-push.  Real processes, real signals, unique tokens counted."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest

import janus_utils as ju
from janus_utils import logger as jlog
from logging_worker import Worker, assert_exactly_once, stop

pytestmark = pytest.mark.slow


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"



def integrity(db: Path) -> str:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchall()[0][0])
    finally:
        conn.close()


class TestTakeoverSetting:
    @pytest.mark.parametrize("bad", [0, -1, float("inf"), "5", None])
    def test_takeover_after_must_be_positive_seconds(self, db_path: Path, bad: object) -> None:
        from janus_utils.error_handling.utils.errors import ConfigError

        with pytest.raises(ConfigError, match="takeover_after"):
            ju.configure(db_path, console=False, takeover_after=bad)
        assert not ju.is_configured()


@pytest.mark.usefixtures("flusher_mode")
class TestLockFileDeleted:
    def test_deleting_the_lock_file_25_times_stores_every_record_once(self, db_path: Path) -> None:
        """Every deletion lets another process lock a new file; commits stay exactly once."""
        lock = Path(str(db_path) + "-flusher.lock")
        workers = [Worker(db_path, block_timeout=None) for _ in range(4)]
        try:
            for n, w in enumerate(workers):
                w.log(f"p{n}", 0, 5000, 0.05)
            deleted = 0
            give_up = time.monotonic() + 120  # a flusher re-creates the file within ~1 s
            while deleted < 25 and time.monotonic() < give_up:
                time.sleep(0.1)
                try:
                    lock.unlink()
                except FileNotFoundError:
                    continue  # not re-created yet: no new election since the last one
                deleted += 1
            assert 25 == deleted, "the lock file was not re-created after a deletion"
            for w in workers:
                w.expect("logged")
            for w in workers:
                w.flush()
            for w in workers:
                w.exit()
        finally:
            for w in workers:
                w.kill()
        for n in range(4):
            assert_exactly_once(db_path, f"p{n}", 5000)
        assert "ok" == integrity(db_path)
        reports = "\n".join(w.stderr for w in workers)
        assert "stepped down" in reports  # there was a second flusher, and it yielded
        assert "are lost" not in reports
        assert "remove it" not in reports


class TestStoppedFlusher:
    def test_a_stopped_flusher_is_replaced_and_flush_returns(self, db_path: Path) -> None:
        """SIGSTOP the flusher: another process takes over although the lock is held."""
        a = Worker(db_path, takeover_after=1.0)  # configured first: the flusher
        b = Worker(db_path, takeover_after=1.0)
        try:
            a.log("a", 0, 1000)
            a.expect("logged")
            assert a.flush()["leader"]
            # Between its transactions: stopped inside one (a commit, an idle
            # turn's FTS merge or WAL cut) it would keep SQLite's write lock,
            # and b could not commit until it continues (TestStoppedInsideACommit).
            stop(a.pid, db_path, writing=False)
            try:
                b.log("b", 0, 5000)
                b.expect("logged")
                stats = b.flush()  # no timeout: returns because b took over
                assert stats["leader"]
            finally:
                os.kill(a.pid, signal.SIGCONT)
            a.log("a", 1000, 1000)
            a.expect("logged")
            a.flush()
            b.exit()
            a.exit()
        finally:
            a.kill()
            b.kill()
        assert_exactly_once(db_path, "a", 2000)
        assert_exactly_once(db_path, "b", 5000)
        assert "took over" in b.stderr
        assert "stepped down" in a.stderr

    def test_a_flusher_stopped_mid_stream_commits_nothing_twice(self, db_path: Path) -> None:
        """Stopped at any point (mid-batch, mid-commit) and resumed after a takeover: fenced."""
        workers = [Worker(db_path, takeover_after=0.5, block_timeout=None) for _ in range(3)]
        rng = random.Random(18)
        try:
            for n, w in enumerate(workers):
                w.log(f"p{n}", 0, 20000, 0.02)
            for _ in range(3):
                time.sleep(rng.uniform(0.1, 0.5))
                # whoever leads now: the first one, then whoever took over
                victim = next((w for w in workers if _is_leader(db_path, w.pid)), workers[0])
                os.kill(victim.pid, signal.SIGSTOP)
                time.sleep(1.5)  # longer than takeover_after
                os.kill(victim.pid, signal.SIGCONT)
            for w in workers:
                w.expect("logged")
            for w in workers:
                w.flush()
            for w in workers:
                w.exit()
        finally:
            for w in workers:
                w.kill()
        for n in range(3):
            assert_exactly_once(db_path, f"p{n}", 20000)
        assert "ok" == integrity(db_path)
        assert "took over" in "\n".join(w.stderr for w in workers)


def _is_leader(db: Path, pid: int) -> bool:
    """Whether process *pid* holds the flusher lock (from /proc/locks)."""
    try:
        inode = os.stat(str(db) + "-flusher.lock").st_ino
    except FileNotFoundError:
        return False
    with open("/proc/locks") as f:
        for line in f:
            parts = line.split()
            if "FLOCK" in parts and parts[4] == str(pid) and parts[5].endswith(f":{inode}"):
                return True
    return False


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.usefixtures("flusher_mode")
class TestDeadProducers:
    def test_a_zombie_producer_that_died_mid_push_does_not_stall_the_flusher(self, db_path: Path) -> None:
        """A child that reserved a record and exited, never reaped: the flusher skips its record."""
        ju.configure(db_path, console=False)
        try:
            log = ju.get_logger("z")
            for i in range(100):
                log.info("z-%d", i)
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                flusher = jlog._flusher
                assert flusher is not None
                flusher.ring._debug_reserve_only(64)
                os._exit(0)
            try:
                while _state(pid) != "Z":  # exited, not reaped
                    time.sleep(0.01)
                for i in range(100, 200):
                    log.info("z-%d", i)
                assert ju.flush(timeout=60)  # a deadline for liveness only
                torn = ju.stats()["torn"]
            finally:
                os.waitpid(pid, 0)
        finally:
            ju.shutdown()
        assert_exactly_once(db_path, "z", 200)
        assert 1 == torn


HOLD_THE_WRITE_LOCK = """
import sys, time, apsw
db = apsw.Connection(sys.argv[1])
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def another_process_holding_the_write_lock(db_path: Path) -> Iterator[subprocess.Popen[str]]:
    """janus configured on *db_path*, one record committed, then a process that holds
    SQLite's write lock on it until it is killed; janus is shut down after."""
    ju.configure(db_path, console=False)
    holder = None
    try:
        ju.get_logger("w").info("w-0")
        assert ju.flush(timeout=30)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_THE_WRITE_LOCK, str(db_path)], stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout is not None
        assert "locked\n" == holder.stdout.readline()
        yield holder
    finally:
        if holder is not None and holder.poll() is None:
            os.kill(holder.pid, signal.SIGCONT)
            holder.kill()
            holder.wait()
        ju.shutdown()


def reports_until(found: Callable[[str], bool]) -> list[str]:
    """stats()'s recent error reports, once one satisfies *found* (or 120 s passed:
    the busy wait is 5 s per try)."""
    give_up = time.monotonic() + 120
    while True:
        reports = [m for _, m in ju.stats()["recent_errors"]]
        if any(map(found, reports)) or time.monotonic() >= give_up:
            return reports
        time.sleep(0.1)


class TestStoppedInsideACommit:
    def test_a_stopped_process_holding_the_write_lock_is_named(self, db_path: Path) -> None:
        """No takeover can write past SQLite's lock: the report says which stopped process has it."""
        with another_process_holding_the_write_lock(db_path) as holder:
            os.kill(holder.pid, signal.SIGSTOP)
            ju.get_logger("w").info("w-1")
            reports = reports_until(lambda m: "is stopped" in m)
            assert any(f"process {holder.pid} holds its write lock and is stopped" in m for m in reports)
            os.kill(holder.pid, signal.SIGCONT)
            holder.kill()
            holder.wait()
            assert ju.flush(timeout=60)
        assert_exactly_once(db_path, "w", 2)

    def test_a_running_process_holding_the_write_lock_is_named(self, db_path: Path) -> None:
        """A write transaction that does not end (a hung process, a long one of another program):
        the report names the process that holds the lock, not only "database is locked"."""
        with another_process_holding_the_write_lock(db_path) as holder:
            ju.get_logger("w").info("w-1")
            named = f"process {holder.pid} ("
            reports = reports_until(lambda m: named in m)
            report = next((m for m in reports if named in m), reports)
            assert "holds its write lock: nothing can be written" in report, report
            assert "is stopped" not in report
            holder.kill()
            holder.wait()
            assert ju.flush(timeout=60)
        assert_exactly_once(db_path, "w", 2)
