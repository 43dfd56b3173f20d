"""Opening a log database for reading only, on read-only media too (a backup mount, a copied-off disk).

A WAL database is read through its ``-shm`` file, which SQLite creates beside
it when it is missing.  In a directory nothing may be written to, SQLite then
fails with "unable to open database file", even for a read-only connection
(sqlite.org/wal.html, "Read-Only Databases").  What is left there after a
clean close is the database file alone, and that file is then the whole
database: it can be opened ``immutable`` (no locks, no ``-wal``, no ``-shm``).

An immutable open ignores a ``-wal`` (and a ``-journal``): records committed to
a ``-wal`` that was never checkpointed (the writer was killed, or the files
were copied while it ran) would silently be missing.  How much of a ``-wal``
was checkpointed is kept in the ``-shm``, so without one a ``-wal`` that is
not empty is refused with a FileHandlerError saying how to read it, never
skipped (SQLite deletes the ``-wal`` when the last connection closes cleanly,
so this is rare).  ``mode=ro`` with ``nolock=1``, even with
``locking_mode=EXCLUSIVE`` (a WAL index in memory), still fails there with
"unable to open database file".

Immutable is used on a read-only file system only: an immutable connection
does not see changes, so a directory that is merely not writable by this
user (its owner's application may start writing) is refused instead.
"""

from __future__ import annotations

import os
import urllib.parse

import apsw

from .error_handling.utils.errors import FileHandlerError

__all__ = ["open_for_reading"]

_LEFT_BESIDE = ("-wal", "-journal")  # what an immutable open would not read


def open_for_reading(path: str, busy_timeout_ms: int = 5000) -> tuple[apsw.Connection, bool]:
    """A read-only connection to *path* (waiting up to *busy_timeout_ms* for a
    lock), and whether it was opened immutable.

    Immutable only when the usual read-only open cannot read the database
    because its directory is on a read-only file system (where no writer can
    change the file while it is read), and nothing beside the file holds
    records of its own.  A directory this user merely may not write is
    refused with a FileHandlerError saying what to do.  SQLite errors of the usual open propagate as
    they are; the refusal of a ``-wal`` that cannot be read is a
    FileHandlerError.
    """
    db = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        db.setbusytimeout(busy_timeout_ms)
        # The -shm is opened at the first read, not at the open.
        db.execute("PRAGMA schema_version").fetchall()
    except apsw.CantOpenError as err:
        db.close()
        directory = os.path.dirname(os.path.abspath(path))
        if os.access(directory, os.W_OK, effective_ids=True):
            raise  # the directory is not why: the usual error says what is wrong
        if not _read_only_media(directory):
            # A writer may open the database later (its owner can write
            # there): an immutable connection would then read wrong pages.
            name = os.path.basename(path)
            raise FileHandlerError(
                f"cannot read the log database {path}: SQLite must create {name}-shm beside it to "
                f"read it, and this user cannot write in {directory}; read it as a user who can, or "
                f"copy {name} (and its -wal, if any) to a writable directory and read the copy",
                details={"path": path},
            ) from err
        _refuse_what_immutable_skips(path, directory)
        return _open_immutable(path), True
    except BaseException:
        db.close()
        raise
    return db, False


def _read_only_media(directory: str) -> bool:
    """Whether *directory* is on a file system mounted read-only: nothing can change the files there."""
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _refuse_what_immutable_skips(path: str, directory: str) -> None:
    for suffix in _LEFT_BESIDE:
        try:
            size = os.stat(path + suffix).st_size
        except FileNotFoundError:
            continue
        except OSError as err:
            raise FileHandlerError(
                f"cannot read the log database {path}: {path}{suffix} cannot be inspected "
                f"({err.strerror}), and it may hold records the database file does not",
                details={"path": path},
            ) from err
        if size:
            name = os.path.basename(path)
            raise FileHandlerError(
                f"cannot read the log database {path} where it is: its {suffix} file ({size:,} bytes) "
                f"may hold records not yet in the database file, and reading them needs a "
                f"{name}-shm file, which cannot be created in {directory} (read-only). Copy "
                f"{name} and {name}{suffix} together to a writable directory and read the copy "
                "there: it has every record",
                details={"path": path, "unread": path + suffix, "bytes": size},
            )


def _open_immutable(path: str) -> apsw.Connection:
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?immutable=1"
    db = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        db.execute("PRAGMA schema_version").fetchall()
    except BaseException:
        db.close()
        raise
    return db
