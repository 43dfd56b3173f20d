"""The flusher as a process of its own: ``configure(flusher="process")`` and ``janus-logs flusher``.

With the default ``flusher="thread"`` one of the application's processes
commits the ring's records on a thread of its own, sharing that process's
GIL.  With ``flusher="process"`` the application's processes only push into
the ring; a small process runs the same ``Flusher`` (the same election lock,
fenced commits, takeover, file checks, disk-full policy, retention) and the
database's shippers.  Nothing about exactly-once changes: the commit is
fenced on the ring position stored with every batch, whichever process makes
it.

Who starts it: the first ``configure()`` of the database (or a supervisor,
with ``janus-logs flusher --db PATH --daemon``).  Each process that logs this
way holds a shared ``flock`` on ``<db>-users.lock`` for as long as it is
configured; the kernel drops it when the process ends, SIGKILL included, and
a forked child shares its parent's.  The flusher process looks every
``_USERS_EVERY`` seconds: once nobody has held it for ``linger`` seconds it
takes the lock exclusively (a process configuring meanwhile waits for it to
exit, then starts a new one), commits what is left and exits.  A flusher
process is therefore never an orphan holding the election lock.  It runs in
a session of its own (a Ctrl-C meant for the application does not cut a
commit short) and is reaped by a thread of the process that started it, or
by init once that process is gone: never a zombie.

Each configured process watches the election lock every
``election_interval`` seconds: free (the flusher process died) or held by a
flusher whose heartbeat stopped for ``takeover_after`` seconds (stopped,
hung), it starts a new flusher process, which commits what is left in the
ring before anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import io
import json
import os
import pickle
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from typing import IO, TYPE_CHECKING, Any

from ._flusher import Flusher, _file_id, config_error
from .error_handling.utils.errors import ConfigError, FileHandlerError
from .file_handler import FileLock, open_private

if TYPE_CHECKING:
    from .logger import Config

__all__ = ["RemoteFlusher", "add_parser", "flusher_pid", "read_status", "serve"]

_USERS_EVERY = 0.2  # seconds between the flusher process's looks at the users lock
_LINGER = 1.0  # seconds without users before a flusher process exits
_SPAWN_WAIT = 15.0  # at most this long for a new flusher process to say it runs
_REGISTER_WAIT = 20.0  # at most this long for an exiting flusher process to be gone
_STOP_TIMEOUT = 10.0  # the flusher process's last commits, after its users are gone
_STATUS_WAIT = 1.0  # at most this long for flush() to see the flusher process's status catch up


def users_lock_path(db_path: str) -> str:
    return db_path + "-users.lock"


def _lock_is_free(path: str) -> bool:
    """Whether nobody holds the flock on *path* now (taken and given back at once)."""
    try:
        fd = open_private(path)
    except Exception:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing the only descriptor drops the lock
    return True


def status_path(db_path: str) -> str:
    return db_path + "-flusher.status"


# What the flusher process tells the application's stats(): the counters of
# its Flusher, which the application's own (it commits nothing) lack.
_STATUS_COUNTERS = ("committed", "batches", "retries", "errors", "unstorable")


# What a status file holds besides the writer's pid, in the order write_status reads it.
_STATUS_KEYS = (*_STATUS_COUNTERS, "retention_held", "last_error", "last_error_at", "recent_errors", "token", "released")


def write_status(
    flusher: Flusher, path: str, last: tuple[Any, ...] | None = None, released: int | None = None
) -> tuple[Any, ...]:
    """Write *flusher*'s counters and error state to *path* if they changed since *last*.

    One small JSON file (0600), replaced whole by a rename so that a reader
    never sees half of it.  It names its writer by pid and by the token the
    ring knows its leader by (see read_status).  Written again, changed or
    not, when another file is at *path* than the one this call wrote: a
    flusher that has just stepped down (resumed after a stop) may have
    replaced it; not when none is there (deleted with its database, as an
    application cleaning up does).  Returns what was written, for the next
    call.

    ``released`` is a ring position the counters count every commit up to,
    what RemoteFlusher.wait_stats waits for: *released* (a commit's, said
    before its release, after its counts), else the ring's tail, read
    before the counters (a commit counts before it releases).
    """
    if released is None:
        released = flusher.ring.stats().tail
    state = (
        *(getattr(flusher, name) for name in _STATUS_COUNTERS),
        flusher.pruner.held_back if flusher.pruner is not None else 0,
        flusher.last_error,
        flusher.last_error_at,
        tuple(flusher.recent_errors),
        flusher.token,
        released,
    )
    if last and state == last[:-1] and _file_id(path) in (None, last[-1]):
        return last
    data = {**dict(zip(_STATUS_KEYS, state)), "pid": os.getpid()}
    data["recent_errors"] = list(data["recent_errors"])
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            written = _file_id(tmp)
        os.replace(tmp, path)
    except Exception:  # OSError, or a path open_private refuses (a symlink)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return last or ()  # a full disk: tried again at the next look
    return (*state, written)


def read_status(db_path: str, leader: int) -> dict[str, Any] | None:
    """What the acting flusher process of *db_path* last wrote, or None (none runs, or not yet).

    The acting flusher is the one whose token is the ring's *leader*
    (``ring.stats().leader``).  That is the holder of the election lock,
    except after a takeover from a stopped or hung holder, which keeps the
    lock while it lives: the one that took over commits without it.  A file
    whose token is not the leader's was left by a flusher that stepped down
    or exited; one of the leader whose process no longer maps the ring, by
    a leader killed before another took over.
    """
    try:
        with open(status_path(db_path)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return None
    pid = data["pid"]
    if "token" not in data:  # an older flusher process: only its lock says that it runs
        return data if pid == flusher_pid(db_path) else None
    if not leader or data["token"] != leader:
        return None  # no leader now, or another one since this file was written
    if pid != flusher_pid(db_path) and not _has_mapped(pid, db_path + "-ring"):
        return None  # a leader without the lock that is gone (its pid maybe reused)
    return data


def _has_mapped(pid: int, path: str) -> bool:
    """Whether process *pid* has the file at *path* mapped (Linux: /proc/PID/maps)."""
    real = os.path.realpath(path)
    try:
        with open(f"/proc/{pid}/maps") as f:
            # "7f12a000-7f12b000 rw-s 00000000 00:2a 5678    /tmp/app.db-ring"
            return any(line.split(maxsplit=5)[5:] == [real] for line in f.read().splitlines())
    except OSError:  # gone, or another user's
        return False


def flusher_pid(db_path: str) -> int | None:
    """The pid of the process holding the flusher election lock of *db_path* (Linux: /proc/locks)."""
    try:
        inode = os.stat(db_path + "-flusher.lock").st_ino
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF"
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[3] == "WRITE" and parts[5].endswith(f":{inode}"):
            with contextlib.suppress(ValueError):
                return int(parts[4])
    return None


# -- what the flusher process is told ----------------------------------------


class _Pickler(pickle.Pickler):
    """Pickles exporters that keep module references (OTLPExporter): a module is re-imported."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.ModuleType):
            import importlib

            return (importlib.import_module, (obj.__name__,))
        return NotImplemented


def process_config(cfg: Config) -> Config:
    """What the flusher process needs of *cfg*: no console, alerts, stream or hash key.

    Nor room set aside for spill files: it logs nothing of its own.
    """
    return dataclasses.replace(
        cfg, console=False, console_stream=None, alerts=(), hash_key=None, hash_fields=(), capture_stdlib=False,
        spill_reserve_bytes=0,
    )


def encode_config(cfg: Config) -> bytes:
    """*cfg* for the flusher process, or ConfigError naming what cannot go to another process.

    Alert rules stay in the configuring process (their callbacks are the
    application's).  Ship exporters go to the flusher process: the built-in
    ones do; one of the application's own must be picklable and importable
    there (defined in a module, not in ``__main__``).
    """
    for exporter in cfg.ship:
        module = type(exporter).__module__
        if module == "__main__":
            raise ConfigError(
                f"flusher='process' runs the ship sinks in the flusher process, which cannot import "
                f"{type(exporter).__name__} from __main__: define the exporter class in a module, "
                "or use flusher='thread'"
            )
    buf = io.BytesIO()
    # sys.path first, on its own: a custom exporter's module must be
    # importable in the flusher process before the settings are unpickled.
    pickle.dump([p for p in sys.path if p], buf, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(process_config(cfg))
    except Exception as err:
        raise ConfigError(
            f"flusher='process' must hand its settings to the flusher process, and cannot: "
            f"{type(err).__name__}: {err}; with a custom ship exporter, make it picklable, "
            "or use flusher='thread'"
        ) from None
    return buf.getvalue()


def _read_payload(stream: IO[bytes]) -> Config:
    """The settings encode_config() wrote; only ever read from the starter's pipe (see spawn())."""
    for entry in reversed(pickle.load(stream)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    return pickle.load(stream)  # type: ignore[no-any-return]


# -- starting one ---------------------------------------------------------


class _Spawned:
    """A flusher process this process started, reaped by a thread of its own."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        threading.Thread(target=self._reap, name="janus-flusher-reaper", daemon=True).start()

    def _reap(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.wait()


def spawn(cfg: Config, payload: bytes, *, wait: float = _SPAWN_WAIT) -> tuple[_Spawned, str]:
    """Start a flusher process for *cfg*; returns it and its first line ("ready ...", "error ...").

    The settings go through a pipe (never argv: ship sink credentials would
    show in ps).  The answer comes on another pipe, which the child then
    closes; "" if it said nothing within *wait* seconds.
    """
    if not sys.executable:
        raise ConfigError("flusher='process' needs sys.executable to start the flusher process; use flusher='thread'")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([here, *(p for p in sys.path if p)])
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from janus_utils._flusher_process import main; sys.exit(main())"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,  # its problems show where the application's do
        close_fds=True,
        start_new_session=True,
        env=env,
        cwd="/",
    )
    spawned = _Spawned(proc)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(payload)
        proc.stdin.close()
    except OSError:
        pass  # it died at once: the answer below says so
    answer = ""
    try:
        if select.select([proc.stdout], [], [], wait)[0]:
            answer = proc.stdout.readline().decode("utf-8", "replace").strip()
    finally:
        proc.stdout.close()
    return spawned, answer


# -- the configured process's side ------------------------------------------


class RemoteFlusher(Flusher):
    """The Flusher of a process whose records a flusher process commits.

    It keeps the ring, the console and the counters of ``Flusher``, never
    opens the database and never runs for election; its thread watches that
    a flusher process is there, and starts one when none is.
    """

    kind = "process"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.pruner = None  # retention runs in the flusher process
        self.payload = encode_config(cfg)  # refused now, before the old setup stops
        self.users_path = users_lock_path(cfg.db_path)
        self.spawn_lock = FileLock(cfg.db_path + "-flusher.spawn")
        self._users_fd: int | None = None
        self._spawned: _Spawned | None = None
        self._spawn_after = 0.0  # no new spawn before this monotonic time (backoff)
        self._spawn_backoff = 0.0
        self._stall_spawned_at = -1e9
        self.spawns = 0

    def start(self) -> None:
        try:
            self._register()
        except FileHandlerError as err:
            raise config_error(self.cfg.db_path, err) from err
        target = self.ring.stats().head
        try:
            answer = self._ensure(wait=_SPAWN_WAIT)
        except Exception:
            self._unregister()
            raise
        if answer.startswith("error"):
            self._unregister()
            raise ConfigError(f"cannot use {self.cfg.db_path} as a log database: {answer[6:]}")
        # Leftovers of a crashed run: committed by the flusher process before
        # configure() returns, as the thread flusher does (bounded alike).
        deadline = time.monotonic() + 1.0
        while self.ring.stats().tail < target and time.monotonic() < deadline:
            time.sleep(0.002)
        self._start_thread()
        self.console.start()

    def stop(self, timeout: float | None = 10.0, *, target: int | None = None) -> int:
        left = super().stop(timeout, target=target)
        self._unregister()
        return left

    # -- the users lock ------------------------------------------------------

    def _register(self) -> None:
        """Hold the users lock shared: a flusher process stays while any holder lives."""
        fd = open_private(self.users_path)
        end = time.monotonic() + _REGISTER_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # A flusher process that found no users holds it while it exits.
                if time.monotonic() >= end:
                    os.close(fd)
                    raise ConfigError(
                        f"{self.users_path} stayed locked for {_REGISTER_WAIT:g} s (a flusher process "
                        "of this database is exiting and has not finished): try again"
                    ) from None
                time.sleep(0.005)
        self._users_fd = fd

    def _unregister(self) -> None:
        # Close, never LOCK_UN: a forked child shares this lock and still uses it.
        fd, self._users_fd = self._users_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- starting the flusher process --------------------------------------

    def _ensure(self, wait: float) -> str:
        """Start a flusher process if none runs (or the one that runs stalled); its answer or ""."""
        free = _lock_is_free(self.lock_path)
        now = time.monotonic()
        stalled = False
        if not free:
            # A stopped or hung flusher keeps its lock: a new process takes
            # over once its heartbeat has not moved for takeover_after.
            stalled = bool(self._stalled_leader()) and now - self._stall_spawned_at >= 2 * self.cfg.takeover_after
            if not stalled:
                return ""
        if now < self._spawn_after or not self.spawn_lock.acquire(blocking=False):
            return ""
        try:
            if not stalled and not _lock_is_free(self.lock_path):
                return ""  # another process started one meanwhile
            self._spawned, answer = spawn(self.cfg, self.payload, wait=wait)
            self.spawns += 1
            if stalled:
                self._stall_spawned_at = now
            if answer.startswith("ready"):
                self._spawn_backoff = 0.0
                self._spawn_after = 0.0
            else:
                # An error or no answer: try again later, not at every look.
                self._spawn_backoff = min(max(self._spawn_backoff * 2, 0.5), 10.0)
                self._spawn_after = time.monotonic() + self._spawn_backoff
                self._report(f"the flusher process of {self.cfg.db_path} did not start: {answer or 'no answer'}", kind="write")
            return answer
        finally:
            self.spawn_lock.release()

    # -- the watch thread -----------------------------------------------------

    def _start_thread(self) -> None:
        self.thread = threading.Thread(target=self._run, name="janus-flusher-watch", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        next_look = 0.0
        while not self.stopping:
            now = time.monotonic()
            if now >= next_look:
                next_look = now + self.cfg.election_interval
                try:
                    self._ensure(wait=_SPAWN_WAIT)
                except Exception as err:  # the watch must outlive any single failure
                    self._report(f"cannot start the flusher process: {type(err).__name__}: {err}")
            # flush() sets wake at every look of its own: do not spin on it.
            self.wake.wait(max(next_look - time.monotonic(), 0.0))
            self.wake.clear()

    # -- fork -----------------------------------------------------------------

    def after_fork_child(self) -> None:
        # The users lock is shared with the parent (same open file): the
        # child counts as a user while it keeps it.  The spawned process is
        # the parent's to reap.
        self._spawned = None
        self.spawn_lock = FileLock(self.cfg.db_path + "-flusher.spawn")
        super().after_fork_child()

    def _new_wake(self) -> threading.Event:
        """Its watch thread's wake-up call, and only that.

        Through the ring it would also wake the flusher process as stop()
        returns, to look at its files while the application may be removing
        them; flush() wakes it through the ring itself.
        """
        return threading.Event()

    def wait_stats(self, target: int, deadline: float | None) -> None:
        """Wait until the flusher process's status counts its commits up to ring position *target*.

        The status is written every _USERS_EVERY seconds, and by the
        flusher thread a flush() woke (Flusher.on_status): before each
        release that follows, or at once if there is nothing to commit.  So
        a flush() whose wake led to the commit finds the status written; one
        that found its records committed already wakes the flusher process
        to have it written.  Bounded by *deadline* and _STATUS_WAIT:
        a status that cannot be written (a full disk) is not worth a hang.
        """
        end = time.monotonic() + _STATUS_WAIT
        if deadline is not None:
            end = min(end, deadline)
        delay = 0.0002
        while True:
            status = read_status(self.cfg.db_path, self.ring.stats().leader)
            released = status.get("released") if status is not None else None
            if type(released) is not int or released >= target:
                # Nothing to wait for: the leader is no flusher process, or
                # one that has not written yet (a standby that took over) or
                # that does not write `released` (an older version).
                return
            self.ring.wake_consumer()
            if time.monotonic() >= end:
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def process_stats(self) -> dict[str, Any]:
        """The flusher process's figures, in the keys stats() gives them with a flusher thread.

        Its commits, retries and write errors are the database's; this
        process's own problems (a flusher process that would not start) are
        added to its errors, and the newer of the two is ``last_error``.
        ``flusher_pid`` is the process that commits (the ring's leader);
        ``flusher_lock_pid`` the one holding the election lock, which
        differs after a takeover from a stopped or hung flusher process
        until that one continues or exits.
        """
        holder = flusher_pid(self.cfg.db_path)
        status = read_status(self.cfg.db_path, self.ring.stats().leader)
        out: dict[str, Any] = {
            "flusher": "process",
            "flusher_pid": status["pid"] if status is not None else holder,
            "flusher_lock_pid": holder,
            "flusher_spawns": self.spawns,
        }
        if status is None:
            return out
        with contextlib.suppress(TypeError, ValueError):
            out["committed"] = int(status["committed"])
            out["batches"] = int(status["batches"])
            out["unstorable"] = int(status["unstorable"])
            out["retention_held"] = int(status["retention_held"])
            out["retries"] = self.retries + int(status["retries"])
            out["errors"] = self.errors + int(status["errors"])
            theirs = [(float(t), str(m)) for t, m in status["recent_errors"]]
            out["recent_errors"] = sorted([*self.recent_errors, *theirs])[-(self.recent_errors.maxlen or 10) :]
            if status["last_error_at"] is not None and (self.last_error_at is None or status["last_error_at"] >= self.last_error_at):
                out["last_error"] = status["last_error"]
                out["last_error_at"] = status["last_error_at"]
        return out


# -- the flusher process's side ------------------------------------------------


class _Users:
    """The flusher process's view of the users lock."""

    def __init__(self, path: str) -> None:
        self.fd = open_private(path)
        self.held = False

    def none(self) -> bool:
        """True (and the lock held exclusively) when no configured process holds it."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held = True
        return True

    def let_in(self) -> None:
        if self.held:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.held = False


def serve(cfg: Config, *, daemon: bool = False, linger: float = _LINGER, answer: IO[str] | None = None) -> int:
    """Run the flusher (and the shippers) of *cfg* until signalled, or until no process uses it.

    Without *daemon* it exits once no configured process has used the
    database for *linger* seconds, or once it has been a standby for a
    while behind a healthy flusher.  Returns the exit status.
    """
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    try:
        flusher = Flusher(cfg)
        flusher.start()
    except ConfigError as err:
        _answer(answer, f"error {err.message}")
        return 2
    shippers: list[Any] = []
    if cfg.ship:
        from .ship import Shipper

        shippers = [Shipper(cfg.db_path, exporter).start() for exporter in cfg.ship]
    status = status_path(cfg.db_path)
    written: tuple[Any, ...] | None = None
    status_lock = threading.Lock()  # this thread's looks and the flusher thread's (on_status)

    def write(released: int | None = None) -> None:
        nonlocal written
        with status_lock:
            # The ring's leader, not just a flusher that thinks it leads: one
            # resumed after a stop writes nothing before it steps down.
            if flusher.leader and flusher.ring.stats().leader == flusher.token:
                written = write_status(flusher, status, written, released)

    write()  # before "ready": the first flush() finds a status to wait for
    flusher.on_status = write  # for a flush() that woke the flusher thread
    _answer(answer, f"ready {os.getpid()} {'leader' if flusher.leader else 'standby'}")
    users = _Users(users_lock_path(cfg.db_path))
    ring_file = _file_id(flusher.ring_path)
    idle_since: float | None = None
    standby_since: float | None = None
    try:
        while not stop.wait(_USERS_EVERY):
            write()
            if _file_id(flusher.ring_path) != ring_file:
                # The ring was deleted or replaced (its database with it): the
                # processes of the database at the path use another one now.
                print(
                    f"janus_utils: {flusher.ring_path} was deleted or replaced: the flusher process "
                    f"{os.getpid()} of the old one exits",
                    file=sys.stderr,
                )
                break
            if daemon:
                continue
            now = time.monotonic()
            if users.none():
                idle_since = idle_since if idle_since is not None else now
                if now - idle_since >= linger:
                    break  # holding the users lock: a newcomer waits until this process is gone
                users.let_in()
            else:
                idle_since = None
            # A standby behind a flusher that beats is one process too many.
            beating = now - flusher._seen_at < min(1.0, cfg.takeover_after)
            if flusher.leader or not beating:
                standby_since = None
            else:
                standby_since = standby_since if standby_since is not None else now
                if now - standby_since >= cfg.takeover_after + 2.0:
                    break
    finally:
        for shipper in shippers:
            with contextlib.suppress(Exception):
                shipper.drain(2.0)
        for shipper in shippers:
            with contextlib.suppress(Exception):
                shipper.stop(2.0)
        left = flusher.stop(_STOP_TIMEOUT)
        if left:
            print(
                f"janus_utils: the flusher process of {cfg.db_path} left {left:,} bytes of records in "
                "the ring; the next flusher of the database commits them",
                file=sys.stderr,
            )
    return 0


def _answer(stream: IO[str] | None, line: str) -> None:
    """Say how the start went, then let go of the pipe (the starter stops reading)."""
    if stream is None:
        return
    with contextlib.suppress(Exception):
        stream.write(line.replace("\n", " ") + "\n")
        stream.flush()
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def main() -> int:
    """The flusher process spawn() starts: settings on stdin, its answer on stdout."""
    out = sys.stdout
    try:
        cfg = _read_payload(sys.stdin.buffer)
    except Exception as err:
        _answer(out, f"error cannot read the settings: {type(err).__name__}: {err}")
        return 2
    return serve(cfg, answer=out)


# -- janus-logs flusher -----------------------------------------------------------


def add_parser(commands: Any, db_default: str, formatter: type[argparse.HelpFormatter], prog: str) -> argparse.ArgumentParser:
    cmd = commands.add_parser(
        "flusher",
        help="run the database's flusher as a process of its own (for configure(flusher='process'))",
        description=textwrap.dedent(
            """\
            Commit the records the application's processes push into the
            database's ring, run retention and ship to the --ship sinks: what
            configure(flusher="process") starts by itself, here under your
            control (systemd, supervisord, a container's init).  Elected with
            the same lock as every other flusher of the database: a second
            one waits as a standby and takes over if the first dies.
            Without --daemon it exits once no configured process has used
            the database for --linger seconds; with --daemon it runs until
            SIGTERM or Ctrl-C, then commits what is left and exits."""
        ),
        epilog="\n".join(
            [
                "Example:",
                f"  {prog} flusher --db app.db --daemon --retention 30d",
                f"  {prog} flusher --db app.db --daemon --ship clickhouse://127.0.0.1:8123/default.logs",
            ]
        ),
        formatter_class=formatter,
    )
    cmd.add_argument("--db", default=db_default, metavar="PATH", help=f"the log database (default: $JANUS_LOG_DB, else ./janus-logs.db; now {db_default})")
    cmd.add_argument("--daemon", action="store_true", help="keep running while no process uses the database (until SIGTERM)")
    cmd.add_argument("--linger", type=float, default=_LINGER, metavar="SECONDS", help=f"without --daemon: exit after this long without users (default {_LINGER:g})")
    cmd.add_argument("--retention", metavar="AGE", help="prune records older than AGE (30d, 12h), as configure(retention=AGE)")
    cmd.add_argument("--archive-dir", metavar="DIR", help="archive pruned records there first")
    cmd.add_argument("--ship", action="append", default=[], metavar="URL", help="ship committed records to this sink (repeatable; as janus-logs ship --to)")
    cmd.add_argument("--batch-size", type=int, default=2000, metavar="N", help="records per commit (default 2000)")
    cmd.add_argument("--synchronous", choices=("NORMAL", "FULL"), default="NORMAL", help="FULL: every commit synced to disk")
    cmd.set_defaults(run=_run_cli)
    return cmd


def _run_cli(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from .logger import _check_config

    if not args.linger >= 0:
        raise ConfigError(f"--linger must be seconds >= 0, not {args.linger!r}")
    options: dict[str, Any] = {"batch_size": args.batch_size, "synchronous": args.synchronous, "console": False}
    if args.retention:
        options["retention"] = args.retention
    if args.archive_dir:
        options["archive_dir"] = args.archive_dir
    if args.ship:
        from .ship import exporter_from_url

        options["ship"] = [exporter_from_url(url) for url in args.ship]
    cfg = process_config(_check_config(args.db, flusher="process", **options))
    return serve(cfg, daemon=args.daemon, linger=args.linger, answer=None)

