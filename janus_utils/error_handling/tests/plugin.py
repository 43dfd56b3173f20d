"""pytest plugin: the ``janus_logs`` fixture, which captures what a test logs through janus_utils.

    def test_duplicate_email_is_logged_once(janus_logs):
        with pytest.raises(IntegrityError):
            create_user("a@example.com")
        record = janus_logs.assert_logged_once(level="WARNING", error_code="integrity_error")
        assert "UNIQUE" in record["exception"]

Records are captured as the logger hands them to its listeners: one dict per
record, after redaction, on the thread that logged it (see
``janus_utils.logger.add_record_listener``).  Records of stdlib ``logging``
are captured too, whether or not a JanusHandler stores them (a handler on the
root logger for the duration of the test; the loggers' levels still apply,
as for pytest's caplog).

Values are compared the way ``LogStore`` filters compare them:
``user_id``, ``agent_id``, ``request_id``, ``trace_id`` and ``span_id`` are
text columns, so ``user_id=42`` and ``user_id="42"`` both match a record
logged with either; other fields are JSON values (42 matches 42 and 42.0, not
"42"; a tuple matches the equal list).  A failed assertion lists the closest
records and, for each, the keys that differed and their values.  Listeners run only while
janus_utils is configured, so the fixture configures it to a temporary
database (level DEBUG, no console) when the test has not, and shuts it down
afterwards.  A configuration made before the test is left as it is, and its
levels decide what can be captured.

Load it with ``-p janus_utils.error_handling.tests.plugin``, through the
package's ``pytest11`` entry point, or by importing the fixture into a test
module (``from janus_utils.error_handling.tests.plugin import janus_logs``).
The entry point is named after the module, so that ``-p`` with the module
path and the entry point name the same plugin rather than register it twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..._levels import level_name, parse_level
from .errors import FixtureError, TestSetupError

__all__ = ["JanusLogs", "capture_janus_logs", "janus_logs"]

_MISSING = object()


class JanusLogs:
    """The records logged while capturing, and assertions over them.

    Matching, shared by every method: *level* is a name or number and must
    equal the record's level (None: any level); *contains* must be a
    substring of the message; *logger* must equal the logger name; each
    keyword must equal the record's key of that name (``request_id``,
    ``exception``, ...) or, failing that, the field of that name.
    """

    def __init__(self, db_path: Path | None = None) -> None:
        self._records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.db_path = db_path
        """The database the fixture configured, or None if the test was configured already."""

    def _listen(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._records.append(record)

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every record captured so far, oldest first (a copy)."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        """Forget the records captured so far."""
        with self._lock:
            self._records.clear()

    def find(
        self,
        level: int | str | None = None,
        contains: str | None = None,
        logger: str | None = None,
        **fields: Any,
    ) -> list[dict[str, Any]]:
        """The records that match, oldest first."""
        try:
            levelno = None if level is None else parse_level(level)
        except ValueError as exc:
            raise TestSetupError(str(exc)) from None
        return [
            record
            for record in self.records
            if not _differences(record, levelno, contains, logger, fields)
        ]

    def assert_logged(
        self,
        level: int | str | None = "ERROR",
        contains: str | None = None,
        logger: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The first record that matches; fails, listing what was logged, if none does."""
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        found = self.find(level, contains, logger, **fields)
        if not found:
            raise AssertionError(
                f"no record matches {_describe(level, contains, logger, fields)}\n"
                f"{self._closest(level, contains, logger, fields)}"
            )
        return found[0]

    def assert_logged_once(
        self,
        level: int | str | None = "ERROR",
        contains: str | None = None,
        logger: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The one record that matches; fails if none or several do."""
        __tracebackhide__ = True
        found = self.find(level, contains, logger, **fields)
        if len(found) != 1:
            raise AssertionError(
                f"{len(found)} records match {_describe(level, contains, logger, fields)}, "
                f"expected exactly 1\n"
                + (self._summary(found, "matching") if found else self._closest(level, contains, logger, fields))
            )
        return found[0]

    def assert_not_logged(
        self,
        level: int | str | None = None,
        contains: str | None = None,
        logger: str | None = None,
        **fields: Any,
    ) -> None:
        """Fails if any record matches; with no arguments, if anything was logged at all."""
        __tracebackhide__ = True
        found = self.find(level, contains, logger, **fields)
        if found:
            raise AssertionError(
                f"{len(found)} record(s) match {_describe(level, contains, logger, fields)}, "
                f"expected none\n{self._summary(found, 'matching')}"
            )

    def _closest(
        self, level: int | str | None, contains: str | None, logger: str | None, fields: dict[str, Any]
    ) -> str:
        """The records that came closest, each with what differed from what was asked."""
        records = self.records
        if not records:
            return "no records were captured"
        levelno = None if level is None else parse_level(level)
        scored = [(_differences(r, levelno, contains, logger, fields), i, r) for i, r in enumerate(records)]
        scored.sort(key=lambda item: (len(item[0]), -item[1]))
        lines = [f"{len(records)} record(s) captured; the closest:"]
        for diffs, _, record in scored[:5]:
            lines.append(f"  {_line(record)}")
            lines.append(f"      differs: {', '.join(diffs)}")
        if len(records) > 5:
            lines.append(f"  ... and {len(records) - 5} other record(s)")
        return "\n".join(lines)

    def _summary(self, records: list[dict[str, Any]] | None = None, what: str = "captured") -> str:
        records = self.records if records is None else records
        if not records:
            return "no records were captured"
        lines = [f"{len(records)} record(s) {what}:"]
        for record in records[-20:]:
            lines.append(f"  {_line(record)}")
        if len(records) > 20:
            lines.insert(1, f"  ... {len(records) - 20} earlier record(s) not shown")
        return "\n".join(lines)


# Stored as text columns: compared as text, as LogStore's filters compare them.
_TEXT_COLUMNS = frozenset(("user_id", "agent_id", "request_id", "trace_id", "span_id"))


def _value(record: dict[str, Any], key: str) -> Any:
    if key in record:
        return record[key]
    return record["fields"].get(key, _MISSING)


def _as_json(value: Any) -> Any:
    """*value* as it reads back from the stored JSON (tuples as lists, objects as text)."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError, RecursionError):
        return str(value)


def _same(key: str, actual: Any, wanted: Any) -> bool:
    if actual is _MISSING:
        return False
    if key in _TEXT_COLUMNS:
        if actual is None or wanted is None:
            return actual is wanted
        return str(actual) == str(wanted)
    if key in ("ts", "level", "level_name", "logger", "message", "exception", "pid", "thread"):
        return bool(actual == wanted)
    actual, wanted = _as_json(actual), _as_json(wanted)
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return type(actual) is type(wanted) and actual == wanted
    return bool(actual == wanted)


def _differences(
    record: dict[str, Any], levelno: int | None, contains: str | None, logger: str | None, fields: dict[str, Any]
) -> list[str]:
    """What in *record* differs from what was asked, one "key=actual (wanted ...)" each."""
    diffs = []
    if levelno is not None and record["level"] != levelno:
        diffs.append(f"level={record['level_name']} (wanted {level_name(levelno)})")
    if contains is not None and contains not in (record["message"] or ""):
        diffs.append(f"message={record['message']!r} (wanted it to contain {contains!r})")
    if logger is not None and record["logger"] != logger:
        diffs.append(f"logger={record['logger']!r} (wanted {logger!r})")
    for key, wanted in fields.items():
        actual = _value(record, key)
        if not _same(key, actual, wanted):
            shown = "missing" if actual is _MISSING else repr(actual)
            diffs.append(f"{key}={shown} (wanted {wanted!r})")
    return diffs


def _line(record: dict[str, Any]) -> str:
    known = " ".join(
        f"{key}={record[key]!r}" for key in sorted(_TEXT_COLUMNS) if record.get(key) is not None
    )
    # Where it was logged (code.filepath ...) is left out: it is the same call, not a difference.
    shown = {key: value for key, value in (record["fields"] or {}).items() if not key.startswith("code.")}
    fields = f" {shown}" if shown else ""
    return f"{record['level_name']} {record['logger']}: {record['message']}" + (
        f" [{known}]" if known else ""
    ) + fields


def _describe(
    level: int | str | None, contains: str | None, logger: str | None, fields: dict[str, Any]
) -> str:
    parts = []
    if level is not None:
        parts.append(f"level={level_name(parse_level(level))}")
    if contains is not None:
        parts.append(f"contains={contains!r}")
    if logger is not None:
        parts.append(f"logger={logger!r}")
    parts.extend(f"{key}={value!r}" for key, value in fields.items())
    return "(" + ", ".join(parts) + ")" if parts else "(anything)"


@contextlib.contextmanager
def capture_janus_logs(tmp_dir: str | os.PathLike[str]) -> Iterator[JanusLogs]:
    """Capture records logged inside the block; what the ``janus_logs`` fixture does.

    If janus_utils is not configured, it is configured to ``<tmp_dir>/janus-logs.db``
    for the block and shut down after it.
    """
    from ... import logger as janus_logger

    configured_here: Path | None = None
    if not janus_logger.is_configured():
        configured_here = Path(tmp_dir) / "janus-logs.db"
        try:
            janus_logger.configure(
                configured_here, level="DEBUG", console=False, ring_size=1 << 20
            )
        except Exception as exc:
            raise FixtureError(
                f"janus_logs could not configure logging to {configured_here}: {exc}"
            ) from exc
    logs = JanusLogs(configured_here)
    remove = janus_logger.add_record_listener(logs._listen)
    stdlib = _StdlibCapture(logs)
    root = logging.getLogger()
    root.addHandler(stdlib)
    try:
        yield logs
    finally:
        root.removeHandler(stdlib)
        remove()
        # Shut down only the configuration made here: the test may have
        # reconfigured logging to its own database, which is its business.
        if configured_here is not None and janus_logger.stats().get("db_path") == os.path.abspath(
            configured_here
        ):
            janus_logger.shutdown()


class _StdlibCapture(logging.Handler):
    """Hands the fixture the stdlib records no JanusHandler has stored (yet)."""

    def __init__(self, logs: JanusLogs) -> None:
        super().__init__(logging.NOTSET)
        self.logs = logs

    def emit(self, record: logging.LogRecord) -> None:
        from ... import logger as janus_logger
        from ..._record import record_dict

        if record.__dict__.get(janus_logger._STORED):
            return  # a JanusHandler stored it, and the fixture's listener has it
        try:
            rec = janus_logger.stdlib_record(record)
            em = janus_logger._emitter
            if em is not None and em.redact:
                _, ts, level, name, message, fields, exc, pid, thread = rec
                red = em.redactor
                rec = (rec[0], ts, level, name, red.redact_text(message),
                       red.redact_value(fields) if fields else fields,
                       red.redact_text(exc) if exc else exc, pid, thread)
            record.__dict__[janus_logger.LISTENED] = True
            self.logs._listen(record_dict(rec))
        except Exception:
            self.handleError(record)


@pytest.fixture
def janus_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JanusLogs]:
    """The records a test logs through janus_utils, with ``assert_logged`` and friends."""
    with capture_janus_logs(tmp_path_factory.mktemp("janus_logs")) as logs:
        yield logs
