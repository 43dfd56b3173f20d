"""Scale: grow one janus database million by million and measure ingest, size and queries at each step.

    python -m bench.scale                    # 10,000,000 rows in steps of 1,000,000 (tens of minutes)
    python -m bench.scale --rows 2000000     # a smaller database
    python -m bench.scale --quick            # 40,000 rows in steps of 20,000: a smoke run for CI
    python -m bench.scale --markdown         # the table as the README prints it
    python -m bench.scale --measure DB       # only the query shapes, on a database grown before
    python -m bench.scale --rows 50000000 --at 1000000,10000000
                                             # ingest every step, queries only at these sizes and the last
    python -m bench.scale --measure BIG.db --paired SMALL.db
                                             # the paired table only, on two databases grown before

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

The per-step figures of two steps are minutes apart, and this machine's CPU
changes speed every few minutes (the same work takes up to twice as long), so
a ratio of two steps' medians can be off by 2x either way.  For the ratio of
the last step to the first measured one (or ``--pair-at``), the database is
copied page by page at that step (the backup API from a reader, once the
flusher's idle merge is done) and kept beside the database as
``scale-pair.db``.  After the last step, with the flusher idle and stopped,
each shape runs on the copy and on the grown database in turn (the order
alternating), *rounds* pairs, on two LogStores opened alike: the paired table
gives each side's median, the ratio of the medians and the median of the
per-pair ratios.  Both sides see the same CPU state within a pair.  The copy is
removed at the end unless ``--keep``.
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


def middle_tenth(store: ju.LogStore) -> dict[str, Any]:
    """The time range of the middle tenth of the records (by id, so that pauses between steps do not matter)."""
    first_id = store.search(limit=1, order="oldest")[0].id
    newest = store.newest_id()

    def ts_at(fraction: float) -> int:
        found = store.get(first_id + int((newest - first_id) * fraction))
        assert found is not None
        return found.ts

    return {"since": ts_datetime(ts_at(0.45)), "until": ts_datetime(ts_at(0.55))}


def time_shapes(db: Path, rounds: int, only: set[str] | None) -> dict[str, tuple[float, float]]:
    """Each shape's (median, p99) in milliseconds over *rounds* runs, on a fresh LogStore."""
    results: dict[str, tuple[float, float]] = {}
    with ju.LogStore(db, timeout=None) as store:
        window = middle_tenth(store)
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


# (median small, median big, ratio of the medians, median of the per-pair ratios)
Paired = tuple[float, float, float, float]


def time_pairs(small: Path, big: Path, rounds: int, only: set[str] | None) -> dict[str, Paired]:
    """Each shape on *small* and *big* in turn, *rounds* pairs, the order alternating; milliseconds.

    Each store chooses its values as time_shapes does (the same constants, its
    own middle tenth), so the small side runs the queries of the step it was
    copied at.  A pair's two calls are a few milliseconds apart: whatever speed
    the CPU runs at, both see it.
    """
    results: dict[str, Paired] = {}
    with ju.LogStore(small, timeout=None) as store_small, ju.LogStore(big, timeout=None) as store_big:
        sides = ((store_small, middle_tenth(store_small)), (store_big, middle_tenth(store_big)))
        for name, call in shapes(sides[0][1]).items():
            if only and name not in only:
                continue
            for store, window in sides:
                call(store, window)  # warm, as in time_shapes
            took: tuple[list[float], list[float]] = ([], [])
            for pair in range(rounds):
                for side in (0, 1) if pair % 2 == 0 else (1, 0):
                    store, window = sides[side]
                    started = time.perf_counter()
                    call(store, window)
                    took[side].append((time.perf_counter() - started) * 1000)
            small_ms, big_ms = statistics.median(took[0]), statistics.median(took[1])
            per_pair = [b / max(a, 1e-9) for a, b in zip(*took)]
            results[name] = (small_ms, big_ms, big_ms / max(small_ms, 1e-9), statistics.median(per_pair))
    return results


def wait_idle(db: Path, quiet: float = 3.0, limit: float = 900.0) -> float:
    """Wait until nothing commits to *db* and neither it nor its WAL changes for *quiet* seconds; seconds waited.

    After a burst the flusher merges the full-text index, checkpoints and cuts
    the WAL (each a change readers drop their cache for): a measurement meant
    at rest waits for all of that.  Gives up after *limit* seconds and says so.
    """
    wal = Path(str(db) + "-wal")

    def files() -> tuple[tuple[int, int], ...]:
        found = []
        for path in (db, wal):
            try:
                info = path.stat()
            except FileNotFoundError:
                found.append((-1, -1))
            else:
                found.append((info.st_size, info.st_mtime_ns))
        return tuple(found)

    started = time.monotonic()
    # data_version changes when another connection commits; the files show checkpoints and cuts.
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        def state() -> tuple[Any, ...]:
            return (conn.execute("PRAGMA data_version").fetchall()[0][0], files())

        last, since = state(), time.monotonic()
        while time.monotonic() - since < quiet:
            if time.monotonic() - started > limit:
                print(f"   (the database still changed after {limit:.0f} s: measuring anyway)")
                break
            time.sleep(0.1)
            now = state()
            if now != last:
                last, since = now, time.monotonic()
    finally:
        conn.close()
    return time.monotonic() - started


def snapshot(db: Path, to: Path) -> None:
    """A consistent copy of *db* at one moment, page by page: the same b-trees and layout, not a rebuilt file.

    The backup API reading from its own connection copies every page in one
    step, so in one read transaction, while the writer goes on.  The copy is
    put in WAL mode like the original, so that readers open both alike.
    """
    for stale in (to, Path(str(to) + "-wal"), Path(str(to) + "-shm")):
        stale.unlink(missing_ok=True)
    source = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        copy = apsw.Connection(str(to))
        try:
            with copy.backup("main", source, "main") as backup:
                backup.step()  # every page at once: one snapshot of the source
            copy.execute("PRAGMA journal_mode=WAL")
        finally:
            copy.close()
    finally:
        source.close()


def remove_database(db: Path) -> None:
    for path in (db, Path(str(db) + "-wal"), Path(str(db) + "-shm")):
        path.unlink(missing_ok=True)


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
    parser.add_argument("--pair-at", type=int, metavar="ROWS",
                        help="copy the database after the step ending at this row count and time it against the "
                             "last step in alternating pairs (default: the first step the query shapes run at; "
                             "0: no paired table)")
    parser.add_argument("--measure", type=Path, metavar="DB",
                        help="time the query shapes on this database (grown by --keep) and its sizes; no ingest")
    parser.add_argument("--paired", type=Path, metavar="SMALL",
                        help="with --measure: the paired table of this smaller database against DB instead")
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
    if args.paired is not None and args.measure is None:
        parser.error("--paired SMALL goes with --measure DB")
    if args.measure is not None:
        if args.paired is not None:
            return measure_paired(args.paired, args.measure, args.rounds, only)
        return measure(args.measure, args.rounds, only)
    ends = [min(args.rows, args.step * n) for n in range(1, -(-args.rows // args.step) + 1)]
    if args.pair_at is None:
        pair_at = next((rows for rows in ends[:-1] if at is None or rows in at), None)
    elif args.pair_at == 0:
        pair_at = None
    elif args.pair_at in ends[:-1]:
        pair_at = args.pair_at
    else:
        parser.error(f"--pair-at must be the row count at the end of a step before the last "
                     f"({', '.join(f'{rows}' for rows in ends[:-1][:3])}, ...), or 0, not {args.pair_at}")
    directory = args.dir or Path(tempfile.mkdtemp(prefix="janus-scale-"))
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "scale.db"
    pair_db = directory / "scale-pair.db"
    if db.exists():
        parser.error(f"{db} exists: give another --dir")
    ju.configure(db, console=False, level="INFO")
    ring = Path(str(db) + "-ring")
    for line in environment(db):
        print(line)
    print(f"rows {args.rows:,} in steps of {args.step:,}; {args.rounds} rounds per query shape; ms median / p99")
    sys.stdout.flush()
    steps = []
    paired: dict[str, Paired] = {}
    done = 0
    try:
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
            if done == pair_at:
                # After the step's own timings, which stay as every step's are taken.
                waited = wait_idle(db)
                snapshot(db, pair_db)
                print(f"   copied to {pair_db.name} for the paired table ({waited:.1f} s for the flusher to go idle)")
        if pair_at is not None:
            waited = wait_idle(db)
            ju.shutdown()  # nothing commits while the pairs run
            print(f"\n   flusher idle after {waited:.1f} s and stopped; load average "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            paired = time_pairs(pair_db, db, args.rounds, only)
            _print_paired(pair_at, done, args.rounds, paired)
    finally:
        ju.shutdown()
        if not args.keep:
            remove_database(pair_db)
        if not args.keep and args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    print()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    _print_table(steps)
    if pair_at is not None:
        print()
        _print_paired_table(pair_at, done, args.rounds, paired)
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


def measure_paired(small: Path, big: Path, rounds: int, only: set[str] | None) -> int:
    """The paired table of two existing databases (read only): *small* against *big*."""
    for path in (small, big):
        if not path.is_file():
            print(f"no database at {path}", file=sys.stderr)
            return 2
    for line in environment(big):
        print(line)
    counts = []
    for path in (small, big):
        with ju.LogStore(path, timeout=None) as store:
            counts.append(store.count())
    print(f"{small}: {counts[0]:,} rows against {big}: {counts[1]:,} rows; {rounds} pairs per query shape")
    paired = time_pairs(small, big, rounds, only)
    _print_paired(counts[0], counts[1], rounds, paired)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    _print_paired_table(counts[0], counts[1], rounds, paired)
    return 0


def _rows_label(rows: int) -> str:
    return f"{rows / 1e6:g}M" if rows >= 100_000 else f"{rows:,}"


def _print_paired(small_rows: int, big_rows: int, rounds: int, paired: dict[str, Paired]) -> None:
    small, big = _rows_label(small_rows), _rows_label(big_rows)
    print(f"\n== paired, at rest: {small} (copy) and {big} in turn, {rounds} pairs; ms medians, "
          f"{big} ÷ {small} as the ratio of the medians and the median of the per-pair ratios")
    for name, (small_ms, big_ms, ratio, pair_ratio) in paired.items():
        print(f"   {name:<36} {small_ms:9.2f} {big_ms:9.2f} {ratio:7.2f}x {pair_ratio:7.2f}x")
    sys.stdout.flush()


def _print_paired_table(small_rows: int, big_rows: int, rounds: int, paired: dict[str, Paired]) -> None:
    """The paired figures as a markdown table, a row per shape."""
    small, big = _rows_label(small_rows), _rows_label(big_rows)
    print(f"| paired, at rest ({rounds} pairs) | {small}, ms median | {big}, ms median "
          f"| {big} ÷ {small} (medians) | {big} ÷ {small} (median of pairs) |")
    print("|---|---:|---:|---:|---:|")
    for name, (small_ms, big_ms, ratio, pair_ratio) in paired.items():
        print(f"| {name} | {small_ms:.2f} | {big_ms:.2f} | {ratio:.2f}× | {pair_ratio:.2f}× |")


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
