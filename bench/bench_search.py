"""Search: a selective query on a large janus database, beside grep and a Python scan of JSON lines.

A session fixture writes ``JANUS_BENCH_SEARCH_RECORDS`` records (default
1,000,000; quick 20,000) twice: into a janus database (direct executemany
into the schema plus the flusher's FTS fill per batch) and as a JSON-lines
file, the same records in the same order.  They look like a backend's logs:
a dozen message shapes over six loggers, DEBUG to ERROR, 10,000 users.  One
record in 2,500 carries the rare token ``quokka``; the query
``search("quokka timeout", level="WARNING", logger="svc", limit=100)`` matches
about three in four of those (~300 at 1M records) and returns the newest 100.

The same question without an index: ``grep -w -F quokka`` over the file, then
each matching line parsed and filtered (level, logger prefix, the word
"timeout") and the newest 100 kept; ``grep -c`` alone as the floor of a scan;
and a Python loop doing ``json.loads`` on every line.  Before timing, each
answer is checked against janus's count, so all of them find the same records.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

import janus_utils as ju
from janus_utils._schema import COLUMNS, apply_connection_settings, ensure_schema
from janus_utils._flusher import _INDEX, _INSERT

from . import _sizes

RARE = "quokka"
WORD = "timeout"
QUERY = f"{RARE} {WORD}"
FILTERS: dict[str, Any] = {"level": "WARNING", "logger": "svc"}
LIMIT = 100
RARE_EVERY = 2_500

BASE_TS = 1_700_000_000 * 1_000_000_000
STEP_NS = 10_000_000  # 100 records a second
LEVEL_NAMES = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR"}
LEVEL_NUMBERS = {name: number for number, name in LEVEL_NAMES.items()}

# (logger, level, message template): the everyday records.
SHAPES = (
    ("svc.auth", 20, "user {user} logged in"),
    ("svc.auth", 20, "user {user} logged out after {ms} s"),
    ("svc.auth", 30, "user {user} failed login: bad password"),
    ("svc.api", 20, "GET /api/orders/{n} 200 in {ms} ms"),
    ("svc.api", 20, "POST /api/carts/{n}/items 201 in {ms} ms"),
    ("svc.api", 30, "GET /api/orders/{n} 503 upstream timeout after {ms} ms"),
    ("svc.db", 10, "query orders by customer took {ms} ms rows={n}"),
    ("svc.db", 30, "slow query on payments took {ms} ms"),
    ("svc.payments", 20, "payment {n} captured for user {user}"),
    ("svc.payments", 40, "payment {n} failed: card declined for user {user}"),
    ("worker.jobs", 20, "job {n} done in {ms} ms"),
    ("worker.jobs", 30, "job {n} retry 2 after timeout"),
    ("app.web", 20, "rendered /dashboard for user {user} in {ms} ms"),
    ("app.web", 10, "cache miss for key session:{user}"),
)
# The rare records: most match the query, some fail the level or the logger filter.
RARE_SHAPES = (
    ("svc.api", 30, "upstream quokka-gateway timeout after {ms} ms"),
    ("svc.payments", 40, "quokka fraud check timeout for payment {n}"),
    ("svc.api", 30, "quokka-gateway timeout, retrying request {n}"),
    ("svc.api", 20, "quokka-gateway timeout budget set to {ms} ms"),  # INFO: below the level filter
    ("worker.jobs", 30, "job {n} quokka sync timeout"),  # outside "svc"
    ("svc.db", 30, "quokka replica lag {ms} ms"),  # no "timeout"
)


def _records(count: int) -> Iterator[tuple[int, int, str, str, str, dict[str, Any]]]:
    rng = random.Random(20261127)
    for n in range(count):
        if n % RARE_EVERY == RARE_EVERY // 2:
            name, level, template = RARE_SHAPES[(n // RARE_EVERY) % len(RARE_SHAPES)]
        else:
            name, level, template = SHAPES[rng.randrange(len(SHAPES))]
        user = f"u{rng.randrange(10_000):05d}"
        message = template.format(user=user, ms=rng.randrange(1, 5_000), n=rng.randrange(1, 10**6))
        fields = {"route": name.split(".")[-1], "ip": f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"}
        yield BASE_TS + n * STEP_NS, level, name, message, user, fields


class Corpus:
    """The session's records, in a janus database and a JSON-lines file."""

    def __init__(self, directory: Path, count: int) -> None:
        self.count = count
        self.db_path = directory / "search.db"
        self.jsonl_path = directory / "search.jsonl"
        db = apsw.Connection(str(self.db_path))
        try:
            apply_connection_settings(db)
            db.execute("PRAGMA synchronous=OFF")  # building the fixture, not measuring it
            ensure_schema(db)
            with open(self.jsonl_path, "w", encoding="utf-8") as out:
                rows: list[tuple[Any, ...]] = []
                done = 0
                for ts, level, name, message, user, fields in _records(count):
                    values = {
                        "ts": ts,
                        "level": level,
                        "logger": name,
                        "message": message,
                        "user_id": user,
                        "pid": 4242,
                        "thread": "MainThread",
                        "fields": json.dumps(fields),
                    }
                    rows.append(tuple(values.get(c) for c in COLUMNS))
                    line = {"ts": ts, "level": LEVEL_NAMES[level], "logger": name, "message": message,
                            "user_id": user, "fields": fields}
                    out.write(json.dumps(line) + "\n")
                    if len(rows) == 50_000:
                        self._write(db, rows, done)
                        done += len(rows)
                        rows = []
                if rows:
                    self._write(db, rows, done)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()

    @staticmethod
    def _write(db: apsw.Connection, rows: list[tuple[Any, ...]], before: int) -> None:
        with db:
            db.executemany(_INSERT, rows)
            db.execute(_INDEX, (before,))


# ---------------------------------------------------------------- the scans


_WORD_RE = re.compile(rf"\b{WORD}\b", re.IGNORECASE)
_RARE_RE = re.compile(rf"\b{RARE}\b", re.IGNORECASE)


def _wanted(record: dict[str, Any]) -> bool:
    """The query's meaning on a parsed JSON line: both words, level >= WARNING, logger svc[.*]."""
    if LEVEL_NUMBERS.get(record.get("level", ""), 0) < LEVEL_NUMBERS[FILTERS["level"]]:
        return False
    name = record.get("logger", "")
    if name != FILTERS["logger"] and not name.startswith(FILTERS["logger"] + "."):
        return False
    text = record.get("message", "") + " " + json.dumps(record.get("fields", {}))
    return bool(_RARE_RE.search(text) and _WORD_RE.search(text))


def grep_then_filter(path: Path) -> list[dict[str, Any]]:
    """grep finds the rare word's lines; Python keeps the ones the query means, newest 100 first."""
    found = subprocess.run(
        ["grep", "-w", "-i", "-F", RARE, str(path)], capture_output=True, check=False
    ).stdout.splitlines()
    hits = [record for record in map(json.loads, found) if _wanted(record)]
    return hits[-LIMIT:][::-1]


def grep_count(path: Path) -> int:
    """The floor of any scan: grep reading the whole file, counting the rare word's lines."""
    done = subprocess.run(["grep", "-c", "-w", "-i", "-F", RARE, str(path)], capture_output=True, check=False)
    return int(done.stdout)


def python_scan(path: Path) -> list[dict[str, Any]]:
    """Every line parsed with json.loads and filtered: what a script without grep does."""
    newest: deque[dict[str, Any]] = deque(maxlen=LIMIT)
    loads = json.loads
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            record = loads(line)
            if _wanted(record):
                newest.append(record)
    return list(newest)[::-1]


def _all_matches(path: Path) -> int:
    found = subprocess.run(["grep", "-w", "-i", "-F", RARE, str(path)], capture_output=True, check=False)
    return sum(1 for record in map(json.loads, found.stdout.splitlines()) if _wanted(record))


# ---------------------------------------------------------------- fixtures and benchmarks


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("bench-search"), _sizes.SEARCH_RECORDS)


@pytest.fixture(scope="session")
def expected(corpus: Corpus) -> tuple[int, list[str]]:
    """How many records the query matches and the messages of the newest 100, from janus."""
    with ju.LogStore(corpus.db_path) as store:
        total = store.count(QUERY, **FILTERS)
        newest = [r.message for r in store.search(QUERY, **FILTERS, limit=LIMIT)]
    assert total > 0, "the corpus has no record the query matches"
    assert _all_matches(corpus.jsonl_path) == total, "grep+filter and FTS disagree on the matches"
    return total, newest


def _extra(benchmark: Any, corpus: Corpus, total: int, key: str) -> None:
    benchmark.extra_info.update(
        {"peer": key, "records": corpus.count, "matches": total, "query": QUERY, "limit": LIMIT,
         "jsonl_bytes": corpus.jsonl_path.stat().st_size}
    )


@pytest.mark.benchmark(group="search")
def test_search_janus(benchmark: Any, corpus: Corpus, expected: tuple[int, list[str]]) -> None:
    """LogStore.search with the FTS5 index: the newest 100 of the matches."""
    with ju.LogStore(corpus.db_path) as store:
        found = benchmark(store.search, QUERY, **FILTERS, limit=LIMIT)
    assert [r.message for r in found] == expected[1]
    _extra(benchmark, corpus, expected[0], "janus")


@pytest.mark.benchmark(group="search")
def test_search_grep_then_filter(benchmark: Any, corpus: Corpus, expected: tuple[int, list[str]]) -> None:
    """grep -w -F for the rare word over the JSON lines, then parse and filter the hits."""
    if shutil.which("grep") is None:
        pytest.skip("grep is not installed")
    found = benchmark(grep_then_filter, corpus.jsonl_path)
    assert [r["message"] for r in found] == expected[1]
    _extra(benchmark, corpus, expected[0], "grep_filter")


@pytest.mark.benchmark(group="search")
def test_search_grep_count(benchmark: Any, corpus: Corpus, expected: tuple[int, list[str]]) -> None:
    """grep -c alone: reading the file once, no parsing; a scan cannot go faster."""
    if shutil.which("grep") is None:
        pytest.skip("grep is not installed")
    assert benchmark(grep_count, corpus.jsonl_path) >= expected[0]
    _extra(benchmark, corpus, expected[0], "grep_count")


@pytest.mark.benchmark(group="search")
def test_search_python_scan(benchmark: Any, corpus: Corpus, expected: tuple[int, list[str]]) -> None:
    """json.loads on every line, then the same filter."""
    found = benchmark.pedantic(python_scan, args=(corpus.jsonl_path,), rounds=_sizes.SEARCH_ROUNDS)
    assert [r["message"] for r in found] == expected[1]
    _extra(benchmark, corpus, expected[0], "python_scan")
