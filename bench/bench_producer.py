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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ._harness import measure_calls, opened
from ._peers import PEERS, peer
from ._sizes import THREADS

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
