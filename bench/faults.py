"""The fault campaign: real processes, real signals, real files; every record counted.

    python -m bench.faults            # the full campaign (a few minutes)
    python -m bench.faults --quick    # a smaller run of every scenario
    python -m bench.faults --only sigstop,lock

Each scenario starts producer processes that log unique tokens (``<name>-<i>``)
and note, in shared memory, the last ``i`` whose log call returned.  A fault is
injected while they run; afterwards the campaign commits what is left in the
ring (``configure()`` does that), reads every row (and every archive, where
retention ran) and counts, per producer: records whose call returned but that
are missing (lost), records stored more than once (duplicated), and whether the
scenario finished before its watchdog (hang).  It also keeps what ``stats()``
and stderr said about the fault.

The regression tests in ``tests/`` check each fault once, quickly; this module
repeats them at the scale the README's guarantees section quotes.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

FORK = multiprocessing.get_context("fork")


@dataclass
class Outcome:
    scenario: str
    faults: int = 0
    returned: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    hang: bool = False
    reported: str = ""
    integrity: str = ""
    notes: list[str] = field(default_factory=list)


# --- producers --------------------------------------------------------------


def _producer(
    db: str, name: str, progress: Any, ready: Any, stop: Any, options: dict[str, Any], pause: float = 0.0
) -> None:
    import janus_utils as ju

    ju.configure(db, console=False, **options)
    ready.set()
    log = ju.get_logger("fault")
    i = 0
    while not stop.is_set():
        log.info("%s-%d", name, i)
        progress.value = i  # only after the call returned
        i += 1
        if pause and i % 100 == 0:
            time.sleep(pause)
    ju.flush(timeout=30)
    ju.shutdown()


class StopFlag:
    """The producers' stop signal, read without a lock.

    A multiprocessing.Event takes a lock shared by every process in is_set():
    a producer SIGKILLed while holding it leaves the others waiting for ever.
    """

    def __init__(self) -> None:
        self._flag = FORK.Value("b", 0, lock=False)

    def set(self) -> None:
        self._flag.value = 1

    def is_set(self) -> bool:
        return bool(self._flag.value)


class Producer:
    """One producer process and its shared progress counter."""

    def __init__(
        self, db: str, name: str, stop: Any, options: dict[str, Any] | None = None, pause: float = 0.0
    ) -> None:
        self.name = name
        self.progress = FORK.Value("q", -1, lock=False)
        self.ready = FORK.Event()
        self.proc = FORK.Process(
            target=_producer,
            args=(db, name, self.progress, self.ready, stop, options or {}, pause),
            daemon=True,
        )
        self.proc.start()
        if not self.ready.wait(60):
            raise RuntimeError(f"producer {name} did not configure")

    @property
    def returned(self) -> int:
        return self.progress.value + 1


# --- counting ---------------------------------------------------------------


def stored_messages(db: Path, archive_dir: Path | None = None, copies: Counter[str] | None = None) -> Counter[str]:
    """Every stored record, counted by distinct id, from the database and any archives.

    A record whose id is both in an archive and still in the database (or in
    two archives) is one record: retention writes an archive before it deletes
    the rows, so a flusher killed in between archives them again on its next
    prune.  Such extra copies are counted in *copies*, not as duplicates; a
    duplicate is the same token stored under two ids.
    """
    ids: dict[str, set[int]] = {}
    extra = 0

    def add(message: str, row_id: int) -> None:
        nonlocal extra
        got = ids.setdefault(message, set())
        if row_id in got:
            extra += 1
        got.add(row_id)

    if db.exists():
        conn = apsw.Connection(f"file:{db}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
        try:
            for message, row_id in conn.execute("SELECT message, id FROM logs"):
                add(message, row_id)
        finally:
            conn.close()
    if archive_dir is not None and archive_dir.exists():
        for path in sorted(archive_dir.glob("*.ndjson.gz")):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    record = json.loads(line)
                    add(record["message"], record["id"])
    if copies is not None:
        copies["archived again"] += extra
    return Counter({message: len(got) for message, got in ids.items()})


def integrity(db: Path) -> str:
    if not db.exists():
        return "missing"
    conn = apsw.Connection(str(db))
    try:
        return ";".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def settle(db: Path) -> dict[str, Any]:
    """Commit what processes left in the ring, as the next application start would."""
    import janus_utils as ju

    ju.configure(db, console=False)
    try:
        ju.flush(timeout=60)
        return ju.stats()
    finally:
        ju.shutdown()


def count(out: Outcome, seen: Counter[str], producers: list[Producer], *, after: dict[str, int] | None = None) -> None:
    """Lost and duplicated per producer: a call that returned must be stored exactly once.

    *after* limits the check to tokens above a per-producer index (records the
    fault itself destroyed, such as a deleted database, are not counted lost).
    """
    for p in producers:
        first = (after or {}).get(p.name, -1) + 1
        for i in range(first, p.returned):
            n = seen.get(f"{p.name}-{i}", 0)
            out.returned += 1
            out.stored += min(n, 1)
            out.lost += n == 0
            out.duplicated += max(n - 1, 0)
        # The call in flight at a kill may or may not be stored; never twice.
        out.duplicated += max(seen.get(f"{p.name}-{p.returned}", 0) - 1, 0)


def stop_all(stop: Any, producers: list[Producer], timeout: float = 60) -> bool:
    stop.set()
    ok = True
    for p in producers:
        p.proc.join(timeout)
        if p.proc.is_alive():
            ok = False
            p.proc.kill()
            p.proc.join()
    return ok


# --- scenarios ----------------------------------------------------------------


def sigkill_storm(work: Path, scale: float) -> Outcome:
    """Producers (the flusher's process among them) SIGKILLed at random, retention on."""
    out = Outcome("SIGKILL storm, retention on (max_rows, archived)")
    db, archive = work / "app.db", work / "archive"
    options = {"retention": {"max_rows": 20_000}, "archive_dir": str(archive)}
    stop = StopFlag()
    live = [Producer(str(db), f"k{n}", stop, options) for n in range(3)]
    everyone = list(live)
    kills = max(int(40 * scale), 5)
    rng = random.Random(7)
    for k in range(kills):
        time.sleep(rng.uniform(0.1, 0.4))
        victim = live.pop(rng.randrange(len(live)))
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.join()
        out.faults += 1
        fresh = Producer(str(db), f"k{3 + k}", stop, options)
        live.append(fresh)
        everyone.append(fresh)
    out.hang = not stop_all(stop, live)
    s = settle(db)
    out.reported = f"torn={s['torn']}"
    copies: Counter[str] = Counter()
    count(out, stored_messages(db, archive, copies), everyone)
    out.notes.append(f"records archived twice (same id; a kill between archive and delete): {copies['archived again']}")
    out.integrity = integrity(db)
    return out


def lock_deleted(work: Path, scale: float) -> Outcome:
    """The flusher's lock file deleted again and again while processes log."""
    out = Outcome("flusher lock file deleted")
    db = work / "app.db"
    stop = StopFlag()
    producers = [Producer(str(db), f"l{n}", stop) for n in range(3)]
    for _ in range(max(int(25 * scale), 5)):
        time.sleep(0.2)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{db}-flusher.lock")
            out.faults += 1
    out.hang = not stop_all(stop, producers)
    settle(db)
    count(out, stored_messages(db), producers)
    out.integrity = integrity(db)
    return out


def sigstop_flusher(work: Path, scale: float, pause: float = 0.0) -> Outcome:
    """The flusher's process stopped (SIGSTOP) for 15 s, then continued."""
    out = Outcome("flusher SIGSTOPped 15 s" + (f", producers pausing {pause * 1000:g} ms per 100" if pause else ""))
    db = work / "app.db"
    stop = StopFlag()
    first = Producer(str(db), "s0", stop, pause=pause)  # configured first: the flusher
    others = [Producer(str(db), f"s{n}", stop, pause=pause) for n in (1, 2)]
    time.sleep(0.5)
    marks = {p.name: p.returned for p in others}
    os.kill(first.proc.pid, signal.SIGSTOP)
    out.faults += 1
    time.sleep(15 * max(scale, 0.4))
    progressed = {p.name: p.returned - marks[p.name] for p in others}
    os.kill(first.proc.pid, signal.SIGCONT)
    time.sleep(1)
    out.hang = not stop_all(stop, [first, *others])
    settle(db)
    count(out, stored_messages(db), [first, *others])
    out.notes.append(f"calls returned in the other processes while it was stopped: {progressed}")
    out.integrity = integrity(db)
    return out


def db_deleted_and_replaced(work: Path, scale: float) -> Outcome:
    """The database unlinked under the flusher, later a backup moved over it."""
    out = Outcome("database deleted, then a backup moved over it")
    db = work / "app.db"
    stop = StopFlag()
    producers = [Producer(str(db), f"d{n}", stop) for n in range(2)]
    time.sleep(1)
    backup = work / "backup.db"
    src = apsw.Connection(str(db))
    dst = apsw.Connection(str(backup))
    with dst.backup("main", src, "main") as b:
        b.step()
    src.close()
    dst.close()
    os.unlink(db)
    out.faults += 1
    time.sleep(2)  # the flusher should notice and start a fresh file at the path
    after_unlink = {p.name: p.returned for p in producers}
    time.sleep(1)
    os.chmod(backup, 0o600)
    os.replace(backup, db)  # the old -wal and -shm stay beside it
    out.faults += 1
    time.sleep(2)
    after_restore = {p.name: p.returned for p in producers}
    out.hang = not stop_all(stop, producers)
    s = settle(db)
    out.reported = (s.get("last_error") or "")[:80]
    # Records committed into the deleted file, and into the fresh file the
    # backup replaced, went with those files: count only what came later.
    count(out, stored_messages(db), producers, after=after_restore)
    out.notes.append(f"counted from index {after_restore} (unlink at {after_unlink})")
    out.integrity = integrity(db)
    return out


def stdlib_readers(work: Path, scale: float) -> Outcome:
    """Python's sqlite3 opening the log database in the logging process."""
    import janus_utils as ju

    out = Outcome("stdlib sqlite3 readers in the same process")
    db = work / "app.db"
    ju.configure(db, console=False)
    refused: Counter[str] = Counter()
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                conn.execute("SELECT count(*) FROM logs").fetchall()
                conn.close()
                refused["opened"] += 1
            except Exception as err:
                refused[type(err).__name__] += 1

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    n = int(300_000 * scale)
    log = ju.get_logger("fault")
    for i in range(n):
        log.info("r0-%d", i)
    done.set()
    for t in threads:
        t.join()
    out.hang = not ju.flush(timeout=120)
    out.reported = (ju.stats().get("last_error") or "")[:80]
    ju.shutdown()
    out.faults = sum(refused.values())
    seen = stored_messages(db)
    for i in range(n):
        c = seen.get(f"r0-{i}", 0)
        out.returned += 1
        out.stored += min(c, 1)
        out.lost += c == 0
        out.duplicated += max(c - 1, 0)
    out.notes.append(f"sqlite3.connect outcomes: {dict(refused)}")
    out.integrity = integrity(db)
    return out


def disk_full(work: Path, scale: float) -> Outcome:
    """An 8 MiB filesystem filled up under the flusher, then 2 MiB freed."""
    out = Outcome("disk full, then space freed")
    mnt = work / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)]).returncode:
        out.notes.append("skipped: mounting a tmpfs is not permitted here")
        return out
    try:
        db = mnt / "app.db"
        stop = StopFlag()
        producers = [Producer(str(db), f"f{n}", stop, {"ring_size": 1 << 20, "on_full": "block"}) for n in range(1)]
        ballast = mnt / "ballast"
        with open(ballast, "wb") as fh:
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
        out.faults += 1
        time.sleep(3 * max(scale, 0.5))
        os.truncate(ballast, max(os.path.getsize(ballast) - 2 * 1024 * 1024, 0))
        time.sleep(3 * max(scale, 0.5))
        out.hang = not stop_all(stop, producers, timeout=120)
        ballast.unlink()
        s = settle(db)
        out.reported = f"dropped={s['dropped']}"
        count(out, stored_messages(db), producers)
        out.integrity = integrity(db)
    finally:
        subprocess.run(["umount", "-l", str(mnt)])
    return out


def sigstop_producers(work: Path, scale: float) -> Outcome:
    """Producer processes stopped (SIGSTOP) at random, some past the 1 s torn timeout."""
    out = Outcome("producers SIGSTOPped at random (0.01-2.5 s)")
    db = work / "app.db"
    stop = StopFlag()
    producers = [Producer(str(db), f"p{n}", stop, {"block_timeout": None}) for n in range(4)]
    rng = random.Random(18)
    for _ in range(max(int(40 * scale), 5)):
        victim = rng.choice(producers)
        os.kill(victim.proc.pid, signal.SIGSTOP)
        out.faults += 1
        time.sleep(rng.choice([0.01, 0.1, 0.5, 1.5, 2.5]))
        os.kill(victim.proc.pid, signal.SIGCONT)
        time.sleep(rng.uniform(0, 0.2))
    out.hang = not stop_all(stop, producers)
    s = settle(db)
    out.reported = f"torn={s['torn']} dropped={s['dropped']}"
    count(out, stored_messages(db), producers)
    out.integrity = integrity(db)
    return out


def zombie_producer(work: Path, scale: float) -> Outcome:
    """Producers that reserved a record and exited unreaped (zombies), while others log."""
    import janus_utils as ju
    from janus_utils import logger as jlog

    out = Outcome("zombie producers, each dead mid-push")
    db = work / "app.db"
    ju.configure(db, console=False)
    log = ju.get_logger("fault")
    zombies = []
    n = 0
    for _ in range(max(int(20 * scale), 3)):
        pid = os.fork()
        if pid == 0:  # the zombie-to-be: reserve a record, never finish it, exit
            try:
                jlog._flusher.ring._debug_reserve_only(64)  # type: ignore[union-attr]
            finally:
                os._exit(0)
        zombies.append(pid)
        out.faults += 1
        while True:  # exited, not reaped: its reservation is in the ring
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.005)
        for _ in range(1000):
            log.info("z0-%d", n)
            n += 1
    out.hang = not ju.flush(timeout=120)  # a zombie's record used to stall it for ever
    out.reported = f"torn={ju.stats()['torn']}"
    ju.shutdown()
    for pid in zombies:
        os.waitpid(pid, 0)
    seen = stored_messages(db)
    for i in range(n):
        c = seen.get(f"z0-{i}", 0)
        out.returned += 1
        out.stored += min(c, 1)
        out.lost += c == 0
        out.duplicated += max(c - 1, 0)
    out.integrity = integrity(db)
    return out


SCENARIOS: dict[str, Callable[[Path, float], Outcome]] = {
    "kill": sigkill_storm,
    "lock": lock_deleted,
    "sigstop": sigstop_flusher,
    # Between commits, not inside one: the stop a takeover can answer.
    "sigstop-paced": lambda work, scale: sigstop_flusher(work, scale, pause=0.01),
    "replace": db_deleted_and_replaced,
    "stdlib": stdlib_readers,
    "diskfull": disk_full,
    "stopproducers": sigstop_producers,
    "zombie": zombie_producer,
}


def run(name: str, scale: float, watchdog: float) -> Outcome:
    """One scenario in its own process, so a hang or a crash cannot take the campaign down."""
    parent, child = multiprocessing.Pipe()

    def target() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                child.send(SCENARIOS[name](Path(tmp), scale))
            except Exception as err:  # reported as a failed scenario
                child.send(Outcome(name, notes=[f"error: {type(err).__name__}: {err}"]))

    proc = FORK.Process(target=target)
    proc.start()
    if parent.poll(watchdog):
        result: Outcome = parent.recv()
    else:
        result = Outcome(name, hang=True, notes=[f"no result within {watchdog:.0f} s"])
    proc.join(10)
    if proc.is_alive():
        proc.kill()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller run of every scenario")
    ap.add_argument("--only", default="", help="comma-separated: " + ",".join(SCENARIOS))
    args = ap.parse_args(argv)
    scale = 0.25 if args.quick else 1.0
    names = [n for n in (args.only.split(",") if args.only else SCENARIOS) if n]
    print(f"python {sys.version.split()[0]}, sqlite {apsw.sqlite_lib_version()}, apsw {apsw.apsw_version()}")
    print("| scenario | faults | calls returned | stored | lost | duplicated | hang | integrity | reported |")
    print("|---|---|---|---|---|---|---|---|---|")
    bad = False
    for name in names:
        o = run(name, scale, watchdog=600)
        print(
            f"| {o.scenario} | {o.faults} | {o.returned:,} | {o.stored:,} | {o.lost} | {o.duplicated} | "
            f"{'yes' if o.hang else 'no'} | {o.integrity} | {o.reported} |",
            flush=True,
        )
        for note in o.notes:
            print(f"  - {note}", flush=True)
        bad |= bool(o.lost or o.duplicated or o.hang or (o.integrity not in ("ok", "")))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
