"""Memory under a burst against a locked database: runs bench._memory in quick sizes.

The full-size figures come from ``python -m bench``; this test proves the
script works and checks the one property janus promises: its peak stays
within the ring plus a small constant, however many records arrive.
"""

from __future__ import annotations

import pytest

from ._memory import KINDS, measure

# Interpreter, apsw, the flusher's batch: what janus adds beside its ring.
JANUS_OVERHEAD_MIB = 48


@pytest.mark.parametrize("kind", list(KINDS))
def test_memory_burst(kind: str) -> None:
    """A 50,000-record burst runs in a fresh process and reports its peak RSS."""
    figures = measure(kind, records=50_000, lock_s=0.5)
    assert figures["peak_rss_mib"] > 0
    if kind == "janus":
        assert figures["growth_mib"] <= figures["ring_mib"] + JANUS_OVERHEAD_MIB, figures
