"""How janus-logs shows records: output formats, local or UTC time, the pager.

Kept apart from ``cli.py`` (the commands and their options): this is what
an operator who lives in journalctl expects of the output, ``-o short``,
``-o verbose``, ``-o cat``..., local time on a terminal and ``less -R``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import IO, Any

from ._timeparse import format_ts
from .security import sanitize
from .store import Record

__all__ = [
    "OUTPUT_FORMATS",
    "SOURCE_KEYS",
    "format_time",
    "pager",
    "reader_gone",
    "source_location",
    "verbose_lines",
]

OUTPUT_FORMATS = ("short", "verbose", "json", "json-pretty", "cat", "csv")

# Where a record was logged: the OpenTelemetry semantic-convention attribute
# names, stored in the record's fields (see janus_utils._source).
SOURCE_KEYS = ("code.filepath", "code.lineno", "code.function")


def format_time(ts: int, *, utc: bool, digits: int = 3) -> str:
    """``ts`` as ISO 8601: UTC with a ``Z``, or this machine's local time with its offset."""
    if utc:
        return format_ts(ts, digits=digits)
    seconds, nanos = divmod(ts, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, timezone.utc).astimezone()
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if digits > 0:
        text += "." + f"{nanos:09d}"[:digits]
    offset = moment.strftime("%z")  # +0200
    return text + (offset[:3] + ":" + offset[3:] if offset else "")


def source_location(record: Record) -> str | None:
    """``path:line in function`` when the record carries where it was logged."""
    path, line, function = (record.fields.get(key) for key in SOURCE_KEYS)
    if path is None and line is None:
        return None
    text = f"{path}:{line}" if line is not None else str(path)
    return f"{text} in {function}" if function else text


def verbose_lines(record: Record, *, utc: bool, archived: bool = False) -> list[str]:
    """The whole record, one field a line, the full traceback last (``-o verbose``, ``show``)."""
    lines = [f"{format_time(record.ts, utc=utc, digits=9)} {record.level_name} {sanitize(record.logger)} [id {record.id}]"]

    def add(name: str, value: object) -> None:
        if value is None or value == "":
            return
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        lines.append(f"    {name}: {sanitize(text)}")

    add("message", record.message)
    location = source_location(record)
    add("source", location)
    for name in ("user_id", "agent_id", "request_id", "trace_id", "span_id", "service", "host", "pid", "thread"):
        add(name, getattr(record, name))
    add("ts", record.ts)
    for key, value in record.fields.items():
        if location is not None and key in SOURCE_KEYS:
            continue
        add(f"fields.{key}", value)
    if archived:
        add("archived", "yes")
    if record.exception:
        lines.append("    exception:")
        lines.extend("      " + sanitize(line) for line in record.exception.splitlines())
    return lines


class _PagerStream(io.TextIOWrapper):
    """The pager's input: stands for the terminal the pager shows, colours included (less -R)."""

    def isatty(self) -> bool:
        return True


def _pager_command() -> list[str] | None:
    """``$JANUS_LOGS_PAGER``, else ``$PAGER``, else less; None when paging is turned off."""
    for name in ("JANUS_LOGS_PAGER", "PAGER"):
        value = os.environ.get(name)
        if value is not None:
            value = value.strip()
            if value in ("", "cat"):
                return None
            return ["/bin/sh", "-c", value]
    return ["less"]


@contextlib.contextmanager
def pager(out: IO[str], enabled: bool) -> Iterator[IO[str]]:
    """*out*, or when *enabled* and *out* is a terminal, the input of a pager shown on it.

    Like journalctl: ``$PAGER`` (``less`` when unset, with ``LESS=FRSXK`` unless
    LESS is set: quit if one screen, raw colours, no screen clearing), off with
    ``--no-pager``, ``PAGER=cat`` or ``PAGER=``.  A pager that cannot be started
    leaves the output on the terminal as it is.
    """
    command = _pager_command() if enabled else None
    try:  # a real terminal, not a stream that only says it is one
        terminal = out.isatty() and os.isatty(out.fileno())
    except (AttributeError, ValueError, OSError):
        terminal = False
    if command is None or not terminal:
        yield out
        return
    env = dict(os.environ)
    env.setdefault("LESS", "FRSXK")
    env.setdefault("LV", "-c")
    try:
        out.flush()
        process = subprocess.Popen(command, stdin=subprocess.PIPE, env=env)
    except OSError:
        yield out
        return
    assert process.stdin is not None
    stream = _PagerStream(process.stdin, encoding="utf-8", errors="replace", write_through=False)
    try:
        yield stream
    except BrokenPipeError:
        pass  # the pager was quit before the end: as less after 'q'
    finally:
        with contextlib.suppress(OSError, ValueError):
            stream.close()
        while True:
            try:
                process.wait()
                break
            except KeyboardInterrupt:  # Ctrl-C belongs to the pager while it runs
                continue


def pager_name() -> str:
    """The pager that would run, for messages."""
    command = _pager_command()
    return "none" if command is None else shlex.join(command[-1:])


def json_pretty(data: dict[str, Any]) -> str:
    """A record as indented JSON (``-o json-pretty``); escapes as ``-o json`` does."""
    return json.dumps(data, ensure_ascii=True, indent=2, default=str)


def reader_gone(stream: IO[str]) -> None:
    """*stream*'s reader (head, less) went away: let the program stop quietly, as grep does.

    Called on a BrokenPipeError.  The stream's file descriptor is pointed at
    /dev/null, so that the interpreter's last flush at exit, of what is
    still buffered, does not print a second error.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    finally:
        os.close(devnull)
