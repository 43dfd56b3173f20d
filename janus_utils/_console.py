"""The console: records at ``console_level`` and above as logfmt or JSON lines on a stream.

Lines are rendered and written by their own thread, so a slow or blocked
stream (a full pipe nobody reads) never holds up a log call or a commit for
long.  What the thread promises a reader of the stream (docker, journald, a
terminal):

- A line is never cut or interleaved.  When the stream has a file descriptor
  the thread writes it with ``os.write``, whole lines only, in writes of at
  most ``PIPE_BUF`` bytes: POSIX makes such a write to a pipe atomic, so
  several processes writing one pipe cannot mix their lines.  A line longer
  than ``PIPE_BUF`` gets a write of its own.
- Nothing is dropped silently.  The queue is bounded; when it is full a log
  call waits briefly for the thread (``on_full="block"``), then drops.  Every
  drop is counted (``stats()["console_dropped"]``) and said on the stream in
  one line.  Once a wait has timed out, later calls drop at once until the
  stream moves again, so a stuck stream costs one wait, not one per call.
- Tracebacks are shown for server errors: an error record with an
  ``http_status`` below 500 (a client's mistake: 404, 422...) is printed
  without its traceback, which is still stored in full.  Records without an
  ``http_status`` keep theirs.  ``console_tracebacks="all"`` or ``"none"``
  changes that.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import security
from ._levels import level_name
from ._record import json_default, record_dict, safe_str, safe_value

__all__ = ["TRACEBACK_RULES", "Console", "render_json", "render_logfmt"]

_QUEUE_LINES = 10_000
_WAKE_AT = _QUEUE_LINES // 4  # a queue this long wakes the writer before its next tick
_TICK = 0.05  # seconds between writes when the queue stays short
_MAX_WAIT = 1.0  # longest a log call waits for room in a full queue
PIPE_BUF = getattr(select, "PIPE_BUF", 4096)

TRACEBACK_RULES = ("5xx", "all", "none")


class Console:
    """A bounded queue of records for the console and the thread that writes them."""

    def __init__(
        self,
        *,
        stream: Any,
        fmt: str,
        enabled: bool,
        report: Callable[[str], None],
        tracebacks: str = "5xx",
        wait: float = _MAX_WAIT,
    ) -> None:
        self.stream = stream  # None: sys.stderr at write time
        self.render = render_json if fmt == "json" else render_logfmt
        self.colorable = fmt == "logfmt"
        self.enabled = enabled
        self.report = report
        self.tracebacks = tracebacks
        self.wait = wait  # 0: drop at once when the queue is full
        self.queue: deque[tuple[Any, ...]] = deque()
        self.dropped = 0  # every record the console lost, for stats()
        self._unsaid = 0  # drops not yet reported on the stream
        self._stalled = False  # a wait timed out; cleared when a write completes
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.room = threading.Condition(threading.Lock())
        self.count_lock = threading.Lock()

    @classmethod
    def for_config(cls, cfg: Any, *, report: Callable[[str], None]) -> Console:
        """The console a ``logger.Config`` asks for."""
        wait = 0.0
        if cfg.on_full == "block":
            wait = _MAX_WAIT if cfg.block_timeout is None else min(cfg.block_timeout, _MAX_WAIT)
        return cls(
            stream=cfg.console_stream,
            fmt=cfg.console_format,
            enabled=cfg.console,
            report=report,
            tracebacks=getattr(cfg, "console_tracebacks", "5xx"),
            wait=wait,
        )

    def put(self, record: tuple[Any, ...]) -> None:
        """Queue *record*; when the queue is full wait briefly, then count it as dropped."""
        q = self.queue
        n = len(q)
        if n < _QUEUE_LINES:
            q.append(record)
            if n == _WAKE_AT:
                self.wake.set()
            return
        if self.wait > 0 and not self._stalled and self.thread is not None and self.thread.is_alive():
            deadline = time.monotonic() + self.wait
            with self.room:
                while len(q) >= _QUEUE_LINES:
                    self.wake.set()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._stalled = True
                        break
                    self.room.wait(min(remaining, _TICK))
            if len(q) < _QUEUE_LINES:
                q.append(record)
                return
        with self.count_lock:
            self.dropped += 1
            self._unsaid += 1

    def start(self) -> None:
        if self.enabled:
            self.thread = threading.Thread(target=self._loop, name="janus-console", daemon=True)
            self.thread.start()

    def stop(self, timeout: float | None) -> None:
        self.stopping = True
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout)
        self.write()

    def after_fork_child(self) -> None:
        # The child has no console thread and the locks may have been held at fork().
        self.lock = threading.Lock()
        self.room = threading.Condition(threading.Lock())
        self.count_lock = threading.Lock()
        self.wake = threading.Event()
        self.queue.clear()
        self._stalled = False
        if not self.stopping:
            self.start()

    def _loop(self) -> None:
        while not self.stopping:
            self.write()
            self.wake.wait(_TICK)
            self.wake.clear()

    def write(self, timeout: float = _MAX_WAIT) -> None:
        """Write every queued record now, in order.

        Gives up after *timeout* seconds if another write holds the stream
        (a pipe nobody reads): flush() and shutdown() must not hang on it.
        """
        if not self.queue and not self._unsaid:
            return
        if not self.lock.acquire(timeout=timeout):  # one writer at a time keeps lines in order
            return
        try:
            self._write_locked()
        finally:
            self.lock.release()

    def _write_locked(self) -> None:
        q = self.queue
        stream = self.stream or sys.stderr
        color = self.colorable and _isatty(stream)
        while q or self._unsaid:
            lines = []
            # A bounded batch: room is made for waiting callers as it goes.
            for _ in range(min(len(q), 1000)):
                try:
                    record = q.popleft()
                except IndexError:
                    break
                try:
                    lines.append(self.render(record, color, self.tracebacks))
                except Exception as err:
                    self.report(f"console formatting failed: {err}")
            with self.room:
                self.room.notify_all()
            if self._unsaid and not q:
                # Said after the lines queued before the drops.
                with self.count_lock:
                    unsaid, self._unsaid = self._unsaid, 0
                lines.append(
                    f"janus_utils: the console fell behind: {unsaid} line(s) dropped "
                    f"({self.dropped} in all); every record is still stored\n"
                )
            if lines and not self._emit(stream, lines):
                return
        self._stalled = False

    def _emit(self, stream: Any, lines: list[str]) -> bool:
        """Write *lines*, each whole; False if the stream failed (the lines are lost)."""
        try:
            fd = stream.fileno()
        except Exception:
            fd = None
        try:
            if fd is None or not isinstance(fd, int) or fd < 0:
                stream.write("".join(lines))
                stream.flush()
                return True
            # Whatever the application wrote through the same stream goes first.
            stream.flush()
            encoding = getattr(stream, "encoding", None) or "utf-8"
            chunk = bytearray()
            for line in lines:
                data = line.encode(encoding, "backslashreplace")
                if chunk and len(chunk) + len(data) > PIPE_BUF:
                    _write_all(fd, chunk)
                    chunk = bytearray()
                if len(data) > PIPE_BUF:
                    _write_all(fd, data)
                else:
                    chunk += data
            if chunk:
                _write_all(fd, chunk)
            return True
        except Exception:
            return False


def _write_all(fd: int, data: bytes | bytearray) -> None:
    """One ``os.write`` for all of *data* where the kernel takes it; the rest after."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)  # a non-blocking stream: wait until it drains
            continue
        except OSError as err:
            if err.errno == errno.EINTR:
                continue
            raise
        view = view[n:]


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty()) and "NO_COLOR" not in os.environ
    except Exception:
        return False


_COLORS = {10: "\x1b[2m", 20: "\x1b[32m", 30: "\x1b[33m", 40: "\x1b[31m", 50: "\x1b[1;31m"}


def _iso(ts: int) -> str:
    secs, ns = divmod(ts, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ns // 1000:06d}Z"


def show_traceback(fields: dict[str, Any] | None, rule: str = "5xx") -> bool:
    """Whether the console prints a record's traceback under *rule* (see the module docstring)."""
    if rule == "all":
        return True
    if rule == "none":
        return False
    status = fields.get("http_status") if fields else None
    return not (type(status) is int and status < 500)


def _logfmt_value(value: object) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (dict, list, tuple)):
        try:
            text = json.dumps(value, ensure_ascii=False, default=json_default, separators=(",", ":"))
        except (ValueError, TypeError, RecursionError):
            text = safe_str(value)
    else:
        text = safe_str(value)
    # Bare, or quoted with every escape decodable (a logged "\\n" is not a
    # newline), and still one line with no control character raw.
    return security.logfmt_text(text)


_SOURCE_KEYS = frozenset(("code.filepath", "code.lineno", "code.function"))  # see _source


def render_logfmt(record: tuple[Any, ...], color: bool, tracebacks: str = "5xx") -> str:
    """One logfmt line: readable, greppable, and parseable by logfmt tools.

    Containers are rendered as JSON text; None values are left out.
    """
    _, ts, level, name, message, fields, exc, pid, thread = record
    lname = level_name(level)
    if color:
        lname = _COLORS.get(level, "") + lname + "\x1b[0m"
    parts = [f"ts={_iso(ts)}", f"level={lname}", f"logger={_logfmt_value(name)}",
             f"msg={_logfmt_value(message)}"]
    for key, value in (fields or {}).items():
        if value is None or key in _SOURCE_KEYS:  # the database keeps where it was logged
            continue
        parts.append(f"{_logfmt_value(key).replace('=', '_')}={_logfmt_value(value)}")
    if exc and show_traceback(fields, tracebacks):
        parts.append(f"exception={_logfmt_value(exc)}")
    return " ".join(parts) + "\n"


def render_json(record: tuple[Any, ...], color: bool, tracebacks: str = "5xx") -> str:
    d = record_dict(record)
    d["time"] = _iso(d["ts"])
    if d["exception"] and not show_traceback(record[5], tracebacks):
        d["exception"] = None
    # ensure_ascii escapes every control character and U+2028/9: one line, always.
    try:
        return json.dumps(d, ensure_ascii=True, default=json_default) + "\n"
    except (ValueError, TypeError, RecursionError):  # NaN, odd keys, huge ints, deep nesting
        return json.dumps(safe_value(d), ensure_ascii=True, default=json_default) + "\n"
