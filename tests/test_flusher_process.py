"""configure(flusher="process"): a flusher process commits; it is replaced when killed or
stopped, commits leftovers, runs retention and shipping, and never outlives its users."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

import janus_utils as ju
from janus_utils import logger as jlog
from janus_utils._flusher_process import flusher_pid
from janus_utils.error_handling.utils.errors import ConfigError
from logging_worker import Holder, Worker, assert_exactly_once, stop, stored

pytestmark = pytest.mark.slow


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"



def alive(pid: int) -> bool:
    """Whether *pid* is a process that has not exited (a zombie counts as alive: nobody reaped it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            f.read()
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between it and the read
        return False
    return True


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll *predicate*; the deadline guards against a hang, it is not a speed claim."""
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, what
        time.sleep(0.02)


def flusher_processes(db: Path) -> set[int]:
    """The flusher processes (leader or standby) that map *db*'s ring."""
    ring = str(db) + "-ring"
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"janus_utils._flusher_process import" not in f.read():
                    continue
            with open(f"/proc/{entry}/maps") as f:
                if ring in f.read():
                    found.add(int(entry))
        except OSError:
            continue
    return found


def new_flusher(db: Path, old: int | None, timeout: float = 60) -> int:
    """The pid of the flusher process once it is not *old*."""
    found: list[int] = []

    def there() -> bool:
        pid = flusher_pid(str(db))
        if pid is not None and pid != old:
            found.append(pid)
            return True
        return False

    wait_until(there, timeout, "no new flusher process took the lock")
    return found[0]


class TestConfig:
    def test_an_unknown_flusher_kind_is_refused(self, db_path: Path) -> None:
        """flusher= takes 'thread' or 'process' and says so."""
        with pytest.raises(ConfigError, match="flusher must be 'thread' or 'process'"):
            ju.configure(db_path, flusher="fibre")
        assert not ju.is_configured()

    def test_a_ship_sink_that_cannot_reach_the_flusher_process_is_refused(self, db_path: Path) -> None:
        """An exporter that cannot be handed to another process is refused clearly, before anything starts."""
        from janus_utils.ship import Exporter

        class Local(Exporter):
            name = "local"
            batch_size = 10

        sink = Local()
        sink.callback = lambda rows: None  # type: ignore[attr-defined]
        with pytest.raises(ConfigError, match="flusher='process'.*flusher='thread'"):
            ju.configure(db_path, flusher="process", console=False, ship=[sink])
        assert not ju.is_configured()
        assert flusher_pid(str(db_path)) is None

    def test_the_environment_chooses_the_default(self, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """$JANUS_LOG_FLUSHER=process makes a plain configure() use a flusher process."""
        monkeypatch.setenv("JANUS_LOG_FLUSHER", "process")
        ju.configure(db_path, console=False)
        try:
            s = ju.stats()
            assert ("process", False) == (s["flusher"], s["leader"])
            assert s["flusher_pid"] not in (None, os.getpid())
        finally:
            ju.shutdown()


class TestStats:
    def test_stats_show_the_flusher_process_retries_errors_and_commits(self, db_path: Path) -> None:
        """A database another program holds: the flusher process's retries and error reach stats()."""
        ju.configure(db_path, flusher="process", console=False)
        try:
            holder = Holder(db_path)
            try:
                for i in range(1000):
                    ju.get_logger("held").info("held-%d", i)

                def blocked() -> bool:
                    s = ju.stats()
                    return s["retries"] >= 1 and s["last_error"] is not None
                wait_until(blocked, 60, "the flusher process's retries never reached stats()")
                during = ju.stats()
            finally:
                holder.release()
            assert ju.flush(timeout=60)
            wait_until(lambda: ju.stats()["committed"] >= 1000, 10, "the flusher process's commits never reached stats()")
            after = ju.stats()
        finally:
            ju.shutdown()
        assert "locked" in during["last_error"] or "busy" in during["last_error"], during["last_error"]
        assert during["errors"] >= 1 and during["recent_errors"]
        assert during["flusher_pid"] != os.getpid()
        # The commit that followed cleared the problem; the history stays.
        assert after["last_error"] is None and after["errors"] >= during["errors"]
        assert after["retries"] >= during["retries"] and after["batches"] >= 1
        assert max(stored(db_path, "held").values()) == 1 and len(stored(db_path, "held")) == 1000

    def test_stats_follow_the_flusher_process_that_took_over_from_a_stopped_one(
        self, db_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """SIGSTOP the flusher process: stats() shows the one that took over (its pid, retries,
        error and commits) beside the stopped lock holder; resumed, the stopped one steps down
        and stats() names whichever commits."""
        ju.configure(db_path, flusher="process", console=False, takeover_after=1.0)
        log = ju.get_logger("t")
        try:
            log.info("t-0")
            assert ju.flush(timeout=60)
            old = flusher_pid(str(db_path))
            assert old is not None and (old, old) == (ju.stats()["flusher_pid"], ju.stats()["flusher_lock_pid"])
            # Between its transactions: stopped inside one it would keep SQLite's
            # write lock, and the one that takes over could not commit.
            stop(old, db_path, writing=False)
            try:
                log.info("t-1")
                assert ju.flush(timeout=60)  # committed by the flusher process that took over
                wait_until(lambda: ju.stats()["flusher_pid"] not in (old, None), 60, "stats() never named the new flusher")
                new = ju.stats()["flusher_pid"]
                holder = Holder(db_path)
                try:
                    for i in range(2, 1002):
                        log.info("t-%d", i)

                    def blocked() -> bool:
                        s = ju.stats()
                        return s["flusher_pid"] == new and s["retries"] >= 1 and "cannot write to" in (s["last_error"] or "")

                    wait_until(blocked, 60, "the new flusher's retries never reached stats()")
                    during = ju.stats()
                finally:
                    holder.release()
                assert ju.flush(timeout=60)
                wait_until(
                    lambda: ju.stats()["committed"] >= during["committed"] + 1000, 60, "the new flusher's commits never reached stats()"
                )
                after = ju.stats()
            finally:
                os.kill(old, signal.SIGCONT)

            # Resumed, the stopped one finds its place taken and steps down; whichever
            # holds the lock file then commits, and stats() names it.
            def settled() -> bool:
                s = ju.stats()
                return s["flusher_pid"] is not None and s["flusher_pid"] == s["flusher_lock_pid"]

            wait_until(settled, 60, "stats() never named the lock holder again")
            for i in range(1002, 1102):
                log.info("t-%d", i)
            assert ju.flush(timeout=60)
            wait_until(settled, 60, "stats() never named the lock holder again")
            resumed = ju.stats()
        finally:
            ju.shutdown()
        err = capfd.readouterr().err
        assert_exactly_once(db_path, "t", 1102)
        assert (new, old) == (during["flusher_pid"], during["flusher_lock_pid"]) and new not in (old, os.getpid())
        assert "locked" in during["last_error"] or "busy" in during["last_error"], during["last_error"]
        assert during["errors"] >= 1 and any("cannot write to" in m for _, m in during["recent_errors"])
        assert (new, old, None) == (after["flusher_pid"], after["flusher_lock_pid"], after["last_error"])
        assert after["retries"] >= during["retries"] and after["batches"] > during["batches"]
        assert resumed["flusher_pid"] in (old, new) and alive(resumed["flusher_pid"])
        assert "took over" in err and "stepped down" in err
        # The first error after the takeover is said at once, not held back by the
        # report rate limit that the takeover's own line had started.
        assert "cannot write to" in err

    def test_a_status_file_left_by_an_exited_flusher_process_is_not_read(self, db_path: Path) -> None:
        ju.configure(db_path, flusher="process", console=False)
        try:
            ju.get_logger("s").info("one")
            assert ju.flush(timeout=60)
            status = Path(str(db_path) + "-flusher.status")
            wait_until(status.exists, 10, "the flusher process wrote no status")
            assert oct(status.stat().st_mode & 0o777) == oct(0o600)
            data = json.loads(status.read_text())
            assert data["pid"] == ju.stats()["flusher_pid"] and data["committed"] >= 1
            status.write_text(json.dumps({**data, "pid": 1, "committed": 10**9}))
            assert ju.stats()["committed"] != 10**9  # not this flusher process's
            # Written by the lock holder's pid, but not as the ring's leader: a
            # flusher that has stepped down since.
            status.write_text(json.dumps({**data, "token": data["token"] ^ 2, "committed": 10**9}))
            assert ju.stats()["committed"] != 10**9
        finally:
            ju.shutdown()


class TestStatsAfterFlush:
    """What a flush() that returned True waited for is in the stats() that follows it."""

    def test_stats_count_what_flush_waited_for(self, db_path: Path) -> None:
        """Each flush() wakes the flusher process (commit_interval 120 s): stats() right after counts the records."""
        ju.configure(db_path, flusher="process", console=False, commit_interval=120)
        try:
            assert ju.flush(timeout=60)
            before = ju.stats()["committed"]
            for n in range(1, 11):
                for i in range(5):
                    ju.get_logger("s").info("record %d", i)
                assert ju.flush(timeout=60)
                assert before + 5 * n == ju.stats()["committed"]
        finally:
            ju.shutdown()

    def test_stats_count_what_was_committed_before_flush_was_called(self, db_path: Path) -> None:
        """flush() finds the records committed already (it wakes nobody): stats() still counts them."""
        ju.configure(db_path, flusher="process", console=False, commit_interval=0.01)
        try:
            assert ju.flush(timeout=60)
            before = ju.stats()["committed"]
            ring = jlog._flusher.ring
            for n in range(1, 11):
                for i in range(5):
                    ju.get_logger("s").info("record %d", i)
                assert ring.wait_tail(ring.stats().head, 60)
                assert ju.flush(timeout=60)
                assert before + 5 * n == ju.stats()["committed"]
        finally:
            ju.shutdown()


class TestFlushWakesTheFlusher:
    """flush() makes the flusher commit now, in whichever process it runs, not when its interval ends."""

    def test_flush_wakes_the_flusher_process(self, db_path: Path) -> None:
        ju.configure(db_path, flusher="process", console=False, commit_interval=120)
        try:
            ju.get_logger("w").info("first")
            # Within 60 s only if flush() woke the flusher process: its next
            # commit is otherwise due two minutes from its last.
            assert ju.flush(timeout=60)
            ju.get_logger("w").info("second")
            assert ju.flush(timeout=60)
        finally:
            ju.shutdown()
        assert ["first", "second"] == [r[0] for r in _messages(db_path)]

    def test_flush_in_another_process_wakes_this_ones_flusher_thread(self, db_path: Path) -> None:
        ju.configure(db_path, console=False, commit_interval=120)
        try:
            ju.get_logger("here").info("leader")
            assert ju.flush(timeout=60) and ju.stats()["leader"]
            worker = Worker(db_path, commit_interval=120)
            try:
                worker.log("there", 0, 10)
                worker.expect("logged")
                worker.send("flush 60")
                _, ok, _ = worker.expect("flushed").split(" ", 2)
            finally:
                worker.kill()
        finally:
            ju.shutdown()
        assert json.loads(ok) is True
        assert_exactly_once(db_path, "there", 10)


def _messages(db: Path) -> list[tuple[Any, ...]]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("SELECT message FROM logs ORDER BY id").fetchall()
    finally:
        conn.close()


class TestNoSQLiteHere:
    def test_a_configured_process_never_opens_the_database(self, db_path: Path) -> None:
        """Records are committed, and this process has no descriptor on the database or its WAL."""
        ju.configure(db_path, flusher="process", console=False)
        try:
            log = ju.get_logger("here")
            for i in range(3000):
                log.info("here-%d", i, n=i)
            assert ju.flush(timeout=60)
            opened = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
            stats = ju.stats()
        finally:
            ju.shutdown()
        assert_exactly_once(db_path, "here", 3000)
        mine = {str(db_path) + suffix for suffix in ("", "-wal", "-shm", "-journal")}
        assert set() == opened & mine
        # Not the leader: the commits stats() shows are the flusher process's own
        # (read from its status file, which may lag the flush by a moment).
        assert (False, "process") == (stats["leader"], stats["flusher"])
        assert stats["flusher_pid"] not in (None, os.getpid())


class TestKilledFlusherProcess:
    def test_killing_the_flusher_process_6_times_under_load_stores_every_record_once(self, db_path: Path) -> None:
        """SIGKILL whichever process flushes, again and again, while 3 processes log: each token once."""
        workers = [Worker(db_path, flusher="process", block_timeout=None) for _ in range(3)]
        killed: list[int] = []
        try:
            for n, w in enumerate(workers):
                w.log(f"p{n}", 0, 20000, 0.02)
            pid = new_flusher(db_path, None)
            for _ in range(6):
                time.sleep(0.3)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                pid = new_flusher(db_path, pid)  # started by one of the workers
            for w in workers:
                w.expect("logged")
            stats = [w.flush() for w in workers]
            for w in workers:
                w.exit()
        finally:
            for w in workers:
                w.kill()
        for n in range(3):
            assert_exactly_once(db_path, f"p{n}", 20000)
        assert 6 <= sum(s["flusher_spawns"] for s in stats)
        assert not any(s["leader"] for s in stats)  # no worker ever committed itself
        wait_until(lambda: not any(alive(p) for p in killed), 30, "a killed flusher was not reaped")


class TestStoppedFlusherProcess:
    def test_a_stopped_flusher_process_is_replaced_and_steps_down_when_resumed(self, db_path: Path) -> None:
        """SIGSTOP the flusher process: a new one takes over, flush() returns; resumed, the old one yields."""
        w = Worker(db_path, flusher="process", takeover_after=1.0)
        try:
            w.log("a", 0, 1000)
            w.expect("logged")
            w.flush()
            old = new_flusher(db_path, None)
            # Between its transactions: stopped inside one it would keep SQLite's
            # write lock, and no flusher could commit until it continues (the
            # next test).  Its idle turns write too (FTS merge, bitmaps, WAL cut).
            stop(old, db_path, writing=False)
            try:
                w.log("a", 1000, 5000)
                w.expect("logged")
                w.flush()  # no timeout: returns because a new flusher process took over
            finally:
                os.kill(old, signal.SIGCONT)
            w.log("a", 6000, 1000)
            w.expect("logged")
            w.flush()
            # The resumed one holds the lock file again and takes back over; the
            # one that stepped down is a standby behind a flusher that runs: it exits.
            wait_until(lambda: len(flusher_processes(db_path)) == 1, 60, "two flusher processes stay")
            w.exit()
        finally:
            w.kill()
        assert_exactly_once(db_path, "a", 7000)
        assert "took over" in w.stderr
        assert "stepped down" in w.stderr

    def test_a_flusher_process_stopped_inside_a_write_holds_every_commit_back_until_resumed(self, db_path: Path) -> None:
        """SIGSTOP it while it holds SQLite's write lock: the process that takes over cannot commit
        either; stderr names the stopped process, records wait in the ring and spill files, and
        flush(timeout) says False.  Resumed, every record is stored once."""
        w = Worker(db_path, flusher="process", takeover_after=1.0, ring_size=65536, block_timeout=0.5)
        try:
            w.log("a", 0, 1000)
            w.expect("logged")
            w.flush()
            old = new_flusher(db_path, None)
            w.log("a", 1000, 50_000, 0.005)  # commits all along while the stop is aimed
            stop(old, db_path, writing=True)
            try:
                w.expect("logged")
                wait_until(lambda: "took over" in w.stderr, 60, "no flusher process took over")
                w.log("a", 51_000, 5000)  # more than the 64 KiB ring holds: spilled
                w.expect("logged")
                w.send("flush 2")
                _, ok, stats = w.expect("flushed").split(" ", 2)

                def named(what: str) -> bool:
                    why = f"process {old} holds its write lock and is stopped"
                    return any(what in line and why in line for line in w.stderr_lines)

                # The flusher process that took over, once its commit gave up waiting.
                wait_until(lambda: named("cannot write to"), 60, "no report named the stopped process")
            finally:
                os.kill(old, signal.SIGCONT)
            assert json.loads(ok) is False
            assert json.loads(stats)["spilled"] > 0 and named("records go to")
            w.flush()
            wait_until(lambda: len(flusher_processes(db_path)) == 1, 60, "two flusher processes stay")
            w.exit()
        finally:
            w.kill()
        assert_exactly_once(db_path, "a", 56_000)


class TestFullRing:
    def test_a_call_waiting_on_a_full_ring_lets_other_threads_run(self, db_path: Path) -> None:
        """The flusher process stopped, the ring fills: a logging thread waits for room without
        holding the GIL (this thread runs meanwhile); resumed, every record is stored once."""
        import threading

        ju.configure(db_path, flusher="process", console=False, ring_size=65536, takeover_after=60)
        try:
            pid = flusher_pid(str(db_path))
            assert pid is not None and pid != os.getpid()
            log = ju.get_logger("full")
            logged = [0]
            os.kill(pid, signal.SIGSTOP)
            try:

                def produce() -> None:  # ~170-byte records: the 64 KiB ring holds a few hundred
                    for i in range(3000):
                        log.info("full-%d", i, user_id=f"u{i}", ip="10.0.0.1")
                        logged[0] += 1

                t = threading.Thread(target=produce)
                t.start()
                wait_until(lambda: jlog._flusher.ring.stats().used > 65536 - 512, 30, "the ring did not fill")
                spins = 0
                for _ in range(200_000):
                    spins += 1
                # Were the GIL held through the wait, this loop could only have
                # run once the calls gave up waiting and spilled every record.
                assert (200_000, True) == (spins, t.is_alive())
                assert logged[0] < 3000
            finally:
                os.kill(pid, signal.SIGCONT)
            t.join(120)
            assert not t.is_alive()
            assert ju.flush(timeout=120)
            assert ju.stats()["ring_full_waits"] >= 1
        finally:
            ju.shutdown()
        assert_exactly_once(db_path, "full", 3000)


def _child_leaves_records(db: str) -> None:  # pragma: no cover - runs in a forked child
    try:
        ju.configure(db, flusher="process", console=False)
        p = jlog._flusher
        assert p is not None
        p.stopping = True  # no more watching: a killed flusher process is not replaced
        p.wake.set()
        p.thread.join()
        os.kill(flusher_pid(db), signal.SIGKILL)  # type: ignore[arg-type]
        while flusher_pid(db) is not None:
            time.sleep(0.01)
        for i in range(500):
            ju.get_logger("crash").info("left-%d", i)
    finally:
        os.kill(os.getpid(), signal.SIGKILL)


class TestLeftovers:
    def test_configure_commits_what_a_killed_flusher_process_left(self, db_path: Path) -> None:
        """Records in the ring of a killed run are committed before configure() returns."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            _child_leaves_records(str(db_path))
        os.waitpid(pid, 0)
        ju.configure(db_path, flusher="process", console=False)
        try:
            conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
            try:  # no flush(): configure() waited for the new flusher process
                got = [m for (m,) in conn.execute("SELECT message FROM logs ORDER BY id")]
            finally:
                conn.close()
        finally:
            ju.shutdown()
        assert [f"left-{i}" for i in range(500)] == got


class TestLifetime:
    def test_no_process_remains_after_the_last_user_exits(self, db_path: Path) -> None:
        """Two processes log and exit: the flusher process exits too, releases the lock, leaves no zombie."""
        workers = [Worker(db_path, flusher="process") for _ in range(2)]
        try:
            for n, w in enumerate(workers):
                w.log(f"p{n}", 0, 2000)
                w.expect("logged")
            pid = workers[0].flush()["flusher_pid"]
            assert pid is not None and alive(pid)
            workers[0].exit()
            time.sleep(2.0)  # more than the linger: one user is left, so it stays
            assert alive(pid) and pid == flusher_pid(str(db_path))
            workers[1].exit()
        finally:
            for w in workers:
                w.kill()
        wait_until(lambda: not alive(pid), 30, f"flusher process {pid} outlived its users")
        assert flusher_pid(str(db_path)) is None
        for n in range(2):
            assert_exactly_once(db_path, f"p{n}", 2000)

    def test_shutdown_lets_the_flusher_process_exit_and_reaps_it(self, db_path: Path) -> None:
        """The process that started it reaps it: it never stays a zombie of a living parent."""
        ju.configure(db_path, flusher="process", console=False)
        pid = ju.stats()["flusher_pid"]
        ju.get_logger("r").info("r-0")
        ju.shutdown()
        wait_until(lambda: not alive(pid), 30, f"flusher process {pid} is still there (or a zombie)")
        assert_exactly_once(db_path, "r", 1)

    def test_a_forked_child_keeps_the_flusher_process_after_its_parent_shut_down(self, db_path: Path) -> None:
        """fork(): the child shares the parent's registration, logs through the parent's setup and flushes."""
        ju.configure(db_path, flusher="process", console=False)
        ju.get_logger("fork").info("fork-0")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(write)
            os.read(read, 1)  # the parent has shut down
            ju.get_logger("fork").info("fork-1")
            ok = ju.flush(timeout=60)
            os._exit(0 if ok and ju.stats()["flusher_pid"] is not None else 1)
        os.close(read)
        flusher = ju.stats()["flusher_pid"]
        ju.shutdown()
        time.sleep(2.0)  # more than the linger: the child still uses the database
        os.write(write, b"x")
        os.close(write)
        _, status = os.waitpid(pid, 0)
        assert 0 == os.waitstatus_to_exitcode(status)
        assert_exactly_once(db_path, "fork", 2)
        wait_until(lambda: not alive(flusher), 30, "the flusher process outlived parent and child")


class TestRetentionAndShipping:
    def test_retention_runs_in_the_flusher_process(self, db_path: Path) -> None:
        """max_rows holds although this process never opens the database."""
        ju.configure(db_path, flusher="process", console=False, retention={"max_rows": 1000})
        try:
            log = ju.get_logger("keep")
            for i in range(6000):
                log.info("keep-%d", i)
            assert ju.flush(timeout=60)
        finally:
            ju.shutdown()
        got = stored(db_path, "keep")
        assert len(got) <= 1000 + 2000  # max_rows plus at most one batch
        assert 5999 in got and max(got.values()) == 1

    def test_ship_sinks_run_in_the_flusher_process(self, db_path: Path, otlp_receiver: Any) -> None:
        """configure(ship=[OTLPExporter(...)]) with a flusher process: every record reaches the sink."""
        from janus_utils.ship import OTLPExporter

        ju.configure(db_path, flusher="process", console=False, ship=[OTLPExporter(otlp_receiver.endpoint)])
        try:
            assert {} == ju.stats()["ship"]  # no shipper thread here
            log = ju.get_logger("ship")
            for i in range(300):
                log.info("ship-%d", i)
            assert ju.flush(timeout=60)
            wait_until(lambda: len(otlp_receiver.records) >= 300, 60, "the records were not shipped")
        finally:
            ju.shutdown()
        bodies = sorted(r.record.body.string_value for r in otlp_receiver.records)
        assert sorted(f"ship-{i}" for i in range(300)) == bodies


class TestDaemon:
    def test_a_supervised_daemon_serves_configured_processes_and_stops_on_sigterm(self, db_path: Path) -> None:
        """janus-logs flusher --daemon: configure() uses it, it outlives its users, SIGTERM ends it cleanly."""
        cli = os.path.join(os.path.dirname(sys.executable), "janus-logs")
        daemon = subprocess.Popen([cli, "flusher", "--db", str(db_path), "--daemon"], stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: flusher_pid(str(db_path)) == daemon.pid, 60, "the daemon did not take the lock")
            ju.configure(db_path, flusher="process", console=False)
            try:
                for i in range(1000):
                    ju.get_logger("d").info("d-%d", i)
                assert ju.flush(timeout=60)
                assert (0, daemon.pid) == (ju.stats()["flusher_spawns"], ju.stats()["flusher_pid"])
            finally:
                ju.shutdown()
            time.sleep(2.0)  # more than the linger
            assert daemon.poll() is None
            daemon.send_signal(signal.SIGTERM)
            assert 0 == daemon.wait(30), daemon.stderr.read() if daemon.stderr else ""
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
        assert flusher_pid(str(db_path)) is None
        assert_exactly_once(db_path, "d", 1000)


class TestReplacedFiles:
    def test_a_deleted_status_file_is_not_made_again_after_shutdown(self, db_path: Path) -> None:
        """The application removed its log files after shutdown(): the flusher process,
        lingering before it exits, does not write its status file back into the directory."""
        ju.configure(db_path, flusher="process", console=False)
        try:
            ju.get_logger("gone").info("one")
            assert ju.flush(timeout=60)
            pid = ju.stats()["flusher_pid"]
        finally:
            ju.shutdown()
        status = Path(f"{db_path}-flusher.status")
        assert status.exists() and pid is not None
        status.unlink()
        wait_until(lambda: not alive(pid), 30, f"flusher process {pid} outlived its users")
        assert not status.exists()
        assert [] == [p.name for p in db_path.parent.iterdir() if ".tmp" in p.name]

    def test_a_new_database_at_the_same_path_gets_the_records(self, tmp_path: Path) -> None:
        """The database and ring removed and made again in one process: the new flusher process gets its records."""
        import shutil

        work = tmp_path / "round"
        for n in range(2):
            work.mkdir()
            db = work / "app.db"
            ju.configure(db, flusher="process", console=False)
            try:
                for i in range(500):
                    ju.get_logger("again").info(f"r{n}-%d", i)
                assert ju.flush(timeout=60)
            finally:
                ju.shutdown()
            assert_exactly_once(db, f"r{n}", 500)
            shutil.rmtree(work)
