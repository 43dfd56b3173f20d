"""The secret prefilter's cost on a clean record: the same call with redaction on and off.

Group ``prefilter``.  The one-thread producer call every suite logs (INFO,
``"user %s logged in"``, three fields, no secret in it) through the C encoder,
configured with ``redact=True`` (the encoder runs the prefilter on each
string it has not seen before, and checks int fields for card numbers) and
with ``redact=False`` (it runs nothing).  The difference of the two medians
per call is what the prefilter costs a clean record; issue 18 asks for at
most 0.15 µs.  ``python -m bench`` prints both and the difference.

Fixed rounds (``JANUS_BENCH_PREFILTER_ROUNDS``, 25) of ``JANUS_BENCH_CALLS``
calls (10,000) each, the flusher held idle as in bench_janus_self.py, and the
two setups alternate round by round: before each timed round the other setup
runs one round, timed here too.  ``extra_info["paired_delta"]`` is the median
of the per-round differences (this round less the other setup's round just
before it), which a busy machine disturbs far less than the difference of
two medians taken a minute apart.

``test_prefilter_python`` times the Python rule itself
(``might_contain_secret``) on the same clean message, for the Python path.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from . import _sizes
from ._peers import Janus
from ._sizes import AGENT, IP, MESSAGE, user_ids

IDLE = 3600.0  # commit_interval: the flusher waits for flush()
SETTLE = 0.02


class _Alternating:
    """Two janus setups (redact on, off) in one process, reconfigured between rounds."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.peers = {flag: Janus(commit_interval=IDLE, redact=flag) for flag in (True, False)}
        self.current: bool | None = None

    def use(self, redact: bool) -> Janus:
        if self.current is not redact:
            if self.current is not None:
                self.peers[self.current].close()
            self.peers[redact].open(self.directory / ("on" if redact else "off"))
            self.current = redact
        return self.peers[redact]

    def close(self) -> None:
        if self.current is not None:
            self.peers[self.current].close()
            self.current = None


@pytest.fixture(scope="module")
def alternating(tmp_path_factory: pytest.TempPathFactory) -> Any:
    setups = _Alternating(tmp_path_factory.mktemp("prefilter"))
    for name in ("on", "off"):
        (setups.directory / name).mkdir()
    yield setups
    setups.close()


def _measure(benchmark: Any, setups: _Alternating, redact: bool) -> None:
    ids = user_ids(_sizes.CALLS)
    other_rounds: list[float] = []
    # The other setup's rounds on the clock pytest-benchmark times this one with
    # (--benchmark-timer=time.process_time counts CPU time: steadier on a busy machine).
    clock = getattr(benchmark, "_timer", time.perf_counter)

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        # The other setup's round first: both see the same machine.
        other = setups.use(not redact)
        other.drain()
        time.sleep(SETTLE)
        started = clock()
        other.burst(ids)
        other_rounds.append(clock() - started)
        other.drain()
        peer = setups.use(redact)
        peer.drain()
        time.sleep(SETTLE)
        return (peer,), {}

    def target(peer: Janus) -> None:
        peer.burst(ids)

    rounds = 1 if benchmark.disabled else _sizes.PREFILTER_ROUNDS
    benchmark.pedantic(target, setup=setup, rounds=rounds)
    setups.use(redact).drain()
    info: dict[str, Any] = {"peer": "janus", "label": f"redact={redact}", "calls_per_round": _sizes.CALLS}
    timed = list(benchmark.stats.stats.data) if benchmark.stats else []
    if timed and len(timed) == len(other_rounds):
        deltas = [mine - other for mine, other in zip(timed, other_rounds)]
        info["paired_delta"] = statistics.median(deltas) / _sizes.CALLS
    benchmark.extra_info.update(info)


@pytest.mark.benchmark(group="prefilter")
def test_prefilter_redact_on(benchmark: Any, alternating: _Alternating) -> None:
    """CALLS clean INFO calls with redaction on (the prefilter runs)."""
    _measure(benchmark, alternating, True)


@pytest.mark.benchmark(group="prefilter")
def test_prefilter_redact_off(benchmark: Any, alternating: _Alternating) -> None:
    """The same calls with redaction off (no prefilter)."""
    _measure(benchmark, alternating, False)


@pytest.mark.benchmark(group="prefilter-python")
def test_prefilter_python(benchmark: Any) -> None:
    """might_contain_secret on the clean message and field values, 10,000 times a round."""
    from janus_utils.security import might_contain_secret

    texts = [MESSAGE % uid for uid in user_ids(1000)] + [IP, AGENT]
    calls = 10_000

    def target() -> None:
        for n in range(calls):
            might_contain_secret(texts[n % len(texts)])

    assert not any(might_contain_secret(t) for t in texts)
    rounds = 1 if benchmark.disabled else _sizes.PREFILTER_ROUNDS
    benchmark.pedantic(target, rounds=rounds)
    benchmark.extra_info.update({"peer": "python", "label": "might_contain_secret", "calls_per_round": calls})
