"""A process that logs into a janus database on command, for tests of real multi-process faults.

``Worker(db, **configure_options)`` starts ``python -m logging_worker`` (this
file) as a subprocess; it configures janus_utils, answers ``ready <pid>``,
then obeys one command per line:

    log NAME START COUNT PAUSE   log NAME-START ... NAME-(START+COUNT-1),
                                 sleeping PAUSE s after every 100 records
    flush [TIMEOUT]              ju.flush(), without a timeout unless given
    exit                         ju.shutdown() and exit

Each command answers one line.  Its stderr (where janus_utils reports) is
kept in ``Worker.stderr``.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any


def main() -> None:  # pragma: no cover - runs in the worker process
    import time

    import janus_utils as ju

    db, options = sys.argv[1], json.loads(sys.argv[2])
    ju.configure(db, console=False, **options)
    print("ready", os.getpid(), flush=True)
    log = ju.get_logger("worker")
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "log":
            name, start, count, pause = args[0], int(args[1]), int(args[2]), float(args[3])
            for i in range(start, start + count):
                log.info("%s-%d", name, i)
                if pause and i % 100 == 99:
                    time.sleep(pause)
            print("logged", flush=True)
        elif cmd == "flush":
            ok = ju.flush(float(args[0]) if args else None)
            print("flushed", json.dumps(ok), json.dumps(ju.stats()), flush=True)
        elif cmd == "exit":
            break
    stats = ju.stats()
    ju.shutdown()
    print("bye", json.dumps(stats), flush=True)


class Worker:
    """One logging process; see the module docstring."""

    def __init__(self, db: str | Path, **options: Any) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logging_worker", str(db), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines.append), daemon=True).start()
        self.pid = int(self.expect("ready").split()[1])

    @staticmethod
    def _pump(stream: Any, put: Any) -> None:
        for line in stream:
            put(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, word: str, timeout: float = 120.0) -> str:
        """The next line, which must start with *word* (a generous deadline: liveness, not speed)."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"worker {self.proc.pid}: no {word!r} within {timeout} s; stderr:\n{self.stderr}") from None
        assert line.startswith(word), (line, self.stderr)
        return line

    def log(self, name: str, start: int, count: int, pause: float = 0.0) -> None:
        self.send(f"log {name} {start} {count} {pause}")

    def flush(self) -> dict[str, Any]:
        self.send("flush")
        _, ok, stats = self.expect("flushed").split(" ", 2)
        assert json.loads(ok) is True
        return json.loads(stats)  # type: ignore[no-any-return]

    def exit(self) -> dict[str, Any]:
        self.send("exit")
        stats = json.loads(self.expect("bye").split(" ", 1)[1])
        assert 0 == self.proc.wait(60), self.stderr
        return stats  # type: ignore[no-any-return]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _stopped(pid: int) -> bool:
    """Whether every thread of *pid* has stopped: each one stops on its own after SIGSTOP."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:  # a thread that exited meanwhile
            continue
        if state not in ("T", "t"):
            return False
    return True


def sqlite_locks(db: str | Path, pid: int) -> set[int]:
    """The bytes of *db*'s -shm file that *pid* holds exclusively (Linux: /proc/locks).

    SQLite's WAL write lock is byte 120: held through a write transaction (a
    commit, an FTS merge or bitmap turn) and a TRUNCATE checkpoint.  121 is
    the checkpoint lock; 123-127 the readers' marks, held exclusively only
    while one is moved.
    """
    try:
        inode = os.stat(str(db) + "-shm").st_ino
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return set()
    held: set[int] = set()
    for line in lines:
        # "1: POSIX  ADVISORY  WRITE 1234 00:2a:5678 120 121" (a waiter's line has "->")
        parts = line.split()
        if len(parts) >= 8 and parts[1] == "POSIX" and parts[3] == "WRITE" and parts[4] == str(pid) and parts[5].endswith(f":{inode}"):
            last = int(parts[7]) if parts[7] != "EOF" else int(parts[6])
            held.update(range(int(parts[6]), last + 1))
    return held


WRITE_LOCK = 120  # SQLite's WAL write lock, a byte of the -shm file


def stop(pid: int, db: str | Path, *, writing: bool, timeout: float = 60.0) -> None:
    """SIGSTOP *pid* at a moment it holds SQLite's write lock on *db* (*writing*), or at
    one it holds no exclusive lock of the database at all (between its transactions
    and checkpoints).

    A process stopped while it holds the write lock keeps it: nothing can
    commit to the database until it continues, whoever takes over as the
    flusher.  A stop meant to show a takeover must not land there, and one
    meant to show that case must.  A stop that lands elsewhere is undone and
    tried again; *timeout* bounds the tries (liveness, not speed).
    """
    import signal
    import time

    end = time.monotonic() + timeout
    while True:
        os.kill(pid, signal.SIGSTOP)
        while not _stopped(pid):
            assert time.monotonic() < end, f"process {pid} did not stop"
            time.sleep(0.001)
        held = sqlite_locks(db, pid)
        if (WRITE_LOCK in held) if writing else not held:
            return
        os.kill(pid, signal.SIGCONT)
        assert time.monotonic() < end, f"process {pid} was never stopped {'inside' if writing else 'outside'} a write within {timeout} s"
        time.sleep(0.002)  # let it run on to another moment


def stored(db: str | Path, name: str) -> "collections.Counter[int]":
    """How many times each NAME-i record is in the database."""
    import apsw

    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute("SELECT message FROM logs WHERE message LIKE ?", (name + "-%",)).fetchall()
    finally:
        conn.close()
    return collections.Counter(int(m.rsplit("-", 1)[1]) for (m,) in rows if m.rsplit("-", 1)[0] == name)


def assert_exactly_once(db: str | Path, name: str, count: int) -> None:
    """NAME-0 .. NAME-(count-1) each stored once: none lost, none twice."""
    got = stored(db, name)
    duplicated = sum(n - 1 for n in got.values() if n > 1)
    lost = count - len(set(got) & set(range(count)))
    assert (0, 0) == (lost, duplicated), f"{name}: {lost} lost, {duplicated} duplicated"
    assert set(range(count)) == set(got)


if __name__ == "__main__":
    main()


# A second program holding the database: "exclusive" holds BEGIN EXCLUSIVE
# until a line arrives on stdin, then commits and exits.
HOLDER = """
import sys, apsw
db = apsw.Connection(sys.argv[1])
db.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
db.close()
"""


class Holder:
    """Another process that holds an exclusive transaction on a database until released."""

    def __init__(self, db_path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(db_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        assert "held" == self.proc.stdout.readline().strip()

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            assert 0 == self.proc.wait(30)
