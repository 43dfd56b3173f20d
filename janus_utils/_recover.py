"""Records a crashed process left in the ring: how many wait, and committing them (janus-logs recover).

A record whose log call returned is in the ring file beside the database
(``DB-ring``) until a flusher commits it.  When every process that logs into
the database is gone, nothing commits it until an application calls
``configure()`` again, and searches do not see it.  ``waiting()`` counts such
records without committing anything (the read commands say so on stderr);
``recover()`` commits them with the flusher itself (``_flusher.Flusher``,
under its election lock and its fenced commit), so a record is stored once
whether recover, an application, or both at once get to it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import apsw

from . import _resource, _ring
from ._record import decode_row
from .file_handler import FileLock

__all__ = ["RingState", "recover", "waiting"]


@dataclass(frozen=True, slots=True)
class RingState:
    """What the ring beside a database holds that the database does not."""

    ring_path: str
    records: int | None  # records not committed yet; None when a running flusher owns the ring
    bytes: int  # bytes reserved and not released (committed records a flusher has not released included)
    flusher_running: bool  # a process holds the flusher's lock: it commits them itself


@dataclass(frozen=True, slots=True)
class RecoverSummary:
    """What ``recover()`` did."""

    ring_path: str
    committed: int  # records committed now
    left: int  # records still in the ring afterwards (0 unless the deadline passed)
    flusher_running: bool  # another process is the flusher: nothing was done here


def _paths(db_path: str) -> tuple[str, str]:
    path = os.path.abspath(db_path)
    return path + "-ring", path + "-flusher.lock"


def _committed_upto(db_path: str, ring_id: str) -> int | None:
    """The ring position the database has stored records up to, read-only; None if unknown."""
    if not os.path.isfile(db_path):
        return None
    try:
        db = apsw.Connection(db_path, flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error:
        return None
    try:
        db.setbusytimeout(2000)
        rows = db.execute(
            'SELECT committed_upto FROM "janus_ring_state" WHERE ring_id = ?', (ring_id,)
        ).fetchall()
        return int(rows[0][0]) if rows else None
    except apsw.Error:
        return None
    finally:
        db.close()


def _count_unstored(ring: _ring.Ring, stored_upto: int | None) -> int:
    """Records in *ring* at or past *stored_upto*; read through this handle only, never released."""
    stats = ring.stats()
    if stored_upto is None or stored_upto > stats.head:  # another ring's row: the flusher ignores it too
        stored_upto = 0
    count = 0
    ring.rewind()
    while True:
        batch, _ = ring.read(4096)
        if not batch:
            break
        count += sum(1 for seq, payload in batch if seq >= stored_upto and not _is_announcement(payload))
    return count


def _is_announcement(payload: bytes) -> bool:
    """A process's service and host (see _resource): stored as metadata, not as a record."""
    try:
        row = decode_row(payload)
    except Exception:
        return False  # the flusher stores an undecodable payload as a record saying so
    return row[1] == _resource.ANNOUNCE_LEVEL and row[2] == _resource.ANNOUNCE_LOGGER


def waiting(db_path: str) -> RingState | None:
    """The records left in the ring of *db_path* that no process commits; None when there is no ring.

    Counted under the flusher's lock, which a running flusher holds: then only
    the bytes in use are known and ``flusher_running`` is True.
    """
    ring_path, lock_path = _paths(db_path)
    if not os.path.isfile(ring_path):
        return None
    try:
        ring = _ring.Ring(ring_path, None, create=False)
    except Exception:  # damaged or foreign: the flusher reports that when it opens it
        return None
    try:
        used = ring.stats().used
        if used == 0:
            return RingState(ring_path, 0, 0, False)
        lock = FileLock(lock_path)
        try:
            if not lock.acquire(blocking=False):
                return RingState(ring_path, None, used, True)
        except OSError:  # no right to the lock file: say what is known
            return RingState(ring_path, None, used, False)
        try:
            ring_id = f"{ring.stats().ring_id:016x}"
            count = _count_unstored(ring, _committed_upto(os.path.abspath(db_path), ring_id))
        finally:
            lock.release()
        return RingState(ring_path, count, used, False)
    except _ring.Superseded:
        return RingState(ring_path, None, ring.stats().used, True)
    finally:
        ring.close()


def recover(db_path: str, timeout: float | None = 60.0) -> RecoverSummary:
    """Commit what the ring of *db_path* holds, with the flusher's own machinery.

    When a running process is the flusher, nothing is done (it commits them).
    Otherwise a Flusher is started in this process, drains the ring up to its
    head as ``shutdown()`` does, and stops; *timeout* bounds the wait.
    """
    from ._flusher import Flusher
    from .logger import _check_config

    ring_path, lock_path = _paths(db_path)
    if not os.path.isfile(ring_path):
        return RecoverSummary(ring_path, 0, 0, False)
    probe = FileLock(lock_path)
    if not probe.acquire(blocking=False):
        return RecoverSummary(ring_path, 0, 0, True)
    probe.release()
    cfg = _check_config(db_path, console=False, exit_timeout=timeout)
    flusher = Flusher(cfg)
    flusher.start()
    if not flusher.leader:  # an application became the flusher meanwhile: it commits them
        flusher.stop(timeout)
        return RecoverSummary(ring_path, flusher.committed, 0, True)
    target = flusher.ring.stats().head
    flusher.stop(timeout, target=target)
    left = flusher.records_left(target) or 0
    return RecoverSummary(ring_path, flusher.committed, left, False)


def notice(db_path: str) -> str | None:
    """One line for stderr when records wait in the ring that no process commits; else None."""
    with contextlib.suppress(Exception):  # a notice must never break the command it decorates
        state = waiting(db_path)
        if state is None or state.flusher_running or not state.records:
            return None
        return (
            f"{state.records:,} records wait in {state.ring_path}, left by a process that ended "
            f"before committing them; they are not in these results: janus-logs recover --db {db_path}"
        )
    return None
