"""Producer cost: what one log call costs the calling thread, for every peer.

Each round is ``CALLS`` calls (``JANUS_BENCH_CALLS``, default 10,000) of the
same INFO record with three fields; the per-call cost is the round's median
divided by ``extra_info["calls_per_round"]``.  Between rounds each peer is
drained untimed, so a round never waits on an earlier round's backlog, while
the peer's own background thread (janus's flusher, QueueListener, loguru's
enqueue worker) still competes for the GIL during the round, as it would in an
application.  janus runs with a 64 MiB ring so that no round fills it.

The 4-thread variant starts the threads before timing and parks them on a
barrier; a round is from their release until the last one ends, and the
per-call cost is that wall time over 4 x CALLS.

``below-level-paired``: janus and picologging open side by side, a round of
BELOW_CALLS calls below the level of each in turn (the order alternating),
``JANUS_BENCH_BELOW_PAIRS`` pairs (default 21; quick 3).  This VM runs the same
instructions at two speeds that change over seconds (a call below the level
took 24 ns in one state and 48 ns in the other): two peers timed one after the
other can land in different states, two rounds side by side share one.  The
goal reads the median of the per-pair ratios.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from . import _sizes
from ._harness import measure_calls, opened
from ._peers import PEERS, peer
from ._sizes import THREADS, user_ids

BELOW_PAIRS = _sizes._int("JANUS_BENCH_BELOW_PAIRS", 21, 3)

BELOW_PEERS = [key for key, make in PEERS.items() if make().has_below]
# picologging 0.9 deadlocks within a few calls when two threads log through
# one handler (microsoft/picologging#207, open): no 4-thread figure for it.
PICO_DEADLOCK = "picologging deadlocks with several logging threads (microsoft/picologging#207)"
THREADED_PEERS = [
    pytest.param(key, marks=pytest.mark.skip(reason=PICO_DEADLOCK)) if key == "picologging" else key
    for key in PEERS
]


@pytest.mark.benchmark(group="producer-1-thread")
@pytest.mark.parametrize("key", list(PEERS))
def test_producer_1_thread(benchmark: Any, key: str, tmp_path: Path) -> None:
    """One thread logs CALLS records per round; the round's time over CALLS is one call."""
    with opened(peer(key), tmp_path) as p:
        measure_calls(benchmark, p)


@pytest.mark.benchmark(group="producer-4-threads")
@pytest.mark.parametrize("key", THREADED_PEERS)
def test_producer_4_threads(benchmark: Any, key: str, tmp_path: Path) -> None:
    """Four parked threads each log CALLS records; the wall time over 4 x CALLS is one call."""
    with opened(peer(key), tmp_path) as p:
        measure_calls(benchmark, p, threads=THREADS)


@pytest.mark.benchmark(group="below-level")
@pytest.mark.parametrize("key", BELOW_PEERS)
def test_below_level(benchmark: Any, key: str, tmp_path: Path) -> None:
    """A DEBUG call on an INFO logger: the cost of a call that records nothing."""
    with opened(peer(key), tmp_path) as p:
        measure_calls(benchmark, p, below=True)


@pytest.mark.benchmark(group="below-level-paired")
def test_below_level_paired(benchmark: Any, tmp_path: Path) -> None:
    """janus and picologging below the level in turn, BELOW_PAIRS times: the median of the per-pair ratios."""
    pytest.importorskip("picologging")
    ids = user_ids(_sizes.BELOW_CALLS)
    (tmp_path / "janus").mkdir()
    (tmp_path / "picologging").mkdir()
    with opened(peer("janus"), tmp_path / "janus") as janus, opened(peer("picologging"), tmp_path / "picologging") as pico:
        below = {"janus": janus.below, "picologging": pico.below}
        for run in below.values():
            run(ids)  # warm up, untimed
        ns: dict[str, list[float]] = {"janus": [], "picologging": []}
        ratios: list[float] = []

        def one_pair() -> None:
            order = ["janus", "picologging"] if len(ratios) % 2 == 0 else ["picologging", "janus"]
            took = {}
            for key in order:
                started = time.perf_counter_ns()
                below[key](ids)
                took[key] = (time.perf_counter_ns() - started) / len(ids)
                ns[key].append(took[key])
            ratios.append(took["picologging"] / took["janus"])

        benchmark.pedantic(one_pair, rounds=1 if benchmark.disabled else BELOW_PAIRS)
    benchmark.extra_info.update(
        {
            "calls_per_round": len(ids),
            "pairs": len(ratios),
            "ratios": [round(r, 3) for r in ratios],
            "median_ratio": round(statistics.median(ratios), 3),
            "median_ns": {key: round(statistics.median(v), 1) for key, v in ns.items()},
        }
    )
    print(
        f"\nbelow the level, {len(ratios)} pairs of {len(ids):,} calls: janus {statistics.median(ns['janus']):.1f} ns, "
        f"picologging {statistics.median(ns['picologging']):.1f} ns (medians); picologging ÷ janus per pair: median "
        f"{statistics.median(ratios):.2f} (lowest {min(ratios):.2f})"
    )
