"""A ring that stays full past block_timeout spills to disk: nothing dropped, nothing twice.

The database is held locked by another process (as a flusher SIGSTOPped inside
a commit holds it), so no flusher can commit and the ring fills.  Log calls
then go on returning, their records in spill files, and are committed exactly
once when the lock goes, even with producers and flushers SIGKILLed.
"""

from __future__ import annotations

import collections
import json
import marshal
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

import janus_utils as ju
from janus_utils import _spill
from logging_worker import Worker

RING = 65536  # fills after a few hundred records
LOCKER = textwrap.dedent(
    """
    import sys, apsw
    db = apsw.Connection(sys.argv[1])
    db.setbusytimeout(60000)
    db.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()
    db.execute("COMMIT")
    print("released", flush=True)
    """
)


class Locker:
    """Another process holding the database's write lock until released."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"
        assert self.proc.wait(30) == 0


def stored(db: Path) -> collections.Counter[str]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return collections.Counter(m for (m,) in conn.execute("SELECT message FROM logs WHERE logger != 'janus'"))
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "app.db"
    yield path
    ju.shutdown(timeout=30)


def test_a_full_ring_spills_and_every_record_is_committed_once(db: Path, flusher_mode: str) -> None:
    ju.configure(db, console=False, ring_size=RING, block_timeout=0.2)
    assert ju.flush(timeout=30)
    locker = Locker(db)
    log = ju.get_logger("spill")

    def produce(name: str) -> None:
        for i in range(3000):
            log.info("%s-%d", name, i, n=i)

    threads = [threading.Thread(target=produce, args=(f"t{k}",)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive()
    stats = ju.stats()
    assert stats["spilled"] > 0
    assert stats["dropped"] == 0
    assert _spill.spill_files(str(db))  # in a spill file while the lock is held
    # The report names what happened, in stats() and on stderr.
    assert "spill" in (stats["last_error"] or "") + " ".join(m for _, m in stats["recent_errors"])
    locker.release()
    assert ju.flush(timeout=120)
    counts = stored(db)
    expected = {f"t{k}-{i}" for k in range(2) for i in range(3000)}
    assert set(counts) == expected
    assert max(counts.values()) == 1
    assert _spill.spill_files(str(db)) == []  # committed files are deleted


def test_spill_over_its_limit_drops_and_counts_without_holding(db: Path) -> None:
    ju.configure(db, console=False, ring_size=RING, block_timeout=0.1, spill_max_bytes=20_000, hold_max_bytes=0)
    assert ju.flush(timeout=30)
    locker = Locker(db)
    log = ju.get_logger("spill")
    for i in range(2000):
        log.info("limit-%d", i)
    stats = ju.stats()
    assert stats["spilled"] > 0 and stats["dropped"] > 0
    locker.release()
    assert ju.flush(timeout=120)
    counts = stored(db)
    assert max(counts.values()) == 1
    # Every call is either stored or counted as dropped, never both, never neither.
    assert len(counts) + ju.stats()["dropped"] == 2000


def test_a_frame_cut_short_by_a_dead_writer_is_skipped(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    writer = _spill.SpillWriter(str(db), 1 << 20)
    records = [f"record {i}".encode() for i in range(5)]
    for data in records:
        assert writer.write(data, tail=0)
    path = writer.path
    assert path is not None
    with open(path, "ab") as f:  # a writer killed inside write(): half a frame
        f.write(_spill.FRAME.pack(100, 0) + b"cut")
    chunk = _spill.read_chunk(path, 0, 100)
    assert chunk is not None
    assert chunk.payloads == records and not chunk.finished  # the writer may still finish it
    writer.close()
    chunk = _spill.read_chunk(path, 0, 100)
    assert chunk is not None
    assert chunk.payloads == records and chunk.finished and chunk.torn == 1
    assert chunk.end == os.path.getsize(path)
    # From the middle: the same records, none twice.
    first = _spill.read_chunk(path, 0, 2)
    assert first is not None and first.payloads == records[:2] and not first.finished
    rest = _spill.read_chunk(path, first.end, 100)
    assert rest is not None and rest.payloads == records[2:]


def test_spill_directory_of_another_user_or_a_symlink_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.symlink(target, str(db) + "-spill")
    writer = _spill.SpillWriter(str(db), 1 << 20)
    assert not writer.write(b"x", tail=0)
    assert writer.failed == 1
    assert list(target.iterdir()) == []


FLUSHER = textwrap.dedent(
    """
    import sys, time, janus_utils as ju
    ju.configure(sys.argv[1], console=False, ring_size=65536, block_timeout=0.2)
    print("ready", flush=True)
    ju.flush()
    print("flushed", flush=True)
    time.sleep(60)
    """
)


def test_producers_and_flushers_sigkilled_around_spill_files(tmp_path: Path, flusher_mode: str) -> None:
    """Producers killed while spilling lose only their last call; flushers killed while
    committing spill files lose and repeat nothing."""
    db = tmp_path / "app.db"
    opts = {"ring_size": RING, "block_timeout": 0.2, "exit_timeout": 0.5}
    first = Worker(db, **opts)
    first.flush()
    locker = Locker(db)
    finished = [Worker(db, **opts) for _ in range(2)]
    killed = [Worker(db, **opts) for _ in range(2)]
    for k, w in enumerate(finished):
        w.log(f"done{k}", 0, 4000)
    for k, w in enumerate(killed):
        w.log(f"killed{k}", 0, 1_000_000)
    for w in finished:
        w.expect("logged")
    time.sleep(1.0)
    for w in killed:
        w.kill()  # SIGKILL, in the middle of spilling
    for w in finished:
        w.send("exit")  # shutdown cannot commit (locked): the files stay for the next flusher
        w.proc.wait(60)
    first.kill()
    assert len(_spill.spill_files(str(db))) >= 3
    locker.release()
    # Flushers SIGKILLed at random while they commit the spill files.
    rng = random.Random(7)
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", FLUSHER, str(db)], stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    last = subprocess.run(
        [sys.executable, "-c", FLUSHER.replace("time.sleep(60)", ""), str(db)],
        capture_output=True, text=True, timeout=300,
    )
    assert last.returncode == 0, last.stderr
    counts = stored(db)
    assert max(counts.values()) == 1, [m for m, c in counts.items() if c > 1][:5]
    for k in range(2):  # every call returned: every record there
        assert {m for m in counts if m.startswith(f"done{k}-")} == {f"done{k}-{i}" for i in range(4000)}
    for k in range(2):  # killed mid-call: a prefix of its calls, with no gap
        got = sorted(int(m.rsplit("-", 1)[1]) for m in counts if m.startswith(f"killed{k}-"))
        assert got and got == list(range(len(got)))
    assert _spill.spill_files(str(db)) == []


SPILL_CORPUS = textwrap.dedent(
    """
    import json, logging, os, sys
    from pathlib import Path
    import janus_utils as ju
    import secret_corpus
    db, workdir = sys.argv[1], sys.argv[2]
    ju.configure(db, console=False, capture_stdlib=True, ring_size=65536, block_timeout=0.05)
    ju.flush()
    print("ready", flush=True)
    sys.stdin.readline()  # the database is locked now
    log, std = ju.get_logger("corpus"), logging.getLogger("legacy.std")
    for case in secret_corpus.CASES:
        for _ in range(20):  # enough to fill the ring: most land in the spill file
            secret_corpus.log_case(case, log, std, Path(workdir))
    print(json.dumps(ju.stats()["spilled"]), flush=True)
    sys.stdin.readline()
    """
)


@pytest.mark.parametrize("path", ["c", "python"])
def test_spilled_records_are_redacted_as_the_ring_holds_them(tmp_path: Path, path: str) -> None:
    """The secret corpus logged while the ring is full: no credential lands in a spill file."""
    import secret_corpus

    db = tmp_path / "corpus.db"
    workdir = tmp_path / "src"
    workdir.mkdir()
    script = SPILL_CORPUS
    env = {k: v for k, v in os.environ.items() if k != "JANUS_UTILS_NO_SPEEDUPS"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    if path == "python":
        env["JANUS_UTILS_NO_SPEEDUPS"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(db), str(workdir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        locker = Locker(db)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        spilled = json.loads(proc.stdout.readline())
        spill_bytes = b"".join(
            (Path(str(db) + "-spill") / name).read_bytes() for name in _spill.spill_files(str(db))
        )
        locker.release()
        proc.stdin.write("done\n")
        proc.stdin.flush()
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert spilled > len(secret_corpus.CASES) * 10  # most records went through the spill file
    leaked = [
        case.id for case in secret_corpus.CASES
        if any(needle.encode() in spill_bytes for needle in case.secrets if not needle.isdigit())
        or any(marshal.dumps(int(n), 2) in spill_bytes or n.encode() in spill_bytes
               for n in case.secrets if n.isdigit())
    ]
    share = 1 - len(leaked) / len(secret_corpus.CASES)
    print(f"\n[{path} path] credential cases kept out of spill files: {share:.1%}; leaked: {leaked}")
    assert share >= 0.97, leaked


def test_spilled_records_are_sealed_and_verify_clean(db: Path) -> None:
    """A sealed database stays verifiable when part of it came through spill files."""
    pytest.importorskip("cryptography")
    from janus_utils import seal

    key = db.parent / "seal.key"
    verify_key = seal.init_key(str(key), period="0.5s")
    ju.configure(db, console=False, ring_size=RING, block_timeout=0.1, seal_key_file=key)
    assert ju.flush(timeout=30)
    locker = Locker(db)
    log = ju.get_logger("sealed")
    for i in range(3000):
        log.info("sealed-%d", i, user_id=str(i % 7))
    assert ju.stats()["spilled"] > 0
    locker.release()
    assert ju.flush(timeout=120)
    ju.shutdown(timeout=30)
    report = seal.verify(db, verify_key)
    assert report.findings == []
    counts = stored(db)
    assert set(counts) == {f"sealed-{i}" for i in range(3000)} and max(counts.values()) == 1
