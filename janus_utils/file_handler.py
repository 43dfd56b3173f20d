"""Safe file handling: atomic writes, contained paths, private files, locks and gzip NDJSON.

Everything here is stdlib only and POSIX-first.  Every failure is raised as a
:class:`~janus_utils.error_handling.utils.errors.FileHandlerError` whose message
says what was wrong and what to do about it.

Temporary files written by this module are named ``.<name>.<pid>.<16 hex>.tmp``
in the directory of their target: a leading dot and a ``.tmp`` suffix, so that
no reader globbing for finished files ever takes one for a complete file.  A
writer that is killed leaves such a file behind; :func:`remove_stale_temp_files`
clears them.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import secrets
import stat
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .error_handling.utils.errors import FileHandlerError

__all__ = [
    "FileLock",
    "NDJSONGzipWriter",
    "NDJSON_MAX_LINE_BYTES",
    "atomic_output",
    "atomic_write",
    "ensure_private_dir",
    "fsync_dir",
    "iter_ndjson_gz",
    "iter_ndjson_gz_lines",
    "open_private",
    "private_file",
    "read_limited",
    "remove_stale_temp_files",
    "safe_join",
    "sha256_file",
    "sidecar_path",
    "sqlite_path",
    "verify_sha256",
]

PathLike = str | os.PathLike[str]

_CHUNK = 1 << 20
_TEMP_RE = re.compile(r"^\..+\.(?P<pid>\d+)\.[0-9a-f]{16}\.tmp$")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


# --------------------------------------------------------------------------- #
# Small building blocks
# --------------------------------------------------------------------------- #


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of *data* to *fd* (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view[:_CHUNK])
        view = view[written:]


def _temp_path(target: Path) -> Path:
    # The pid lets remove_stale_temp_files() tell a dead writer's leftovers
    # from a live writer's work in progress.
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def fsync_dir(directory: PathLike) -> None:
    """fsync a directory, so that a rename or a new file in it survives a power loss."""
    try:
        fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    except OSError as exc:
        raise FileHandlerError(
            f"cannot open directory {str(directory)!r} to sync it ({exc.strerror}): "
            "check that it exists and is readable"
        ) from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems refuse fsync on directories; nothing more can be done there.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise FileHandlerError(
                f"cannot sync directory {str(directory)!r} ({exc.strerror}): "
                "the disk may be failing or full"
            ) from exc
    finally:
        os.close(fd)


def _create_temp(target: Path, mode: int) -> tuple[Path, int]:
    """Create and open a fresh temp file beside *target* with exactly *mode*."""
    temp = _temp_path(target)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_NOFOLLOW, mode)
    except OSError as exc:
        raise FileHandlerError(
            f"cannot create a temporary file in {str(target.parent)!r} ({exc.strerror}): "
            "check that the directory exists and is writable"
        ) from exc
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away at creation
    except OSError as exc:
        os.close(fd)
        _unlink_quietly(temp)
        raise FileHandlerError(f"cannot set mode {mode:o} on {str(temp)!r} ({exc.strerror})") from exc
    return temp, fd


def _publish(temp: Path, target: Path, *, overwrite: bool) -> None:
    """Move a complete, synced *temp* file to *target* in one atomic step."""
    if overwrite:
        os.replace(temp, target)
        return
    try:
        # link() fails with EEXIST instead of replacing: no check-then-rename race.
        os.link(temp, target)
    except FileExistsError:
        _unlink_quietly(temp)
        raise FileHandlerError(
            f"{str(target)!r} already exists and will not be overwritten: "
            "choose another name or remove the existing file first",
            code="file_exists",
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # Filesystems without hard links: fall back to a checked replace.
        if os.path.lexists(target):
            _unlink_quietly(temp)
            raise FileHandlerError(
                f"{str(target)!r} already exists and will not be overwritten: "
                "choose another name or remove the existing file first",
                code="file_exists",
            ) from None
        os.replace(temp, target)
        return
    os.unlink(temp)


def atomic_write(path: PathLike, data: bytes | str, mode: int = 0o600, *, overwrite: bool = True) -> Path:
    """Write *data* to *path* so that readers see the old file or the new one, never half.

    The data goes to a temp file in the same directory (created ``O_EXCL`` with
    *mode*), is fsynced, renamed over *path* and the directory is fsynced.  On any
    error the temp file is removed.  ``str`` data is written as UTF-8.  With
    ``overwrite=False`` an existing *path* is an error (code ``file_exists``).
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    temp, fd = _create_temp(target, mode)
    try:
        try:
            _write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        _publish(temp, target, overwrite=overwrite)
    except FileHandlerError:
        _unlink_quietly(temp)
        raise
    except OSError as exc:
        _unlink_quietly(temp)
        raise FileHandlerError(
            f"cannot write {str(target)!r} ({exc.strerror}): check free space and permissions; "
            "the previous content, if any, is unchanged"
        ) from exc
    except BaseException:
        _unlink_quietly(temp)
        raise
    fsync_dir(target.parent)
    return target


@contextmanager
def atomic_output(
    path: PathLike, *, overwrite: bool = False, mode: int = 0o600, encoding: str = "utf-8", newline: str | None = None
) -> Iterator[IO[str]]:
    """A text stream whose content appears at *path* only once it is complete, for output of any size.

    What is written goes to a temp file beside *path* (created ``O_EXCL |
    O_NOFOLLOW`` with *mode*, 0600 by default, whatever the umask); leaving
    the block normally fsyncs it and moves it into place atomically, then
    fsyncs the directory.  Leaving with an exception removes the temp file
    and leaves *path* as it was.

    Nothing is ever written through a symlink: an existing *path* that is a
    symlink is refused (code ``symlink_refused``).  With ``overwrite=False``
    an existing *path* is refused before anything is written (code
    ``file_exists``), and again at the end without a check-then-rename race;
    with ``overwrite=True`` only a regular file is replaced (code
    ``not_a_regular_file`` otherwise), by a rename that replaces the
    directory entry, so a symlink planted meanwhile is replaced, not followed.
    """
    target = Path(path)
    _check_output_target(target, overwrite)
    temp, fd = _create_temp(target, mode)
    try:
        with open(fd, "w", encoding=encoding, newline=newline, closefd=False) as stream:
            yield stream
        os.fsync(fd)
        os.close(fd)
        fd = -1
        _check_output_target(target, overwrite)
        _publish(temp, target, overwrite=overwrite)
    except OSError as exc:
        _unlink_quietly(temp)
        raise FileHandlerError(
            f"cannot write {str(target)!r} ({exc.strerror}): check free space and permissions; "
            "the previous content, if any, is unchanged"
        ) from exc
    except BaseException:
        _unlink_quietly(temp)
        raise
    finally:
        if fd >= 0:
            os.close(fd)
    fsync_dir(target.parent)


def _check_output_target(target: Path, overwrite: bool) -> None:
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FileHandlerError(f"cannot inspect {str(target)!r} ({exc.strerror})") from exc
    if stat.S_ISLNK(info.st_mode):
        raise FileHandlerError(
            f"{str(target)!r} is a symlink: output is never written through one (it may point at "
            "another user's file); give the path of a real file",
            code="symlink_refused",
        )
    if not overwrite:
        raise FileHandlerError(
            f"{str(target)!r} already exists and will not be overwritten: "
            "choose another name or remove the existing file first",
            code="file_exists",
        )
    if not stat.S_ISREG(info.st_mode):
        raise FileHandlerError(
            f"{str(target)!r} is not a regular file (a directory, pipe or device): it will not be replaced",
            code="not_a_regular_file",
        )


def remove_stale_temp_files(directory: PathLike, *, min_age_s: float = 0.0) -> list[Path]:
    """Remove temp files left in *directory* by writers of this module that have died.

    A temp file is stale when the process whose pid is in its name no longer runs
    on this host and it is older than *min_age_s*.  Only call this on directories
    that processes of this host (and pid namespace) write to.  Returns what was removed.
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        if _pid_alive(int(match["pid"])):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < min_age_s:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed.append(Path(entry.path))
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is someone else's
    return True


# --------------------------------------------------------------------------- #
# Paths
# --------------------------------------------------------------------------- #


def safe_join(base: PathLike, *parts: PathLike) -> Path:
    """Join *parts* under *base*, refusing anything that would end up outside it.

    Refused: NUL bytes, absolute parts, ``..`` components, and symlinks that,
    once resolved, point outside *base*.  Returns the resolved path (it need not
    exist).  The check is made at call time: a directory that attackers can
    write to can still change under you afterwards, so open results with
    ``O_NOFOLLOW`` where that matters.
    """
    base_text = os.fspath(base)
    if isinstance(base_text, bytes):
        raise FileHandlerError("the base directory must be str, not bytes: decode it first")
    if "\x00" in base_text:
        raise FileHandlerError("the base directory contains a NUL byte: pass a plain path")
    root = Path(base_text).resolve()
    relative: list[str] = []
    for part in parts:
        text = os.fspath(part)
        if isinstance(text, bytes):
            raise FileHandlerError("path parts must be str, not bytes: decode them first")
        if "\x00" in text:
            raise FileHandlerError(f"refused path part {text!r}: it contains a NUL byte")
        if os.path.isabs(text):
            raise FileHandlerError(
                f"refused path part {text!r}: it is absolute; pass a path relative to {str(root)!r}"
            )
        components = [c for c in text.split(os.sep) if c not in ("", ".")]
        if ".." in components:
            raise FileHandlerError(
                f"refused path part {text!r}: '..' would leave {str(root)!r}; "
                "pass a path that stays inside it"
            )
        relative.extend(components)
    candidate = root.joinpath(*relative)
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise FileHandlerError(
            f"refused path {str(candidate)!r}: a symlink makes it point to {str(resolved)!r}, "
            f"outside {str(root)!r}"
        )
    return resolved


def sqlite_path(path: PathLike) -> str:
    """*path* as the text SQLite opens: refused (FileHandlerError) unless it is valid UTF-8.

    Python keeps undecodable bytes of a file name as lone surrogates, which
    SQLite's UTF-8 file names cannot carry.
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "backslashreplace").decode("utf-8")
        raise FileHandlerError(
            f"the database path {shown!r} is not valid UTF-8, which SQLite needs: "
            "rename the file or use a path in UTF-8",
            details={"path": shown},
        ) from None
    return text


def read_limited(path: PathLike, max_bytes: int) -> bytes:
    """Read a whole regular file, refusing it (without reading it) if larger than *max_bytes*."""
    if max_bytes < 0:
        raise FileHandlerError(f"max_bytes must not be negative, got {max_bytes}")
    try:
        # O_NONBLOCK: opening a FIFO must not hang waiting for a writer.
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise FileHandlerError(f"cannot open {os.fspath(path)!r} ({exc.strerror})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileHandlerError(f"{os.fspath(path)!r} is not a regular file: pass a file")
        if info.st_size > max_bytes:
            raise FileHandlerError(
                f"{os.fspath(path)!r} is {info.st_size} bytes, more than the {max_bytes} "
                "allowed: raise the limit or use a smaller file"
            )
        # Read at most one byte past the limit: the file may grow after fstat().
        chunks: list[bytes] = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, _CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        raise FileHandlerError(f"cannot read {os.fspath(path)!r} ({exc.strerror})") from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise FileHandlerError(
            f"{os.fspath(path)!r} grew past the {max_bytes} bytes allowed while being read: "
            "raise the limit or read it once it stops growing"
        )
    return data


# --------------------------------------------------------------------------- #
# Private files and directories
# --------------------------------------------------------------------------- #


def ensure_private_dir(path: PathLike) -> Path:
    """Make sure *path* is a directory only its owner can use (0700), creating it if missing.

    Missing parents are created 0700 too.  An existing directory is refused if
    it is a symlink, not a directory, owned by another user, or writable by
    group or others (someone else may already have planted files in it); an
    existing directory of ours that is merely readable by others is tightened
    to 0700.
    """
    directory = Path(path)
    if "\x00" in str(directory):
        raise FileHandlerError("the directory path contains a NUL byte: pass a plain path")
    try:
        os.makedirs(directory.parent, mode=0o700, exist_ok=True)
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise FileHandlerError(
            f"cannot create directory {str(directory)!r} ({exc.strerror}): "
            "check the parent directory's permissions"
        ) from exc
    try:
        info = os.lstat(directory)
    except OSError as exc:
        raise FileHandlerError(f"cannot inspect {str(directory)!r} ({exc.strerror})") from exc
    if stat.S_ISLNK(info.st_mode):
        raise FileHandlerError(
            f"{str(directory)!r} is a symlink: a private directory must be a real directory; "
            "remove the link or choose another path"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise FileHandlerError(f"{str(directory)!r} exists and is not a directory: choose another path")
    if info.st_uid != os.geteuid():
        raise FileHandlerError(
            f"{str(directory)!r} belongs to uid {info.st_uid}, not to this process "
            f"(uid {os.geteuid()}): use a directory you own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise FileHandlerError(
            f"{str(directory)!r} is writable by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):o}): run 'chmod 700 {directory}' after checking its "
            "contents, or choose another directory"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)
    return directory


def open_private(path: PathLike, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """``os.open`` for a file only its owner can read or write: returns the fd.

    The file is created 0600 whatever the umask (mode passed to open, then
    fchmod).  Symlinks are refused (``O_NOFOLLOW``), as are non-regular files
    and files owned by another user.  The fd is close-on-exec.
    """
    try:
        fd = os.open(path, flags | _O_CLOEXEC | _O_NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileHandlerError(
                f"{os.fspath(path)!r} is a symlink: a private file must be a real file; "
                "remove the link or choose another path"
            ) from exc
        raise FileHandlerError(f"cannot open {os.fspath(path)!r} ({exc.strerror})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileHandlerError(f"{os.fspath(path)!r} is not a regular file: choose another path")
        if info.st_uid != os.geteuid():
            raise FileHandlerError(
                f"{os.fspath(path)!r} belongs to uid {info.st_uid}, not to this process: "
                "use a file you own"
            )
        if stat.S_IMODE(info.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_file(path: PathLike) -> Path:
    """Create *path* as an empty 0600 file if missing, or make an existing one 0600."""
    os.close(open_private(path, os.O_RDWR | os.O_CREAT))
    return Path(path)


# --------------------------------------------------------------------------- #
# Locks
# --------------------------------------------------------------------------- #

# Every FileLock holding an fd, so that a forked child can drop its copies.
_LIVE_LOCKS: weakref.WeakSet[FileLock] = weakref.WeakSet()


def _drop_locks_in_child() -> None:
    # flock() locks belong to the open file description, which fork() shares:
    # if the child kept its fd, the lock would outlive the parent.  Closing the
    # child's copy (never LOCK_UN, which would unlock the parent too) leaves the
    # parent the only holder.
    for lock in list(_LIVE_LOCKS):
        lock._forget_in_child()


os.register_at_fork(after_in_child=_drop_locks_in_child)


class FileLock:
    """An exclusive advisory lock (``flock``) on a 0600 lock file, across processes.

    Use as a context manager or with :meth:`acquire` / :meth:`release`.  Two
    FileLock objects on the same path exclude each other even inside one
    process.  One object may be shared by threads: a thread lock serialises them.
    Not re-entrant: acquiring a lock this object already holds is an error.

    After ``fork()`` the child does not hold the lock: its copy of the fd is
    closed, so the lock is freed when the parent releases it or dies, even while
    the child lives on.  The lock file is never deleted (deleting it would let
    two processes lock two different inodes of the same name); a holder that
    must survive someone else deleting it checks :meth:`is_at_path`.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._owner: int | None = None
        self._guard = threading.Lock()

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; returns False if it could not be had (non-blocking or timed out)."""
        if timeout is not None and timeout < 0:
            raise FileHandlerError(f"timeout must not be negative, got {timeout}")
        if self._fd is not None and self._owner == threading.get_ident():
            raise FileHandlerError(f"this FileLock already holds {str(self.path)!r}: it is not re-entrant")
        deadline = None if timeout is None else time.monotonic() + timeout
        if not blocking:
            got_guard = self._guard.acquire(blocking=False)
        elif timeout is None:
            got_guard = self._guard.acquire()
        else:
            got_guard = self._guard.acquire(timeout=timeout)
        if not got_guard:
            return False
        try:
            fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        except BaseException:
            self._guard.release()
            raise
        try:
            locked = self._flock(fd, blocking, deadline)
        except BaseException:
            os.close(fd)
            self._guard.release()
            raise
        if not locked:
            os.close(fd)
            self._guard.release()
            return False
        self._fd = fd
        self._owner = threading.get_ident()
        _LIVE_LOCKS.add(self)
        return True

    def _flock(self, fd: int, blocking: bool, deadline: float | None) -> bool:
        if blocking and deadline is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return True
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            if not blocking or deadline is None:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)

    def release(self) -> None:
        """Give the lock up; an error if this object does not hold it."""
        fd = self._fd
        if fd is None:
            raise FileHandlerError(f"this FileLock does not hold {str(self.path)!r}: nothing to release")
        self._fd = None
        self._owner = None
        _LIVE_LOCKS.discard(self)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            self._guard.release()

    def is_at_path(self) -> bool:
        """Whether the file this object holds locked is still the one at its path.

        False once the lock file was deleted or replaced (an age-based tmp
        cleaner, an operator): another FileLock on the path would then lock
        a different file and succeed while this one is held.
        """
        fd = self._fd
        if fd is None:
            return False
        try:
            held, there = os.fstat(fd), os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)

    def touch(self) -> None:
        """Set the held lock file's times to now, so age-based cleaners leave it alone."""
        fd = self._fd
        if fd is not None:
            try:
                os.utime(fd)
            except OSError:
                pass

    def _forget_in_child(self) -> None:
        fd, self._fd = self._fd, None
        self._owner = None
        self._guard = threading.Lock()
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"FileLock({str(self.path)!r}, locked={self.locked})"


# --------------------------------------------------------------------------- #
# Checksums and gzip NDJSON
# --------------------------------------------------------------------------- #


def sha256_file(path: PathLike) -> str:
    """The SHA-256 of a file's bytes, as lowercase hex."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(block)
    except OSError as exc:
        raise FileHandlerError(f"cannot read {os.fspath(path)!r} to checksum it ({exc.strerror})") from exc
    return digest.hexdigest()


def sidecar_path(path: PathLike) -> Path:
    """Where the ``sha256sum``-format checksum of *path* lives: ``<path>.sha256``."""
    target = Path(path)
    return target.with_name(target.name + ".sha256")


def _read_sidecar(path: Path) -> str | None:
    side = sidecar_path(path)
    try:
        text = read_limited(side, 4096).decode("ascii")
    except FileHandlerError:
        if not os.path.lexists(side):  # a dangling or looping link is a damaged sidecar, not none
            return None
        raise
    except UnicodeDecodeError:
        text = ""
    fields = text.split()
    if not fields or not re.fullmatch(r"[0-9a-fA-F]{64}", fields[0]):
        raise FileHandlerError(
            f"{str(side)!r} is not a sha256sum line: delete it and recreate it with "
            f"'sha256sum {path.name} > {side.name}'"
        )
    return fields[0].lower()


class _HashingFile:
    """A write-only file object that hashes what goes through it (gzip's underlying file)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        _write_all(self.fd, data)
        return len(data)

    def flush(self) -> None:
        pass


class NDJSONGzipWriter:
    """Streams JSON objects, one a line, into a gzip file that appears only once complete.

    Lines go to a temp file beside *path*.  :meth:`close` (or leaving the
    ``with`` block normally) finishes the gzip stream, fsyncs, moves the file to
    *path* (never overwriting an existing file unless ``overwrite=True``),
    fsyncs the directory and writes ``<path>.sha256`` atomically.  Leaving the
    block with an exception, or :meth:`abort`, removes the temp file and leaves
    nothing at *path*.  *default* is passed to ``json.dumps`` for values JSON
    cannot hold.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        mode: int = 0o600,
        compresslevel: int = 6,
        overwrite: bool = False,
        default: Callable[[Any], Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.mode = mode
        self.overwrite = overwrite
        self.count = 0
        self.sha256: str | None = None
        # One encoder for the whole file: json.dumps() with options builds one per call.
        self._encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=default).encode
        self._temp, fd = _create_temp(self.path, mode)
        self._raw = _HashingFile(fd)
        try:
            # mtime=0 and the final name in the header: the same records always
            # make the same bytes, whatever the temp name or the time.
            self._gzip: gzip.GzipFile | None = gzip.GzipFile(
                filename=self.path.name,
                mode="wb",
                compresslevel=compresslevel,
                fileobj=self._raw,
                mtime=0,
            )
        except BaseException:
            os.close(fd)
            _unlink_quietly(self._temp)
            raise

    def _dumps(self, obj: Any) -> bytes:
        try:
            return self._encode(obj).encode("utf-8") + b"\n"
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError (lone surrogates) included
            raise FileHandlerError(f"cannot write a record to {str(self.path)!r} as JSON: {exc}") from exc

    def write(self, obj: Any) -> None:
        """Append one JSON value (normally a dict) as one line."""
        self.write_many((obj,))

    def write_many(self, objs: Iterable[Any]) -> None:
        """Append many JSON values, one line each, in one compressor call."""
        if self._gzip is None:
            raise FileHandlerError(f"the writer for {str(self.path)!r} is closed: open a new one")
        lines = [self._dumps(obj) for obj in objs]
        try:
            self._gzip.write(b"".join(lines))
        except OSError as exc:
            self.abort()
            raise FileHandlerError(
                f"cannot write to {str(self.path)!r} ({exc.strerror}): check free space"
            ) from exc
        self.count += len(lines)

    def close(self) -> Path:
        """Finish the file and put it (and its .sha256) in place; returns the path."""
        if self._gzip is None:
            if self.sha256 is None:
                raise FileHandlerError(f"the writer for {str(self.path)!r} was aborted: nothing to close")
            return self.path
        gz, self._gzip = self._gzip, None
        fd = self._raw.fd
        try:
            try:
                gz.close()  # writes the gzip trailer through _HashingFile
                os.fsync(fd)
            finally:
                os.close(fd)
            _publish(self._temp, self.path, overwrite=self.overwrite)
        except FileHandlerError:
            _unlink_quietly(self._temp)
            raise
        except OSError as exc:
            _unlink_quietly(self._temp)
            raise FileHandlerError(
                f"cannot finish {str(self.path)!r} ({exc.strerror}): check free space; "
                "nothing was put in place"
            ) from exc
        except BaseException:
            _unlink_quietly(self._temp)
            raise
        fsync_dir(self.path.parent)
        self.sha256 = self._raw.digest.hexdigest()
        atomic_write(sidecar_path(self.path), f"{self.sha256}  {self.path.name}\n", self.mode)
        return self.path

    def abort(self) -> None:
        """Throw away what was written: nothing appears at the target path."""
        gz, self._gzip = self._gzip, None
        if gz is None:
            return
        try:
            os.close(self._raw.fd)
        finally:
            _unlink_quietly(self._temp)

    def __enter__(self) -> NDJSONGzipWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # A writer dropped without close() must not leave a temp file behind.
        if getattr(self, "_gzip", None) is not None:
            try:
                self.abort()
            except OSError:
                pass


def verify_sha256(path: PathLike) -> bool | None:
    """Check *path* against its ``.sha256`` sidecar: True, or None without a sidecar.

    A mismatch raises FileHandlerError.
    """
    target = Path(path)
    expected = _read_sidecar(target)
    if expected is None:
        return None
    actual = sha256_file(target)
    if actual != expected:
        raise _checksum_mismatch(target, expected, actual)
    return True


def _checksum_mismatch(target: Path, expected: str, actual: str) -> FileHandlerError:
    return FileHandlerError(
        f"{str(target)!r} does not match its checksum in {sidecar_path(target).name} "
        f"(expected {expected}, found {actual}): the file is damaged or was changed; "
        "restore it from a backup",
        code="checksum_mismatch",
    )


# The longest line iter_ndjson_gz reads, decompressed.  A record is bounded by
# the ring it came through (8 MiB by default); this leaves room for JSON's
# escapes and bigger rings, and keeps a gzip bomb's one huge line from being
# read into memory.
NDJSON_MAX_LINE_BYTES = 64 * 1024 * 1024


def iter_ndjson_gz(
    path: PathLike, verify: bool = True, *, max_line_bytes: int = NDJSON_MAX_LINE_BYTES
) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a gzip NDJSON file, one per line.

    With *verify*, the file is first checked against its ``.sha256`` sidecar if
    there is one; a mismatch is a FileHandlerError and nothing is yielded.  A
    truncated or damaged gzip stream, a line that is not UTF-8 JSON, is not an
    object, is nested too deeply or is longer than *max_line_bytes* once
    decompressed (read no further than that) are FileHandlerErrors too.
    """
    for _, obj in iter_ndjson_gz_lines(path, verify, max_line_bytes=max_line_bytes):
        yield obj


def iter_ndjson_gz_lines(
    path: PathLike, verify: bool = True, *, max_line_bytes: int = NDJSON_MAX_LINE_BYTES
) -> Iterator[tuple[int, dict[str, Any]]]:
    """:func:`iter_ndjson_gz` with each object's line number (from 1), to say where a bad record is."""
    target = Path(path)
    handle = _open_regular(target)
    with handle:
        if verify:
            _verify_handle(handle, target)
        line_number = 0
        try:
            with gzip.GzipFile(filename=target.name, mode="rb", fileobj=handle) as stream:
                while line := stream.readline(max_line_bytes + 1):
                    line_number += 1
                    if len(line) > max_line_bytes and not line.endswith(b"\n"):
                        raise FileHandlerError(
                            f"line {line_number} of {str(target)!r} is longer than {max_line_bytes:,} bytes "
                            "decompressed: it is not a janus record (a damaged or hostile file)",
                            code="line_too_long",
                        )
                    if line.strip():
                        yield line_number, _ndjson_object(line, line_number, target)
        except (OSError, EOFError, zlib.error) as exc:
            detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise FileHandlerError(
                f"cannot read {str(target)!r} as gzip after line {line_number} ({detail}): "
                "the file is truncated or damaged; restore it from a backup"
            ) from exc


def _open_regular(target: Path) -> io.BufferedReader:
    """Open *target* for reading, refusing (without waiting on) a pipe, device or directory."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang waiting for a writer.
        fd = os.open(target, os.O_RDONLY | _O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise FileHandlerError(f"cannot open {str(target)!r} ({exc.strerror})") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileHandlerError(f"{str(target)!r} is not a regular file: pass an archive file")
        os.set_blocking(fd, True)
        return open(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def _verify_handle(handle: io.BufferedReader, target: Path) -> None:
    """verify_sha256 on the open file, so the bytes checked are the bytes then read."""
    expected = _read_sidecar(target)
    if expected is None:
        return
    digest = hashlib.sha256()
    try:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
        handle.seek(0)
    except OSError as exc:
        raise FileHandlerError(f"cannot read {str(target)!r} to checksum it ({exc.strerror})") from exc
    if digest.hexdigest() != expected:
        raise _checksum_mismatch(target, expected, digest.hexdigest())


def _ndjson_object(line: bytes, line_number: int, target: Path) -> dict[str, Any]:
    where = f"line {line_number} of {str(target)!r}"
    try:
        obj = json.loads(line)
    except UnicodeDecodeError as exc:
        raise FileHandlerError(
            f"{where} is not UTF-8 (byte {exc.start}): the file is damaged or not a janus archive"
        ) from None
    except RecursionError:
        raise FileHandlerError(
            f"{where} is JSON nested too deeply to read: it is not a janus record (a damaged or hostile file)"
        ) from None
    except ValueError as exc:  # JSONDecodeError, and ints past Python's 4300-digit limit
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc).split(";")[0]
        raise FileHandlerError(
            f"{where} is not valid JSON ({reason}): the file is damaged; restore it from a backup"
        ) from None
    if not isinstance(obj, dict):
        raise FileHandlerError(f"{where} is not a JSON object: this is not a janus NDJSON file")
    return obj
