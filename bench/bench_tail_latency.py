"""The tail of a log call while the flusher commits: p50, p99, p99.9 with 4 threads logging flat out.

Four threads call the logger as fast as they can for ``JANUS_BENCH_TAIL_S``
seconds (default 10; quick 1), timing every fourth call with
``perf_counter_ns`` (the two clock reads, ~100 ns, are in every figure, for
every peer alike).  janus_utils runs with its defaults (8 MiB ring, batches of
2,000), so the flusher commits all along and a full ring makes callers wait:
that wait is part of the tail, as it would be in an application.

Peers, each with the same record: janus_utils with the flusher as a thread
(``janus``) and as a process (``janus_process``, ``configure(flusher="process")``),
and stdlib logging to a FileHandler.  picologging (0.9.3) is left out by
default: with 4 threads calling it flat out its FileHandler deadlocked here
(a thread blocked on the handler's lock while holding the GIL); add it with
``JANUS_BENCH_TAIL_PEERS`` to try again.  ``JANUS_BENCH_TAIL_PEERS``
(comma-separated keys) narrows the list; ``JANUS_BENCH_TAIL_KWARGS`` (JSON)
adds configure() options to both janus peers.

Printed per peer: calls/s, p50, p99, p99.9 in ns and p99/p50; in extra_info too.
"""

from __future__ import annotations

import json
import os
import threading
import time
from array import array
from pathlib import Path
from typing import Any

import pytest

from janus_utils import _ring

from . import _sizes
from ._peers import Janus, Peer, peer
from ._sizes import THREADS, user_ids

SECONDS = float(os.environ.get("JANUS_BENCH_TAIL_S", "1" if _sizes.QUICK else "10"))
EVERY = 4  # time one call in this many
EXTRA = json.loads(os.environ.get("JANUS_BENCH_TAIL_KWARGS", "{}"))
# configure() options of each janus peer: the flusher as a thread, and as a process.
JANUS = {"janus": {}, "janus_process": {"flusher": "process"}}
KEYS = [k for k in os.environ.get("JANUS_BENCH_TAIL_PEERS", "janus,janus_process,stdlib_file").split(",") if k]


def _make(key: str) -> Peer:
    if key in JANUS:
        return Janus(ring_size=_ring.DEFAULT_CAPACITY, **JANUS[key], **EXTRA)
    return peer(key)


def percentile(ordered: list[int], q: float) -> int:
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


def run_tail(one: Peer, seconds: float) -> dict[str, Any]:
    """4 threads log flat out for *seconds*; returns the call count and the timed samples' percentiles."""
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
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    ordered = sorted(x for s in samples for x in s)
    p50 = percentile(ordered, 0.50)
    return {
        "calls": sum(counts),
        "calls_per_s": round(sum(counts) / elapsed),
        "p50_ns": p50,
        "p99_ns": percentile(ordered, 0.99),
        "p999_ns": percentile(ordered, 0.999),
        "max_ns": ordered[-1],
        "p99_over_p50": round(percentile(ordered, 0.99) / p50, 2),
    }


@pytest.mark.benchmark(group="tail-latency")
@pytest.mark.parametrize("key", KEYS)
def test_tail_latency(benchmark: Any, key: str, tmp_path: Path) -> None:
    """The distribution of one call's cost while 4 threads log flat out and the flusher commits."""
    one = _make(key)
    one.open(tmp_path)
    result: dict[str, Any] = {}
    try:
        benchmark.pedantic(lambda: result.update(run_tail(one, SECONDS)), rounds=1, iterations=1)
        one.drain()  # untimed: every record logged is stored
    finally:
        one.close()
    benchmark.extra_info.update({"peer": key, "seconds": SECONDS, "threads": THREADS, **result})
    print(
        f"\ntail {key}: {result['calls']:,} calls, {result['calls_per_s']:,}/s; "
        f"p50 {result['p50_ns']:,} ns, p99 {result['p99_ns']:,} ns, p99.9 {result['p999_ns']:,} ns, "
        f"max {result['max_ns']:,} ns; p99/p50 {result['p99_over_p50']}"
    )
