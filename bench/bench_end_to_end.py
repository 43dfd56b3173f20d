"""End to end: records from 4 threads until they are committed and full-text searchable.

janus_utils runs with its defaults (8 MiB ring, batches of 2,000), once with
the flusher as a thread (``janus``) and once as a process
(``janus_process``, ``configure(flusher="process")``): the
producers block on the flusher when the ring fills, so the time is the whole
pipeline's.  A round ends when ``flush()`` returns; every record is then in
``logs`` and in ``logs_fts`` (the flusher fills both in one transaction), which
is checked after the round, untimed.

The reference is the floor for this schema: a bare apsw ``executemany`` of the
same rows, pre-built as the flusher would build them, with the same FTS fill
statement per batch of 2,000, WAL and synchronous=NORMAL, into a fresh database.

``janus_sealed`` is janus with ``seal_key_file`` (every batch sealed, see
janus_utils.seal), side by side with ``janus`` in the same run: the sealing
overhead is their ratio.

Context, not goals: stdlib FileHandler (a file, not searchable) and the naive
SQLite handler (one commit per record, a plain table without indexes or FTS,
``JANUS_BENCH_E2E_NAIVE_RECORDS`` records, default 100,000).

Records: ``JANUS_BENCH_E2E_RECORDS`` (default 1,000,000; quick 20,000);
rounds: ``JANUS_BENCH_E2E_ROUNDS`` (default 2; quick 1).  Each round starts
from a fresh database.  rows/s = records / the round's time, in extra_info.

``janus_process ÷ floor, paired``: the same two rounds in turn (the order
alternating), ``JANUS_BENCH_E2E_PAIRS`` pairs (default 5; quick 1).  The
machine's load drifts over minutes and the floor's own rate with it: each
janus_process round is compared with the floor round beside it, and the
median of those ratios is the figure (the goal's).  A janus_process round
ends, untimed, once its flusher process has exited: what it does when idle
(index merges, term bitmaps) never runs beside the next round.
"""

from __future__ import annotations

import marshal
import os
import shutil
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

from janus_utils import _resource, _ring, _schema
from janus_utils._flusher import _INDEX, _INSERT
from janus_utils._record import decode_row

from . import _sizes
from ._peers import Janus, Peer, ThreadedBurst, peer
from ._sizes import AGENT, IP, MESSAGE, THREADS, user_ids


# janus_utils's configure() options: the flusher as a thread (the default), and as a process.
# The janus cases: configure() options of each (janus_sealed also gets a fresh seal key).
JANUS: dict[str, dict[str, Any]] = {"janus": {}, "janus_sealed": {}, "janus_process": {"flusher": "process"}}


class _Round:
    """One fresh directory, peer and parked threads per round; closed even if the benchmark is disabled."""

    def __init__(self, key: str, records: int, root: Path) -> None:
        self.key = key
        self.records = records
        self.root = root
        self.per_thread = [user_ids(records // THREADS, start=n * (records // THREADS)) for n in range(THREADS)]
        self.peer: Peer | None = None
        self.parked: ThreadedBurst | None = None
        self.seconds: list[float] = []
        self.ran = False

    def setup(self) -> None:
        self.teardown()
        self.work = self.root / "round"
        self.work.mkdir()
        # janus with its defaults: the ring of 8 MiB, not the producer benchmarks' 64 MiB.
        if self.key in JANUS:
            options = dict(JANUS[self.key])
            if self.key == "janus_sealed":
                # The same, with every batch sealed (janus_utils.seal): the sealing overhead.
                from janus_utils import seal

                key_file = self.work / "seal.key"
                self.verify_key = seal.init_key(key_file)
                options["seal_key_file"] = str(key_file)
            self.peer = Janus(ring_size=_ring.DEFAULT_CAPACITY, **options)
        else:
            self.peer = peer(self.key)
        self.peer.open(self.work)
        self.parked = ThreadedBurst(self.peer.burst, self.per_thread)

    def run(self) -> None:
        assert self.peer is not None and self.parked is not None
        started = time.perf_counter()
        self.parked.go()
        self.peer.drain()
        self.seconds.append(time.perf_counter() - started)
        self.ran = True

    def check(self) -> None:
        """Untimed: every record arrived (and, for janus, is found by a full-text search)."""
        if self.key in JANUS:
            import janus_utils as ju

            path = self.peer.path  # type: ignore[union-attr]
            with ju.LogStore(path) as store:
                assert store.count() == self.records
                for ids in self.per_thread:
                    for uid in (ids[0], ids[-1]):
                        found = store.search(uid, logger="svc.auth")
                        assert [r.user_id for r in found] == [uid], (uid, found)
            if self.key == "janus_sealed":
                from janus_utils import seal

                ju.flush()
                report = seal.verify(path, self.verify_key)
                assert report.ok and report.rows == self.records, report.findings[:5]
        elif self.key == "stdlib_file":
            with open(self.work / "stdlib.log", "rb") as lines:
                assert sum(1 for _ in lines) == self.records
        elif self.key == "sqlite_naive":
            db = apsw.Connection(str(self.work / "sqlite_naive.db"))
            try:
                assert db.execute('SELECT count(*) FROM "logs"').fetchall()[0][0] == self.records
            finally:
                db.close()

    def teardown(self, *args: Any) -> None:
        if self.ran:
            self.ran = False
            self.check()
        if self.peer is not None:
            self.peer.close()
            if self.key == "janus_process":
                _wait_for_flusher_exit(self.peer.path)  # type: ignore[attr-defined]
            self.peer = None
        self.parked = None
        shutil.rmtree(self.root / "round", ignore_errors=True)


def _wait_for_flusher_exit(path: Path, timeout: float = 60.0) -> None:
    """Untimed: until the round's flusher process is gone (it lingers a second after the last
    user, doing its idle turns): its work must not overlap the next round, the floor's above all."""
    from janus_utils._flusher_process import flusher_pid

    deadline = time.monotonic() + timeout
    while flusher_pid(str(path)) is not None and time.monotonic() < deadline:
        time.sleep(0.05)


def _janus_rows(records: int) -> list[tuple[Any, ...]]:
    """The rows the flusher would insert for these records, built by its own decode_row."""
    thread = threading.current_thread().name
    pid = os.getpid()
    rows = []
    for uid in user_ids(records):
        fields = {"user_id": uid, "ip": IP, "agent_id": AGENT}
        record = (1, time.time_ns(), 20, "svc.auth", MESSAGE % uid, fields, None, pid, thread)
        rows.append(decode_row(marshal.dumps(record, 2)))
    # The flusher appends each row's service and host (the schema's last two columns).
    return _resource.Resources(_resource.default_service(), _resource.default_host()).label(rows)


class _ApswRound:
    """The floor: bare executemany of pre-built rows, the FTS fill per batch, into a fresh db."""

    def __init__(self, records: int, root: Path) -> None:
        self.records = records
        self.root = root
        self.rows = _janus_rows(records)
        self.db: apsw.Connection | None = None
        self.seconds: list[float] = []

    def setup(self) -> None:
        self.teardown()
        work = self.root / "round"
        work.mkdir()
        self.db = apsw.Connection(str(work / "bare.db"))
        _schema.apply_connection_settings(self.db)  # WAL, synchronous=NORMAL
        _schema.ensure_schema(self.db)

    def run(self) -> None:
        db = self.db
        assert db is not None
        started = time.perf_counter()
        batch = _sizes.E2E_BATCH
        for start in range(0, len(self.rows), batch):
            with db:
                db.executemany(_INSERT, self.rows[start : start + batch])
                db.execute(_INDEX, (start,))  # ids are 1..N: this batch is id > start
        self.seconds.append(time.perf_counter() - started)
        assert db.execute('SELECT count(*) FROM "logs_fts" WHERE "logs_fts" MATCH ?', (self.rows[-1][4],)).fetchall()[0][0] == 1

    def teardown(self, *args: Any) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        shutil.rmtree(self.root / "round", ignore_errors=True)


def _report(benchmark: Any, key: str, records: int, seconds: list[float]) -> None:
    benchmark.extra_info.update({"peer": key, "records": records, "threads": 1 if key == "apsw_executemany" else THREADS})
    if seconds:
        best = min(seconds)
        benchmark.extra_info["best_rows_per_s"] = round(records / best)
        print(f"\nend to end {key}: {records:,} records, best {best:.2f} s = {records / best:,.0f} rows/s")


@pytest.mark.benchmark(group="end-to-end")
@pytest.mark.parametrize("key", [*JANUS, "stdlib_file", "sqlite_naive"])
def test_end_to_end(benchmark: Any, key: str, tmp_path: Path) -> None:
    """4 threads log the records; the round ends when all are written (committed, searchable)."""
    records = _sizes.E2E_NAIVE_RECORDS if key == "sqlite_naive" else _sizes.E2E_RECORDS
    one = _Round(key, records - records % THREADS, tmp_path)
    try:
        benchmark.pedantic(one.run, setup=one.setup, teardown=one.teardown, rounds=_sizes.E2E_ROUNDS)
    finally:
        one.teardown()
    _report(benchmark, key, one.records, one.seconds)


@pytest.mark.benchmark(group="end-to-end")
def test_end_to_end_apsw_executemany(benchmark: Any, tmp_path: Path) -> None:
    """The same rows through bare apsw executemany + FTS fill per 2,000: the floor for this schema."""
    one = _ApswRound(_sizes.E2E_RECORDS - _sizes.E2E_RECORDS % THREADS, tmp_path)
    try:
        benchmark.pedantic(one.run, setup=one.setup, teardown=one.teardown, rounds=_sizes.E2E_ROUNDS)
    finally:
        one.teardown()
    _report(benchmark, "apsw_executemany", one.records, one.seconds)


PAIRS = _sizes._int("JANUS_BENCH_E2E_PAIRS", 5, 1)


@pytest.mark.benchmark(group="end-to-end-paired")
def test_end_to_end_process_paired(benchmark: Any, tmp_path: Path) -> None:
    """janus_process and the floor in turn, PAIRS times: the median of the per-pair rate ratios."""
    records = _sizes.E2E_RECORDS - _sizes.E2E_RECORDS % THREADS
    floor = _ApswRound(records, tmp_path / "floor")
    (tmp_path / "floor").mkdir()
    (tmp_path / "janus").mkdir()
    ratios: list[float] = []
    seconds: dict[str, list[float]] = {"janus_process": [], "apsw_executemany": []}
    loads: list[float] = []

    def one_pair() -> None:
        order = ["janus_process", "apsw_executemany"]
        if len(ratios) % 2:
            order.reverse()
        took: dict[str, float] = {}
        for key in order:
            one: Any = _Round(key, records, tmp_path / "janus") if key == "janus_process" else floor
            try:
                one.setup()
                one.run()
            finally:
                one.teardown()  # janus: every record checked, untimed
            took[key] = one.seconds[-1]
            seconds[key].append(one.seconds[-1])
        ratios.append(took["apsw_executemany"] / took["janus_process"])  # rate ratio
        loads.append(os.getloadavg()[0])

    benchmark.pedantic(one_pair, rounds=PAIRS)
    median = statistics.median(ratios)
    rates = {k: records / statistics.median(v) for k, v in seconds.items()}
    benchmark.extra_info.update(
        {"records": records, "pairs": PAIRS, "ratios": [round(r, 4) for r in ratios], "median_ratio": round(median, 4),
         "median_rows_per_s": {k: round(v) for k, v in rates.items()}, "load": loads}
    )
    print(
        f"\nend to end, {PAIRS} pairs of {records:,} records: janus_process {rates['janus_process']:,.0f} rows/s, "
        f"floor {rates['apsw_executemany']:,.0f} rows/s (medians)\n  janus_process ÷ floor per pair: "
        + ", ".join(f"{r:.3f}" for r in ratios) + f"; median {median:.3f}; load " + ", ".join(f"{x:.2f}" for x in loads)
    )
