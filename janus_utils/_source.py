"""Where a record was logged: the caller's file, line and function, stored as reserved fields.

The keys are OpenTelemetry's semantic-convention attributes for code
(``code.filepath``, ``code.lineno``, ``code.function``), so a record shipped
over OTLP carries them under the names collectors already know, and no
column, migration or ring format change is needed: a record without a
location costs nothing.  Looking up the caller's frame is the cost, so it is
done only for records at or above ``configure(source_location=...)``
(WARNING by default): the C level methods hand those calls to Python
(``_speedups.set_python_from``), which adds the three fields and passes the
call on to the C encoder like any other.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["FILEPATH", "FUNCTION", "KEYS", "LINENO", "add_caller", "add_stdlib"]

FILEPATH = "code.filepath"
LINENO = "code.lineno"
FUNCTION = "code.function"
KEYS = (FILEPATH, LINENO, FUNCTION)

_HERE = os.path.dirname(os.path.abspath(__file__))
_LOGGER_FILE = os.path.join(_HERE, "logger.py")
# Frames that log on behalf of their caller: the location is the caller's.
_SKIPPED = frozenset(
    {_LOGGER_FILE, os.path.abspath(__file__), os.path.join(_HERE, "error_handling", "_handling.py")}
)


def add_caller(fields: dict[str, Any], stacklevel: object = 1) -> None:
    """Add the location of the first frame outside janus_utils' logger (then *stacklevel* - 1 up)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename in _SKIPPED:
        frame = frame.f_back  # type: ignore[assignment]
    skip = stacklevel - 1 if type(stacklevel) is int and stacklevel > 1 else 0
    while skip and frame is not None and frame.f_back is not None:
        frame, skip = frame.f_back, skip - 1
    if frame is None:
        return
    code = frame.f_code
    fields.setdefault(FILEPATH, code.co_filename)
    fields.setdefault(LINENO, frame.f_lineno)
    fields.setdefault(FUNCTION, code.co_qualname)


def add_stdlib(fields: dict[str, Any], pathname: str | None, lineno: int | None, function: str | None) -> None:
    """The location a stdlib LogRecord carries, when it carries one."""
    if pathname and pathname != "(unknown file)":
        fields.setdefault(FILEPATH, pathname)
        if lineno:
            fields.setdefault(LINENO, lineno)
        if function and function != "(unknown function)":
            fields.setdefault(FUNCTION, function)
