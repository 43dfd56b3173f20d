"""janus_utils against itself: the benchmarks the regression gate compares with a baseline.

Stable on purpose: fixed rounds (``JANUS_BENCH_SELF_ROUNDS``, default 40) so
a run and its baseline measure the same thing, and the flusher held idle
during the rounds (``commit_interval=3600``: it commits when ``flush()`` asks,
between rounds, or when a quarter of the ring fills, which a round never
does), so the caller's path is measured without the flusher's share of the
GIL, the noisiest part of the comparison benchmarks.  Their run-to-run
spread here is under 10%; the noisier figures (4 threads, the flusher's own
speed) are in bench_janus_watch.py.

Gate (see bench/README.md)::

    pytest bench/ -k janus_self --benchmark-compare=bench/baselines/janus_self.json \\
        --benchmark-compare-fail=median:15%
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from . import _sizes
from ._harness import measure_calls, opened
from ._peers import Janus

IDLE = 3600.0  # commit_interval: the flusher waits for flush() (or a quarter-full ring)
SETTLE = 0.02  # after each flush: let the flusher finish what the flush started


@pytest.mark.benchmark(group="janus-self")
def test_janus_self_producer_1_thread(benchmark: Any, tmp_path: Path) -> None:
    """CALLS INFO calls with three fields from one thread, flusher idle."""
    with opened(Janus(commit_interval=IDLE), tmp_path) as p:
        measure_calls(benchmark, p, rounds=_sizes.SELF_ROUNDS, settle=SETTLE)


@pytest.mark.benchmark(group="janus-self")
def test_janus_self_below_level(benchmark: Any, tmp_path: Path) -> None:
    """BELOW_CALLS DEBUG calls on an INFO logger."""
    with opened(Janus(commit_interval=IDLE), tmp_path) as p:
        measure_calls(benchmark, p, below=True, rounds=_sizes.SELF_ROUNDS)
