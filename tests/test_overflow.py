"""A full disk loses nothing: records neither the ring nor a spill file takes are held in memory.

The database lives on a real 4 MiB tmpfs filled to the last page by a ballast
file, so the flusher's commits and the spill files' writes both fail with
ENOSPC, as on a full production disk.  Records logged then wait in the ring,
then in the process's memory (``stats()["held"]``), and are stored exactly
once, in each thread's order, when the ballast is deleted.  Mounting a tmpfs
needs root: elsewhere these tests are skipped.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

import janus_utils as ju
from janus_utils import _spill

RING = 65536  # fills after a few hundred records


class Disk:
    """A small tmpfs of its own, filled to the last page on demand."""

    def __init__(self, mount: Path) -> None:
        self.mount = mount
        self.ballast = mount / "ballast"

    def fill(self) -> None:
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 16, 1 << 12, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:
                    pass
        finally:
            os.close(fd)
        assert os.statvfs(self.mount).f_bavail == 0

    def free(self) -> None:
        self.ballast.unlink()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield Disk(mount)
    finally:
        ju.shutdown(timeout=30)
        subprocess.run(["umount", "-l", str(mount)], check=False)


def stored_ids(db: Path) -> dict[str, list[int]]:
    """Each message's row ids (more than one: stored twice)."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        ids: dict[str, list[int]] = collections.defaultdict(list)
        for row_id, message in conn.execute("SELECT id, message FROM logs WHERE logger != 'janus' ORDER BY id"):
            ids[message].append(row_id)
        return ids
    finally:
        conn.close()


def settle(db: Path) -> None:
    """Commit what was left in the ring and spill files, as the next start would."""
    ju.configure(db, console=False)
    assert ju.flush(timeout=60)
    ju.shutdown(timeout=30)


def hold_on_a_full_disk(disk: Disk, db: Path, held: int, prefix: str) -> tuple[Any, int]:
    """Configure *db* without a spill reserve, fill the disk, log PREFIX-0, PREFIX-1, ... until
    *held* records are held in memory; the logger and how many were logged."""
    ju.configure(db, console=False, ring_size=RING, block_timeout=0.05, spill_reserve_bytes=0)
    assert ju.flush(timeout=30)
    disk.fill()
    log = ju.get_logger("full")
    i = 0
    while ju.stats()["held"] < held:
        log.info("%s-%d", prefix, i)
        i += 1
    return log, i


class TestFullDisk:
    def test_records_held_in_memory_are_stored_once_in_order_when_space_frees(
        self, disk: Disk, flusher_mode: str
    ) -> None:
        """Two threads log onto a full disk: calls return, records are held, none lost or doubled."""
        db = disk.mount / "app.db"
        ju.configure(db, console=False, ring_size=RING, block_timeout=0.05, spill_reserve_bytes=0)
        assert ju.flush(timeout=30)
        disk.fill()
        log = ju.get_logger("full")
        enough = threading.Event()
        returned = {}

        def produce(name: str) -> None:
            i = 0
            while not enough.is_set() and i < 100_000:
                log.info("%s-%d", name, i)
                i += 1
                returned[name] = i
                if i % 20 == 0 and ju.stats()["held"] >= 40:
                    enough.set()

        threads = [threading.Thread(target=produce, args=(f"t{k}",)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
            assert not t.is_alive()
        full = ju.stats()
        assert full["held"] >= 40 and full["held_bytes"] > 0
        assert (0, 0) == (full["spilled"], full["dropped"])  # the spill file could not be written
        disk.free()
        assert ju.flush(timeout=120)
        after = ju.stats()
        assert (0, 0, 0) == (after["held"], after["held_bytes"], after["dropped"])
        ju.shutdown(timeout=30)
        ids = stored_ids(db)
        expected = {f"{name}-{i}" for name, n in returned.items() for i in range(n)}
        assert expected == set(ids)  # 0 lost
        assert [] == [m for m, found in ids.items() if len(found) > 1]  # 0 duplicated
        for name, n in returned.items():  # each thread's records in the order it logged them
            order = [ids[f"{name}-{i}"][0] for i in range(n)]
            assert order == sorted(order)

    def test_calls_queued_behind_held_records_are_redacted_and_cut_as_pushes_are(self, disk: Disk) -> None:
        """A secret or an oversized record logged while records are held is stored as the ring would."""
        db = disk.mount / "app.db"
        log, _ = hold_on_a_full_disk(disk, db, 5, "before")
        log.info("queued secret", password="hunter2-held-secret")
        log.error("queued big", blob="x" * (RING * 2))
        log.info("queued last")
        assert ju.stats()["held"] >= 8
        disk.free()
        assert ju.flush(timeout=120)
        ju.shutdown(timeout=30)
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            rows = conn.execute(
                "SELECT message, fields FROM logs WHERE message LIKE 'queued%' ORDER BY id"
            ).fetchall()
            raw = [r for (r,) in conn.execute("SELECT fields FROM logs WHERE fields LIKE '%hunter2%'")]
        finally:
            conn.close()
        assert ["queued secret", "queued big", "queued last"] == [m for m, _ in rows]
        assert [] == raw
        assert "truncated" in rows[1][1] and len(rows[1][1]) < RING

    def test_a_child_forked_while_records_are_held_does_not_store_them_again(self, disk: Disk) -> None:
        """Held records are the parent's: a forked child that flushes and shuts down adds no copy."""
        db = disk.mount / "app.db"
        _, i = hold_on_a_full_disk(disk, db, 25, "p")
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: nothing held of its own; flush and shut down once there is room
            status = 1
            try:
                os.close(go_w)
                os.read(go_r, 1)
                held = ju.stats()["held"]
                ju.flush(timeout=30)
                ju.shutdown(timeout=30)
                status = 0 if held == 0 else 3
            finally:
                os._exit(status)
        os.close(go_r)
        disk.free()
        os.write(go_w, b"g")
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
        assert 0 == os.waitstatus_to_exitcode(status)
        assert ju.flush(timeout=120)
        ju.shutdown(timeout=30)
        ids = stored_ids(db)
        assert {f"p-{k}" for k in range(i)} == set(ids)
        assert [] == [m for m, found in ids.items() if len(found) > 1]

    def test_past_hold_max_bytes_records_are_dropped_and_counted(self, disk: Disk) -> None:
        """Every call is stored or counted as dropped: never both, never neither."""
        db = disk.mount / "app.db"
        ju.configure(
            db, console=False, ring_size=RING, block_timeout=0.01, spill_reserve_bytes=0, hold_max_bytes=4000
        )
        assert ju.flush(timeout=30)
        disk.fill()
        log = ju.get_logger("full")
        for i in range(1500):
            log.info("limit-%d", i)
        full = ju.stats()
        assert 0 < full["held_bytes"] <= 4000 and full["dropped"] > 0
        disk.free()
        assert ju.flush(timeout=120)
        dropped = ju.stats()["dropped"]
        ju.shutdown(timeout=30)
        ids = stored_ids(db)
        assert [] == [m for m, found in ids.items() if len(found) > 1]
        assert 1500 == len(ids) + dropped


HOLDER = textwrap.dedent(
    """
    import json, sys, janus_utils as ju
    ju.configure(sys.argv[1], console=False, ring_size=65536, block_timeout=0.05,
                 exit_timeout=float(sys.argv[2]), spill_reserve_bytes=int(sys.argv[3]))
    assert ju.flush(timeout=30)
    print("ready", flush=True)
    sys.stdin.readline()  # the disk is full now
    log = ju.get_logger("holder")
    i = 0
    while ju.stats()[sys.argv[4]] < 25:  # records held in memory, or spilled
        log.info("h-%d", i)
        i += 1
    s = ju.stats()
    print(json.dumps([i, s["held"], s["spilled"]]), flush=True)
    sys.stdin.readline()  # SIGKILL here, or exit with the disk still full
    """
)


def run_holder(
    disk: Disk, exit_timeout: float, reserve: int = 0, until: str = "held"
) -> tuple[subprocess.Popen[str], int, int]:
    """A process logging onto the full disk until 25 records are *until* ("held", "spilled")."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(disk.mount / "app.db"), str(exit_timeout), str(reserve), until],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    disk.fill()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    returned, held, spilled = json.loads(proc.stdout.readline())
    assert (held if until == "held" else spilled) >= 25
    return proc, returned, held


class TestWhatMemoryCannotKeep:
    def test_sigkill_loses_exactly_the_held_records(self, disk: Disk, flusher_mode: str) -> None:
        """Held records are in memory only: SIGKILL loses them, and only them (the newest)."""
        proc, returned, held = run_holder(disk, exit_timeout=2.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        disk.free()
        settle(disk.mount / "app.db")
        ids = stored_ids(disk.mount / "app.db")
        assert held >= 25
        # What reached the ring survives the kill: a prefix of the calls, each once.
        assert {f"h-{i}" for i in range(returned - held)} == set(ids)
        assert [] == [m for m, found in ids.items() if len(found) > 1]

    def test_exit_on_a_disk_still_full_counts_and_reports_what_it_held(self, disk: Disk, flusher_mode: str) -> None:
        """Interpreter exit waits exit_timeout, then says how many held records it could not store."""
        proc, returned, held = run_holder(disk, exit_timeout=0.5)
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        assert proc.wait(60) == 0
        err = proc.stderr.read()
        assert f"{held:,} records held in memory" in err and "lost (counted as dropped)" in err, err
        disk.free()
        ju.configure(disk.mount / "app.db", console=False)
        assert ju.flush(timeout=60)
        dropped = ju.stats()["dropped"]  # the ring file's shared counters
        ju.shutdown(timeout=30)
        ids = stored_ids(disk.mount / "app.db")
        assert {f"h-{i}" for i in range(returned - held)} == set(ids)
        assert held == dropped


class TestRoomSetAside:
    def test_a_full_disk_spills_into_the_reserve_and_survives_sigkill(self, disk: Disk, flusher_mode: str) -> None:
        """With spill_reserve_bytes, records reach the full disk: a SIGKILL then loses none."""
        proc, returned, held = run_holder(disk, exit_timeout=2.0, reserve=256 << 10, until="spilled")
        assert held == 0
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        disk.free()
        settle(disk.mount / "app.db")
        ids = stored_ids(disk.mount / "app.db")
        assert {f"h-{i}" for i in range(returned)} == set(ids)  # 0 lost
        assert [] == [m for m, found in ids.items() if len(found) > 1]
        assert [] == _spill.spill_files(str(disk.mount / "app.db"))  # committed and deleted

    def test_the_reserve_is_allocated_given_back_at_shutdown_and_swept_after_a_kill(self, tmp_path: Path) -> None:
        """Blocks allocated at configure(), size 0 (never read as records); no room kept for good."""
        db = tmp_path / "app.db"
        spill = Path(str(db) + "-spill")
        killed = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(db), "1", str(1 << 20), "held"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert killed.stdout is not None
        assert killed.stdout.readline().strip() == "ready"
        orphan = [p for p in spill.iterdir() if p.name.endswith(_spill.RESERVE_SUFFIX)]
        killed.kill()
        killed.wait(30)
        assert 1 == len(orphan) and orphan[0].exists()
        ju.configure(db, console=False, spill_reserve_bytes=1 << 20)
        reserves = [p for p in spill.iterdir() if p.name.endswith(_spill.RESERVE_SUFFIX)]
        assert [] == [p for p in reserves if p == orphan[0]]  # the dead process's: deleted
        assert 1 == len(reserves)
        info = reserves[0].stat()
        assert (0, True) == (info.st_size, info.st_blocks * 512 >= 1 << 20)
        assert 0o600 == info.st_mode & 0o777
        assert [] == _spill.spill_files(str(db))
        ju.shutdown(timeout=30)
        assert [] == [p for p in spill.iterdir() if p.name.endswith(_spill.RESERVE_SUFFIX)]
