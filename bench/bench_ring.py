"""One push of a ~100-byte record from Python, beside an empty native call of the same shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from janus_utils._ring import Ring, noop_call

RECORD = b"2026-11-27T07:20:47Z INFO svc.auth user 42 logged in ip=10.0.0.1 agent=planner-7 rid=r-1"[:100]


@pytest.fixture
def ring(tmp_path: Path) -> Iterator[Ring]:
    # Drop policy and a big ring: the benchmark measures the push, not a wait
    # for a consumer.  The ring is drained whenever it fills.
    with Ring(tmp_path / "bench.ring", 1 << 26, policy="drop") as r:
        yield r


def _draining(ring: Ring, call):  # type: ignore[no-untyped-def]
    def run() -> None:
        if call(RECORD) != 0:
            ring.release(ring.read(1 << 20)[1])

    return run


@pytest.mark.benchmark(group="ring-push")
def test_empty_native_call(benchmark, ring: Ring) -> None:  # type: ignore[no-untyped-def]
    """Floor: jr_noop(ring, data, len) through cffi, same argument shape as a push."""
    benchmark(_draining(ring, noop_call(ring)))


@pytest.mark.benchmark(group="ring-push")
def test_push_100_bytes(benchmark, ring: Ring) -> None:  # type: ignore[no-untyped-def]
    """One jr_push of a 100-byte record through the same kind of wrapper."""
    push = ring.pusher()
    benchmark(_draining(ring, push))


@pytest.mark.benchmark(group="ring-push")
def test_push_method_100_bytes(benchmark, ring: Ring) -> None:  # type: ignore[no-untyped-def]
    """Ring.push, the checked public method."""
    benchmark(_draining(ring, lambda d: 0 if ring.push(d) else 1))
