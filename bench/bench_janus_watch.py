"""janus_utils figures to watch, too noisy on a shared 2-core machine to gate at 15%.

Four threads (how the GIL is handed between them varies from run to run:
the median moved by 10-90% between runs here) and the flusher's own speed
(decode, insert, FTS fill, commit: I/O and page cache, ~20% between runs).
Same fixed rounds and idle flusher as bench_janus_self.py.  A looser gate::

    pytest bench/ -k janus_watch --benchmark-compare=bench/baselines/janus_watch.json \\
        --benchmark-compare-fail=median:40%
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from . import _sizes
from ._harness import measure_calls, opened
from ._peers import Janus
from ._sizes import THREADS, user_ids
from .bench_janus_self import IDLE, SETTLE


@pytest.mark.benchmark(group="janus-watch")
def test_janus_watch_producer_4_threads(benchmark: Any, tmp_path: Path) -> None:
    """4 x CALLS INFO calls from four parked threads, flusher idle."""
    with opened(Janus(commit_interval=IDLE), tmp_path) as p:
        measure_calls(benchmark, p, threads=THREADS, rounds=_sizes.SELF_ROUNDS, settle=SETTLE)


@pytest.mark.benchmark(group="janus-watch")
def test_janus_watch_flush(benchmark: Any, tmp_path: Path) -> None:
    """The flusher alone: commit CALLS records already in the ring (decode, insert, FTS)."""
    import janus_utils as ju

    ids = user_ids(_sizes.CALLS)
    with opened(Janus(commit_interval=IDLE), tmp_path) as p:

        def setup() -> None:
            p.drain()
            p.burst(ids)  # the flusher is idle: these wait in the ring

        benchmark.pedantic(p.drain, setup=setup, rounds=_sizes.SELF_ROUNDS)
        stats = ju.stats()
        assert stats["dropped"] == 0 and stats["ring_used"] == 0, stats
        benchmark.extra_info.update({"peer": "janus", "records_per_round": len(ids)})
