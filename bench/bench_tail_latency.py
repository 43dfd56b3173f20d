"""The tail of a log call while the flusher commits: p50, p99, p99.9 with 4 threads logging flat out.

Four threads call the logger as fast as they can for ``JANUS_BENCH_TAIL_S``
seconds (default 10; quick 1), timing every fourth call with
``perf_counter_ns`` (the two clock reads, ~100 ns, are in every figure, for
every peer alike).  janus_utils runs with its defaults (8 MiB ring, batches of
2,000), so the flusher commits all along and a full ring makes callers wait:
that wait is part of the tail, as it would be in an application.

That window runs ``JANUS_BENCH_TAIL_WINDOWS`` times in a row on the same open
logger (default 3; quick 1).  The figures (p50, p99, p99.9, p99/p50) are of
the pooled samples of every window, and each window's p99/p50 is printed and
kept beside them: on a shared 2-core machine one 10-second window's p99/p50
moved 2x from run to run, and a single window can neither show that nor
average it out.  Nothing is dropped from the pool: a window that ran while
the machine was busy counts with the others.

For janus peers each window also reports how its calls met a full ring, from
the ring's shared counters (``stats()``'s ``ring_full_waits`` and the like):
``full_waits`` (pushes that found no room and waited for the flusher),
``full_wait_ms`` (their summed wait) and ``full_wait_max_ms`` (the longest
since the ring file was created), so that a tail made of waits on a full ring
can be told from one made of slow calls that never waited.  Each window also
keeps the machine's 1-minute load average at its end (``load_1min``).

Peers, each with the same record: janus_utils with the flusher as a thread
(``janus``) and as a process (``janus_process``, ``configure(flusher="process")``),
and stdlib logging to a FileHandler.  picologging (0.9.3) is left out by
default: with 4 threads calling it flat out its FileHandler deadlocked here
(a thread blocked on the handler's lock while holding the GIL); add it with
``JANUS_BENCH_TAIL_PEERS`` to try again.  ``floor`` is no logger at
all: the same loop timing ``marshal.dumps`` of the record, i.e. the spread
that 4 Python threads and this machine give a call with nothing behind it,
printed beside the goal so that a run's tail can be read against the
machine's own in that run.  ``JANUS_BENCH_TAIL_PEERS``
(comma-separated keys) narrows the list; ``JANUS_BENCH_TAIL_KWARGS`` (JSON)
adds configure() options to both janus peers.

Printed per peer: calls/s, p50, p99, p99.9 in ns and p99/p50 of the pool, then
each window's; all in extra_info too (``windows``: one dict per window).
"""

from __future__ import annotations

import json
import marshal
import os
import threading
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from janus_utils import _ring

from . import _sizes
from ._peers import LOGGER, Janus, Peer, peer
from ._sizes import AGENT, IP, MESSAGE, THREADS, user_ids

SECONDS = float(os.environ.get("JANUS_BENCH_TAIL_S", "1" if _sizes.QUICK else "10"))
WINDOWS = int(os.environ.get("JANUS_BENCH_TAIL_WINDOWS", "1" if _sizes.QUICK else "3"))
EVERY = 4  # time one call in this many
EXTRA = json.loads(os.environ.get("JANUS_BENCH_TAIL_KWARGS", "{}"))
# configure() options of each janus peer: the flusher as a thread, and as a process.
JANUS = {"janus": {}, "janus_process": {"flusher": "process"}}
KEYS = [k for k in os.environ.get("JANUS_BENCH_TAIL_PEERS", "janus,janus_process,stdlib_file,floor").split(",") if k]


class Floor(Peer):
    """No logger: ``marshal.dumps`` of the record, timed by the same loop (key ``floor``)."""

    key = "floor"
    label = "no logger: marshal.dumps of the record"

    def open(self, directory: Path) -> None:
        dumps = marshal.dumps

        def burst(ids: Sequence[str]) -> None:
            for uid in ids:
                dumps((20, LOGGER, MESSAGE, (uid,), {"user_id": uid, "ip": IP, "agent_id": AGENT}), 2)

        self.burst = burst


def _make(key: str) -> Peer:
    if key == Floor.key:
        return Floor()
    if key in JANUS:
        return Janus(ring_size=_ring.DEFAULT_CAPACITY, **JANUS[key], **EXTRA)
    return peer(key)


def percentile(ordered: list[int], q: float) -> int:
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


def summary(ordered: list[int]) -> dict[str, Any]:
    """p50, p99, p99.9, max and p99/p50 of sorted samples (ns)."""
    p50 = percentile(ordered, 0.50)
    return {
        "p50_ns": p50,
        "p99_ns": percentile(ordered, 0.99),
        "p999_ns": percentile(ordered, 0.999),
        "max_ns": ordered[-1],
        "p99_over_p50": round(percentile(ordered, 0.99) / p50, 2),
    }


def _waits() -> tuple[int, float, float] | None:
    """janus's ``(ring_full_waits, ring_full_wait_s, ring_full_wait_max_s)`` from ``stats()``, else None."""
    import janus_utils as ju

    s = ju.stats()
    if "ring_full_waits" not in s:  # a janus_utils without these counters
        return None
    return s["ring_full_waits"], s["ring_full_wait_s"], s["ring_full_wait_max_s"]


def run_tail(one: Peer, seconds: float) -> tuple[dict[str, Any], list[int]]:
    """4 threads log flat out for *seconds*; returns the call count, the waits on a full
    ring (janus) and the timed samples' percentiles, and the samples themselves."""
    ids = [user_ids(50_000, start=n * 50_000) for n in range(THREADS)]
    samples = [array("q") for _ in range(THREADS)]
    counts = [0] * THREADS
    stop = threading.Event()
    start = threading.Barrier(THREADS + 1)
    burst = one.burst

    def work(n: int) -> None:
        mine, out, clock = ids[n], samples[n].append, time.perf_counter_ns
        size = len(mine)
        start.wait()
        i = 0
        while not stop.is_set():
            for _ in range(256):
                uid = (mine[i % size],)
                if i % EVERY:
                    burst(uid)
                else:
                    t0 = clock()
                    burst(uid)
                    out(clock() - t0)
                i += 1
        counts[n] = i

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    before = _waits() if isinstance(one, Janus) else None
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    after = _waits() if before is not None else None
    ordered = sorted(x for s in samples for x in s)
    result: dict[str, Any] = {
        "calls": sum(counts),
        "calls_per_s": round(sum(counts) / elapsed),
        **summary(ordered),
        "load_1min": round(os.getloadavg()[0], 2),
    }
    if before is not None and after is not None:
        result.update(
            full_waits=after[0] - before[0],
            full_wait_ms=round((after[1] - before[1]) * 1e3, 1),
            # The longest since the ring file was created, not only this window's.
            full_wait_max_ms=round(after[2] * 1e3, 1),
        )
    return result, ordered


def run_windows(one: Peer, seconds: float, windows: int) -> dict[str, Any]:
    """*windows* runs of ``run_tail`` in a row: the pooled figures, and each window's in ``windows``."""
    pooled: list[int] = []
    each: list[dict[str, Any]] = []
    calls, elapsed = 0, 0.0
    for _ in range(windows):
        result, ordered = run_tail(one, seconds)
        pooled.extend(ordered)
        each.append(result)
        calls += result["calls"]
        elapsed += result["calls"] / max(result["calls_per_s"], 1)
    pooled.sort()
    out: dict[str, Any] = {
        "calls": calls,
        "calls_per_s": round(calls / elapsed) if elapsed else 0,
        **summary(pooled),
        "windows_p99_over_p50": [w["p99_over_p50"] for w in each],
    }
    if "full_waits" in each[0]:
        out["full_waits"] = sum(w["full_waits"] for w in each)
        out["full_wait_ms"] = round(sum(w["full_wait_ms"] for w in each), 1)
        out["full_wait_max_ms"] = each[-1]["full_wait_max_ms"]
    out["windows"] = each
    return out


@pytest.mark.benchmark(group="tail-latency")
@pytest.mark.parametrize("key", KEYS)
def test_tail_latency(benchmark: Any, key: str, tmp_path: Path) -> None:
    """The distribution of one call's cost while 4 threads log flat out and the flusher commits."""
    one = _make(key)
    one.open(tmp_path)
    result: dict[str, Any] = {}
    try:
        benchmark.pedantic(lambda: result.update(run_windows(one, SECONDS, WINDOWS)), rounds=1, iterations=1)
        one.drain()  # untimed: every record logged is stored
    finally:
        one.close()
    benchmark.extra_info.update({"peer": key, "seconds": SECONDS, "threads": THREADS, **result})
    print(
        f"\ntail {key}: {WINDOWS} x {SECONDS:g} s, {result['calls']:,} calls, {result['calls_per_s']:,}/s; "
        f"pooled p50 {result['p50_ns']:,} ns, p99 {result['p99_ns']:,} ns, p99.9 {result['p999_ns']:,} ns, "
        f"max {result['max_ns']:,} ns; p99/p50 {result['p99_over_p50']}"
    )
    for n, w in enumerate(result["windows"], 1):
        waits = (
            f"; {w['full_waits']:,} waits on a full ring, {w['full_wait_ms']:,} ms in all"
            if "full_waits" in w
            else ""
        )
        print(
            f"  window {n}: {w['calls_per_s']:,}/s; p50 {w['p50_ns']:,} ns, p99 {w['p99_ns']:,} ns, "
            f"p99.9 {w['p999_ns']:,} ns; p99/p50 {w['p99_over_p50']}{waits}; load {w['load_1min']}"
        )
