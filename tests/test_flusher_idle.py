"""The flusher's upkeep between bursts: the WAL file given back, the writer's settings."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest

import janus_utils as ju
from janus_utils import _flusher as jflusher


@pytest.fixture
def db_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "app-logs.db"
    yield path
    ju.shutdown()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll *condition* until it holds or *timeout* seconds pass; whether it held."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def wal_size(db_path: Path) -> int:
    try:
        return os.path.getsize(f"{db_path}-wal")
    except FileNotFoundError:
        return 0


class TestIdleWal:
    def test_the_wal_file_is_emptied_once_the_application_is_quiet(self, db_path: Path) -> None:
        """After a burst and a quiet second the WAL file holds no bytes, and every record is stored."""
        ju.configure(db_path, console=False)
        log = ju.get_logger("svc.api")
        for n in range(5000):
            log.info("order %s shipped to a customer far away", n, user_id=f"u{n % 50}")
        assert ju.flush(timeout=60)
        assert wal_size(db_path) > 0  # the burst went through the WAL
        assert wait_for(lambda: wal_size(db_path) == 0), f"WAL still {wal_size(db_path)} bytes"
        with ju.LogStore(db_path) as store:
            assert 5000 == store.count()
            assert 5000 == len(store.search("shipped", limit=10_000))

    def test_a_reader_inside_a_transaction_keeps_the_wal_and_loses_nothing(self, db_path: Path) -> None:
        """A reader holding a snapshot is not waited for: the WAL stays until it is done, then goes."""
        ju.configure(db_path, console=False)
        log = ju.get_logger("svc.api")
        log.info("first")
        assert ju.flush(timeout=60)
        reader = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            reader.execute("BEGIN")
            assert 1 == reader.execute("SELECT count(*) FROM logs").fetchall()[0][0]
            for n in range(2000):
                log.info("second %s", n)
            assert ju.flush(timeout=60)
            time.sleep(2.0)  # idle turns run while the snapshot is held
            assert wal_size(db_path) > 0  # not cut under the reader
            assert 1 == reader.execute("SELECT count(*) FROM logs").fetchall()[0][0]
            reader.execute("COMMIT")
        finally:
            reader.close()
        log.info("third")
        assert ju.flush(timeout=60)
        assert wait_for(lambda: wal_size(db_path) == 0), f"WAL still {wal_size(db_path)} bytes"
        with ju.LogStore(db_path) as store:
            assert 2002 == store.count()


class TestIdleMerge:
    @pytest.fixture
    def merging(self, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[jflusher.Flusher]:
        """A configured flusher whose index has many segments to merge in one-page steps, five a turn;
        yielded with its lock held, so that its thread stays out of the way."""
        monkeypatch.setattr(jflusher, "_IDLE_MERGE_PAGES", 1)
        monkeypatch.setattr(jflusher, "_IDLE_MERGE_STEPS", 5)
        ju.configure(db_path, console=False)
        log = ju.get_logger("svc.api")
        for batch in range(40):  # a segment a commit
            for n in range(200):
                log.info("order %s of batch %s shipped far away", n, batch, user_id=f"u{n % 50}")
            assert ju.flush(timeout=60)
        flusher = ju.logger._flusher
        assert flusher is not None
        with flusher.db_lock:
            assert flusher.db is not None and flusher._merge_due
            flusher.wake.clear()  # flush() leaves it set until the thread's next wait
            yield flusher

    @staticmethod
    def watch(db: apsw.Connection) -> tuple[list[str], list[int]]:
        """The merge statements run and the commits made on *db* from now on."""
        merges: list[str] = []
        commits: list[int] = []
        db.exec_trace = lambda cursor, sql, bindings: (merges.append(sql) if "'merge'" in sql else None) or True
        db.set_commit_hook(lambda: commits.append(1) or False)
        return merges, commits

    def test_an_idle_turn_merges_in_several_steps_and_one_commit(self, merging: jflusher.Flusher) -> None:
        """Readers drop their cache at each commit: a turn's steps share one transaction."""
        assert merging.db is not None
        merges, commits = self.watch(merging.db)
        assert merging._merge_steps()  # work is left
        assert (jflusher._IDLE_MERGE_STEPS, 1) == (len(merges), len(commits))

    def test_a_waiting_record_ends_the_turn_after_one_step(self, merging: jflusher.Flusher) -> None:
        """A record logged while the index is merged waits one step, not a whole turn."""
        assert merging.db is not None
        ju.get_logger("svc.api").info("logged while the index is merged")
        merges, commits = self.watch(merging.db)
        assert merging._merge_steps()
        assert (1, 1) == (len(merges), len(commits))

    def test_a_turn_that_finds_the_merge_done_lets_the_wal_be_cut(self, merging: jflusher.Flusher) -> None:
        """The last turn with work keeps the WAL (more turns were to come); the turn that then
        finds nothing to merge must leave the next checkpoint free to cut it."""
        while merging._merge_steps():
            pass
        # A turn ends on its last allowed step: work done, the end not seen yet.
        assert not merging._merge_due
        merging._merge_due = True
        merging._batches_since_checkpoint = 0  # the previous turn's checkpoint ran
        assert not merging._merge_steps()  # nothing left: the merge is done
        assert not merging._merge_due
        assert merging._batches_since_checkpoint > 0

    def test_the_merge_ends_with_every_record_found(self, merging: jflusher.Flusher, db_path: Path) -> None:
        """Turn after turn the index is merged to the end, each record still found once."""
        assert merging.db is not None
        turns = 0
        while merging._merge_steps():
            turns += 1
            assert turns < 1000
        assert not merging._merge_due
        merging.db.exec_trace = None
        merging.db.set_commit_hook(None)
        with ju.LogStore(db_path) as store:
            assert 8000 == store.count("shipped")
            assert 200 == store.count('"batch 17"')
            assert 1 == len(merging.db.execute('SELECT DISTINCT "segid" FROM "logs_fts_idx"').fetchall())


class TestWriterSettings:
    def test_the_writer_has_a_larger_page_cache_and_a_wal_size_limit(self, tmp_path: Path) -> None:
        """open_database sets the writer's cache and cuts a restarted WAL back to the checkpoint size."""
        db = jflusher.open_database(str(tmp_path / "x.db"))
        try:
            page_size = db.execute("PRAGMA page_size").fetchall()[0][0]
            assert -jflusher._CACHE_KIB == db.execute("PRAGMA cache_size").fetchall()[0][0]
            assert jflusher._CHECKPOINT_PAGES * page_size == db.execute("PRAGMA journal_size_limit").fetchall()[0][0]
        finally:
            db.close()


class TestIdleFlusherAndTheGil:
    def test_a_record_stuck_mid_push_does_not_make_the_flusher_loop(
        self, db_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A producer alive but stopped inside a push holds back every record after its own.
        With the ring past a quarter full the fill cannot end the flusher's wait: it waits out
        commit_interval (not a loop of empty turns holding the GIL), and once the producer is
        gone every other record is committed once."""
        ju.configure(db_path, console=False, ring_size=1 << 20, commit_interval=0.1)
        log = ju.get_logger("svc.api")
        log.info("before")
        assert ju.flush(timeout=60)
        flusher = ju.logger._flusher
        assert flusher is not None
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child: reserves a record and never writes it
            flusher.ring._debug_reserve_only(64)
            os.write(ready_w, b"x")
            time.sleep(600)
            os._exit(0)
        try:
            assert b"x" == os.read(ready_r, 1)
            pad = "p" * 200
            for n in range(2_000):  # past a quarter of the 1 MiB ring
                log.info("held back %s %s", n, pad)
            stats = flusher.ring.stats()
            assert stats.head - stats.tail >= stats.capacity // 4
            turns: list[int] = []
            idle = flusher._idle

            def counted() -> None:
                turns.append(1)
                idle()

            monkeypatch.setattr(flusher, "_idle", counted)
            time.sleep(1.0)
            # One empty turn per commit_interval at most; a loop makes thousands.
            assert len(turns) <= 1.0 / 0.1 + 5
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        assert ju.flush(timeout=60)  # the killed producer's record is skipped as torn
        with ju.LogStore(db_path) as store:
            assert 2_001 == store.count()
            assert 2_000 == store.count(logger="svc.api", query='"held back"')

    def test_a_waiting_flusher_enters_python_only_to_beat(
        self, db_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Between commits the flusher thread waits in the ring, not in Python: it takes the
        GIL to beat its heartbeat every _BEAT_EVERY s (not every 10 ms), and flush() still
        wakes it at once for the records logged meanwhile."""
        ju.configure(db_path, console=False, commit_interval=3600)
        log = ju.get_logger("svc.api")
        log.info("first")
        assert ju.flush(timeout=60)
        flusher = ju.logger._flusher
        assert flusher is not None
        beats: list[float] = []
        beat = flusher.ring.beat

        def counted(token: int) -> bool:
            beats.append(time.monotonic())
            return beat(token)

        monkeypatch.setattr(flusher.ring, "beat", counted)
        time.sleep(1.0)
        assert 0 < len(beats) <= 1.0 / jflusher._BEAT_EVERY + 3
        for n in range(100):
            log.info("order %s shipped", n)
        assert ju.flush(timeout=60)
        with ju.LogStore(db_path) as store:
            assert 101 == store.count()
