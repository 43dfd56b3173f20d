"""How a producer benchmark runs: rounds of N calls, each round after a drain that is not timed.

pytest-benchmark's pedantic mode takes no ``iterations`` with a ``setup``, so
one round is one burst of ``CALLS`` calls (per thread) and the per-call cost
is the round's time divided by the calls, which ``extra_info["calls_per_round"]``
records.  The setup drains what the previous round left (janus flush, queue
join, file flush) so that no round waits on another's backlog.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import _sizes
from ._peers import Peer, ThreadedBurst
from ._sizes import user_ids

__all__ = ["measure_calls", "opened"]


@contextmanager
def opened(p: Peer, directory: Path) -> Iterator[Peer]:
    p.open(directory)
    try:
        yield p
    finally:
        p.close()


def _calibrated_rounds(setup: Callable[[], Any], target: Callable[..., None]) -> int:
    """Rounds for about ROUND_BUDGET_S seconds, from one untimed round (which also warms up)."""
    made = setup()
    args = made[0] if made else ()
    started = time.perf_counter()
    target(*args)
    one = max(time.perf_counter() - started, 1e-6)
    return max(_sizes.MIN_ROUNDS, min(_sizes.MAX_ROUNDS, int(_sizes.ROUND_BUDGET_S / one)))


def measure_calls(
    benchmark: Any,
    p: Peer,
    *,
    threads: int = 1,
    below: bool = False,
    rounds: int | None = None,
    settle: float = 0.0,
    calls: int | None = None,
) -> None:
    """Benchmark rounds of *calls* (default ``CALLS``) log calls per thread on an opened peer.

    *rounds* None picks them from one untimed round; *settle* sleeps after each
    drain so that background work the drain started ends before the round.
    """
    run = p.below if below else p.burst
    calls = calls or (_sizes.BELOW_CALLS if below else _sizes.CALLS)

    def drain() -> None:
        p.drain()
        if settle:
            time.sleep(settle)

    if threads == 1:
        ids = user_ids(calls)

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            drain()
            return (ids,), {}

        target: Callable[..., None] = run
    else:
        lists = [user_ids(calls, start=n * calls) for n in range(threads)]
        parked: list[ThreadedBurst] = []

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            drain()
            parked[:] = [ThreadedBurst(run, lists)]
            return (), {}

        def target() -> None:
            parked[0].go()

    if rounds is None:
        rounds = 1 if benchmark.disabled else _calibrated_rounds(setup, target)
    benchmark.pedantic(target, setup=setup, rounds=rounds)
    p.drain()
    benchmark.extra_info.update(
        {
            "peer": p.key,
            "label": p.label,
            "threads": threads,
            "calls_per_round": calls * threads,
            "level": "below" if below else "INFO",
        }
    )
