"""tail -f latency: from a record's commit to the follower seeing it (goal: under 250 ms)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import janus_utils as ju


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[tuple[Path, dict[str, threading.Event]]]:
    db = tmp_path / "tail.db"
    ju.configure(db, console=False)
    ju.get_logger("bench.tail").info("first record")
    assert ju.flush(timeout=30)
    waiting: dict[str, threading.Event] = {}
    stop = threading.Event()

    def follow() -> None:
        with ju.LogStore(db) as store:
            for rec in store.tail(n=1, follow=True):
                event = waiting.get(rec.message)
                if event is not None:
                    event.set()
                if stop.is_set():
                    return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    yield db, waiting
    stop.set()
    ju.get_logger("bench.tail").info("stop")
    ju.flush(timeout=30)
    thread.join(5)
    ju.shutdown()


@pytest.mark.benchmark(group="tail-follow")
def test_tail_follow_latency(benchmark, follower) -> None:  # type: ignore[no-untyped-def]
    """log + flush (the commit) and then wait until tail(follow=True) has yielded the record."""
    _, waiting = follower
    log = ju.get_logger("bench.tail")
    counter = itertools.count()

    def setup():  # type: ignore[no-untyped-def]
        token = f"tail-token-{next(counter)}"
        waiting[token] = threading.Event()
        return (token,), {}

    def commit_and_see(token: str) -> None:
        log.info(token)
        assert ju.flush(timeout=30)
        assert waiting[token].wait(5), "the follower never saw the record"

    benchmark.pedantic(commit_and_see, setup=setup, rounds=20, iterations=1)
