"""Scale: grow one janus database million by million and measure ingest, size and queries at each step.

    python -m bench.scale                    # 10,000,000 rows in steps of 1,000,000 (tens of minutes)
    python -m bench.scale --rows 2000000     # a smaller database
    python -m bench.scale --quick            # 40,000 rows in steps of 20,000: a smoke run for CI
    python -m bench.scale --markdown         # the table as the README prints it
    python -m bench.scale --measure DB       # only the query shapes, on a database grown before
    python -m bench.scale --rows 50000000 --at 1000000,10000000
                                             # ingest every step, queries only at these sizes and the last

The records come through the library end to end (``configure()``, two
threads calling ``Logger.info``/``error``, the flusher committing with its
defaults), like a backend: 8 loggers, 5,000 users, 6-word messages drawn from
a 15-word vocabulary, a ``status`` field, WARNING for 2% of records, and a
rare ERROR carrying the word ``quokka`` every 50,000 records.  One user,
``u-quiet``, has a few records per thousand, none with the two common words
of the corpus below.

After each step the flusher is idle and every query shape is run *rounds*
times on a fresh LogStore; the table gives the median and p99 (the highest
of the rounds when there are fewer than 100) per step:

* ingest: records per second of the step, from the first call to ``flush()``
  returning (committed and full-text searchable);
* bytes per record: database, WAL and ring files together; with
  ``--breakdown`` (default at the first and last step) each table, index and
  FTS shadow table from SQLite's ``dbstat``;
* the query shapes (newest 100 unless said): see SHAPES.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw

import janus_utils as ju
from janus_utils._timeparse import ts_datetime

VOCABULARY = (
    "alpha", "bravo", "cache", "delta", "engine", "fetch", "gamma", "handler",
    "index", "job", "kernel", "lambda", "mirror", "node", "option",
)
COMMON = "alpha bravo"  # two words each in ~1/3 of messages, together in ~1 in 9
LOGGERS = tuple(f"svc.{name}" for name in ("api", "auth", "db", "cache", "jobs", "mail", "pay", "search"))
USERS = 5_000
QUIET_USER = "u-quiet"
QUIET_EVERY = 2_500  # one record in this many is the quiet user's: none has both COMMON words
RARE = "quokka"
RARE_EVERY = 50_000
WARNING_EVERY = 50  # 2% of records
LIMIT = 100


def _messages(seed: int, count: int, offset: int) -> list[tuple[int, str, str, str, int]]:
    """(level, logger, message, user, status) for records offset .. offset+count-1 of one thread."""
    rng = random.Random(seed * 1_000_003 + offset)
    out = []
    words = VOCABULARY
    quiet_words = VOCABULARY[2:]
    for n in range(offset, offset + count):
        level = 20
        user = f"u{rng.randrange(USERS):04d}"
        if n % QUIET_EVERY == 7:
            user = QUIET_USER
            message = " ".join(rng.choices(quiet_words, k=6))
        else:
            message = " ".join(rng.choices(words, k=6))
        if n % RARE_EVERY == RARE_EVERY // 2:
            level = 40
            message = f"{RARE} {message}"
        elif n % WARNING_EVERY == 3:
            level = 30
        status = (200, 200, 200, 201, 204, 404, 500, 503)[rng.randrange(8)] if n % 10 else 302
        out.append((level, LOGGERS[rng.randrange(len(LOGGERS))], message, user, status))
    return out


def ingest(count: int, step_index: int) -> float:
    """Log *count* records from two threads until flush() returns; records per second."""
    per_thread = count // 2
    batches = [_messages(t, per_thread, step_index * per_thread) for t in range(2)]
    loggers = {name: ju.get_logger(name) for name in LOGGERS}
    ready = threading.Barrier(3)

    def produce(records: list[tuple[int, str, str, str, int]]) -> None:
        methods = {name: (log.info, log.warning, log.error) for name, log in loggers.items()}
        ready.wait()
        for level, name, message, user, status in records:
            info, warning, error = methods[name]
            (info if level == 20 else warning if level == 30 else error)(message, user_id=user, status=status)

    threads = [threading.Thread(target=produce, args=(b,)) for b in batches]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if not ju.flush(timeout=3600):
        raise RuntimeError(f"flush did not finish: {ju.stats()}")
    return 2 * per_thread / (time.perf_counter() - started)


# ---------------------------------------------------------------- the query shapes
Shape = Callable[[ju.LogStore, dict[str, Any]], Any]


def shapes(window: dict[str, Any]) -> dict[str, Shape]:
    """Name -> a call on a LogStore; *window* holds the time range of the middle tenth of the records."""
    return {
        "rare term": lambda s, w: s.search(RARE, limit=LIMIT),
        "rare term + level=ERROR": lambda s, w: s.search(RARE, level="ERROR", limit=LIMIT),
        "common terms": lambda s, w: s.search(COMMON, limit=LIMIT),
        "common + logger + user (0 match)": lambda s, w: s.search(
            COMMON, logger="svc.api", user_id=QUIET_USER, limit=LIMIT
        ),
        "common + user (0 match)": lambda s, w: s.search(COMMON, user_id=QUIET_USER, limit=LIMIT),
        "common + level>=WARNING (2%)": lambda s, w: s.search(COMMON, level="WARNING", limit=LIMIT),
        "common + user (0.02%)": lambda s, w: s.search(COMMON, user_id="u0042", limit=LIMIT),
        "filters: logger + level": lambda s, w: s.search(logger="svc.pay", level="WARNING", limit=LIMIT),
        "filter: user": lambda s, w: s.search(user_id="u0042", limit=LIMIT),
        "field status=503": lambda s, w: s.search(fields={"status": 503}, limit=LIMIT),
        "time range (middle tenth)": lambda s, w: s.search(since=w["since"], until=w["until"], limit=LIMIT),
        "common + time range": lambda s, w: s.search(COMMON, since=w["since"], until=w["until"], limit=LIMIT),
        "count all": lambda s, w: s.count(),
        "count level>=WARNING": lambda s, w: s.count(level="WARNING"),
        "count common terms": lambda s, w: s.count(COMMON),
        "histogram all (1h, by level)": lambda s, w: s.histogram("1h"),
        "histogram level>=WARNING": lambda s, w: s.histogram("1m", level="WARNING"),
        "histogram logger": lambda s, w: s.histogram("1m", logger="svc.api"),
    }


COUNTS = ("count", "histogram")  # shapes whose goal is 300 ms rather than 20 ms


def time_shapes(db: Path, rounds: int, only: set[str] | None) -> dict[str, tuple[float, float]]:
    """Each shape's (median, p99) in milliseconds over *rounds* runs, on a fresh LogStore."""
    results: dict[str, tuple[float, float]] = {}
    with ju.LogStore(db, timeout=None) as store:
        # The middle tenth of the records (by id, so that pauses between steps do not matter).
        first_id = store.search(limit=1, order="oldest")[0].id
        newest = store.newest_id()

        def ts_at(fraction: float) -> int:
            found = store.get(first_id + int((newest - first_id) * fraction))
            assert found is not None
            return found.ts

        window = {"since": ts_datetime(ts_at(0.45)), "until": ts_datetime(ts_at(0.55))}
        for name, call in shapes(window).items():
            if only and name not in only:
                continue
            call(store, window)  # warm: the pages it reads are cached, as on a live server
            took = []
            for _ in range(rounds):
                started = time.perf_counter()
                call(store, window)
                took.append((time.perf_counter() - started) * 1000)
            took.sort()
            p99 = took[min(len(took) - 1, int(len(took) * 0.99))]
            results[name] = (statistics.median(took), p99)
    return results


# ---------------------------------------------------------------- sizes
def sizes(db: Path, ring: Path | None, breakdown: bool) -> dict[str, int]:
    """Bytes on disk: "database", "wal", "ring", and with *breakdown* each b-tree from dbstat."""
    found = {"database": db.stat().st_size}
    wal = Path(str(db) + "-wal")
    found["wal"] = wal.stat().st_size if wal.exists() else 0
    found["ring"] = ring.stat().st_size if ring is not None and ring.exists() else 0
    if breakdown:
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            for name, size in conn.execute(
                "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
            ).fetchall():
                found[f"  {name}"] = int(size)
        finally:
            conn.close()
    return found


def environment(db: Path) -> list[str]:
    return [
        f"cores: {os.cpu_count()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"OS: {platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"SQLite: {apsw.sqlite_lib_version()}, apsw {apsw.apsw_version()}",
        f"janus_utils: {ju.__version__}, database {db}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="grow the database to this many rows")
    parser.add_argument("--step", type=int, default=1_000_000, help="measure after every this many rows")
    parser.add_argument("--rounds", type=int, default=30, help="runs of each query shape per step")
    parser.add_argument("--quick", action="store_true", help="40,000 rows in steps of 20,000, 5 rounds")
    parser.add_argument("--dir", type=Path, help="where the database goes (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--breakdown", choices=("ends", "every", "none"), default="ends",
                        help="dbstat size per table and index: at the first and last step (default), every step, never")
    parser.add_argument("--shapes", help="only these query shapes (comma separated names)")
    parser.add_argument("--at", metavar="ROWS,...",
                        help="run the query shapes only after the steps ending at these row counts and the last "
                             "(ingest and bytes are still printed for every step)")
    parser.add_argument("--measure", type=Path, metavar="DB",
                        help="time the query shapes on this database (grown by --keep) and its sizes; no ingest")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.step, args.rounds = 40_000, 20_000, 5
    if args.rows <= 0 or args.step <= 0 or args.rounds <= 0:
        parser.error("--rows, --step and --rounds must be positive")
    only = set(args.shapes.split(",")) if args.shapes else None
    try:
        at = {int(rows.replace("_", "")) for rows in args.at.split(",")} if args.at else None
    except ValueError:
        parser.error(f"--at takes row counts separated by commas, not {args.at!r}")
    if args.measure is not None:
        return measure(args.measure, args.rounds, only)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="janus-scale-"))
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "scale.db"
    if db.exists():
        parser.error(f"{db} exists: give another --dir")
    ju.configure(db, console=False, level="INFO")
    ring = Path(str(db) + "-ring")
    for line in environment(db):
        print(line)
    print(f"rows {args.rows:,} in steps of {args.step:,}; {args.rounds} rounds per query shape; ms median / p99")
    sys.stdout.flush()
    steps = []
    try:
        done = 0
        index = 0
        while done < args.rows:
            count = min(args.step, args.rows - done)
            rate = ingest(count, index)
            done += count
            index += 1
            time.sleep(1.5)  # the flusher's idle work (checkpoint) runs, as between bursts
            last = done >= args.rows
            breakdown = args.breakdown == "every" or (args.breakdown == "ends" and (index == 1 or last))
            size = sizes(db, ring, breakdown)
            timings = time_shapes(db, args.rounds, only) if at is None or done in at or last else {}
            steps.append((done, rate, size, timings))
            _print_step(done, rate, size, timings)
    finally:
        ju.shutdown()
        if not args.keep and args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    print()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    _print_table(steps)
    return 0


def measure(db: Path, rounds: int, only: set[str] | None) -> int:
    """The query shapes and the size breakdown of an existing database (read only)."""
    if not db.is_file():
        print(f"no database at {db}", file=sys.stderr)
        return 2
    for line in environment(db):
        print(line)
    with ju.LogStore(db, timeout=None) as store:
        rows = store.count()
    print(f"{rows:,} rows; {rounds} rounds per query shape; ms median / p99")
    _print_step(rows, 0.0, sizes(db, Path(str(db) + "-ring"), True), time_shapes(db, rounds, only))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def _print_step(rows: int, rate: float, size: dict[str, int], timings: dict[str, tuple[float, float]]) -> None:
    total = size["database"] + size["wal"] + size["ring"]
    ingest = f"ingest {rate:,.0f} rows/s; " if rate else ""
    print(f"\n== {rows:,} rows: {ingest}{total / rows:.0f} bytes/record "
          f"(database {size['database'] / rows:.0f}, WAL {size['wal'] / rows:.1f}, ring {size['ring'] / rows:.1f})")
    for name, value in size.items():
        if name.startswith("  "):
            print(f"   {name.strip():<28} {value / rows:8.1f} bytes/record")
    for name, (median, p99) in timings.items():
        print(f"   {name:<36} {median:9.2f} {p99:9.2f}")
    sys.stdout.flush()


def _print_table(steps: list[tuple[int, float, dict[str, int], dict[str, tuple[float, float]]]]) -> None:
    """The markdown table: one column per step, a row per figure."""
    if not steps:
        return
    names = next((timings for *_, timings in steps if timings), {})
    head = "| | " + " | ".join(f"{rows / 1e6:g}M" for rows, *_ in steps) + " |"
    print(head)
    print("|---|" + "---:|" * len(steps))
    print("| ingest, rows/s | " + " | ".join(f"{rate:,.0f}" for _, rate, _, _ in steps) + " |")
    first_rate = steps[0][1]
    print("| ingest ÷ first step | " + " | ".join(f"{rate / first_rate:.2f}" for _, rate, _, _ in steps) + " |")
    print("| bytes/record (db+WAL+ring) | " + " | ".join(
        f"{(s['database'] + s['wal'] + s['ring']) / rows:.0f}" for rows, _, s, _ in steps) + " |")
    for name in names:
        cells = []
        for _, _, _, timings in steps:
            median, p99 = timings.get(name, (float("nan"), float("nan")))
            cells.append(f"{median:.1f} / {p99:.1f}" if timings else "")
        print(f"| {name}, ms median / p99 | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
