"""A flusher that is behind commits several batch_size chunks in one transaction.

Counted through the seal chain (one entry per transaction, each verified) and
by exact tokens: every record stored once, also when the process is killed in
the middle of such a transaction.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import apsw
import pytest

import janus_utils as ju
from janus_utils import _flusher as jflusher
from janus_utils import logger as jlog

BATCH = 100


def tokens(db_path: Path) -> list[str]:
    db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [r[0] for r in db.execute("SELECT message FROM logs WHERE message LIKE 'tok-%' ORDER BY id")]
    finally:
        db.close()


def assert_each_once(stored: list[str], count: int) -> None:
    assert len(stored) == len(set(stored)), f"{len(stored) - len(set(stored))} duplicated"
    assert {f"tok-{i}" for i in range(count)} == set(stored)


def transactions(db_path: Path) -> list[int]:
    """Rows sealed by each transaction, oldest first."""
    db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [
            last - first + 1
            for first, last in db.execute(
                "SELECT first_id, last_id FROM janus_seal WHERE kind = 'batch' ORDER BY seq"
            )
        ]
    finally:
        db.close()


@pytest.mark.parametrize("native", [True, False], ids=["native-decode", "python-decode"])
def test_backlog_committed_in_fewer_sealed_transactions(tmp_path: Path, native: bool) -> None:
    """2,000 records waiting, batch_size 100: a few transactions, not twenty; each sealed once, all verify."""
    seal = pytest.importorskip("janus_utils.seal")
    pytest.importorskip("cryptography")
    db, key = tmp_path / "app.db", tmp_path / "seal.key"
    vk = seal.init_key(key)
    ju.configure(db, seal_key_file=key, console=False, batch_size=BATCH)
    try:
        p = jlog._flusher
        assert p is not None
        if not native:
            p.decode_rows = None
        with p.db_lock:  # the flusher waits: a backlog builds up in the ring
            for i in range(2000):
                ju.get_logger("backlog").info("tok-%d", i)
        assert ju.flush(timeout=60)
        caught_up = p.batches
        for round_ in range(3):  # caught up: small batches, one per flush
            for i in range(2000 + round_ * 10, 2010 + round_ * 10):
                ju.get_logger("backlog").info("tok-%d", i)
            assert ju.flush(timeout=30)
        assert p.batches - caught_up == 3
    finally:
        ju.shutdown()
    assert_each_once(tokens(db), 2030)
    sizes = transactions(db)
    assert sum(sizes) == 2030
    backlog = sizes[:-3]
    assert len(backlog) < 2000 // BATCH
    # At most _BACKLOG_BATCHES chunks each: 2,000 rows in 3 transactions, not 20.
    assert len(backlog) == -(-2000 // (BATCH * jflusher._BACKLOG_BATCHES))
    assert max(backlog) == BATCH * jflusher._BACKLOG_BATCHES
    assert sizes[-3:] == [10, 10, 10]
    report = seal.verify(db, vk)
    assert [] == report.findings
    assert (len(sizes), 2030) == (report.batches, report.rows)


def test_retention_limit_keeps_one_batch_per_transaction(tmp_path: Path) -> None:
    """Under max_rows the table may exceed its limit by one batch at most: no bigger transactions."""
    db = tmp_path / "app.db"
    ju.configure(db, console=False, batch_size=BATCH, retention={"max_rows": 10_000})
    try:
        p = jlog._flusher
        assert p is not None
        assert ju.flush(timeout=30)
        with p.db_lock:
            before = p.batches
            for i in range(1000):
                ju.get_logger("backlog").info("tok-%d", i)
        assert ju.flush(timeout=60)
        assert p.batches - before == 1000 // BATCH
    finally:
        ju.shutdown()
    assert_each_once(tokens(db), 1000)


# Builds a backlog of 3,000 records with batch_size 100, then dies by SIGKILL
# inside the first transaction that holds more than one chunk, after its rows
# and their index entries are inserted and before it commits.
_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    import janus_utils as ju
    from janus_utils import _flusher, _rollup
    from janus_utils import logger as jlog

    db, mark = sys.argv[1], sys.argv[2]
    advance = _rollup.advance_batch

    def advance_then_die(conn, rows, first, last):
        advance(conn, rows, first, last)
        if len(rows) > 100:
            with open(mark, "w") as f:
                f.write(str(len(rows)))
            os.kill(os.getpid(), signal.SIGKILL)

    _flusher._rollup.advance_batch = advance_then_die
    ju.configure(db, console=False, batch_size=100)
    p = jlog._flusher
    with p.db_lock:
        for i in range(3000):
            ju.get_logger("killed").info("tok-%d", i)
    ju.flush(timeout=60)
    sys.exit(3)  # not reached: killed inside the commit
    """
)


def test_sigkill_inside_a_big_transaction_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """Killed mid-way through a multi-chunk commit: the next flusher stores every record exactly once."""
    db, mark = tmp_path / "app.db", tmp_path / "killed-at"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED, str(db), str(mark)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert int(mark.read_text()) > BATCH  # it died inside a transaction of several chunks
    assert [] == tokens(db)  # nothing of it was committed
    ju.configure(db, console=False, batch_size=BATCH)
    try:
        assert ju.flush(timeout=60)
    finally:
        ju.shutdown()
    assert_each_once(tokens(db), 3000)
