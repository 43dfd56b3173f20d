"""A seeded log database of realistic records, written the way the flusher writes them.

Shared by the console benchmark (10,000,000 rows) and the README screenshot
(a few thousand): loggers, users, requests, agents, traces, fields and
tracebacks in the proportions a busy backend produces.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from janus_utils._flusher import open_database
from janus_utils._schema import COLUMNS, FTS_TABLE, TABLE

__all__ = ["seed_database"]

_INSERT = f'INSERT INTO "{TABLE}" ({", ".join(COLUMNS)}) VALUES ({", ".join("?" for _ in COLUMNS)})'
_INDEX = (
    f'INSERT INTO "{FTS_TABLE}"(rowid, message, fields, exception) '
    f'SELECT id, message, fields, exception FROM "{TABLE}" WHERE id > ?'
)

LOGGERS = (
    "svc.api", "svc.api.auth", "svc.db", "svc.payments", "svc.payments.stripe", "svc.cache",
    "svc.search", "worker.email", "worker.reports", "worker.billing", "agent.planner",
    "agent.executor", "ext.s3", "ext.smtp", "svc.api.orders", "svc.api.users",
)
# (level, weight)
LEVELS = ((10, 30), (20, 55), (30, 10), (40, 45), (50, 5))
_LEVEL_POOL = [lv for lv, w in ((10, 300), (20, 550), (30, 100), (40, 45), (50, 5)) for _ in range(w)]
TABLES = ("orders", "users", "payments", "sessions", "invoices", "carts")
SERVICES = ("inventory", "billing-api", "geo", "mailer", "ledger")
ROUTES = ("/api/orders", "/api/users", "/api/cart", "/api/search", "/api/invoices", "/health")

TRACEBACK = """Traceback (most recent call last):
  File "/srv/app/svc/payments.py", line 212, in charge
    receipt = gateway.charge(order.total, card=order.card)
  File "/srv/app/ext/stripe.py", line 88, in charge
    raise PaymentError(f"card declined: {code}")
svc.errors.PaymentError: card declined: insufficient_funds"""


def _message(rng: random.Random, level: int, logger: str, n: int) -> tuple[str, dict[str, Any], str | None]:
    order = rng.randrange(1, 500_000)
    ms = rng.randrange(1, 3000)
    if level >= 40:
        pick = rng.randrange(4)
        if pick == 0:
            return f"payment failed for order {order}: card declined", {"order": order, "amount": rng.randrange(5, 900)}, TRACEBACK
        if pick == 1:
            return f"gateway timeout calling {rng.choice(SERVICES)} after {ms} ms", {"ms": ms, "status": 504}, None
        if pick == 2:
            return f"database connection refused (pool exhausted, {rng.randrange(1, 64)} waiting)", {"pool": "main"}, None
        return f"unhandled error in {rng.choice(ROUTES)}", {"status": 500}, TRACEBACK.replace("PaymentError", "KeyError")
    if level == 30:
        if rng.random() < 0.5:
            return f"slow query {ms} ms on {rng.choice(TABLES)}", {"ms": ms, "rows": rng.randrange(1, 10_000)}, None
        return f"retrying {rng.choice(SERVICES)} (attempt {rng.randrange(2, 5)})", {"attempt": rng.randrange(2, 5)}, None
    if level == 20:
        pick = rng.randrange(3)
        if pick == 0:
            status = rng.choice((200, 200, 200, 201, 204, 302, 404))
            return f"GET {rng.choice(ROUTES)}/{order} {status} in {ms} ms", {"status": status, "ms": ms}, None
        if pick == 1:
            return f"user logged in from {rng.choice(('web', 'ios', 'android'))}", {"method": "password"}, None
        return f"order {order} placed, {rng.randrange(1, 9)} items", {"order": order}, None
    return f"cache {'hit' if rng.random() < 0.8 else 'miss'} key order:{order}", {"key": f"order:{order}"}, None


def rows(count: int, *, start_ts: int, end_ts: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """*count* rows evenly spread from *start_ts* to *end_ts* (ns), oldest first."""
    rng = random.Random(seed)
    step = max((end_ts - start_ts) // max(count, 1), 1)
    request = None
    for n in range(count):
        # Evenly spread, with a jitter that keeps ts in commit (id) order.
        ts = start_ts + n * step + rng.randrange(0, step)
        level = rng.choice(_LEVEL_POOL)
        logger = rng.choice(LOGGERS)
        message, fields, exc = _message(rng, level, logger, n)
        if n % 5 == 0 or request is None:
            request = f"req-{rng.getrandbits(40):010x}"
        user = f"u{rng.randrange(1, 5000)}" if rng.random() < 0.6 else None
        agent = f"agent-{rng.randrange(1, 12)}" if logger.startswith("agent") else None
        trace = f"{rng.getrandbits(128):032x}" if rng.random() < 0.3 else None
        span = f"{rng.getrandbits(64):016x}" if trace else None
        values = {
            "ts": ts,
            "level": level,
            "logger": logger,
            "message": message,
            "user_id": user,
            "agent_id": agent,
            "request_id": request,
            "trace_id": trace,
            "span_id": span,
            "pid": 4100 + n % 4,
            "thread": f"worker-{n % 8}",
            "exception": exc,
            "fields": json.dumps(fields),
            "service": "shop-api" if logger.startswith("svc") else "shop-worker",
            "host": f"web-{n % 3 + 1}",
        }
        yield tuple(values.get(c) for c in COLUMNS)


def seed_database(path: str | os.PathLike[str], count: int, *, span_s: float = 7 * 86400,
                  batch: int = 100_000, progress: bool = False) -> Path:
    """Write *count* rows ending now into a new database at *path* (which must not exist)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists: remove it or seed another path")
    db = open_database(str(path))
    end = time.time_ns()
    start = end - int(span_s * 1e9)
    started = time.monotonic()
    try:
        pending: list[tuple[Any, ...]] = []
        written = 0
        for row in rows(count, start_ts=start, end_ts=end):
            pending.append(row)
            if len(pending) >= batch:
                _write(db, pending)
                written += len(pending)
                pending = []
                if progress:
                    rate = written / (time.monotonic() - started)
                    print(f"\rseeded {written:,} of {count:,} rows ({rate:,.0f}/s)", end="", file=sys.stderr)
        if pending:
            _write(db, pending)
        db.wal_checkpoint(mode=3)  # TRUNCATE: the file alone holds everything
    finally:
        db.close()
    if progress:
        print(f"\rseeded {count:,} rows in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return path


def _write(db: Any, batch: list[tuple[Any, ...]]) -> None:
    with db:
        last = db.execute(f'SELECT coalesce(max(id), 0) FROM "{TABLE}"').fetchall()[0][0]
        db.executemany(_INSERT, batch)
        db.execute(_INDEX, (last,))
