"""The console: records at ``console_level`` and above as logfmt or JSON lines on a stream.

Lines are rendered and written by their own thread, so a slow or blocked
stream (a full pipe nobody reads) never holds up a log call or a commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import security
from ._levels import level_name
from ._record import json_default, record_dict, safe_str

__all__ = ["Console"]

_QUEUE_LINES = 10_000


class Console:
    """A bounded queue of records for the console and the thread that writes them."""

    def __init__(
        self,
        *,
        stream: Any,
        fmt: str,
        enabled: bool,
        report: Callable[[str], None],
    ) -> None:
        self.stream = stream  # None: sys.stderr at write time
        self.render = render_json if fmt == "json" else render_logfmt
        self.colorable = fmt == "logfmt"
        self.enabled = enabled
        self.report = report
        self.queue: deque[tuple[Any, ...]] = deque(maxlen=_QUEUE_LINES)
        self.dropped = 0
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def put(self, record: tuple[Any, ...]) -> None:
        """Queue *record* for the console; count it as dropped when the queue is full."""
        q = self.queue
        if len(q) < _QUEUE_LINES:
            q.append(record)
        else:
            self.dropped += 1

    def start(self) -> None:
        if self.enabled:
            self.thread = threading.Thread(target=self._loop, name="janus-console", daemon=True)
            self.thread.start()

    def stop(self, timeout: float | None) -> None:
        self.stopping = True
        if self.thread is not None:
            self.thread.join(timeout)
        self.write()

    def after_fork_child(self) -> None:
        # The child has no console thread and the lock may have been held at fork().
        self.lock = threading.Lock()
        self.queue.clear()
        if not self.stopping:
            self.start()

    def _loop(self) -> None:
        while not self.stopping:
            self.write()
            time.sleep(0.05)

    def write(self) -> None:
        """Write every queued record now, in order."""
        if not self.queue:
            return
        with self.lock:  # one writer at a time keeps lines in order
            self._write_locked()

    def _write_locked(self) -> None:
        q = self.queue
        stream = self.stream or sys.stderr
        color = self.colorable and _isatty(stream)
        lines = []
        while q:
            try:
                lines.append(self.render(q.popleft(), color))
            except IndexError:
                break
            except Exception as err:
                self.report(f"console formatting failed: {err}")
        with contextlib.suppress(Exception):
            stream.write("".join(lines))
            stream.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty()) and "NO_COLOR" not in os.environ
    except Exception:
        return False


_COLORS = {10: "\x1b[2m", 20: "\x1b[32m", 30: "\x1b[33m", 40: "\x1b[31m", 50: "\x1b[1;31m"}


def _iso(ts: int) -> str:
    secs, ns = divmod(ts, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ns // 1000:06d}Z"


def _logfmt_value(value: object) -> str:
    text = security.sanitize(value if isinstance(value, str) else safe_str(value))
    if text and not any(c in text for c in ' ="'):
        return text
    return '"' + text.replace('"', '\\"') + '"'


def render_logfmt(record: tuple[Any, ...], color: bool) -> str:
    """One logfmt line: readable, greppable, and parseable by logfmt tools."""
    _, ts, level, name, message, fields, exc, pid, thread = record
    lname = level_name(level)
    if color:
        lname = _COLORS.get(level, "") + lname + "\x1b[0m"
    parts = [f"ts={_iso(ts)}", f"level={lname}", f"logger={_logfmt_value(name)}",
             f"msg={_logfmt_value(message)}"]
    for key, value in (fields or {}).items():
        parts.append(f"{_logfmt_value(key).replace('=', '_')}={_logfmt_value(value)}")
    if exc:
        parts.append(f"exception={_logfmt_value(exc)}")
    return " ".join(parts) + "\n"


def render_json(record: tuple[Any, ...], color: bool) -> str:
    d = record_dict(record)
    d["time"] = _iso(d["ts"])
    # ensure_ascii escapes every control character and U+2028/9: one line, always.
    return json.dumps(d, ensure_ascii=True, default=json_default) + "\n"

