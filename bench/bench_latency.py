"""The tail: what one log call costs while the flusher is busy committing, p50/p99/p99.9.

Group ``call-latency``.  ``THREADS`` (4) threads log the reference record
flat out for ``JANUS_BENCH_LATENCY_S`` seconds (10), each call timed on its
own with ``time.perf_counter_ns`` around it; the percentiles are over every
call of every thread.  No drain, no pause: janus's flusher commits the whole
time (its ring fills, and then a call waits for room: that wait is part of
the figure), stdlib's handler writes on the caller.

janus setups are configure() keywords, one benchmark each: ``JANUS_SETUPS``
below, plus ``JANUS_BENCH_LATENCY_OPTIONS`` (a JSON object, e.g.
``'{"flusher": "process"}'``) for one more, named ``janus_custom``.
Defaults otherwise (8 MiB ring, on_full="block"), console off.

``extra_info["timer_ns"]`` is the median of an empty timed pair on this
machine: what the figures include besides the call.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from . import _sizes
from ._peers import LOGGER, STDLIB_FORMAT
from ._sizes import AGENT, IP, MESSAGE, THREADS, user_ids

# name -> configure() keywords.  The process flusher adds {"flusher": "process"} here.
JANUS_SETUPS: dict[str, dict[str, Any]] = {"janus": {}}
_custom = os.environ.get("JANUS_BENCH_LATENCY_OPTIONS")
if _custom:
    JANUS_SETUPS["janus_custom"] = json.loads(_custom)

IDS_PER_THREAD = 10_000  # cycled; built before timing

# A thread's timed loop: log each id with the library's own call, append each call's ns.
Loop = Callable[[list[str], array, Callable[[], int]], None]


def _percentile(ordered: array | list[int], q: float) -> int:
    return int(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def _timer_ns() -> int:
    clock = time.perf_counter_ns
    pairs = []
    for _ in range(100_000):
        t0 = clock()
        pairs.append(clock() - t0)
    return int(statistics.median(pairs))


def _run(loops: list[Loop], seconds: float) -> array:
    """Each loop in its own thread, released together, for *seconds*; every call's ns."""
    results: list[array] = [array("Q") for _ in loops]
    start = threading.Barrier(len(loops) + 1)
    deadline = [0.0]

    def worker(n: int) -> None:
        ids = user_ids(IDS_PER_THREAD, start=n * IDS_PER_THREAD)
        samples, clock = results[n], time.perf_counter_ns
        start.wait()
        while time.monotonic() < deadline[0]:
            loops[n](ids, samples, clock)

    threads = [threading.Thread(target=worker, args=(n,), name=f"bench-{n}") for n in range(len(loops))]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + seconds
    start.wait()
    for t in threads:
        t.join()
    every = array("Q")
    for samples in results:
        every.extend(samples)
    return every


def _record(benchmark: Any, key: str, label: str, samples: array, seconds: float, **extra: Any) -> None:
    ordered = sorted(samples)
    benchmark.extra_info.update(
        {
            "peer": key,
            "label": label,
            "threads": THREADS,
            "seconds": seconds,
            "calls": len(ordered),
            "p50_ns": _percentile(ordered, 0.50),
            "p99_ns": _percentile(ordered, 0.99),
            "p999_ns": _percentile(ordered, 0.999),
            "max_ns": int(ordered[-1]) if ordered else 0,
            "timer_ns": _timer_ns(),
            **extra,
        }
    )


def _measure(benchmark: Any, key: str, label: str, loops: list[Loop], **extra: Callable[[], Any]) -> None:
    seconds = _sizes.LATENCY_S
    got: list[array] = []
    benchmark.pedantic(lambda: got.append(_run(loops, seconds)), rounds=1, iterations=1)
    _record(benchmark, key, label, got[-1], seconds, **{k: f() for k, f in extra.items()})


@pytest.mark.benchmark(group="call-latency")
@pytest.mark.parametrize("setup", list(JANUS_SETUPS))
def test_latency_janus(benchmark: Any, setup: str, tmp_path: Path) -> None:
    """4 threads, the reference call, the flusher committing throughout."""
    import janus_utils as ju

    options = JANUS_SETUPS[setup]
    ju.configure(tmp_path / "janus.db", console=False, level="INFO", **options)
    try:
        before = ju.stats()["committed"]
        info = ju.get_logger(LOGGER).info

        def loop(ids: list[str], samples: array, clock: Callable[[], int]) -> None:
            append = samples.append
            for uid in ids:
                t0 = clock()
                info(MESSAGE, uid, user_id=uid, ip=IP, agent_id=AGENT)
                append(clock() - t0)

        options_text = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "defaults"
        _measure(
            benchmark, setup, f"janus_utils ({options_text})", [loop] * THREADS,
            committed_during=lambda: ju.stats()["committed"] - before,
            dropped=lambda: ju.stats()["dropped"],
        )
        assert ju.flush(timeout=600)
    finally:
        ju.shutdown()


@pytest.mark.benchmark(group="call-latency")
def test_latency_stdlib_file(benchmark: Any, tmp_path: Path) -> None:
    """4 threads through one stdlib FileHandler (its lock serialises the writes)."""
    import logging

    handler = logging.FileHandler(tmp_path / "stdlib.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter(STDLIB_FORMAT))
    logger = logging.getLogger(LOGGER)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    info = logger.info

    def loop(ids: list[str], samples: array, clock: Callable[[], int]) -> None:
        append = samples.append
        for uid in ids:
            t0 = clock()
            info(MESSAGE, uid, extra={"user_id": uid, "ip": IP, "agent_id": AGENT})
            append(clock() - t0)

    try:
        _measure(benchmark, "stdlib_file", "stdlib logging → FileHandler", [loop] * THREADS)
    finally:
        logger.removeHandler(handler)
        handler.close()


@pytest.mark.benchmark(group="call-latency")
def test_latency_picologging(benchmark: Any, tmp_path: Path) -> None:
    """4 threads, each its own picologging logger and FileHandler.

    One handler shared by several threads deadlocks (microsoft/picologging#207).
    """
    picologging = pytest.importorskip("picologging")
    handlers, loops = [], []
    for n in range(THREADS):
        handler = picologging.FileHandler(str(tmp_path / f"pico-{n}.log"), encoding="utf-8")
        handler.setFormatter(picologging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger = picologging.getLogger(f"{LOGGER}.t{n}")
        logger.addHandler(handler)
        logger.setLevel(picologging.INFO)
        logger.propagate = False
        handlers.append((logger, handler))
        info = logger.info
        msg = MESSAGE + " user_id=%s ip=%s agent_id=%s"

        def loop(ids: list[str], samples: array, clock: Callable[[], int], info: Any = info) -> None:
            append = samples.append
            for uid in ids:
                t0 = clock()
                info(msg, uid, uid, IP, AGENT)
                append(clock() - t0)

        loops.append(loop)
    try:
        _measure(benchmark, "picologging", "picologging → FileHandler (one per thread)", loops)
    finally:
        for logger, handler in handlers:
            logger.removeHandler(handler)
            handler.close()
