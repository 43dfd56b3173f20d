"""The one logging entry point of a backend: log calls become committed, searchable SQLite rows.

A log call checks its level, formats the message, redacts what the prefilter
flags, encodes a compact tuple in ``marshal``'s format and pushes it into the
shared ring file beside the database.  That is all it does: no I/O, no lock, no
JSON.  The common call (plain fields, nothing suspect) runs in C, in
``_speedups``; everything else takes the Python path below, which the C code
mirrors byte for byte.
One flusher per database, elected with a file lock among every process that
configured it, drains the ring and commits batches through apsw with the FTS5
index filled once per batch.  The ring position committed is stored in the
same transaction, so a crash anywhere never loses or repeats a record.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import json
import logging
import marshal
import math
import os
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import apsw

from . import _ring, _schema, security
from ._levels import LEVELS, level_name, parse_level
from .error_handling.utils.errors import ConfigError, RingFormatError
from .file_handler import FileLock

try:
    from . import _speedups
except ImportError:  # a build without the C module: the Python path does everything
    _speedups = None  # type: ignore[assignment]


def _native_enabled() -> bool:
    """Whether log calls and the flusher use ``_speedups`` (JANUS_UTILS_NO_SPEEDUPS=1: no)."""
    return (
        _speedups is not None
        and _speedups.FORMAT == _FORMAT
        and not os.environ.get("JANUS_UTILS_NO_SPEEDUPS")
    )

__all__ = [
    "JanusHandler",
    "Logger",
    "configure",
    "flush",
    "get_logger",
    "is_configured",
    "log_context",
    "shutdown",
    "stats",
]

TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL = (LEVELS[n] for n in LEVELS)

# The record as it travels through the ring: a marshal'd tuple, defined once.
# (format, ts_ns, level, logger, message, fields | None, exception | None, pid, thread)
_FORMAT = 1
_KNOWN_FIELDS = ("user_id", "agent_id", "request_id", "trace_id", "span_id")
_TRUNCATED = "…[truncated {} chars]"
_PRIMITIVES = (str, int, float, bool, type(None))

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "janus_log_context", default={}
)
_ctx_get = _context.get
_MARSHAL_VERSION = 2  # no back-references: faster, and a cycle fails loudly
_time_ns = time.time_ns
_current_thread = threading.current_thread
_pid = os.getpid()
_tls = threading.local()


def _dumps(record: tuple[Any, ...]) -> bytes:
    return marshal.dumps(record, _MARSHAL_VERSION)


def _thread_name() -> str:
    """The calling thread's name as of its first log call (cached per thread)."""
    name = _tls.name = _current_thread().name
    return name


# --------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class Config:
    """What ``configure()`` was given, checked and normalised."""

    db_path: str
    level: int = INFO
    levels: dict[str, int] = field(default_factory=dict)
    console: bool = True
    console_level: int = WARNING
    console_format: Literal["logfmt", "json"] = "logfmt"
    console_stream: Any = None  # a text stream; None means sys.stderr at write time
    capture_stdlib: bool = False
    ring_size: int = _ring.DEFAULT_CAPACITY
    on_full: Literal["block", "drop"] = "block"
    block_timeout: float | None = 5.0
    batch_size: int = 2000
    commit_interval: float = 0.05
    election_interval: float = 0.2
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    max_message_chars: int = 64 * 1024
    redact: bool = True
    redact_keys: tuple[str, ...] = ()
    redact_pii: bool = False
    hash_fields: tuple[str, ...] = ()
    hash_key: bytes | None = None
    retention: Any = None  # a retention.RetentionPolicy, applied by the flusher
    archive_dir: str | None = None


def _check_config(db_path: str | os.PathLike[str] | None, **kw: Any) -> Config:
    if db_path is None:
        db_path = os.environ.get("JANUS_LOG_DB", "janus-logs.db")
    path = os.path.abspath(os.fspath(db_path))
    try:
        kw["level"] = parse_level(kw.get("level", INFO))
        kw["console_level"] = parse_level(kw.get("console_level", WARNING))
        kw["levels"] = {name: parse_level(lv) for name, lv in (kw.get("levels") or {}).items()}
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if kw.get("on_full", "block") not in ("block", "drop"):
        raise ConfigError(f"on_full must be 'block' or 'drop', not {kw['on_full']!r}")
    if kw.get("console_format", "logfmt") not in ("logfmt", "json"):
        raise ConfigError(
            f"console_format must be 'logfmt' or 'json', not {kw['console_format']!r}"
        )
    sync = str(kw.get("synchronous", "NORMAL")).upper()
    if sync not in ("NORMAL", "FULL"):
        raise ConfigError(f"synchronous must be 'NORMAL' or 'FULL', not {kw['synchronous']!r}")
    kw["synchronous"] = sync
    size = kw.get("ring_size", _ring.DEFAULT_CAPACITY)
    if not isinstance(size, int) or size < 65536 or size & (size - 1):
        raise ConfigError(f"ring_size must be a power of two of at least 65536 bytes, got {size!r}")
    chars = kw.get("max_message_chars", 1)
    if type(chars) is not int or chars < 1:
        raise ConfigError(f"max_message_chars must be an integer of at least 1, got {chars!r}")
    hash_fields = tuple(kw.get("hash_fields") or ())
    kw["hash_fields"] = hash_fields
    key = kw.get("hash_key")
    if key is None:
        key = security.hash_key_from_env()
    if isinstance(key, str):
        key = key.encode()
    if hash_fields and not key:
        raise ConfigError(
            "hash_fields needs a key: pass hash_key=... to configure() or set JANUS_LOG_HASH_KEY"
        )
    kw["hash_key"] = key or None
    kw["redact_keys"] = tuple(kw.get("redact_keys") or ())
    if kw.get("archive_dir") is not None:
        kw["archive_dir"] = os.fspath(kw["archive_dir"])
    if kw.get("retention") is not None:
        kw["retention"] = _retention_policy(kw["retention"])
    unknown = set(kw) - set(Config.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"configure() got unknown option(s): {', '.join(sorted(unknown))}")
    return Config(db_path=path, **kw)


def _retention_policy(value: Any) -> Any:
    """Accept a RetentionPolicy, an age like "30d", or a dict of from_config() options."""
    from .retention import RetentionPolicy

    if isinstance(value, RetentionPolicy):
        return value
    if isinstance(value, str):
        return RetentionPolicy.from_config(max_age=value)
    if isinstance(value, Mapping):
        return RetentionPolicy.from_config(**value)
    raise ConfigError(
        "retention must be an age like '30d', a dict such as "
        "{'max_age': '30d', 'per_level': {'ERROR': '365d'}}, or a RetentionPolicy"
    )


# --------------------------------------------------------------------------
# the caller's side: encoding a record


def _safe_str(obj: object) -> str:
    """str(obj), or a description of it when its __str__ and __repr__ raise."""
    try:
        return str(obj)
    except Exception:
        try:
            return repr(obj)
        except Exception:
            return f"<unprintable {type(obj).__name__} object>"


def _safe_value(obj: object, depth: int = 0, seen: set[int] | None = None) -> object:
    """A marshal-able copy of a field value: containers kept, other objects as text."""
    if type(obj) in _PRIMITIVES:
        if type(obj) is float and not math.isfinite(obj):  # type: ignore[arg-type]
            return repr(obj)  # JSON has no NaN or Infinity
        return obj
    if depth > 32:
        return "[depth limit]"
    seen = seen or set()
    if id(obj) in seen:
        return "[cycle]"
    if isinstance(obj, Mapping):
        seen = seen | {id(obj)}
        try:
            items = list(obj.items())
        except Exception:
            return _safe_str(obj)
        return {_safe_str(k): _safe_value(v, depth + 1, seen) for k, v in items}
    if isinstance(obj, (list, tuple, set, frozenset)):
        seen = seen | {id(obj)}
        return [_safe_value(v, depth + 1, seen) for v in obj]
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "backslashreplace")
    return _safe_str(obj)


def _format_message(msg: object, args: tuple[Any, ...]) -> str:
    if args:
        if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            args = args[0]  # type: ignore[assignment]  # "%(name)s" style, as stdlib
        try:
            return (msg if type(msg) is str else _safe_str(msg)) % args
        except Exception:
            # As stdlib's "--- Logging error ---" case, but stored: the template
            # and its arguments, so nothing the caller meant to log is lost.
            return f"{_safe_str(msg)} [bad format args: {_safe_str(_safe_value(args))}]"
    return msg if type(msg) is str else _safe_str(msg)


def _exception_text(exc_info: object) -> str | None:
    if not exc_info:
        return None
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    if exc_info[0] is None:  # type: ignore[index]
        return None
    try:
        return "".join(traceback.format_exception(*exc_info)).rstrip("\n")  # type: ignore[misc]
    except Exception:
        return _safe_str(exc_info[1])  # type: ignore[index]


class _Emitter:
    """Everything a log call needs, bound into one object per configured process."""

    def __init__(self, pipeline: _Pipeline) -> None:
        cfg = pipeline.cfg
        self.pipeline = pipeline
        # The hot path calls the native push itself: fn(ptr, data, len(data)).
        self.push_fn, self.ptr = pipeline.ring.raw_push(checked=cfg.redact)
        self.push_plain = pipeline.ring.pusher()
        self.redactor = pipeline.redactor
        self.redact = cfg.redact
        self.max_chars = cfg.max_message_chars
        # With the console off no level reaches it, not even an out-of-range one.
        self.console_level: float = cfg.console_level if cfg.console else math.inf
        self.console_q = pipeline.console_q
        self.hash_fields = frozenset(cfg.hash_fields) if cfg.hash_fields else None
        self.hash_key = cfg.hash_key
        self.native = self._native(pipeline)

    def _native(self, pipeline: _Pipeline) -> Any:
        """The C encoder for this setup, or None where only the Python path applies."""
        if not _native_enabled() or self.hash_fields is not None:  # hashing fields is Python's
            return None
        ring, push, suspect = pipeline.ring.native()
        return _speedups.Emitter(
            ring, push, suspect, pipeline.ring, self.redact, _pid,
            min(self.max_chars, sys.maxsize), min(self.console_level, sys.maxsize),
            _listeners, _context, _format_message, _thread_name, _tls,
        )

    def emit(
        self,
        ts: int,
        level: int,
        name: str,
        message: str,
        fields: dict[str, Any] | None,
        exc: str | None,
        thread: str,
    ) -> None:
        """Encode and push one record (the stdlib bridge's path)."""
        self.emit_record((_FORMAT, ts, level, name, message, fields, exc, _pid, thread))

    def emit_record(self, record: tuple[Any, ...]) -> None:
        """Truncate, hash, encode and push *record*; redact, wait or count as the push asks."""
        _, ts, level, name, message, fields, exc, pid, thread = record
        if len(message) > self.max_chars:
            message = self.truncate(message)
            record = (_FORMAT, ts, level, name, message, fields, exc, pid, thread)
        if self.hash_fields is not None and fields:
            record = (_FORMAT, ts, level, name, message, self.hash(fields), exc, pid, thread)
        try:
            data = _dumps(record)
        except Exception:
            record, data = self.safe_encode(record)
        rc = self.push_fn(self.ptr, data, len(data))
        if rc:
            record = self.slow(rc, record)
        if level >= self.console_level or _listeners:
            self.after(record)

    def finish(self, result: tuple[bool, tuple[Any, ...]]) -> None:
        """Complete a call the C encoder handed back (see ``_speedups.Emitter.push``)."""
        pushed, record = result
        if not pushed:
            self.emit_record(record)
        elif record[2] >= self.console_level or _listeners:
            self.after(record)

    def truncate(self, message: str) -> str:
        total = len(message)
        if self.redact:
            # Redact before cutting: a secret cut in half (a card number, a
            # JWT) would no longer be recognised.  The margin covers a secret
            # that straddles the cut, a PEM key included.
            message = self.redactor.redact_text(message[: self.max_chars + 16384])
        self.pipeline.truncated += 1
        return message[: self.max_chars] + _TRUNCATED.format(total - self.max_chars)

    @staticmethod
    def safe_encode(record: tuple[Any, ...]) -> tuple[tuple[Any, ...], bytes]:
        """Encode a record whose fields marshal refused (objects, cycles, deep nesting)."""
        fmt, ts, level, name, message, fields, exc, pid, thread = record
        fields = _safe_value(fields) if fields else None
        record = (fmt, ts, level, name, message, fields, exc, pid, thread)
        return record, _dumps(record)

    def hash(self, fields: dict[str, Any]) -> dict[str, Any]:
        if self.hash_fields.isdisjoint(fields):  # type: ignore[union-attr]
            return fields
        out = dict(fields)
        for key in self.hash_fields.intersection(fields):  # type: ignore[union-attr]
            if out[key] is not None:
                out[key] = security.hash_identifier(_safe_str(out[key]), self.hash_key)  # type: ignore[arg-type]
        return out

    def slow(self, rc: int, record: tuple[Any, ...]) -> tuple[Any, ...]:
        """The push did not go through at once: redact, wait, truncate or count."""
        if rc == _ring.SUSPECT:
            _, ts, level, name, message, fields, exc, pid, thread = record
            red = self.redactor
            message = red.redact_text(message)
            # _safe_value first: bytes become text the redactor can read.
            fields = red.redact_value(_safe_value(fields)) if fields else fields
            exc = red.redact_text(exc) if exc else exc
            name = red.redact_text(name)
            thread = red.redact_text(thread)
            record = (_FORMAT, ts, level, name, message, fields, exc, pid, thread)
            try:
                data = _dumps(record)
            except Exception:
                record, data = self.safe_encode(record)
            rc = self.push_plain(data)
        if rc == _ring.TOO_LARGE:
            # Only records far beyond max_message_chars get here (huge fields or
            # tracebacks): keep the record, cut what made it too big.
            _, ts, level, name, message, fields, exc, pid, thread = record
            budget = max(self.pipeline.ring.max_record // 8, 1024)
            fields_text = _safe_str(fields)
            if len(fields_text) > budget:
                fields = {"_truncated_fields": fields_text[:budget] + _TRUNCATED.format(len(fields_text) - budget)}
            if exc and len(exc) > budget:
                exc = exc[:budget] + _TRUNCATED.format(len(exc) - budget)
            if len(message) > budget:
                message = message[:budget] + _TRUNCATED.format(len(message) - budget)
            record = (_FORMAT, ts, level, name, message, fields, exc, pid, thread)
            self.pipeline.truncated += 1
            rc = self.push_plain(_dumps(record))
        if rc == _ring.FULL:
            # The ring applied its policy (block up to block_timeout, or drop)
            # and counted the drop in the shared counters.
            self.pipeline.warn_dropped()
        return record

    def after(self, record: tuple[Any, ...]) -> None:
        if record[2] >= self.console_level:
            q = self.console_q
            if len(q) < q.maxlen:  # type: ignore[operator]
                q.append(record)
            else:
                self.pipeline.console_dropped += 1
        for listener in tuple(_listeners):
            try:
                listener(_record_dict(record))
            except Exception:
                pass


def _record_dict(record: tuple[Any, ...]) -> dict[str, Any]:
    """The caller-side view of a record, as listeners (the pytest fixture) see it."""
    _, ts, level, name, message, fields, exc, pid, thread = record
    fields = dict(fields or {})
    out = {
        "ts": ts,
        "level": level,
        "level_name": level_name(level),
        "logger": name,
        "message": message,
        "exception": exc,
        "pid": pid,
        "thread": thread,
    }
    for key in _KNOWN_FIELDS:
        out[key] = fields.pop(key, None)
    out["fields"] = fields
    return out


_emitter: _Emitter | None = None
_fast: Any = None  # _emitter.native.push: the C path, or None
_listeners: list[Any] = []


def _finish(result: tuple[bool, tuple[Any, ...]]) -> None:
    em = _emitter
    if em is not None:
        em.finish(result)
    elif not result[0]:  # shut down while the call was in C, before its push
        _, _, level, name, message, _, exc, _, _ = result[1]
        _last_resort(level, name, message, exc)


def add_record_listener(listener: Any) -> Any:
    """Call ``listener(record_dict)`` for every record this process logs, after redaction.

    Returns a function that removes it.  The ``janus_logs`` pytest fixture uses this.
    """
    _listeners.append(listener)

    def remove() -> None:
        with contextlib.suppress(ValueError):
            _listeners.remove(listener)

    return remove


def _last_resort(level: int, name: str, message: str, exc: str | None) -> None:
    """Before configure(): WARNING and above go to stderr, as stdlib's lastResort does."""
    if level >= WARNING:
        text = f"{level_name(level)} {name}: {message}" + (f" | {exc}" if exc else "")
        print(security.sanitize(security.redact_text(text)), file=sys.stderr)


def _split_special(fields: dict[str, Any]) -> str | None:
    """Take stdlib's exc_info/stack_info/stacklevel out of the fields."""
    exc = _exception_text(fields.pop("exc_info", None))
    fields.pop("stack_info", None)
    fields.pop("stacklevel", None)
    return exc


def _make_level_method(level: int, *, exception: bool = False) -> Any:
    """One logging method: the level check, then the C encoder (``_fast``).

    Calls the C encoder does not take (odd arguments, stdlib's exc_info,
    ``exception()``, no C module) are formatted and merged here and encoded
    by ``_Emitter.emit_record``, the same code that finishes what C hands back.
    """

    def method(self: Logger, msg: object, /, *args: Any, **fields: Any) -> None:
        if self._level > level:
            return
        try:
            fast = _fast
            if fast is not None and not exception:
                # The common call, in C; NotImplemented: this call is the Python path's.
                result = fast(level, self.name, self._bound, msg, args, fields)
                if result is None:
                    return
                if result is not NotImplemented:
                    _finish(result)
                    return
            if exception:
                fields.setdefault("exc_info", True)
            exc = _split_special(fields) if fields and not _SPECIAL.isdisjoint(fields) else None
            if args:
                if type(msg) is str and (len(args) != 1 or type(args[0]) is not dict):
                    try:
                        message = msg % args
                    except Exception:
                        message = _format_message(msg, args)
                else:
                    message = _format_message(msg, args)
            elif type(msg) is str:
                message = msg
            else:
                message = _safe_str(msg)
            ctx = _ctx_get()
            bound = self._bound
            if ctx or bound:
                fields = {**ctx, **bound, **fields}
            em = _emitter
            if em is None:
                _last_resort(level, self.name, message, exc)
                return
            try:
                thread = _tls.name
            except AttributeError:
                thread = _thread_name()
            em.emit_record((_FORMAT, _time_ns(), level, self.name, message, fields or None, exc, _pid, thread))
        except Exception as err:  # a logging call must never break the application
            _report_internal_error(err)

    method.__name__ = "exception" if exception else level_name(level).lower()
    method.__doc__ = (
        "Record at ERROR with the traceback of the exception being handled."
        if exception
        else f"Record at {level_name(level)}: printf-style *args, keywords are fields."
    )
    return method


_SPECIAL = frozenset(("exc_info", "stack_info", "stacklevel"))


def _report_internal_error(err: BaseException) -> None:
    p = _pipeline
    if p is not None:
        p.last_error = f"log call failed: {type(err).__name__}: {err}"
        p.internal_errors += 1


# --------------------------------------------------------------------------
# the public logger


class Logger:
    """A named logger; ``bind()`` gives one that adds fields to every record."""

    __slots__ = ("name", "_level", "_bound", "__weakref__")

    def __init__(self, name: str, level: int, bound: dict[str, Any] | None = None) -> None:
        self.name = name
        self._level = level
        self._bound: dict[str, Any] = bound or {}
        _all_loggers.add(self)

    def __repr__(self) -> str:
        return f"<janus Logger {self.name!r} level={level_name(self._level)}>"

    @property
    def level(self) -> int:
        """The lowest level this logger records."""
        return self._level

    def is_enabled_for(self, level: int | str) -> bool:
        """True if a record at *level* would be recorded."""
        return parse_level(level) >= self._level

    def bind(self, **fields: Any) -> Logger:
        """A logger with the same name that adds *fields* to every record."""
        return Logger(self.name, self._level, {**self._bound, **fields})

    trace = _make_level_method(TRACE)
    debug = _make_level_method(DEBUG)
    info = _make_level_method(INFO)
    warning = _make_level_method(WARNING)
    warn = warning
    error = _make_level_method(ERROR)
    critical = _make_level_method(CRITICAL)
    exception = _make_level_method(ERROR, exception=True)

    def log(self, level: int | str, msg: object, /, *args: Any, **fields: Any) -> None:
        """Record at *level* (a number or a name); an unknown level is recorded at ERROR."""
        if type(level) is int:
            lv = level
        else:
            try:
                lv = parse_level(int(level) if isinstance(level, float) else level)
            except (ValueError, TypeError, OverflowError):
                fields["invalid_level"] = _safe_str(level)
                lv = ERROR
        if lv >= self._level:
            (_LOG_METHODS.get(lv) or _make_level_method(lv))(self, msg, *args, **fields)


_LOG_METHODS = {lv: getattr(Logger, level_name(lv).lower()) for lv in (TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL)}


_all_loggers: weakref.WeakSet[Logger] = weakref.WeakSet()
_named: dict[str, Logger] = {}
_named_lock = threading.Lock()
_level_default = INFO
_level_overrides: dict[str, int] = {}


def _effective_level(name: str) -> int:
    """The level for *name*: the longest configured dotted prefix wins."""
    best, best_len = _level_default, -1
    for prefix, lv in _level_overrides.items():
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
            best, best_len = lv, len(prefix)
    return best


def get_logger(name: str | None = None) -> Logger:
    """The logger named *name* (use ``__name__``); the same object for the same name."""
    name = name or "app"
    log = _named.get(name)
    if log is None:
        with _named_lock:
            log = _named.get(name)
            if log is None:
                log = _named[name] = Logger(name, _effective_level(name))
    return log


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add *fields* to every record logged inside the block, in this context.

    A contextvars context: it follows asyncio tasks created inside the block.
    Threads and executors start with an empty context unless the caller runs
    them with ``contextvars.copy_context().run``.
    """
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


# --------------------------------------------------------------------------
# the stdlib bridge

_STD_ATTRS = frozenset(
    vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))
) | {"message", "asctime", "taskName"}


class JanusHandler(logging.Handler):
    """A ``logging.Handler`` that sends stdlib records through janus_utils.

    ``extra=`` keys become fields and ``exc_info`` becomes the exception text.
    Usable in ``logging.config.dictConfig`` as ``{"class": "janus_utils.JanusHandler"}``.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            try:
                message = record.getMessage()
            except Exception:
                message = _format_message(record.msg, ())
                message += f" [bad format args: {_safe_str(_safe_value(record.args))}]"
            fields = {k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS}
            ctx = _ctx_get()
            if ctx:
                fields = {**ctx, **fields}
            exc = _exception_text(record.exc_info) if record.exc_info else None
            if exc is None and record.exc_text:
                exc = record.exc_text
            em = _emitter
            if em is None:
                _last_resort(record.levelno, record.name, message, exc)
                return
            em.emit(
                int(record.created * 1e9),
                record.levelno,
                record.name,
                message,
                fields or None,
                exc,
                record.threadName or _current_thread().name,
            )
        except Exception as err:
            _report_internal_error(err)


# --------------------------------------------------------------------------
# the flusher side: decoding and storing


def _clean_text(s: object) -> str | None:
    """Text SQLite and every reader can take: no lone surrogates, no NUL."""
    if s is None:
        return None
    if type(s) is not str:
        s = _safe_str(s)
    if not s.isascii():  # type: ignore[union-attr]
        try:
            s.encode("utf-8")  # type: ignore[union-attr]
        except UnicodeEncodeError:
            s = s.encode("utf-8", "backslashreplace").decode("utf-8")  # type: ignore[union-attr]
    if "\0" in s:  # type: ignore[operator]
        s = s.replace("\0", "\\x00")  # type: ignore[union-attr]
    return s  # type: ignore[return-value]


def _json_default(obj: object) -> object:
    return _safe_str(obj)


# The C encoder, built once (json.dumps builds one per call, which costs more
# than the encoding of a small dict).  No cycle check: a cycle ends in
# RecursionError and takes the safe path; NaN is refused so the stored text is
# always valid JSON for json_extract().
_c_encoder = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, _json_default, json.encoder.c_encode_basestring,  # type: ignore[attr-defined]
    None, ": ", ", ", False, False, False,
)


def _fields_json(fields: dict[str, Any]) -> str:
    try:
        text = "".join(_c_encoder(fields, 0))
    except (ValueError, TypeError, RecursionError):  # cycles, NaN, odd keys
        text = "".join(_c_encoder(_safe_value(fields), 0))
    return _text(text)  # type: ignore[return-value]


def _text(value: object) -> str | None:
    """Like _clean_text, with the common case (ASCII, no NUL) first."""
    if type(value) is str and value.isascii() and "\0" not in value:
        return value
    return _clean_text(value)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_PAYLOAD_HEAD = b"(\x09\x00\x00\x00"  # marshal's tuple code and a count of 9


def _coerce_level(level: object) -> int:
    """A level SQLite can store from whatever a stdlib record carried."""
    try:
        number = int(level)  # type: ignore[call-overload]
    except Exception:
        return ERROR
    return min(max(number, 0), _INT64_MAX)


def decode_row(payload: bytes) -> tuple[Any, ...]:
    """One ring payload as a row of ``_schema.COLUMNS``; never raises."""
    try:
        # A record is a 9-tuple; checking the head first keeps marshal from
        # sizing a damaged payload's first container by its garbage count.
        if payload[:5] != _PAYLOAD_HEAD:
            raise ValueError("not a record tuple")
        fmt, ts, level, name, message, fields, exc, pid, thread = marshal.loads(payload)
        if fmt != _FORMAT:
            raise ValueError(f"record format {fmt}")
        if fields:
            pop = fields.pop  # a fresh dict from marshal: ours to change
            uid, aid, rid, tid, sid = (
                pop("user_id", None), pop("agent_id", None), pop("request_id", None),
                pop("trace_id", None), pop("span_id", None),
            )
            known = (_text(uid), _text(aid), _text(rid), _text(tid), _text(sid))
            fields_text = _fields_json(fields) if fields else None
        else:
            known = (None, None, None, None, None)
            fields_text = None
        if type(ts) is not int or not _INT64_MIN <= ts <= _INT64_MAX:
            ts = time.time_ns()
        if type(level) is not int or not 0 <= level <= _INT64_MAX:
            level = _coerce_level(level)
        return (
            ts,
            level,
            _text(name) if name is not None else "root",
            _text(message) if message is not None else "",
            *known,
            pid if type(pid) is int and 0 <= pid <= _INT64_MAX else None,
            _text(thread),
            _text(exc),
            fields_text,
        )
    except Exception as err:
        return (
            time.time_ns(),
            ERROR,
            "janus.ring",
            f"undecodable log record ({len(payload)} bytes): {type(err).__name__}",
            None, None, None, None, None, None, None, None,
            _fields_json({"raw": payload[:256].hex()}),
        )


_INSERT = (
    f'INSERT INTO "{_schema.TABLE}" ({", ".join(_schema.COLUMNS)}) '
    f"VALUES ({', '.join('?' for _ in _schema.COLUMNS)})"
)
_INDEX = (
    f'INSERT INTO "{_schema.FTS_TABLE}"(rowid, message, fields, exception) '
    f'SELECT id, message, fields, exception FROM "{_schema.TABLE}" WHERE id > ?'
)
# Errors that say nothing about the rows: retry the same batch later.
_TRANSIENT = (
    apsw.BusyError,
    apsw.LockedError,
    apsw.IOError,
    apsw.FullError,
    apsw.CantOpenError,
    apsw.ReadOnlyError,
    apsw.NotADBError,
    apsw.CorruptError,
    apsw.ConnectionClosedError,
)


def _unstorable_row(row: tuple[Any, ...], err: BaseException) -> tuple[Any, ...]:
    """A storable stand-in for a row SQLite refused, keeping what can be kept."""
    ts, level, name, message, *_ = row
    fields = {"refused_by_sqlite": f"{type(err).__name__}: {err}", "original": _safe_str(row)[:4096]}
    return (
        time.time_ns() if type(ts) is not int else ts,
        ERROR,
        _text(name) if isinstance(name, str) else "janus.flusher",
        _text(message) if isinstance(message, str) else "unstorable log record",
        None, None, None, None, None, None, None, None,
        _fields_json(fields),
    )


_CHECKPOINT_AFTER_IDLE = 1.0  # seconds without a commit before the WAL is checkpointed
_SAVE_POS = 'INSERT OR REPLACE INTO "janus_ring_state"(ring_id, committed_upto) VALUES (?, ?)'


def open_database(path: str, *, synchronous: str = "NORMAL") -> apsw.Connection:
    """Open (creating 0600) and migrate the log database for writing."""
    if not os.path.exists(path):
        # SQLite gives the -wal and -shm files the database file's mode.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
    db = apsw.Connection(path)
    # Lets retention give pages back (incremental_vacuum).  It only takes
    # effect on a new, empty file, before WAL is switched on.
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
    _schema.apply_connection_settings(db, synchronous=synchronous)
    # Checkpoints are run by the flusher when idle, not by whichever commit
    # crosses 1,000 pages (that commit would stall).
    db.execute("PRAGMA wal_autocheckpoint=0")
    _schema.ensure_schema(db)
    return db


# --------------------------------------------------------------------------
# the per-process pipeline


_rings: dict[str, _ring.Ring] = {}


def _open_ring(path: str, cfg: Config) -> _ring.Ring:
    """The process's one handle on the ring at *path*, opened on first use.

    A ring stays mapped until the process exits: a log call that started
    before shutdown() or a new configure() may still be pushing through it,
    and unmapping it then would crash the process.  A late record lands in
    the shared file and is committed by the next flusher.
    """
    ring = _rings.get(path)
    if ring is None:
        try:
            ring = _ring.Ring(path, cfg.ring_size, policy=cfg.on_full, block_timeout=cfg.block_timeout)
        except RingFormatError as err:
            if "another capacity" not in str(err):
                raise
            # Other processes may have the ring mapped: keep its size rather
            # than replace it under them.  Resizing needs every process stopped.
            ring = _ring.Ring(path, None, policy=cfg.on_full, block_timeout=cfg.block_timeout)
        _rings[path] = ring
    else:
        ring.set_policy(cfg.on_full, cfg.block_timeout)
    return ring


class _Pipeline:
    """The ring, the flusher thread and the counters of one configured process."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        directory = os.path.dirname(cfg.db_path)
        if not os.path.isdir(directory):
            raise ConfigError(
                f"the directory of db_path does not exist: {directory!r}; create it first"
            )
        self.ring_path = cfg.db_path + "-ring"
        self.lock_path = cfg.db_path + "-flusher.lock"
        self.last_error: str | None = None
        self.ring = _open_ring(self.ring_path, cfg)
        self.decode_rows = _speedups.decode_rows if _native_enabled() else None
        if self.ring.stats().capacity != cfg.ring_size:
            self.last_error = (
                f"ring {self.ring_path} exists with {self.ring.stats().capacity} bytes, not "
                f"ring_size={cfg.ring_size}; using it as it is (remove it while no process "
                "uses it to resize)"
            )
        self.redactor = security.Redactor(extra_keys=cfg.redact_keys, pii=cfg.redact_pii)
        if cfg.redact:
            try:
                self.ring.set_prefilter(self.redactor.prefilter_tokens)
            except ValueError:
                raise ConfigError(
                    f"redact_keys adds too many prefilter tokens "
                    f"({len(self.redactor.prefilter_tokens)}; at most 256): use fewer or "
                    "shorter key words"
                ) from None
        self.ring_id = f"{self.ring.stats().ring_id:016x}"
        self.console_q: deque[tuple[Any, ...]] = deque(maxlen=10_000)
        self.lock = FileLock(self.lock_path)
        self.db: apsw.Connection | None = None
        self.db_lock = threading.Lock()  # held around each batch and across fork
        self.leader = False
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.console_thread: threading.Thread | None = None
        self.console_lock = threading.Lock()
        # counters (this process)
        self.committed = 0
        self.batches = 0
        self.retries = 0
        self.truncated = 0
        self.console_dropped = 0
        self.internal_errors = 0
        self.unstorable = 0
        self._last_report = 0.0
        self._backoff = 0.0
        self._batches_since_checkpoint = 0
        self._last_commit = 0.0
        self._drop_warned_at = 0
        self.pruner = None
        if cfg.retention is not None:
            from .retention import AutoPruner

            # Consulted after every batch and when idle; it does at most one
            # small chunk per call, so writes never stall behind a prune.
            self.pruner = AutoPruner(cfg.retention, archive_dir=cfg.archive_dir, every_n_batches=50)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        # Leftovers of a crashed run are committed before configure() returns
        # when this process can become the flusher at once.
        if self.lock.acquire(blocking=False):
            try:
                self._become_leader()
                with self.db_lock:
                    self._drain_to(self.ring.stats().head)
            except Exception as err:
                # Never hold the election lock without a flusher thread: other
                # processes would wait for us for ever.
                self.leader = False
                if self.db is not None:
                    with contextlib.suppress(Exception):
                        self.db.close()
                    self.db = None
                self.lock.release()
                raise ConfigError(
                    f"cannot use {self.cfg.db_path} as a log database: {type(err).__name__}: {err}"
                ) from err
        self._start_thread()

    def _drain_to(self, target: int) -> None:
        """Commit batches until everything before ring position *target* is stored.

        Bounded by *target*, so a steady stream of new records cannot keep
        configure() or shutdown() running.
        """
        while self.ring.stats().tail < target:
            if self._flush_locked() <= 0:
                return

    def _start_thread(self) -> None:
        self.thread = threading.Thread(target=self._run, name="janus-flusher", daemon=True)
        self.thread.start()
        if self.cfg.console:
            self.console_thread = threading.Thread(
                target=self._console_loop, name="janus-console", daemon=True
            )
            self.console_thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        self.stopping = True
        self.wake.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        if self.console_thread is not None:
            self.console_thread.join(timeout)
        self._write_console()
        with self.db_lock:
            if self.leader:
                with contextlib.suppress(Exception):
                    self._drain_to(self.ring.stats().head)
                self._checkpoint()
            if self.db is not None:
                with contextlib.suppress(Exception):
                    self.db.close()
                self.db = None
            if self.leader:
                self.lock.release()
                self.leader = False
        # The ring stays mapped (see _open_ring).

    # -- the flusher thread ------------------------------------------------

    def _run(self) -> None:
        cfg = self.cfg
        while not self.stopping:
            try:
                if not self.leader:
                    if self.lock.acquire(blocking=False):
                        self._become_leader()
                    else:
                        self.wake.wait(cfg.election_interval)
                        self.wake.clear()
                        continue
                n = self._flush_once()
                if n < 0:  # a failed write: back off, the records stay in the ring
                    self._sleep(self._backoff)
                elif n < cfg.batch_size:  # caught up: let the next batch gather
                    if n == 0:
                        self._idle()
                    self._gather()
            except Exception as err:  # the flusher must outlive any single failure
                self._report(f"flusher error: {type(err).__name__}: {err}")
                time.sleep(0.1)

    def _sleep(self, seconds: float) -> None:
        """Sleep through a backoff; only stopping cuts it short (not flush())."""
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(min(0.05, max(end - time.monotonic(), 0)))
        self.wake.clear()

    def _gather(self) -> None:
        """Wait until the next commit is due: commit_interval passed, the ring a
        quarter full, or flush()/shutdown() asked.

        Committing on size or time, rather than chasing every record, makes
        bigger transactions (cheaper per row, fewer FTS segments) and keeps the
        flusher from taking the GIL from the application at every log call.
        """
        deadline = time.monotonic() + self.cfg.commit_interval
        full = self.ring.stats().capacity // 4
        while not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.wake.wait(min(remaining, 0.01)):
                self.wake.clear()
                return
            if self.ring.stats().used >= full:
                return

    def _become_leader(self) -> None:
        with self.db_lock:
            self.leader = True
            self._open_db()
            self.ring.rewind()

    def _open_db(self) -> None:
        """Open the database and skip ring records it already holds (exactly once)."""
        self.db = open_database(self.cfg.db_path, synchronous=self.cfg.synchronous)
        row = self.db.execute(
            'SELECT committed_upto FROM "janus_ring_state" WHERE ring_id = ?', (self.ring_id,)
        ).fetchall()
        if row:
            stats = self.ring.stats()
            upto = row[0][0]
            if stats.tail < upto <= stats.head:
                # The last flusher committed these rows but died before it
                # released them from the ring: release them now, unread.
                self.ring.release(upto)
        self.ring.rewind()

    def _flush_once(self) -> int:
        with self.db_lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        """Commit one batch.  Returns rows committed, 0 if none ready, -1 on failure."""
        if self.db is None:
            if not self.leader:
                return 0
            try:
                self._open_db()
            except Exception as err:
                return self._failed(err)
        if self.decode_rows is not None:
            n, raw, upto = self.ring.read_raw(self.cfg.batch_size)
            rows = self.decode_rows(raw, n, decode_row) if n > 0 else []
        else:
            batch, upto = self.ring.read(self.cfg.batch_size)
            rows = [decode_row(payload) for _, payload in batch]
        if not rows:
            if upto != self.ring.stats().tail:  # only torn records were skipped
                self.ring.release(upto)
            return 0
        db = self.db
        assert db is not None
        try:
            self._commit(db, rows, upto, one_by_one=False)
        except _TRANSIENT as err:
            self.ring.rewind()
            return self._failed(err)
        except Exception:
            # SQLite refused a row (a constraint, a value out of range): store
            # the batch row by row, each refused row replaced by a record
            # saying why, so one bad record never blocks or loses the others.
            try:
                self._commit(db, rows, upto, one_by_one=True)
            except Exception as err:
                self.ring.rewind()
                return self._failed(err)
        # Counted before the release: flush() returns once the ring's tail
        # passes its target, and stats() read right after must include these.
        self.committed += len(rows)
        self.batches += 1
        self.ring.release(upto)
        self._last_commit = time.monotonic()
        self._batches_since_checkpoint += 1
        self._backoff = 0.0
        if self._batches_since_checkpoint >= 64:
            self._checkpoint()
        if self.pruner is not None:
            self._prune_step()
        return len(rows)

    def _commit(self, db: apsw.Connection, rows: list[tuple[Any, ...]], upto: int, *, one_by_one: bool) -> None:
        """Insert *rows*, index them and store the ring position, in one transaction."""
        with db:
            last = db.execute(f'SELECT max(id) FROM "{_schema.TABLE}"').fetchall()[0][0] or 0
            if not one_by_one:
                db.executemany(_INSERT, rows)
            else:
                for row in rows:
                    try:
                        with db:  # a savepoint: a refused row leaves nothing behind
                            db.execute(_INSERT, row)
                    except _TRANSIENT:
                        raise
                    except Exception as err:
                        db.execute(_INSERT, _unstorable_row(row, err))
                        self.unstorable += 1
            db.execute(_INDEX, (last,))
            db.execute(_SAVE_POS, (self.ring_id, upto))

    def _failed(self, err: BaseException) -> int:
        self.retries += 1
        self._backoff = min(max(self._backoff * 2, 0.05), 5.0)
        self._report(f"cannot write to {self.cfg.db_path}: {type(err).__name__}: {err}")
        if not isinstance(err, apsw.BusyError) and self.db is not None:
            # Reopen on the next try: the file may have been replaced or fixed.
            with contextlib.suppress(Exception):
                self.db.close()
            self.db = None
        return -1

    def _idle(self) -> None:
        with self.db_lock:
            # Checkpoint once the application has been quiet for a while: a
            # checkpoint copies and syncs the whole WAL, which would compete
            # with a burst that is just starting.  Under steady load the
            # every-64-batches checkpoint in _flush_locked bounds the WAL.
            quiet = time.monotonic() - self._last_commit >= _CHECKPOINT_AFTER_IDLE
            if self._batches_since_checkpoint and quiet:
                self._checkpoint()
            if self.pruner is not None:
                self._prune_step()

    def _prune_step(self) -> None:
        if self.db is None:
            return
        try:
            self.pruner.maybe_prune(self.db)  # type: ignore[union-attr]
        except Exception as err:
            self._report(f"retention failed: {type(err).__name__}: {err}")

    def _checkpoint(self) -> None:
        if self.db is None:
            return
        self._batches_since_checkpoint = 0
        with contextlib.suppress(apsw.Error):
            self.db.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)

    def _report(self, message: str) -> None:
        """Note a problem in stats() and on stderr, at most once every 10 s."""
        self.last_error = message
        now = time.monotonic()
        if now - self._last_report >= 10.0:
            self._last_report = now
            with contextlib.suppress(Exception):
                print(f"janus_utils: {security.sanitize(message)}", file=sys.stderr)

    def warn_dropped(self) -> None:
        dropped = self.ring.stats().dropped
        if dropped >= self._drop_warned_at * 2 or dropped - self._drop_warned_at >= 10_000:
            self._drop_warned_at = max(dropped, 1)
            self._report(f"log ring full: {dropped} records dropped so far (on_full={self.cfg.on_full!r})")

    # -- console -----------------------------------------------------------

    def _console_loop(self) -> None:
        """Write console lines in their own thread: a slow or blocked stderr
        (a full pipe nobody reads) must never hold up the commits."""
        while not self.stopping:
            self._write_console()
            time.sleep(0.05)

    def _write_console(self) -> None:
        q = self.console_q
        if not q:
            return
        with self.console_lock:  # one writer at a time keeps lines in order
            self._write_console_locked()

    def _write_console_locked(self) -> None:
        q = self.console_q
        stream = self.cfg.console_stream or sys.stderr
        fmt = _console_json if self.cfg.console_format == "json" else _console_logfmt
        color = self.cfg.console_format == "logfmt" and _isatty(stream)
        lines = []
        while q:
            try:
                lines.append(fmt(q.popleft(), color))
            except IndexError:
                break
            except Exception as err:
                self._report(f"console formatting failed: {err}")
        with contextlib.suppress(Exception):
            stream.write("".join(lines))
            stream.flush()

    # -- fork --------------------------------------------------------------

    def before_fork(self) -> None:
        # No SQLite connection may cross fork(): close it with no batch in
        # flight; the parent reopens it on its next batch.
        self.db_lock.acquire()
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.close()
            self.db = None

    def after_fork_parent(self) -> None:
        self.db_lock.release()

    def after_fork_child(self) -> None:
        # The child shares the ring mapping but has no flusher thread, and the
        # lock it inherited is not its own (FileLock drops it at fork).
        self.db_lock = threading.Lock()
        self.console_lock = threading.Lock()
        self.leader = False
        self.lock = FileLock(self.lock_path)
        self.wake = threading.Event()
        self.committed = self.batches = self.retries = 0
        self.console_q.clear()
        if not self.stopping:
            self._start_thread()


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
    text = security.sanitize(value if isinstance(value, str) else _safe_str(value))
    if text and not any(c in text for c in ' ="') :
        return text
    return '"' + text.replace('"', '\\"') + '"'


def _console_logfmt(record: tuple[Any, ...], color: bool) -> str:
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


def _console_json(record: tuple[Any, ...], color: bool) -> str:
    d = _record_dict(record)
    d["time"] = _iso(d["ts"])
    # ensure_ascii escapes every control character and U+2028/9: one line, always.
    return json.dumps(d, ensure_ascii=True, default=_json_default) + "\n"


# --------------------------------------------------------------------------
# module-level API

_pipeline: _Pipeline | None = None
_config_lock = threading.RLock()
_stdlib_handler: JanusHandler | None = None


def configure(db_path: str | os.PathLike[str] | None = None, **options: Any) -> Config:
    """Set up logging into *db_path* for this process; call once per process.

    Every worker process of a server may call it with the same path: one of
    them becomes the flusher, the others push into the shared ring.  Calling it
    again reconfigures (after flushing what the old setup held).

    Options: ``level``, ``levels`` ({"dotted.prefix": level}), ``console``,
    ``console_level``, ``console_format`` ("logfmt" | "json"), ``console_stream``,
    ``capture_stdlib``, ``ring_size``, ``on_full`` ("block" | "drop"),
    ``block_timeout``, ``batch_size``, ``commit_interval`` (seconds),
    ``synchronous`` ("NORMAL" | "FULL"),
    ``max_message_chars``, ``redact``, ``redact_keys``, ``redact_pii``, ``hash_fields``,
    ``hash_key``, ``retention``, ``archive_dir``.
    """
    global _pipeline, _emitter, _fast, _level_default, _level_overrides
    cfg = _check_config(db_path, **options)
    with _config_lock:
        # Everything that can fail on bad settings happens before the old
        # setup is stopped; only the database itself can still fail after.
        pipeline = _Pipeline(cfg)
        emitter = _Emitter(pipeline)
        if _pipeline is not None:
            shutdown()
        _level_default = cfg.level
        _level_overrides = dict(cfg.levels)
        for log in _loggers_snapshot():
            log._level = _effective_level(log.name)
        pipeline.start()
        _pipeline = pipeline
        _emitter = emitter
        _fast = emitter.native.push if emitter.native is not None else None
        _set_stdlib_capture(cfg.capture_stdlib, cfg.level)
    return cfg


def _loggers_snapshot() -> list[Logger]:
    """Every live Logger; bind() in another thread may add one meanwhile."""
    while True:
        try:
            return list(_all_loggers)
        except RuntimeError:  # "set changed size during iteration": look again
            continue


def _set_stdlib_capture(enabled: bool, level: int) -> None:
    global _stdlib_handler
    root = logging.getLogger()
    if _stdlib_handler is not None:
        root.removeHandler(_stdlib_handler)
        _stdlib_handler = None
    if enabled:
        _stdlib_handler = JanusHandler(level)
        root.addHandler(_stdlib_handler)
        if root.level > level or root.level == logging.NOTSET:
            root.setLevel(level)


def is_configured() -> bool:
    """True between configure() and shutdown()."""
    return _pipeline is not None


def flush(timeout: float | None = None) -> bool:
    """Wait until everything logged before the call is committed; True if it was.

    Works in every process sharing the database: it waits for the flusher,
    whichever process runs it.  False if *timeout* seconds passed first.
    """
    p = _pipeline
    if p is None:
        return True
    target = p.ring.stats().head
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.0005
    while p.ring.stats().tail < target:
        p.wake.set()
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    p._write_console()
    return True


def shutdown(timeout: float | None = 10.0) -> None:
    """Flush and stop the flusher; later log calls go to stderr (WARNING+) only."""
    global _pipeline, _emitter, _fast
    with _config_lock:
        p = _pipeline
        if p is None:
            return
        # Flush while the flusher thread still runs: in a process that is not
        # the flusher it may still take over if the flusher's process is gone.
        flush(timeout)
        if _emitter is not None and _emitter.native is not None:
            _emitter.native.closed = True  # a call in C hands its record back
        _fast = None
        _emitter = None
        _pipeline = None
        _set_stdlib_capture(False, 0)
        p.stop(timeout)


def stats() -> dict[str, Any]:
    """Counters: committed, dropped, torn, retries, last error, ring fill, and more."""
    p = _pipeline
    if p is None:
        return {"configured": False}
    r = p.ring.stats()
    return {
        "configured": True,
        "db_path": p.cfg.db_path,
        "leader": p.leader,
        "committed": p.committed,
        "batches": p.batches,
        "dropped": r.dropped,
        "torn": r.torn,
        "retries": p.retries,
        "truncated": p.truncated,
        "console_dropped": p.console_dropped,
        "internal_errors": p.internal_errors,
        "unstorable": p.unstorable,
        "last_error": p.last_error,
        "speedups": _fast is not None,  # log calls of plain data go through C
        "ring_capacity": r.capacity,
        "ring_used": r.used,
        "ring_fill": r.used / r.capacity,
        "ring_high_water": r.high_water,
    }


_forking: _Pipeline | None = None  # the pipeline before_fork locked


def _before_fork() -> None:
    global _forking
    p = _forking = _pipeline
    if p is not None:
        p.before_fork()


def _after_fork_parent() -> None:
    global _forking
    p, _forking = _forking, None
    if p is not None:
        p.after_fork_parent()


def _after_fork_child() -> None:
    global _pid, _forking, _config_lock, _named_lock
    _pid = os.getpid()
    em = _emitter
    if em is not None and em.native is not None:
        em.native.pid = _pid
    # Another thread of the parent may have held these at fork(): in the
    # child that thread does not exist and would never release them.
    _config_lock = threading.RLock()
    _named_lock = threading.Lock()
    p, _forking = _forking, None
    if p is not None:
        p.after_fork_child()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child
)
atexit.register(shutdown)
