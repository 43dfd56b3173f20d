"""Interpreter exit while daemon threads still log flat out: how long it takes.

A child process configures janus_utils (defaults: ``exit_timeout=2.0``),
starts 4 daemon threads that log as fast as they can, and after 1 s returns
from its main module.  A round times from that moment (the child prints
"exiting") until the process has ended: the atexit shutdown, bounded by
exit_timeout, and the interpreter's own teardown.  ``locked``: another
process holds ``BEGIN EXCLUSIVE`` on the database all the while, so nothing
can be committed and the records stay in the ring (stderr says how many).

Rounds: ``JANUS_BENCH_EXIT_ROUNDS`` (default 3; quick 1).  The seconds of the
slowest round are in ``extra_info``.

Run: ``PYTHONPATH=. python -m pytest bench/bench_exit.py -q -p no:cacheprovider``
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import janus_utils as ju

QUICK = os.environ.get("JANUS_BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("JANUS_BENCH_EXIT_ROUNDS", "1" if QUICK else "3"))

CHILD = """
import sys, threading, time
import janus_utils as ju
ju.configure(sys.argv[1], console=False)

def worker(k):
    info = ju.get_logger("daemon").info
    i = 0
    while True:
        info("d%d-%d", k, i)
        i += 1

for k in range(4):
    threading.Thread(target=worker, args=(k,), daemon=True).start()
time.sleep(1.0)
print("exiting", flush=True)
"""

HOLDER = """
import sys, apsw
db = apsw.Connection(sys.argv[1])
db.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
"""


class _Round:
    """A fresh database (and, if locked, a holder) and a child that is about to exit."""

    def __init__(self, root: Path, locked: bool) -> None:
        self.root = root
        self.locked = locked
        self.n = 0
        self.seconds: list[float] = []
        self.stderr = ""
        self.holder: subprocess.Popen[str] | None = None
        self.child: subprocess.Popen[str] | None = None

    def setup(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        self.n += 1
        db = self.root / f"exit-{self.n}.db"
        ju.configure(db, console=False)  # the database exists before it is locked
        ju.shutdown()
        if self.locked:
            self.holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, text=True)
            assert self.holder.stdout is not None and "held" == self.holder.stdout.readline().strip()
        self.child = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        assert self.child.stdout is not None and "exiting" == self.child.stdout.readline().strip()
        return (), {}

    def run(self) -> None:
        assert self.child is not None
        started = time.perf_counter()
        _, self.stderr = self.child.communicate(timeout=120)
        self.seconds.append(time.perf_counter() - started)
        if self.holder is not None:
            assert self.holder.stdin is not None
            self.holder.stdin.write("\n")
            self.holder.stdin.flush()
            self.holder.wait(30)
            self.holder = None


@pytest.mark.benchmark(group="exit")
@pytest.mark.parametrize("locked", [False, True], ids=["free", "locked"])
def test_exit_with_daemon_threads_logging(benchmark: Any, tmp_path: Path, locked: bool) -> None:
    """From the end of the main module to the end of the process, daemon threads logging throughout."""
    one = _Round(tmp_path, locked)
    benchmark.pedantic(one.run, setup=one.setup, rounds=ROUNDS, iterations=1)
    left = [line for line in one.stderr.splitlines() if "not committed yet" in line]
    note = f"slowest {max(one.seconds):.2f} s of {len(one.seconds)}" + (f"; {left[-1][:90]}…" if left else "")
    benchmark.extra_info.update({"seconds": [round(s, 2) for s in one.seconds], "note": note})
    print(f"\nexit ({'locked' if locked else 'free'} database): {note}")
