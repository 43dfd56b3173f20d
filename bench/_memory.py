"""Peak memory of the loggers that buffer, during one burst against a database that is locked at first.

Each logger runs in a fresh process (``python -m bench._memory KIND RECORDS DIR LOCK_S``)
so that peaks do not mix.  The storage is the same for all: a SQLite database
that another process holds an exclusive lock on for the first LOCK_S seconds
of the burst (a backup, a migration, a long writer), then free.

- janus_utils, defaults (8 MiB ring, on_full="block"): the ring fills, the
  caller waits for the flusher, memory stays at the ring's size.
- stdlib QueueHandler -> QueueListener -> the executemany SQLite handler: the
  documented unbounded ``queue.Queue`` keeps every record the sink has not
  taken yet.
- loguru ``enqueue=True`` -> a sink doing the same executemany.

One thread logs RECORDS records; at the end of the burst the process reports
its peak RSS (``VmHWM``, which counts the ring's mapped pages it touched), its
RSS just before the burst, and the burst's duration, then exits without
draining.  ``measure_all`` runs the three and returns those figures.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import queue
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _sizes
from ._peers import PLAIN_INSERT, BatchSQLiteHandler, connect_plain
from ._sizes import AGENT, IP, MESSAGE

__all__ = ["KINDS", "measure", "measure_all"]

KINDS = {
    "janus": "janus_utils (8 MiB ring, block)",
    "stdlib_queue": "stdlib QueueHandler → QueueListener → SQLite executemany",
    "loguru_enqueue": "loguru enqueue=True → SQLite executemany sink",
}

_LOCKER = """
import sys, time, apsw
db = apsw.Connection(sys.argv[1])
db.setbusytimeout(10_000)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
db.close()
"""


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class _SQLiteSink:
    """loguru sink: buffer rows, executemany them per 1,000 (as BatchSQLiteHandler does)."""

    def __init__(self, path: Path) -> None:
        self.db = connect_plain(path, autocommit=False)
        self.rows: list[tuple[Any, ...]] = []

    def __call__(self, message: Any) -> None:
        record = message.record
        self.rows.append(
            (record["time"].timestamp(), record["level"].no, record["name"], record["message"],
             json.dumps(record["extra"], default=str))
        )
        if len(self.rows) >= 1000:
            rows, self.rows = self.rows, []
            with self.db:
                self.db.executemany(PLAIN_INSERT, rows)


def _child(kind: str, records: int, directory: Path, lock_s: float) -> dict[str, Any]:
    """Run in the fresh process: set up *kind*, lock its database, burst, report."""
    ids = [f"u{n:07d}" for n in range(10_000)]  # cycled: a list of RECORDS ids would be the peak
    extra: dict[str, Any] = {}
    if kind == "janus":
        import janus_utils as ju

        db_path = directory / "janus.db"
        ju.configure(db_path, console=False, level="INFO")  # defaults: 8 MiB ring, block
        log = ju.get_logger("svc.auth")

        def burst() -> None:
            info = log.info
            for n in range(records):
                uid = ids[n % 10_000]
                info(MESSAGE, uid, user_id=uid, ip=IP, agent_id=AGENT)

    elif kind == "stdlib_queue":
        db_path = directory / "queue.db"
        q: queue.Queue[Any] = queue.Queue()
        sink = BatchSQLiteHandler(db_path)
        listener = logging.handlers.QueueListener(q, sink)
        listener.start()
        logger = logging.getLogger("svc.auth")
        logger.handlers[:] = [logging.handlers.QueueHandler(q)]
        logger.setLevel(logging.INFO)
        logger.propagate = False

        def burst() -> None:
            info = logger.info
            for n in range(records):
                uid = ids[n % 10_000]
                info(MESSAGE, uid, extra={"user_id": uid, "ip": IP, "agent_id": AGENT})
            extra["queued_at_end"] = q.qsize()

    elif kind == "loguru_enqueue":
        from loguru import logger as loguru

        db_path = directory / "loguru.db"
        loguru.remove()
        loguru.add(_SQLiteSink(db_path), level="INFO", enqueue=True)
        msg = MESSAGE.replace("%s", "{}")

        def burst() -> None:
            info = loguru.info
            for n in range(records):
                uid = ids[n % 10_000]
                info(msg, uid, user_id=uid, ip=IP, agent_id=AGENT)

    else:
        raise SystemExit(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")

    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(db_path), str(lock_s)], stdout=subprocess.PIPE, text=True
    )
    assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    burst()
    seconds = time.perf_counter() - started
    peak = _status_kib("VmHWM")
    if kind == "janus":
        import janus_utils as ju

        extra["dropped"] = ju.stats()["dropped"]
        extra["ring_mib"] = ju.stats()["ring_capacity"] / 2**20
    locker.wait()
    return {
        "kind": kind,
        "label": KINDS[kind],
        "records": records,
        "lock_s": lock_s,
        "burst_s": round(seconds, 2),
        "rss_before_mib": round(before / 1024, 1),
        "peak_rss_mib": round(peak / 1024, 1),
        "growth_mib": round((peak - before) / 1024, 1),
        **extra,
    }


def measure(kind: str, records: int | None = None, lock_s: float | None = None) -> dict[str, Any]:
    """Run one logger's burst in a fresh process and return its figures."""
    if records is None:
        records = _sizes.MEMORY_LOGURU_RECORDS if kind == "loguru_enqueue" else _sizes.MEMORY_RECORDS
    lock_s = _sizes.MEMORY_LOCK_S if lock_s is None else lock_s
    with tempfile.TemporaryDirectory(prefix="janus-bench-mem-") as directory:
        done = subprocess.run(
            [sys.executable, "-m", "bench._memory", kind, str(records), directory, str(lock_s)],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"memory burst {kind} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_all(records: int | None = None, lock_s: float | None = None) -> list[dict[str, Any]]:
    return [measure(kind, records, lock_s) for kind in KINDS]


if __name__ == "__main__":
    kind, count, where, lock = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(_child(kind, count, where, lock)), flush=True)
    os._exit(0)  # report the burst, not the drain: leave what is queued unwritten
