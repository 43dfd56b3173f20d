"""The flusher's upkeep between bursts: the WAL file given back, the writer's settings."""

from __future__ import annotations

import os
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
