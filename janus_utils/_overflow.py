"""Held records: where a record goes when neither the ring nor a spill file takes it.

A ring that stays full (no flusher can commit: a full disk) sends a record to
a spill file after ``block_timeout``; when that cannot be written either (the
same full disk, or ``spill_max_bytes`` reached), the log call keeps the
record in this process's memory, up to ``hold_max_bytes``, instead of
dropping it.  While any record is held, every later call of the process
queues behind it, so each thread's records reach the ring in the order they
were logged; each such call waits up to ``block_timeout`` for its turn, as a
push into a full ring would, then returns with its record held.

A thread of the process (started when the first record is held, ended when
none is) moves held records into the ring as soon as it has room, or into a
spill file once one can be written.  ``flush()`` waits for them within its
timeout, and ``shutdown()`` (interpreter exit: ``exit_timeout``) gives them
its time; what is still held after that is counted in ``stats()["dropped"]``
and said on stderr.  Held records live in memory only: a process killed
(SIGKILL, out of memory) while it holds some loses them.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

__all__ = ["MemoryOverflow"]

_RETRY = 0.005  # seconds between the mover's tries while nothing takes a record
_RETRY_MAX = 0.05


class MemoryOverflow:
    """One process's held records, oldest first, and the thread that moves them on.

    *store* ``(data) -> bool`` puts one record into the ring or a spill file
    without waiting; *holding* ``(bool)`` is told when the first record is
    held (True) and when the last is moved on (False), under the lock.
    """

    def __init__(self, limit_bytes: int, store: Callable[[bytes], bool], holding: Callable[[bool], None]) -> None:
        self.limit = limit_bytes
        self._store = store
        self._holding = holding
        self._reset()

    def _reset(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[bytes] = collections.deque()
        self.bytes = 0  # bytes held now
        self.added = 0  # records ever held (their sequence numbers run 1, 2, ...)
        self.moved = 0  # of those, moved on (stored) or given up
        self.given_up = 0  # records still held at shutdown: not stored
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def count(self) -> int:
        """Records held now (read without the lock: a hint, exact under it)."""
        return len(self._queue)

    def hold(self, data: bytes) -> int:
        """Hold *data* behind the records held already; its sequence number, 0 if over the limit."""
        with self.cond:
            if self._closed or self.bytes + len(data) > self.limit:
                return 0
            self._queue.append(data)
            self.bytes += len(data)
            self.added += 1
            if len(self._queue) == 1:
                self._holding(True)
            if self._thread is None:
                self._start_mover()
            return self.added

    def wait(self, seq: int, timeout: float | None) -> bool:
        """Wait until record *seq* is moved on; False if *timeout* seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while self.moved < seq:
                if self._thread is None:  # no mover (interpreter exit): move them here
                    self._move_locked()
                    if self.moved >= seq:
                        break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.cond.wait(_RETRY_MAX if left is None else min(left, _RETRY_MAX))
        return True

    def move(self) -> int:
        """Move held records on while the ring or a spill file takes them; how many were."""
        with self.cond:
            return self._move_locked()

    def _move_locked(self) -> int:
        moved = 0
        queue = self._queue
        while queue:
            data = queue[0]
            if not self._store(data):
                break
            queue.popleft()
            self.bytes -= len(data)
            self.moved += 1
            moved += 1
        if moved:
            if not queue:
                self._holding(False)
            self.cond.notify_all()
        return moved

    def _start_mover(self) -> None:
        thread = threading.Thread(target=self._run, name="janus-held", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter exit: callers and shutdown() move them
            return
        self._thread = thread

    def _run(self) -> None:
        delay = _RETRY
        with self.cond:
            while self._queue and not self._closed:
                delay = _RETRY if self._move_locked() else min(delay * 2, _RETRY_MAX)
                if self._queue:
                    self.cond.wait(delay)
            self._thread = None

    def give_up(self) -> int:
        """Shutdown: stop holding; returns how many records were still held (not stored)."""
        with self.cond:
            self._move_locked()
            left = len(self._queue)
            self._queue.clear()
            self.bytes = 0
            self.moved = self.added
            self.given_up += left
            self._closed = True
            if left:
                self._holding(False)
            self.cond.notify_all()
            return left

    def after_fork_child(self) -> None:
        """The parent's held records stay the parent's: the child starts with none."""
        given_up = self.given_up
        self._reset()
        self.given_up = given_up
