"""The flusher under faults: a full disk, a locked database, exit while threads log, errors cleared.

Every test here uses real processes and real files, and counts unique tokens
exactly: none lost, none stored twice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

import janus_utils as ju
from janus_utils import _flusher as jflusher
from janus_utils import _ring
from janus_utils import logger as jlog
from janus_utils._record import decode_row
from logging_worker import Holder

MiB = 1 << 20


def messages(db_path: str | Path) -> list[str]:
    db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [r[0] for r in db.execute("SELECT message FROM logs ORDER BY id")]
    finally:
        db.close()


def assert_each_once(stored: list[str], prefix: str, count: int) -> None:
    """The tokens prefix-0 .. prefix-(count-1) are stored, each exactly once."""
    got = [m for m in stored if m.startswith(prefix + "-")]
    assert len(got) == len(set(got)), f"{prefix}: {len(got) - len(set(got))} duplicated"
    missing = {f"{prefix}-{i}" for i in range(count)} - set(got)
    assert not missing, f"{prefix}: {len(missing)} lost, e.g. {sorted(missing)[:3]}"
    assert count == len(got)


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run *code* in a fresh interpreter (a real process, with a real exit)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app-logs.db"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB file system (tmpfs), so that the disk can really be full."""
    mount = tmp_path / "fs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to mount an 8 MiB tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        # Lazy: this process keeps its ring mapped until it exits.
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(path: Path, leave: int = 0) -> None:
    """Write *path* until the file system has at most *leave* bytes free."""
    with open(path, "ab") as f:
        chunk = b"\1" * 65536
        while True:
            free = os.statvfs(path.parent).f_bavail * os.statvfs(path.parent).f_frsize
            if free <= leave:
                return
            try:
                f.write(chunk[: max(min(len(chunk), free - leave), 1)])
                f.flush()
            except OSError:
                return


class TestDiskFull:
    def test_flusher_recovers_when_space_is_freed_after_the_wal_grew_under_load(self, small_fs: Path) -> None:
        """Log flat out until the disk fills, free 2 MiB: every token is stored exactly once."""
        db = small_fs / "app.db"
        done = run_python(
            """
            import json, os, sys, threading, time
            import janus_utils as ju
            db = sys.argv[1]
            ballast = os.path.join(os.path.dirname(db), "ballast")
            with open(ballast, "wb") as f:
                f.write(b"\\1" * (2 << 20))
            ju.configure(db, console=False, ring_size=1 << 20, block_timeout=None)
            log = ju.get_logger("load")
            stop = threading.Event()
            logged = [0]

            def producer():
                while not stop.is_set():
                    log.info("tok-%d", logged[0])
                    logged[0] += 1

            t = threading.Thread(target=producer)
            t.start()
            deadline = time.monotonic() + 60
            while "FullError" not in str(ju.stats()["last_error"]) and time.monotonic() < deadline:
                time.sleep(0.001)
            stop.set()  # before the ring fills: what is in it must fit in 2 MiB
            full = ju.stats()
            time.sleep(0.5)  # the flusher retries in vain meanwhile
            os.unlink(ballast)  # 2 MiB of the 8 free again
            t.join()
            ok = ju.flush(timeout=60)
            s = ju.stats()
            ju.shutdown()
            print(json.dumps({"logged": logged[0], "full": full["last_error"], "ok": ok,
                              "dropped": s["dropped"], "torn": s["torn"], "last_error": s["last_error"]}))
            """,
            str(db),
        )
        assert 0 == done.returncode, done.stderr[-3000:]
        out = json.loads(done.stdout.splitlines()[-1])
        assert "FullError" in out["full"]  # the disk did fill up
        assert out["ok"], out
        assert (0, 0, None) == (out["dropped"], out["torn"], out["last_error"])
        assert_each_once(messages(db), "tok", out["logged"])

    def test_configure_on_a_full_disk_reuses_the_ring_and_commits_later(self, small_fs: Path) -> None:
        """configure() with the disk full does not raise; the records wait and land once there is room."""
        db = small_fs / "app.db"
        ju.configure(db, console=False, ring_size=MiB)
        ju.shutdown()
        ballast = small_fs / "ballast"
        fill(ballast)
        ju.configure(db, console=False, ring_size=MiB)
        try:
            for i in range(3000):
                ju.get_logger("full").info("tok-%d", i)
            committed_while_full = ju.flush(timeout=0.5)
            ballast.unlink()
            assert ju.flush(timeout=60)
            s = ju.stats()
        finally:
            ju.shutdown()
        assert not committed_while_full
        assert (0, None) == (s["dropped"], s["last_error"])
        # FullError, or IOError when not even the -shm file has room
        assert "cannot write" in " ".join(m for _, m in s["recent_errors"])
        assert_each_once(messages(db), "tok", 3000)

    def test_configure_without_room_for_the_ring_waits_for_room(
        self, small_fs: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No room to create the ring: configure() returns, WARNING+ goes to stderr, the setup completes later."""
        ballast = small_fs / "ballast"
        fill(ballast)
        db = small_fs / "app.db"
        ju.configure(db, console=False, ring_size=MiB)
        try:
            s = ju.stats()
            assert s["pending"] and not s["configured"]
            assert "No space left on device" in s["last_error"]
            assert ju.is_configured()
            ju.get_logger("early").warning("early-warning")
            ju.get_logger("early").info("early-info")
            assert not ju.flush(timeout=0.1)
            assert s["not_stored"] + 2 == ju.stats()["not_stored"]
            ballast.unlink()
            deadline = time.monotonic() + 30
            while not ju.stats()["configured"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ju.stats()["configured"]
            for i in range(2000):
                ju.get_logger("later").info("tok-%d", i)
            assert ju.flush(timeout=60)
        finally:
            ju.shutdown()
        err = capsys.readouterr().err
        assert "No space left on device" in err
        assert "early-warning" in err and "early-info" not in err
        stored = messages(db)
        assert_each_once(stored, "tok", 2000)
        assert not [m for m in stored if m.startswith("early")]


class TestLockedAtConfigure:
    def test_configure_while_another_process_holds_an_exclusive_transaction(self, db_path: Path) -> None:
        """configure() returns at once; records (and a crashed run's leftovers) wait, then all land."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child: leave 500 records in the ring, then die
            try:
                ju.configure(db_path, console=False)
                p = jlog._flusher
                assert p is not None
                p.stopping = True
                p.wake.set()
                p.thread.join()
                for i in range(500):
                    ju.get_logger("crash").info("left-%d", i)
            finally:
                os.kill(os.getpid(), signal.SIGKILL)
        os.waitpid(pid, 0)
        holder = Holder(db_path)
        try:
            ju.configure(db_path, console=False)
            try:
                for i in range(1000):
                    ju.get_logger("locked").info("tok-%d", i)
                assert not ju.flush(timeout=0.3)  # they wait in the ring
                holder.release()
                assert ju.flush(timeout=30)
                s = ju.stats()
            finally:
                ju.shutdown()
        finally:
            holder.release()
        stored = messages(db_path)
        assert_each_once(stored, "left", 500)
        assert_each_once(stored, "tok", 1000)
        assert s["last_error"] is None and s["retries"] >= 1

    def test_configure_on_a_new_file_another_process_locked(
        self, db_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Locked before it even is a log database, for longer than a lock wait: configure() still returns."""
        monkeypatch.setattr(jflusher, "_BUSY_WAIT", 0.3)
        holder = Holder(db_path)  # creates the file, in rollback-journal mode
        try:
            ju.configure(db_path, console=False)
            try:
                assert "BusyError" in ju.stats()["last_error"]
                for i in range(1000):
                    ju.get_logger("locked").info("tok-%d", i)
                holder.release()
                assert ju.flush(timeout=30)
            finally:
                ju.shutdown()
        finally:
            holder.release()
        assert_each_once(messages(db_path), "tok", 1000)


# A process whose daemon threads log flat out while the interpreter exits.
# Each thread writes the index of its last call that returned into a shared
# file; just before exiting, the main thread copies those into a snapshot:
# everything up to the snapshot was logged before exit began.
DAEMONS_AT_EXIT = """
import mmap, struct, sys, threading, time
import janus_utils as ju
db, progress, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
ju.configure(db, console=False, block_timeout=None)
f = open(progress, "r+b")
mm = mmap.mmap(f.fileno(), 16 * threads)

def worker(k):
    info = ju.get_logger("daemon").info
    i = 0
    while True:
        info("d%d-%d", k, i)
        struct.pack_into("q", mm, 8 * k, i)
        i += 1

for k in range(threads):
    threading.Thread(target=worker, args=(k,), daemon=True).start()
time.sleep(1.0)
mm[8 * threads:] = mm[:8 * threads]
print("exiting", flush=True)
"""


@pytest.mark.usefixtures("flusher_mode")
class TestExit:
    @pytest.mark.parametrize("locked", [False, True], ids=["free", "locked"])
    def test_exit_with_daemon_threads_logging_is_quick_and_keeps_every_record(
        self, db_path: Path, tmp_path: Path, locked: bool
    ) -> None:
        """Exit is bounded; each record logged before it is committed or left in the ring, then committed once."""
        threads = 4
        ju.configure(db_path, console=False)  # creates the database
        ju.shutdown()
        progress = tmp_path / "progress"
        progress.write_bytes(struct.pack(f"{2 * threads}q", *([-1] * 2 * threads)))
        holder = Holder(db_path) if locked else None
        try:
            # The timeout only guards against a hang; exit figures are in bench/bench_exit.py.
            done = run_python(DAEMONS_AT_EXIT, str(db_path), str(progress), str(threads), timeout=60)
        finally:
            if holder is not None:
                holder.release()
        assert 0 == done.returncode, done.stderr[-3000:]
        assert "exiting" in done.stdout
        if locked:
            assert "logged before shutdown are not committed yet" in done.stderr
        before_exit = struct.unpack_from(f"{threads}q", progress.read_bytes(), 8 * threads)
        ju.configure(db_path, console=False)  # commits what the exiting process left in the ring
        try:
            assert ju.flush(timeout=60)
            s = ju.stats()
        finally:
            ju.shutdown()
        assert (0, 0) == (s["dropped"], s["torn"])
        stored = messages(db_path)
        for k in range(threads):
            got = sorted(int(m.split("-")[1]) for m in stored if m.startswith(f"d{k}-"))
            assert len(got) == len(set(got)), f"thread {k}: duplicates"
            assert list(range(len(got))) == got, f"thread {k}: a gap"
            assert len(got) > before_exit[k], f"thread {k}: lost records logged before exit"
        assert sum(before_exit) > 1000  # the threads did log flat out


class TestErrorsAndDamageInStats:
    def test_ring_damage_counts_the_records_lost(self, db_path: Path) -> None:
        """1,000 records damaged in the ring of a crashed run: torn says ~1,000 (bytes exact), the rest land once."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child: leave 3,000 records in the ring, then die
            try:
                ju.configure(db_path, console=False)
                p = jlog._flusher
                assert p is not None
                p.stopping = True
                p.wake.set()
                p.thread.join()
                for i in range(3000):
                    ju.get_logger("crash").info("left-%d", i)
            finally:
                os.kill(os.getpid(), signal.SIGKILL)
        os.waitpid(pid, 0)
        ring_path = Path(str(db_path) + "-ring")
        with _ring.Ring(ring_path, None) as ring:  # where records 1,000 and 2,000 start
            # By message: the process's service/host announcement may precede them.
            seq_of = {decode_row(payload)[3]: seq for seq, payload in ring.read(4000)[0]}
        assert 3000 == sum(m.startswith("left-") for m in seq_of)
        start, end = seq_of["left-1000"], seq_of["left-2000"]
        with open(ring_path, "r+b") as f:
            f.seek(_ring.HEADER_SIZE + start % (ring_path.stat().st_size - _ring.HEADER_SIZE))
            f.write(bytes(end - start))
        ju.configure(db_path, console=False)
        try:
            assert ju.flush(timeout=60)
            s = ju.stats()
        finally:
            ju.shutdown()
        stored = messages(db_path)
        assert [f"left-{i}" for i in (*range(1000), *range(2000, 3000))] == stored
        assert end - start == s["torn_bytes"]
        assert 950 <= s["torn"] <= 1050, s["torn"]


RETENTION_UNDER_LOAD = """
import json, sys, threading
import apsw
import janus_utils as ju
db, count, archive = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None
ju.configure(db, console=False, retention={"max_rows": 5000}, archive_dir=archive)
info = ju.get_logger("load").info
for i in range(count):  # flat out, one thread: tokens in time order
    info("tok-%d", i)
assert ju.flush(timeout=120)
check = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
after_flush = check.execute("SELECT count(*) FROM logs").fetchall()[0][0]
check.close()
s = ju.stats()
ju.shutdown()
print(json.dumps({"after_flush": after_flush, "last_error": s["last_error"], "errors": s["errors"]}))
"""


class TestRetentionUnderLoad:
    @pytest.mark.parametrize("archived", [False, True], ids=["deleted", "archived"])
    def test_max_rows_holds_while_logging_flat_out(self, db_path: Path, tmp_path: Path, archived: bool) -> None:
        """max_rows=5000 at full speed: after flush() at most 5,000 + one batch (2,000) rows, after
        shutdown() exactly the newest 5,000; every other token archived (when asked), none twice."""
        count = 30_000 if archived else 60_000
        archive = tmp_path / "archive" if archived else None
        done = run_python(RETENTION_UNDER_LOAD, str(db_path), str(count), str(archive or ""))
        assert 0 == done.returncode, done.stderr[-3000:]
        out = json.loads(done.stdout.splitlines()[-1])
        assert (None, 0) == (out["last_error"], out["errors"])
        assert 5000 <= out["after_flush"] <= 5000 + 2000  # max_rows + batch_size
        assert [f"tok-{i}" for i in range(count - 5000, count)] == messages(db_path)
        if archive is not None:
            from janus_utils.retention import iter_archive_records

            archived_tokens = [r["message"] for r in iter_archive_records(archive)]
            assert_each_once(archived_tokens + messages(db_path), "tok", count)


class TestBatchFailures:
    def test_a_batch_that_fails_before_its_commit_is_read_again(
        self, db_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An error between reading a batch and committing it loses none of its records."""
        ju.configure(db_path, console=False, commit_interval=3600)
        try:
            p = jlog._flusher
            assert p is not None
            real = p.resources.label
            failures = [1]

            def label_once_failing(rows: list[Any]) -> list[Any]:
                if failures and rows:
                    failures.pop()
                    raise RuntimeError("labelling failed")
                return real(rows)

            monkeypatch.setattr(p.resources, "label", label_once_failing)
            log = ju.get_logger("again")
            for i in range(500):
                log.info("again-%d", i)
            assert ju.flush(timeout=30)
            for i in range(500, 1000):
                log.info("again-%d", i)
            assert ju.flush(timeout=30)
            assert not failures  # the failure did happen
        finally:
            ju.shutdown()
        assert [f"again-{i}" for i in range(1000)] == [m for m in messages(db_path) if m.startswith("again-")]
