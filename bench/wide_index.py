"""What the CJK/emoji trigram index (logs_wide) costs: bytes per record and insert time, with and without it.

Run ``python -m bench.wide_index [ROWS]``.  Two corpora: ASCII only (the
trigger's GLOB finds nothing) and one where 10% of messages hold Japanese or
an emoji.  Each is written in batches of 2,000 as the flusher writes them,
into a database at the schema before the index and one with it.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time

import apsw

from janus_utils import _schema
from janus_utils._flusher import _INDEX, _INSERT

WORDS = "order payment user request timeout connection reset cache miss hit db pool retry shipped refunded".split()
WIDE = ["日本語のログを書きました", "注文が失敗しました", "deploy 🚀 done", "fire 🔥 alarm"]


def corpus(rows: int, wide_share: float, seed: int = 7) -> list[tuple[object, ...]]:
    rng = random.Random(seed)
    out = []
    for n in range(rows):
        words = " ".join(rng.choice(WORDS) for _ in range(12))
        message = f"{words} id={n}" + (" " + rng.choice(WIDE) if rng.random() < wide_share else "")
        out.append((1_700_000_000_000_000_000 + n, 20, "app.web", message, None, None, f"req-{n}", None, None,
                    1234, "MainThread", None, '{"status": 200}', "svc", "host"))
    return out


def write(path: str, rows: list[tuple[object, ...]], wide: bool) -> float:
    db = apsw.Connection(path)
    _schema.apply_connection_settings(db)
    target = _schema.SCHEMA_VERSION if wide else max(v for v, sql in _schema.MIGRATIONS.items() if "logs_wide" in sql)
    with db:
        for version in range(target):
            db.execute(_schema.MIGRATIONS[version])
    started = time.perf_counter()
    for i in range(0, len(rows), 2000):
        with db:
            last = db.execute('SELECT coalesce(max(id), 0) FROM "logs"').fetchall()[0][0]
            db.executemany(_INSERT, rows[i : i + 2000])
            db.execute(_INDEX, (last,))
            if wide:
                db.execute(_schema.WIDE_INDEX_SQL, (last,))
    elapsed = time.perf_counter() - started
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return elapsed


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    print(f"python {sys.version.split()[0]}, SQLite {apsw.sqlite_lib_version()}, {rows:,} rows, load {os.getloadavg()[0]:.2f}")
    for name, share in (("ascii", 0.0), ("10% CJK/emoji", 0.1)):
        data = corpus(rows, share)
        runs: dict[bool, tuple[list[float], list[int]]] = {False: ([], []), True: ([], [])}
        for _ in range(5):  # interleaved: both see the same load
            for wide in (False, True):
                with tempfile.TemporaryDirectory() as tmp:
                    path = os.path.join(tmp, "b.db")
                    runs[wide][0].append(write(path, data, wide))
                    runs[wide][1].append(os.path.getsize(path))
        results = {wide: (statistics.median(t), statistics.median(s)) for wide, (t, s) in runs.items()}
        (t0, s0), (t1, s1) = results[False], results[True]
        print(f"{name:<14} without: {s0 / rows:6.1f} B/record {rows / t0:8.0f} rows/s | "
              f"with: {s1 / rows:6.1f} B/record {rows / t1:8.0f} rows/s | "
              f"bytes x{s1 / s0:.3f}, time x{t1 / t0:.2f}")


if __name__ == "__main__":
    main()
