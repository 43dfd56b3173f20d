"""Sealing: what it adds to a commit, and how fast verify reads a sealed database.

Commit: the flusher's statements (executemany + the FTS fill per batch of
2,000) into a fresh database, without and with ``Sealer.seal`` in the same
transaction, side by side: their ratio is the sealing overhead on the
storage floor (the end-to-end figure is in bench_end_to_end, janus_sealed).

Verify: ``seal.verify`` of a database of ``JANUS_BENCH_SEAL_RECORDS`` rows
(default 1,000,000; quick 20,000) sealed that way, rows/s; beside it the
same verify without the janus_seal_rows() SQLite extension (every row
fetched into Python and encoded there), the way a verifier without it
would read.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

from janus_utils import _schema, seal
from janus_utils._flusher import _INDEX, _INSERT

from . import _sizes
from .bench_end_to_end import _janus_rows

RECORDS = _sizes._int("JANUS_BENCH_SEAL_RECORDS", 1_000_000, 20_000)
ROUNDS = _sizes._int("JANUS_BENCH_SEAL_ROUNDS", 3, 1)


def _commit_all(path: Path, rows: list[tuple[Any, ...]], sealer: seal.Sealer | None) -> float:
    db = apsw.Connection(str(path))
    try:
        _schema.apply_connection_settings(db)
        _schema.ensure_schema(db)
        started = time.perf_counter()
        batch = _sizes.E2E_BATCH
        for start in range(0, len(rows), batch):
            with db:
                db.executemany(_INSERT, rows[start : start + batch])
                db.execute(_INDEX, (start,))
                entry = sealer.seal(db, start) if sealer is not None else None
            if sealer is not None:
                sealer.publish(entry)
        return time.perf_counter() - started
    finally:
        db.close()


@pytest.fixture(scope="module")
def rows() -> list[tuple[Any, ...]]:
    return _janus_rows(RECORDS)


@pytest.mark.benchmark(group="seal-commit")
@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_commit(benchmark: Any, rows: list[tuple[Any, ...]], sealed: bool, tmp_path: Path) -> None:
    """The flusher's commit statements, batches of 2,000, without and with the seal."""
    seconds: list[float] = []

    def one() -> None:
        work = tmp_path / "round"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        sealer = None
        if sealed:
            seal.init_key(work / "seal.key")
            sealer = seal.Sealer(str(work / "seal.key"), str(work / "c.db"))
        seconds.append(_commit_all(work / "c.db", rows, sealer))

    benchmark.pedantic(one, rounds=ROUNDS)
    best = min(seconds)
    benchmark.extra_info.update({"records": len(rows), "best_rows_per_s": round(len(rows) / best)})
    print(f"\ncommit {'sealed' if sealed else 'plain'}: {len(rows):,} rows, best {best:.2f} s = {len(rows) / best:,.0f} rows/s")


@pytest.fixture(scope="module")
def sealed_db(rows: list[tuple[Any, ...]], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("sealed")
    key = seal.init_key(work / "seal.key")
    _commit_all(work / "v.db", rows, seal.Sealer(str(work / "seal.key"), str(work / "v.db")))
    return work / "v.db", key


@pytest.mark.benchmark(group="seal-verify")
@pytest.mark.parametrize("reader", ["native", "python"])
def test_verify(benchmark: Any, sealed_db: tuple[Path, str], reader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """janus-logs verify's work on the whole database: rows/s."""
    path, key = sealed_db
    if reader == "python":
        monkeypatch.setenv("JANUS_SEAL_PURE_PYTHON", "1")
    seconds: list[float] = []

    def one() -> None:
        started = time.perf_counter()
        report = seal.verify(path, key)
        seconds.append(time.perf_counter() - started)
        assert report.ok and report.rows == RECORDS, report.findings[:3]

    benchmark.pedantic(one, rounds=1 if reader == "python" else ROUNDS)
    best = min(seconds)
    benchmark.extra_info.update({"records": RECORDS, "best_rows_per_s": round(RECORDS / best)})
    print(f"\nverify ({reader}): {RECORDS:,} rows, best {best:.2f} s = {RECORDS / best:,.0f} rows/s")


PAIRS = _sizes._int("JANUS_BENCH_SEAL_PAIRS", 5, 1)
PAIR_RECORDS = _sizes._int("JANUS_BENCH_SEAL_PAIR_RECORDS", 200_000, 8_000)


def _flusher_cpu_ns() -> int:
    """CPU time of this process's flusher thread so far (ns): what sealing adds to, whatever else runs."""
    import threading

    flusher = next(t for t in threading.enumerate() if t.name == "janus-flusher" and t.is_alive())
    return time.clock_gettime_ns(time.pthread_getcpuclockid(flusher.ident))  # type: ignore[arg-type]


@pytest.mark.benchmark(group="seal-end-to-end")
def test_end_to_end_paired(benchmark: Any, tmp_path: Path) -> None:
    """bench_end_to_end's janus round, unsealed and sealed in turn (the order alternating), PAIRS times.

    The machine's load drifts over minutes: each sealed round is compared
    with the unsealed round beside it, and the median of those ratios is the
    sealing overhead.  Beside the time, the flusher thread's CPU time per
    round: other processes on the machine stretch the time much more than
    they stretch it, so its ratio is the steadier figure on a busy machine.
    And, steadier still, the CPU time the flusher spent in Sealer.seal and
    Sealer.publish within each sealed round, as a share of the rest of that
    round's flusher CPU time: both measured together, under the same load
    (what sealing adds beside its own calls, e.g. the entries' pages in the
    WAL, is in the CPU ratio only).
    """
    from .bench_end_to_end import _Round

    ratios: list[float] = []
    cpu_ratios: list[float] = []
    shares: list[float] = []
    in_seal = [0]

    def timed(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time_ns()
            try:
                return method(*args, **kwargs)
            finally:
                in_seal[0] += time.thread_time_ns() - started

        return call
    times: dict[str, list[float]] = {"janus": [], "janus_sealed": []}

    def one_pair() -> None:
        order = ["janus", "janus_sealed"] if len(ratios) % 2 == 0 else ["janus_sealed", "janus"]
        seconds: dict[str, float] = {}
        cpu: dict[str, int] = {}
        for key in order:
            one = _Round(key, PAIR_RECORDS - PAIR_RECORDS % _sizes.THREADS, tmp_path)
            try:
                one.setup()
                in_seal[0] = 0
                started = _flusher_cpu_ns()
                one.run()
                cpu[key] = _flusher_cpu_ns() - started
                if key == "janus_sealed":
                    shares.append(in_seal[0] / (cpu[key] - in_seal[0]))
            finally:
                one.teardown()  # checks every record (and, sealed, verifies the database)
            seconds[key] = one.seconds[-1]
            times[key].append(one.seconds[-1])
        ratios.append(seconds["janus_sealed"] / seconds["janus"])
        cpu_ratios.append(cpu["janus_sealed"] / cpu["janus"])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(seal.Sealer, "seal", timed(seal.Sealer.seal))
        patch.setattr(seal.Sealer, "publish", timed(seal.Sealer.publish))
        benchmark.pedantic(one_pair, rounds=PAIRS)
    median = sorted(ratios)[len(ratios) // 2]
    cpu_median = sorted(cpu_ratios)[len(cpu_ratios) // 2]
    share_median = sorted(shares)[len(shares) // 2]
    benchmark.extra_info.update(
        {
            "records": PAIR_RECORDS,
            "pairs": PAIRS,
            "median_time_ratio": round(median, 4),
            "median_flusher_cpu_ratio": round(cpu_median, 4),
            "median_seal_cpu_share": round(share_median, 4),
            "load": os.getloadavg(),
        }
    )
    rates = {k: PAIR_RECORDS / sorted(v)[len(v) // 2] for k, v in times.items()}
    print(
        f"\nend to end, {PAIRS} pairs of {PAIR_RECORDS:,} records (load {', '.join(f'{x:.2f}' for x in os.getloadavg())}): "
        f"unsealed {rates['janus']:,.0f} rows/s, sealed {rates['janus_sealed']:,.0f} rows/s (medians)"
        f"\n  sealed/unsealed time per pair: " + ", ".join(f"{r:.3f}" for r in ratios) + f"; median {median:.3f}"
        f"\n  sealed/unsealed flusher CPU per pair: " + ", ".join(f"{r:.3f}" for r in cpu_ratios) + f"; median {cpu_median:.3f}"
        f"\n  seal + publish CPU / the rest of the sealed round's flusher CPU: "
        + ", ".join(f"{r:.1%}" for r in shares) + f"; median {share_median:.1%}"
    )
