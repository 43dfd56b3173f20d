"""Refuse Python's sqlite3 on a log database this process writes: two SQLite libraries corrupt it.

apsw bundles its own SQLite; Python's ``sqlite3`` links the system's.  In one
process the two keep separate tables of POSIX locks, and closing a file drops
every lock the process holds on it, the other library's included (sqlite.org,
"How To Corrupt An SQLite Database File", 2.2.1).  A stdlib connection to the
database the flusher writes, even read-only, so corrupts it.

Once ``configure()`` has named a database, every ``sqlite3.connect`` of the
process goes through :func:`check_connect` (an audit hook, in C where
``_speedups`` is built) before the file is opened, and a connection to that
database, its -wal or -shm (by device and inode: any spelling, link or URI)
is refused with :class:`SQLiteConflictError`.  Reading in-process goes
through apsw instead: ``janus_utils.LogStore``, whose ``sql()`` runs raw SQL.

Not seen: a sqlite3 connection opened before configure(), and a database
ATTACHed from SQL.
"""

from __future__ import annotations

import os
import sys
import threading
import urllib.parse
from typing import Any

from ._record import speedups
from .error_handling.utils.errors import SQLiteConflictError

__all__ = ["check_connect", "protect"]

_protected: list[str] = []  # absolute paths of the databases configured in this process
_installed = False
_install_lock = threading.Lock()


def protect(db_path: str) -> None:
    """Refuse sqlite3 connections to *db_path* from now on, in this process (for good)."""
    global _installed
    with _install_lock:
        if db_path not in _protected:
            _protected.append(db_path)
        if _installed:
            return
        if speedups is not None:
            speedups.guard_sqlite_connect(check_connect)
        else:  # pragma: no cover - only where the C module was not built
            sys.addaudithook(_python_hook)
        _installed = True


def _python_hook(event: str, args: tuple[Any, ...]) -> None:  # pragma: no cover - see protect
    if event == "sqlite3.connect":
        check_connect(*args)


def check_connect(database: object, *_: object) -> None:
    """Raise SQLiteConflictError if *database* (sqlite3.connect's argument) is a protected one."""
    if not _protected:
        return
    wanted = {_identity(path) for path in _candidates(database)} - {None}
    if not wanted:
        return
    for db_path in _protected:
        for suffix in ("", "-wal", "-shm"):
            if _identity(db_path + suffix) in wanted:
                raise SQLiteConflictError(_message(db_path))


def _candidates(database: object) -> list[str]:
    """The files sqlite3.connect(database) may open: the name as a path, and as a URI."""
    try:
        name = os.fsdecode(database)  # type: ignore[arg-type]
    except TypeError:
        return []
    if name in ("", ":memory:"):
        return []
    names = [name]
    if name.startswith("file:"):
        # Whether SQLite reads it as a URI depends on uri=True and its build:
        # check both readings.
        rest = name[5:].partition("#")[0]
        path, _, query = rest.partition("?")
        if path.startswith("//"):  # file://host/path: only an empty host or localhost
            host, slash, path = path[2:].partition("/")
            path = slash + path if host in ("", "localhost") else ""
        params = urllib.parse.parse_qs(query)
        if path and params.get("mode") != ["memory"]:
            names.append(urllib.parse.unquote(path))
    return [os.path.abspath(n) for n in names]


def _identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)  # follows links: a link to the database is the database
    except (OSError, ValueError):
        return None
    return (info.st_dev, info.st_ino)


def _message(db_path: str) -> str:
    sqlite3 = sys.modules.get("sqlite3")
    theirs = getattr(sqlite3, "sqlite_version", "?")
    try:
        import apsw

        ours = apsw.sqlite_lib_version()
    except Exception:  # pragma: no cover - apsw is a dependency
        ours = "?"
    return (
        f"refusing to open the log database {db_path} with Python's sqlite3 module: this "
        f"process writes it through apsw (SQLite {ours}), and sqlite3 links another SQLite "
        f"library ({theirs}); two SQLite libraries in one process do not see each other's "
        "locks and corrupt the database.  Read it with janus_utils.LogStore (search, count, "
        "tail, or LogStore.sql() for raw SQL), or open it with sqlite3 from another process"
    )
