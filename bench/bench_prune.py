"""Prune throughput (rows/s): on a large log database, and from the flusher while logging.

The database is built once per session (default 1,000,000 rows; ``JANUS_BENCH_ROWS``
to change it, ``JANUS_BENCH_QUICK=1`` for 20,000) and copied before every round,
because a prune is destructive.  Each round removes the older half of the rows
by age, in the default chunks of 5,000, including the FTS5 index upkeep and the
index merge that follows.  ``JANUS_BENCH_ROUNDS`` sets the rounds (default 1,
3 when quick).  rows/s is in ``extra_info``.

``test_auto_prune_keeps_pace_with_ingest``: 4 threads log ``JANUS_BENCH_INGEST``
records (default 300,000; quick 20,000) as fast as they can with
``retention={"max_rows": 20000}`` (quick 2,000), until ``flush()``.  It reports
ingest with and without the row limit, the rows pruned per second, and the
rows left after flush(), which must stay within max_rows plus one batch.

Run: ``PYTHONPATH=. python -m pytest bench/bench_prune.py -q -p no:cacheprovider``
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

import janus_utils as ju
from janus_utils import retention
from janus_utils._schema import COLUMNS, apply_connection_settings, ensure_schema

QUICK = os.environ.get("JANUS_BENCH_QUICK") == "1"
ROWS = int(os.environ.get("JANUS_BENCH_ROWS", "20000" if QUICK else "1000000"))
ROUNDS = int(os.environ.get("JANUS_BENCH_ROUNDS", "3" if QUICK else "1"))

BASE_TS = 1_700_000_000 * 1_000_000_000
STEP_NS = 50_000_000  # 20 records a second: 1M rows span about 14 hours
AGE = "1d"
# "now" such that exactly the older half is more than a day old.
NOW_NS = BASE_TS + (ROWS // 2) * STEP_NS + retention.parse_age(AGE)

_INSERT = f'INSERT INTO "logs" ({", ".join(COLUMNS)}) VALUES ({", ".join("?" for _ in COLUMNS)})'
_INDEX = (
    'INSERT INTO "logs_fts"(rowid, message, fields, exception) '
    'SELECT id, message, fields, exception FROM "logs" WHERE id > ?'
)
_WORDS = (
    "user login logout request served cache miss hit timeout retry upstream db query slow "
    "payment order created updated deleted token refreshed agent planner step tool call"
).split()


def _rows(start: int, count: int, rng: random.Random) -> list[tuple[Any, ...]]:
    rows = []
    for n in range(start, start + count):
        words = " ".join(rng.choices(_WORDS, k=12))
        values = {
            "ts": BASE_TS + n * STEP_NS,
            "level": (10, 20, 20, 20, 30, 40)[n % 6],
            "logger": f"svc.{_WORDS[n % 7]}",
            "message": f"{words} id={n} took {n % 997} ms",  # ~110 bytes, like the notes' corpus
            "request_id": f"r-{n // 10}",
            "pid": 4242,
            "thread": "MainThread",
            "fields": json.dumps({"n": n, "route": f"/api/{_WORDS[n % 11]}"}),
        }
        rows.append(tuple(values.get(c) for c in COLUMNS))
    return rows


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The database every round starts from: built once, checkpointed, closed."""
    path = tmp_path_factory.mktemp("bench-prune") / "template.db"
    db = apsw.Connection(str(path))
    try:
        apply_connection_settings(db)
        db.execute("PRAGMA synchronous=OFF")  # building the fixture, not measuring it
        ensure_schema(db)
        rng = random.Random(7)
        batch = 50_000
        for start in range(0, ROWS, batch):
            with db:
                db.executemany(_INSERT, _rows(start, min(batch, ROWS - start), rng))
                db.execute(_INDEX, (start,))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return path


class _Round:
    """Fresh copy of the template (and an empty archive directory) for one round."""

    def __init__(self, template: Path, archive: bool) -> None:
        self.template = template
        self.archive = archive
        self.work = template.parent / "round"
        self.db: apsw.Connection | None = None
        self.seconds: list[float] = []
        self.rows = 0
        self.archive_bytes = 0

    def setup(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir()
        shutil.copyfile(self.template, self.work / "logs.db")
        self.db = apsw.Connection(str(self.work / "logs.db"))
        apply_connection_settings(self.db)
        kwargs: dict[str, Any] = {"older_than": AGE, "now_ns": NOW_NS}
        if self.archive:
            kwargs["archive_dir"] = self.work / "archive"
        return (self.db,), kwargs

    def run(self, db: apsw.Connection, **kwargs: Any) -> retention.PruneSummary:
        started = time.perf_counter()
        summary = retention.prune(db, **kwargs)
        self.seconds.append(time.perf_counter() - started)
        self.rows = summary.rows
        self.archive_bytes = sum(p.stat().st_size for p in summary.archives)
        return summary

    def teardown(self, *args: Any, **kwargs: Any) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        shutil.rmtree(self.work, ignore_errors=True)


def _measure(benchmark: Any, template: Path, archive: bool) -> None:
    one = _Round(template, archive)
    try:
        benchmark.pedantic(one.run, setup=one.setup, teardown=one.teardown, rounds=ROUNDS, iterations=1)
    finally:
        one.teardown()
    best = min(one.seconds)
    benchmark.extra_info.update(
        {
            "table_rows": ROWS,
            "rows_removed": one.rows,
            "rows_per_s": round(one.rows / best),
            "best_seconds": round(best, 3),
            "archive_bytes": one.archive_bytes,
            "sqlite": apsw.sqlite_lib_version(),
            "python": platform.python_version(),
        }
    )
    print(
        f"\nprune {'with' if archive else 'without'} archive: {one.rows} of {ROWS} rows in "
        f"{best:.2f} s = {one.rows / best:,.0f} rows/s"
        + (f", archives {one.archive_bytes / 1e6:.1f} MB" if archive else "")
    )
    assert ROWS // 2 == one.rows


@pytest.mark.benchmark(group="prune")
def test_prune_without_archive(benchmark: Any, template: Path) -> None:
    """Delete the older half: FTS5 'delete' with the original values, then the rows."""
    _measure(benchmark, template, archive=False)


@pytest.mark.benchmark(group="prune")
def test_prune_with_archive(benchmark: Any, template: Path) -> None:
    """The same, each chunk first written to fsynced gzip NDJSON with a sha256 sidecar."""
    _measure(benchmark, template, archive=True)


INGEST = int(os.environ.get("JANUS_BENCH_INGEST", "20000" if QUICK else "300000"))
MAX_ROWS = 2000 if QUICK else 20_000
BATCH = 2000  # configure()'s default batch_size


def _ingest(directory: Path, retention_policy: dict[str, Any] | None) -> tuple[float, int]:
    """Log INGEST records from 4 threads until flush(); (seconds, rows left after flush())."""
    import threading

    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    path = directory / "ingest.db"
    ju.configure(path, console=False, retention=retention_policy)
    log = ju.get_logger("svc.ingest")

    def produce(thread: int) -> None:
        info = log.info
        for n in range(INGEST // 4):
            info("user %s logged in from %s", n, "10.0.0.1", user_id=n, thread=thread)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ju.flush(timeout=600)
    seconds = time.perf_counter() - started
    check = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = check.execute('SELECT count(*) FROM "logs"').fetchall()[0][0]
    finally:
        check.close()
    ju.shutdown()
    return seconds, rows


@pytest.mark.benchmark(group="prune")
def test_auto_prune_keeps_pace_with_ingest(benchmark: Any, tmp_path: Path) -> None:
    """Logging flat out with max_rows: the flusher prunes as fast as it ingests."""
    unlimited, _ = _ingest(tmp_path / "unlimited", None)
    runs: list[tuple[float, int]] = []

    def run() -> None:
        runs.append(_ingest(tmp_path / "limited", {"max_rows": MAX_ROWS}))

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    seconds, rows = min(runs)
    pruned = INGEST - rows
    note = (
        f"{INGEST / seconds:,.0f} rec/s ingested with max_rows={MAX_ROWS:,} ({INGEST / unlimited:,.0f} without), "
        f"{pruned / seconds:,.0f} rows/s pruned, {rows:,} rows after flush()"
    )
    benchmark.extra_info.update(
        {
            "records": INGEST,
            "max_rows": MAX_ROWS,
            "ingest_per_s": round(INGEST / seconds),
            "ingest_per_s_unlimited": round(INGEST / unlimited),
            "pruned_per_s": round(pruned / seconds),
            "rows_after_flush": rows,
            "note": note,
        }
    )
    print("\nauto-prune: " + note)
    assert rows <= MAX_ROWS + BATCH
