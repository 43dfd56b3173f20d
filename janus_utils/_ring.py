"""The Python face of the native ring: the only module that touches the compiled ``lib``."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ._ring_cffi import ffi, lib
from .error_handling.utils.errors import (
    RecordTooLargeError,
    RingError,
    RingFormatError,
)

__all__ = ["DEFAULT_CAPACITY", "Ring", "RingStats", "Superseded"]

DEFAULT_CAPACITY = 8 * 1024 * 1024
HEADER_SIZE = lib.JR_HEADER_SIZE
MIN_CAPACITY = lib.JR_MIN_CAPACITY

# Return codes of jr_push*, as the hot path sees them.
OK = lib.JR_OK
FULL = lib.JR_FULL
TOO_LARGE = lib.JR_TOO_LARGE
SUSPECT = lib.JR_SUSPECT
# What Ring.wait_consumer() returns.
WAIT_TIMEOUT = lib.JR_WAIT_TIMEOUT
WAIT_WOKEN = lib.JR_WAIT_WOKEN
WAIT_FILLED = lib.JR_WAIT_FILLED

_RECORD_HEAD = struct.Struct("<QI4x")  # seq, length, reserved: see jr_read

_FORMAT_ERRORS = {
    lib.JR_BAD_MAGIC: "is not a janus ring file (wrong magic); remove it or choose another path",
    lib.JR_BAD_VERSION: "is a janus ring of another format version; drain it with the janus_utils "
    "version that wrote it, or remove it",
    lib.JR_BAD_SIZE: "has a size that does not match its header (truncated or damaged); remove it",
    # Only real damage: a second flusher is JR_MOVED (Superseded), not this.
    # Removing the file under running processes would leave them pushing into
    # a file no flusher drains: stop them first.
    lib.JR_CORRUPT: "has a damaged header or cursors, so its records cannot be read back; stop "
    "every process that logs into this database, then move the file aside",
}



class Superseded(Exception):
    """Another consumer has released records past this handle, or is releasing now.

    Not damage, and not the user's concern: two flushers believed they were
    elected (a lock file deleted, a stopped flusher replaced and resumed).
    The flusher catches it and stops consuming.
    """


Policy = Literal["block", "drop", "spill"]
# "spill": as "block", but a push that times out returns FULL without counting
# a drop: the logger stores the record in a spill file (_spill), and counts
# the drop itself (count_drop) only if that fails.  Not for opening a ring.
_POLICIES = {"block": lib.JR_POLICY_BLOCK, "drop": lib.JR_POLICY_DROP, "spill": lib.JR_POLICY_SPILL}


@dataclass(frozen=True, slots=True)
class RingStats:
    """Counters of one ring file, shared by every process that has it open."""

    capacity: int
    head: int
    tail: int
    read_pos: int
    dropped: int
    torn: int
    high_water: int
    ring_id: int
    torn_bytes: int = 0  # bytes skipped with the torn records (exact; torn may be an estimate)
    leader: int = 0  # token of the consumer that last claimed the ring (0: none)
    beat: int = 0  # its heartbeat: moves while that consumer runs
    full_waits: int = 0  # pushes that found the ring full and waited for room (any process)
    full_wait_ns: int = 0  # their time waiting, summed
    full_wait_max_ns: int = 0  # the longest of them

    @property
    def used(self) -> int:
        """Bytes reserved and not yet released."""
        return self.head - self.tail


def _ns(seconds: float | None) -> int:
    """Seconds to the C side's nanoseconds; None means "no limit" (-1)."""
    if seconds is None:
        return -1
    if seconds < 0:
        raise ValueError(f"a timeout must be >= 0 seconds or None, got {seconds}")
    return int(seconds * 1e9)


class Ring:
    """A memory-mapped multi-producer, single-consumer ring of byte records.

    Any thread or process may ``push``; one consumer at a time ``read``s and
    ``release``s.  See ``_native/ring.h`` for the guarantees.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        capacity: int | None = DEFAULT_CAPACITY,
        *,
        create: bool = True,
        policy: Policy = "block",
        block_timeout: float | None = None,
        torn_timeout: float = 1.0,
    ) -> None:
        self.path = os.fspath(path)
        if policy not in ("block", "drop"):  # "spill" is set later, by set_policy
            raise ValueError(f"policy must be 'block' or 'drop', not {policy!r}")
        cap = 0 if capacity is None else int(capacity)
        if cap and (cap < MIN_CAPACITY or cap & (cap - 1)):
            raise ValueError(
                f"ring capacity must be a power of two >= {MIN_CAPACITY}, got {capacity}"
            )
        out = ffi.new("jr_ring **")
        rc = lib.jr_open(
            os.fsencode(self.path), cap, int(create), _POLICIES[policy], _ns(block_timeout), out
        )
        if rc != OK:
            raise self._open_error(rc, cap)
        self._ptr = ffi.gc(out[0], lib.jr_close)
        lib.jr_set_torn_timeout(self._ptr, _ns(torn_timeout))
        self.policy: Policy = policy
        self.max_record = int(lib.jr_max_record(self._ptr))
        self._buf_size = 1 << 20
        self._buf = ffi.new("uint8_t[]", self._buf_size)
        self._used = ffi.new("size_t *")
        self._next = ffi.new("uint64_t *")
        self._stats = ffi.new("jr_stats *")

    def _open_error(self, rc: int, cap: int) -> RingError:
        """The error for a native code from opening or, for JR_CORRUPT, any later call."""
        if rc in _FORMAT_ERRORS:
            return RingFormatError(f"ring file {self.path!r} {_FORMAT_ERRORS[rc]}")
        if rc == lib.JR_SIZE_MISMATCH:
            return RingFormatError(
                f"ring file {self.path!r} exists with another capacity than {cap} bytes; "
                "open it with capacity=None to use its own size, or drain and remove it"
            )
        if rc == lib.JR_INSECURE:
            return RingFormatError(
                f"ring file {self.path!r} is not a regular file owned by this user with "
                "mode 0600; refusing to use it (another user could read or forge log "
                "records): remove it, or put the database in a private directory"
            )
        if rc == lib.JR_ERRNO:
            err = ffi.errno
            return RingError(
                f"cannot open ring file {self.path!r}: {os.strerror(err)}", details={"errno": err}
            )
        return RingError(f"cannot open ring file {self.path!r} (code {rc})")

    # -- producers ---------------------------------------------------------

    def push(self, data: bytes) -> bool:
        """Append one record.  True once it is in the file; False if the ring was full
        and the record was dropped (counted in ``stats().dropped``)."""
        rc = lib.jr_push(self._ptr, data, len(data))
        if rc == OK:
            return True
        return self._push_failed(rc, len(data))

    def push_wait(self, data: bytes, timeout: float | None) -> bool:
        """As ``push`` but block up to *timeout* seconds for room (None: forever)."""
        rc = lib.jr_push_ex(self._ptr, data, len(data), lib.JR_POLICY_BLOCK, _ns(timeout))
        if rc == OK:
            return True
        return self._push_failed(rc, len(data))

    def push_now(self, data: bytes) -> bool:
        """Append one record if the ring has room now: never waits, never counts a drop."""
        return lib.jr_push_ex(self._ptr, data, len(data), lib.JR_POLICY_TRY, 0) == OK

    def _push_failed(self, rc: int, size: int) -> bool:
        if rc == FULL:
            return False
        if rc == TOO_LARGE:
            raise RecordTooLargeError(
                f"a {size}-byte record cannot fit in this ring (at most {self.max_record} "
                "bytes); shorten it or open the ring with a larger capacity",
                details={"size": size, "max_record": self.max_record},
            )
        raise RingError(f"push failed with code {rc}")

    def pusher(self) -> Callable[[bytes], int]:
        """A bare ``push(data) -> code`` for the logger's hot path.

        It skips the checks of ``push``: the caller compares the code with
        ``OK``/``FULL``/``TOO_LARGE`` itself.
        """
        fn = lib.jr_push
        ptr = self._ptr

        def push(data: bytes) -> int:
            return fn(ptr, data, len(data))

        return push

    def checked_pusher(self) -> Callable[[bytes], int]:
        """As ``pusher`` but runs the secret prefilter first (code ``SUSPECT``)."""
        fn = lib.jr_push_checked
        ptr = self._ptr

        def push(data: bytes) -> int:
            return fn(ptr, data, len(data))

        return push

    def raw_push(self, *, checked: bool = False) -> tuple[Callable[[Any, bytes, int], int], Any]:
        """``(fn, handle)`` for the logger's hot path: ``fn(handle, data, len(data))``.

        One Python frame fewer than ``pusher()``; the handle stays valid while
        this Ring is open.  Codes as for ``pusher``.  With *checked*, ``data``
        must be a record as the logger encodes it: the prefilter runs on each
        of its strings and int fields (``suspect_record``) and ``SUSPECT``
        means nothing was pushed.
        """
        return (lib.jr_push_record_checked if checked else lib.jr_push), self._ptr

    def native(self) -> tuple[int, int, int]:
        """``(ring, jr_push_ex, jr_suspect)`` as addresses, for C code that pushes itself.

        ``janus_utils._speedups`` calls the ring through these; the ring
        address stays valid while this Ring is open.
        """
        def address(cdata: Any) -> int:
            return int(ffi.cast("uintptr_t", cdata))

        return (
            address(self._ptr),
            address(ffi.addressof(lib, "jr_push_ex")),
            address(ffi.addressof(lib, "jr_suspect")),
        )

    def set_policy(self, policy: Policy, block_timeout: float | None = None) -> None:
        """Change what a push does when the ring is full (see ``__init__`` and ``_POLICIES``)."""
        if policy not in _POLICIES:
            raise ValueError(f"policy must be 'block', 'drop' or 'spill', not {policy!r}")
        lib.jr_set_policy(self._ptr, _POLICIES[policy], _ns(block_timeout))
        self.policy = policy

    def count_drop(self) -> None:
        """Count one record as dropped in the shared counters (see the "spill" policy)."""
        lib.jr_count_drop(self._ptr)

    def set_prefilter(self, tokens: Iterable[str]) -> None:
        """Install the prefilter's tokens (lowercase ASCII; "^tok", "tok$" anchor to a word)."""
        blob = b"\0".join(t.lower().encode("ascii") for t in tokens)
        if lib.jr_set_prefilter(self._ptr, blob, len(blob)) != OK:
            raise ValueError("prefilter tokens must be ASCII, at most 256 of them in 4096 bytes")

    def native_prefilter(self) -> dict[str, int]:
        """The C encoder's further prefilter arguments: ``jr_suspect_span``'s and
        ``jr_quiet_prefix``'s addresses and the table's digit reach
        (``janus_utils._speedups.Emitter``'s keywords of those names)."""
        return {
            "suspect_span": int(ffi.cast("uintptr_t", ffi.addressof(lib, "jr_suspect_span"))),
            "quiet_prefix": int(ffi.cast("uintptr_t", ffi.addressof(lib, "jr_quiet_prefix"))),
            "digit_reach": self.prefilter_digit_reach(),
        }

    def quiet_prefix(self, data: bytes) -> int:
        """How many of *data*'s first bytes no match can start at, whatever text follows them."""
        return int(lib.jr_quiet_prefix(self._ptr, data, len(data)))

    def suspect_span(self, data: bytes, start: int, stop: int) -> bool:
        """As ``suspect``, for what starts in ``data[start:stop]`` only (read on past *stop*,
        with ``data[start - 1]`` as the byte before)."""
        return bool(lib.jr_suspect_span(self._ptr, data, len(data), start, stop))

    def prefilter_digit_reach(self) -> int:
        """How many digits in a row a prefilter token can hold (255: a token starts or ends
        with one, or no prefilter is set).  Integers of more digits than this cannot change
        a text's verdict by their value, only by their count of digits."""
        return int(lib.jr_prefilter_digit_reach(self._ptr))

    def suspect(self, data: bytes) -> bool:
        """True if the prefilter would send the text *data* (UTF-8) to full redaction."""
        return bool(lib.jr_suspect(self._ptr, data, len(data)))

    def suspect_key(self, data: bytes) -> bool:
        """As ``suspect``, for a key (a dict key): its end also ends a key word ("pin$")."""
        return bool(lib.jr_suspect_key(self._ptr, data, len(data)))

    def suspect_record(self, data: bytes) -> bool:
        """True if the prefilter would send the encoded record *data* to full redaction."""
        return bool(lib.jr_suspect_record(self._ptr, data, len(data)))

    # -- the consumer ------------------------------------------------------

    def read(self, max_records: int = 4096) -> tuple[list[tuple[int, bytes]], int]:
        """Committed records in order, as ``(seq, payload)``, and the position after them.

        Pass that position to ``release`` once the records are stored.  Returns
        an empty list when nothing is ready.
        """
        n, view, upto = self.read_raw(max_records)
        raw = view[:]
        out: list[tuple[int, bytes]] = []
        off = 0
        unpack = _RECORD_HEAD.unpack_from
        for _ in range(n):
            seq, size = unpack(raw, off)
            off += 16
            out.append((seq, raw[off : off + size]))
            off += size
        return out, upto

    def read_raw(self, max_records: int = 4096) -> tuple[int, Any, int]:
        """As ``read``, unsplit: ``(count, buffer, position after them)``.

        The buffer holds each record as a 16-byte head (seq u64, length u32,
        4 spare bytes) and its payload, and is only valid until the next read.
        """
        while True:
            n = lib.jr_read(
                self._ptr, self._buf, self._buf_size, max_records, self._used, self._next
            )
            if n == lib.JR_CORRUPT:
                raise self._open_error(n, 0)
            if n == lib.JR_MOVED:
                raise Superseded(f"another consumer has released records of {self.path!r} past this reader")
            if n != lib.JR_BUFFER_SMALL:
                break
            # The next record is bigger than the buffer: grow it and try again.
            self._buf_size = max(self._buf_size * 2, int(self._used[0]))
            self._buf = ffi.new("uint8_t[]", self._buf_size)
        return n, ffi.buffer(self._buf, int(self._used[0])), int(self._next[0])

    def release(self, upto: int) -> None:
        """Give back everything before position *upto* (records already stored)."""
        rc = lib.jr_release(self._ptr, upto)
        if rc == lib.JR_CORRUPT:
            raise self._open_error(rc, 0)
        if rc in (lib.JR_MOVED, lib.JR_BUSY):
            raise Superseded(f"another consumer is releasing records of {self.path!r} (to {upto})")
        if rc != OK:
            stats = self.stats()
            raise RingError(
                f"cannot release up to {upto}: it must be a record boundary between the "
                f"tail ({stats.tail}) and the head ({stats.head})"
            )

    def rewind(self) -> None:
        """Read again from the oldest unreleased record (after a failed store)."""
        lib.jr_rewind(self._ptr)

    # -- the consumer's election --------------------------------------------

    def claim(self, token: int, expected: int) -> bool:
        """Become the ring's consumer if *expected* still is (0: none); True if so."""
        return bool(lib.jr_claim(self._ptr, expected, token))

    def beat(self, token: int) -> bool:
        """Advance the heartbeat; False if another consumer has claimed the ring since."""
        return bool(lib.jr_beat(self._ptr, token))

    def wait_consumer(self, min_used: int, timeout: float) -> int:
        """Wait, without the GIL, until wake_consumer() is called (now or since the last
        wait that returned WAIT_WOKEN), the ring holds *min_used* bytes, or *timeout*
        seconds pass: WAIT_WOKEN, WAIT_FILLED or WAIT_TIMEOUT."""
        return int(lib.jr_wait_consumer(self._ptr, max(min_used, 0), max(int(timeout * 1e9), 0)))

    def wait_tail(self, target: int, timeout: float) -> bool:
        """Wait, without the GIL, until the consumer has released every record up to the
        byte position *target* (a head from stats()) or *timeout* seconds pass; True if it has."""
        return bool(lib.jr_wait_tail(self._ptr, target, max(int(timeout * 1e9), 0)))

    def wake_consumer(self) -> None:
        """End the wait_consumer() in progress, or the next one (nothing once closed)."""
        if self._ptr is not None:  # flush() or stop() may come after close(): not a crash
            lib.jr_wake_consumer(self._ptr)

    # -- state -------------------------------------------------------------

    def stats(self) -> RingStats:
        """A snapshot of the shared counters and cursors."""
        s = self._stats
        lib.jr_get_stats(self._ptr, s)
        return RingStats(
            capacity=s.capacity,
            head=s.head,
            tail=s.tail,
            read_pos=s.read_pos,
            dropped=s.dropped,
            torn=s.torn,
            high_water=s.high_water,
            ring_id=s.ring_id,
            torn_bytes=s.torn_bytes,
            leader=s.leader,
            beat=s.beat,
            full_waits=s.full_waits,
            full_wait_ns=s.full_wait_ns,
            full_wait_max_ns=s.full_wait_max_ns,
        )

    @property
    def head(self) -> int:
        """The position after the last reservation, in any process."""
        return self.stats().head

    @property
    def tail(self) -> int:
        """Everything before this position has been released by a consumer."""
        return self.stats().tail

    def close(self) -> None:
        """Unmap the file.  The ring must not be used afterwards."""
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            ffi.release(ptr)

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- test hooks --------------------------------------------------------

    def _debug_reserve_only(
        self, size: int, *, write_header: bool = True, by_pid: bool = False, claim_only: bool = False
    ) -> None:
        """Reserve a record and never commit it, like a producer killed mid-push.

        write_header=False: killed right after reserving; claim_only: after
        claiming, before the length; by_pid: name the producer by its pid, as
        a record without a liveness slot does (an older version, no OFD locks).
        """
        mode = (3 if claim_only else 2 if by_pid else 1) if write_header else 0
        rc = lib.jr_debug_reserve_only(self._ptr, size, mode)
        if rc != OK:
            raise RingError(f"reserve failed with code {rc}")


def debug_push_stalled(ring: Ring, data: bytes, seconds: float) -> None:
    """Push *data*, sleeping *seconds* between reserving and the first write (a test hook)."""
    rc = lib.jr_debug_push_stalled(ring._ptr, data, len(data), _ns(seconds))
    if rc != OK:
        raise RingError(f"push failed with code {rc}")


def noop_call(ring: Ring) -> Callable[[bytes], int]:
    """An empty native call with the push's argument shape, for benchmarks."""
    fn = lib.jr_noop
    ptr = ring._ptr

    def noop(data: bytes) -> int:
        return fn(ptr, data, len(data))

    return noop
