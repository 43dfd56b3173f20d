"""Sizes and the one record every benchmark logs: read from the environment, defined once.

``JANUS_BENCH_QUICK=1`` (or ``python -m bench --quick``) shrinks everything to
prove the suites run; each size can also be set on its own (see bench/README.md).
"""

from __future__ import annotations

import os

QUICK = os.environ.get("JANUS_BENCH_QUICK") == "1"


def _int(name: str, full: int, quick: int) -> int:
    value = os.environ.get(name)
    if value:
        return int(value.replace("_", ""))
    return quick if QUICK else full


# Producer cost: calls per thread per round.  10,000 records of ~150 bytes are
# 1.5 MB, so even 4 threads' worth fits a 64 MiB ring many times over and no
# call waits for the flusher.
CALLS = _int("JANUS_BENCH_CALLS", 10_000, 300)
# A call below the level is ~100x cheaper: 10x the calls keep a round well
# above the timer's and the scheduler's noise.
BELOW_CALLS = _int("JANUS_BENCH_BELOW_CALLS", 100_000, 3_000)
PRODUCER_RING = 64 * 1024 * 1024
# Each peer's rounds are picked from one untimed round so that it runs for
# about this many seconds, within [MIN_ROUNDS, MAX_ROUNDS].
ROUND_BUDGET_S = float(os.environ.get("JANUS_BENCH_BUDGET_S", "0.5" if QUICK else "4"))
MIN_ROUNDS = _int("JANUS_BENCH_MIN_ROUNDS", 7, 3)
MAX_ROUNDS = _int("JANUS_BENCH_MAX_ROUNDS", 60, 3)
THREADS = 4

# The regression gate: fixed rounds, so that a run and its baseline compare like with like.
SELF_ROUNDS = _int("JANUS_BENCH_SELF_ROUNDS", 40, 3)
# The prefilter's cost: rounds of CALLS calls with redaction on, and as many off.
PREFILTER_ROUNDS = _int("JANUS_BENCH_PREFILTER_ROUNDS", 25, 3)

# The tail: seconds of 4 threads logging flat out, every call timed.
LATENCY_S = float(os.environ.get("JANUS_BENCH_LATENCY_S", "1" if QUICK else "10"))

# End to end: records from 4 threads until committed and searchable.
E2E_RECORDS = _int("JANUS_BENCH_E2E_RECORDS", 1_000_000, 20_000)
# One commit per row is ~1,000x slower than a batch: fewer records keep it minutes, not hours.
E2E_NAIVE_RECORDS = min(E2E_RECORDS, _int("JANUS_BENCH_E2E_NAIVE_RECORDS", 100_000, 5_000))
E2E_ROUNDS = _int("JANUS_BENCH_E2E_ROUNDS", 2, 1)
E2E_BATCH = 2_000  # the flusher's default batch_size

# Search: records in the session database and its JSON-lines twin.
SEARCH_RECORDS = _int("JANUS_BENCH_SEARCH_RECORDS", 1_000_000, 20_000)
SEARCH_ROUNDS = _int("JANUS_BENCH_SEARCH_ROUNDS", 3, 1)  # for the slow scans

# Memory: records in one burst, and how long the database stays locked at its start.
MEMORY_RECORDS = _int("JANUS_BENCH_MEMORY_RECORDS", 5_000_000, 50_000)
# loguru enqueue=True costs ~100 us a call here: 5M would be 8 minutes, and its
# peak is reached in the first seconds (its pipe fills and the caller waits).
MEMORY_LOGURU_RECORDS = min(MEMORY_RECORDS, _int("JANUS_BENCH_MEMORY_LOGURU_RECORDS", 1_000_000, 50_000))
MEMORY_LOCK_S = float(os.environ.get("JANUS_BENCH_MEMORY_LOCK_S", "1" if QUICK else "3"))

# JANUS_BENCH_SLOWDOWN=N adds N extra encodings to every janus log call:
# a deliberately slower build, to show the regression gate failing.
SLOWDOWN = _int("JANUS_BENCH_SLOWDOWN", 0, 0)

# The record: same message, same three fields, same level for every logger.
MESSAGE = "user %s logged in"
IP = "10.0.0.1"
AGENT = "planner-7"


def user_ids(count: int, start: int = 0) -> list[str]:
    """Distinct user ids, built before timing so that no logger pays for them."""
    return [f"u{n:07d}" for n in range(start, start + count)]
