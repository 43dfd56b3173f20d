"""Spill files: where a record goes when the ring stays full past ``block_timeout``.

The ring fills when no flusher commits: one stopped inside a commit (it holds
SQLite's write lock, so no other process can take over), a database locked for
longer than ``block_timeout``, a disk that refuses writes.  Rather than drop
the record, the log call appends it to its process's spill file in
``<db>-spill/`` and returns; later calls of that process spill at once, without
waiting again, until the flusher is seen to move.  The flusher commits spill
files as it commits the ring: a file's read position is stored in the same
transaction as its rows (``janus_ring_state``, key ``spill/<name>``), so a
crash at any point neither loses nor repeats a record.  A file is deleted once
it is committed to its end and its writer has closed it (the writer holds a
shared ``flock`` while it may append).

A frame is ``<length:u32><crc32:u32><record>``, the record exactly as the ring
would hold it (already redacted).  A frame cut short by a writer that died
inside its ``write`` is skipped once the writer is gone: that call never
returned.

A disk that fills refuses spill files too.  So that records can still reach
the disk then, each process sets aside ``spill_reserve_bytes`` at
``configure()``: an empty ``.reserve`` file whose blocks are allocated ahead
(``fallocate`` with ``FALLOC_FL_KEEP_SIZE``).  A spill write refused for lack
of room renames it into the next spill file and writes into those blocks;
once it is used up, records go to the process's memory (_overflow).  A new
reserve is set aside when spilling ends.  A reserve whose process is gone
(it holds a shared ``flock`` on it) is deleted by the next one made.

Records from a spill file are committed after the ring records that were
pushed before them caught up, so their ids are not in time order with
records of other processes; ``ts`` is always the call's time.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import stat
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["KEY_PREFIX", "SpillWriter", "SpillChunk", "read_chunk", "spill_dir", "spill_files"]

FRAME = struct.Struct("<II")  # payload length, crc32 of the payload
SUFFIX = ".spill"
RESERVE_SUFFIX = ".reserve"
_NEW = "-new"  # a reserve being made: swept only once it is this old
_NEW_STALE_SECONDS = 60.0
_FALLOC_FL_KEEP_SIZE = 1
KEY_PREFIX = "spill/"  # janus_ring_state.ring_id of a spill file's position
_READ_BYTES = 4 << 20  # at most this much of a file per commit


def spill_dir(db_path: str) -> str:
    return db_path + "-spill"


def spill_files(db_path: str) -> list[str]:
    """Names of the spill files of *db_path*, oldest first ([] when there are none)."""
    try:
        names = os.listdir(spill_dir(db_path))
    except OSError:
        return []
    return sorted(n for n in names if n.endswith(SUFFIX))


def _private_dir(path: str) -> None:
    """Create *path* 0700, or accept it only as our own directory no one else can write."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise PermissionError(
            f"{path!r} is not a private directory of this user (a symlink, another owner, or "
            "writable by others): spill files are not written there"
        )


class SpillWriter:
    """One process's spill file: frames appended by its log calls, under a lock."""

    def __init__(self, db_path: str, limit_bytes: int, reserve_bytes: int = 0) -> None:
        self.db_path = db_path
        self.limit = limit_bytes
        self.reserve_bytes = reserve_bytes
        self._lock = threading.Lock()
        self._reset()
        self._reserve: tuple[int, str] | None = None  # (fd, path) of the room set aside
        self.make_reserve()

    def _reset(self) -> None:
        self.fd: int | None = None
        self.path: str | None = None
        self.size = 0  # bytes in the current file
        self.total = 0  # bytes this process has spilled in all
        self.records = 0  # records this process has spilled
        self.failed = 0  # spills refused (disk full, over the limit, no directory)
        self.closed: list[str] = []  # earlier files, perhaps not committed yet
        self.tail_at_start: int | None = None  # the ring's tail when spilling began

    @property
    def active(self) -> bool:
        return self.fd is not None

    def write(self, data: bytes, tail: int) -> bool:
        """Append one record; False when it cannot be stored (counted in ``failed``)."""
        frame = FRAME.pack(len(data), zlib.crc32(data)) + data
        with self._lock:
            if self.total + len(frame) > self.limit:
                self.failed += 1
                return False
            try:
                self._append(frame, tail)
            except OSError as err:
                # No room on the disk: into the blocks set aside, if any are left.
                try:
                    if err.errno not in (errno.ENOSPC, errno.EDQUOT) or not self._use_reserve():
                        raise
                    self._append(frame, tail)
                except OSError:
                    self.failed += 1
                    return False
            self.size += len(frame)
            self.total += len(frame)
            self.records += 1
            return True

    def _append(self, frame: bytes, tail: int) -> None:
        if self.fd is None:
            self._open()
            self.tail_at_start = tail
        assert self.fd is not None
        try:
            written = os.write(self.fd, frame)
            if written != len(frame):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(frame)} bytes)")
        except OSError:
            # Leave no half frame: later ones follow it.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise

    def _use_reserve(self) -> bool:
        """Make the reserve the spill file written from now on; False if there is none."""
        if self._reserve is None:
            return False
        fd, path = self._reserve
        self._reserve = None
        target = os.path.join(spill_dir(self.db_path), self._new_name())
        try:
            os.rename(path, target)
        except OSError:
            os.close(fd)
            return False
        if self.fd is not None:  # the file that could not grow: complete frames only
            os.close(self.fd)
            assert self.path is not None
            self.closed.append(self.path)
        self.fd, self.path, self.size = fd, target, 0
        return True

    def make_reserve(self) -> None:
        """Set aside ``reserve_bytes`` on the disk for spilling once it is full (best effort)."""
        if not self.reserve_bytes or self._reserve is not None:
            return
        directory = spill_dir(self.db_path)
        path = os.path.join(directory, self._new_name(RESERVE_SUFFIX))
        fd = -1
        try:
            _private_dir(directory)
            _remove_stale_reserves(directory)
            # Locked under a name no sweep takes for a stale reserve, then named.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path + _NEW, flags, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)  # "its process is alive"
            if not _preallocate(fd, self.reserve_bytes):
                raise OSError("cannot allocate the reserve")
            os.rename(path + _NEW, path)
        except (OSError, AttributeError):
            if fd >= 0:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(path + _NEW)
            return
        self._reserve = (fd, path)

    def drop_reserve(self) -> None:
        """Give the room set aside back to the disk (shutdown)."""
        with self._lock:
            if self._reserve is not None:
                fd, path = self._reserve
                self._reserve = None
                with contextlib.suppress(OSError):
                    os.unlink(path)
                os.close(fd)

    @property
    def reserved(self) -> int:
        """Bytes set aside for spilling on a full disk (0: none now)."""
        return self.reserve_bytes if self._reserve is not None else 0

    @staticmethod
    def _new_name(suffix: str = SUFFIX) -> str:
        # Named by time first: the flusher commits older files first.
        return f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"

    def _open(self) -> None:
        directory = spill_dir(self.db_path)
        _private_dir(directory)
        path = os.path.join(directory, self._new_name())
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # "still writing": held until close
        except OSError:
            os.close(fd)
            raise
        self.fd, self.path, self.size = fd, path, 0

    def close(self) -> None:
        """End this file: the flusher deletes it once everything in it is committed."""
        with self._lock:
            if self.fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self.fd)
                assert self.path is not None
                self.closed.append(self.path)
                self.fd = self.path = None
                self.tail_at_start = None
            # Spilling ended (the flusher moves): set room aside again if it was used.
            self.make_reserve()

    def waiting(self) -> list[str]:
        """This process's spill files that are still there (not yet all committed)."""
        with self._lock:
            paths = [*self.closed, *([self.path] if self.path else [])]
            self.closed = [p for p in self.closed if os.path.exists(p)]
            return [p for p in paths if os.path.exists(p)]

    def after_fork_child(self) -> None:
        """The child writes its own file: the parent's stays the parent's."""
        fd = self.fd
        reserve = self._reserve
        self._lock = threading.Lock()
        self._reset()
        self._reserve = None
        for own in (fd, reserve[0] if reserve else None):
            if own is not None:
                with contextlib.suppress(OSError):
                    os.close(own)  # the parent's descriptor keeps its lock
        self.make_reserve()  # the child's own


@dataclass(slots=True)
class SpillChunk:
    """Records read from one spill file from a committed position."""

    payloads: list[bytes]
    end: int  # the position after the last frame read (or skipped as torn)
    finished: bool  # read to the end of a file no process writes any more
    torn: int  # frames skipped as cut short or damaged


def _preallocate(fd: int, size: int) -> bool:
    """Allocate *size* bytes of blocks for *fd* without changing its size (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fallocate = libc.fallocate
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, size) == 0


def _remove_stale_reserves(directory: str) -> None:
    """Delete reserves whose process is gone: their room goes back to the disk."""
    for name in os.listdir(directory):
        if not name.endswith((RESERVE_SUFFIX, RESERVE_SUFFIX + _NEW)):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            # One being made may not be locked yet: only an old one is stale.
            young = name.endswith(_NEW) and time.time() - os.fstat(fd).st_mtime < _NEW_STALE_SECONDS
            if not young and _writer_gone(fd):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        finally:
            os.close(fd)


def _writer_gone(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def read_chunk(path: str, offset: int, max_records: int) -> SpillChunk | None:
    """Frames of *path* from *offset* (None when the file is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        # Looked at before reading: a writer that is gone now wrote all it will.
        gone = _writer_gone(fd)
        size = os.fstat(fd).st_size
        data = os.pread(fd, min(max(size - offset, 0), _READ_BYTES), offset)
    finally:
        os.close(fd)
    payloads, pos, torn = [], 0, 0
    for payload, end, ok in _frames(data, max_records):
        if not ok:
            break
        payloads.append(payload)
        pos = end
    end = offset + pos
    if gone and end < size and len(payloads) < max_records and offset + len(data) == size:
        # What is left can never be completed: a frame cut short by a writer
        # that died inside write(), or damage.  That call never returned.
        torn, end = 1, size
    finished = gone and end == size
    return SpillChunk(payloads, end, finished, torn)


def _frames(data: bytes, max_records: int) -> Iterator[tuple[bytes, int, bool]]:
    pos, count, header = 0, 0, FRAME.size
    while count < max_records and len(data) - pos >= header:
        length, crc = FRAME.unpack_from(data, pos)
        start = pos + header
        if len(data) - start < length:
            return  # not all there yet
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            yield payload, pos, False
            return
        pos = start + length
        count += 1
        yield payload, pos, True
