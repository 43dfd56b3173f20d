"""The one logging entry point of a backend: log calls become committed, searchable SQLite rows.

This module is the public face: ``configure``, ``Logger``, ``log_context``,
``flush``, ``stats``, ``shutdown`` and the stdlib bridge.  A log call checks
its level, formats the message, redacts what the prefilter flags, encodes the
record (``_record``) and pushes it into the shared ring file beside the
database.  That is all it does: no I/O, no lock, no JSON.  The common call
(plain fields, nothing suspect) runs in C, in ``_speedups``; everything else
takes the Python path below, which the C code mirrors byte for byte.

Where a record goes next: ``_flusher`` (one flusher per database, elected
among the processes that configured it, commits ring batches through apsw)
and ``_console`` (lines on stderr, written by their own thread).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import logging
import math
import os
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import _otel, _overflow, _resource, _ring, _source, security
from ._console import TRACEBACK_RULES
from ._flusher import NO_ROOM, Flusher, _remaining
from ._levels import LEVELS, level_name, parse_level
from ._record import (
    FORMAT,
    TRUNCATED,
    cut_fields,
    cut_text,
    dumps,
    exception_text,
    format_message,
    native_enabled,
    record_dict,
    safe_str,
    safe_value,
    speedups,
)
from .error_handling.utils.errors import ConfigError, RingError

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


_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "janus_log_context", default={}
)
_ctx_get = _context.get
_time_ns = time.time_ns
_current_thread = threading.current_thread
_pid = os.getpid()
_tls = threading.local()


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
    console_tracebacks: Literal["5xx", "all", "none"] = "5xx"
    capture_stdlib: bool = False
    # Records at this level and above carry the caller's file, line and
    # function (see _source); None: none do.  Stdlib records always do.
    source_location: int | None = WARNING
    ring_size: int = _ring.DEFAULT_CAPACITY
    on_full: Literal["block", "drop"] = "block"
    block_timeout: float | None = 5.0
    # With on_full="block": a record that waited block_timeout for room goes
    # to a spill file beside the database (_spill), at most this many bytes
    # per process; 0 drops it instead (counted in stats()["dropped"]).
    spill_max_bytes: int = 1 << 30
    # Room set aside per process at configure() for spill files on a disk that
    # fills (allocated ahead, see _spill); 0 sets none aside.
    spill_reserve_bytes: int = 1 << 20
    # ... and one that cannot be spilled either (a full disk) is held in memory
    # (_overflow), at most this many bytes per process, until the ring or a
    # spill file takes it; 0 drops it instead.
    hold_max_bytes: int = 64 << 20
    batch_size: int = 2000
    commit_interval: float = 0.05
    election_interval: float = 0.2
    # A flusher whose heartbeat has not moved for this long (stopped, hung) is
    # replaced, although its process still holds the lock file.
    takeover_after: float = 5.0
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    exit_timeout: float | None = 2.0  # how long interpreter exit waits for commits
    max_message_chars: int = 64 * 1024
    redact: bool = True
    redact_keys: tuple[str, ...] = ()
    redact_pii: bool = False
    hash_fields: tuple[str, ...] = ()
    hash_key: bytes | None = None
    retention: Any = None  # a retention.RetentionPolicy, applied by the flusher
    archive_dir: str | None = None
    seal_key_file: str | None = None  # seal every batch (janus_utils.seal); None: off
    service: str | None = None  # None: $OTEL_SERVICE_NAME (see _check_config)
    host: str | None = None  # None: this machine's hostname
    alerts: tuple[Any, ...] = ()  # alerts.Alert rules, evaluated by one process per database
    ship: tuple[Any, ...] = ()  # janus_utils.ship exporters: one shipper thread each
    # "thread": a thread of one configured process commits; "process": a
    # flusher process does (see _flusher_process).  None: $JANUS_LOG_FLUSHER.
    flusher: Literal["thread", "process"] = "thread"


def _check_config(db_path: str | os.PathLike[str] | None, **kw: Any) -> Config:
    if db_path is None:
        db_path = os.environ.get("JANUS_LOG_DB", "janus-logs.db")
    path = os.path.abspath(os.fspath(db_path))
    try:
        kw["level"] = parse_level(kw.get("level", INFO))
        kw["console_level"] = parse_level(kw.get("console_level", WARNING))
        if kw.get("source_location", WARNING) in (None, False):
            kw["source_location"] = None
        else:
            kw["source_location"] = parse_level(kw.get("source_location", WARNING))
        kw["levels"] = {name: parse_level(lv) for name, lv in (kw.get("levels") or {}).items()}
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if kw.get("on_full", "block") not in ("block", "drop"):
        raise ConfigError(f"on_full must be 'block' or 'drop', not {kw['on_full']!r}")
    if kw.get("console_format", "logfmt") not in ("logfmt", "json"):
        raise ConfigError(
            f"console_format must be 'logfmt' or 'json', not {kw['console_format']!r}"
        )
    if kw.get("console_tracebacks", "5xx") not in TRACEBACK_RULES:
        raise ConfigError(
            f"console_tracebacks must be one of {', '.join(map(repr, TRACEBACK_RULES))}, "
            f"not {kw['console_tracebacks']!r}"
        )
    sync = str(kw.get("synchronous", "NORMAL")).upper()
    if sync not in ("NORMAL", "FULL"):
        raise ConfigError(f"synchronous must be 'NORMAL' or 'FULL', not {kw['synchronous']!r}")
    kw["synchronous"] = sync
    size = kw.get("ring_size", _ring.DEFAULT_CAPACITY)
    if not isinstance(size, int) or size < 65536 or size & (size - 1):
        raise ConfigError(f"ring_size must be a power of two of at least 65536 bytes, got {size!r}")
    for name in ("spill_max_bytes", "spill_reserve_bytes", "hold_max_bytes"):
        limit = kw.get(name, 0)
        if type(limit) is not int or limit < 0:
            raise ConfigError(f"{name} must be a number of bytes >= 0, got {limit!r}")
    exit_timeout = kw.get("exit_timeout", 2.0)
    if exit_timeout is not None and (
        isinstance(exit_timeout, bool) or not isinstance(exit_timeout, (int, float)) or not exit_timeout >= 0
    ):
        raise ConfigError(f"exit_timeout must be a number of seconds >= 0, or None, got {exit_timeout!r}")
    takeover = kw.get("takeover_after", 5.0)
    if type(takeover) not in (int, float) or not 0 < takeover < math.inf:
        raise ConfigError(f"takeover_after must be a number of seconds above 0, got {takeover!r}")
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
    for key, default in (("service", _resource.default_service), ("host", _resource.default_host)):
        value = kw.get(key)
        if value is None:
            value = default()
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > 256):
            raise ConfigError(f"{key} must be a name of 1 to 256 characters, not {value!r}")
        kw[key] = value
    flusher = kw.get("flusher")
    if flusher is None:
        flusher = os.environ.get("JANUS_LOG_FLUSHER") or "thread"
    if flusher not in ("thread", "process"):
        raise ConfigError(f"flusher must be 'thread' or 'process', not {flusher!r}")
    kw["flusher"] = flusher
    if kw.get("archive_dir") is not None:
        kw["archive_dir"] = os.fspath(kw["archive_dir"])
    if kw.get("retention") is not None:
        kw["retention"] = _retention_policy(kw["retention"])
    if kw.get("seal_key_file") is not None:
        from .seal import check_key_file

        kw["seal_key_file"] = os.path.abspath(os.fspath(kw["seal_key_file"]))
        check_key_file(kw["seal_key_file"])  # a missing or unusable key raises here, not in the flusher
    if kw.get("alerts"):
        from .alerts import check_rules

        kw["alerts"] = check_rules(kw["alerts"])
    else:
        kw.pop("alerts", None)
    if kw.get("ship"):
        kw["ship"] = _ship_exporters(kw["ship"])
    unknown = set(kw) - set(Config.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"configure() got unknown option(s): {', '.join(sorted(unknown))}")
    return Config(db_path=path, **kw)


def _ship_exporters(value: Any) -> tuple[Any, ...]:
    """ship=[OTLPExporter(...), ClickHouseExporter(...)]: each a sink, each named once."""
    from .ship import Exporter

    exporters = (value,) if isinstance(value, Exporter) else tuple(value)
    names: set[str] = set()
    for exporter in exporters:
        if not isinstance(exporter, Exporter):
            raise ConfigError(
                f"ship takes exporters such as ju.OTLPExporter(...) or ju.ClickHouseExporter(...), "
                f"not {type(exporter).__name__}"
            )
        if exporter.name in names:
            raise ConfigError(f"ship names the sink {exporter.name} twice: give each sink once")
        names.add(exporter.name)
    return exporters


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


_MIN_CUT = 64  # characters a part of a record cut for size keeps, at the least


def _cut_record(record: tuple[Any, ...], budget: int) -> tuple[Any, ...]:
    """*record* with its message, traceback, fields, logger and thread name each cut to
    *budget* characters (the ids kept, see cut_fields)."""
    _, ts, level, name, message, fields, exc, pid, thread = record
    return (
        FORMAT, ts, level, cut_text(name, budget) if name else name, cut_text(message, budget),
        cut_fields(fields, budget), cut_text(exc, budget) if exc else exc, pid,
        cut_text(thread, budget) if thread else thread,
    )


class _Emitter:
    """Everything a log call needs, bound into one object per configured process."""

    def __init__(self, flusher: Flusher) -> None:
        cfg = flusher.cfg
        self.flusher = flusher
        self.ring = ring = flusher.ring
        self.redactor = security.Redactor(extra_keys=cfg.redact_keys, pii=cfg.redact_pii)
        if cfg.redact:
            try:
                ring.set_prefilter(self.redactor.prefilter_tokens)
            except ValueError:
                raise ConfigError(
                    f"redact_keys adds too many prefilter tokens "
                    f"({len(self.redactor.prefilter_tokens)}; at most 256): use fewer or "
                    "shorter key words"
                ) from None
        # The hot path calls the native push itself: fn(ptr, data, len(data)).
        self.push_fn, self.ptr = ring.raw_push(checked=cfg.redact)
        self.push_plain = ring.pusher()
        self.redact = cfg.redact
        self.max_chars = cfg.max_message_chars
        # With the console off no level reaches it, not even an out-of-range one.
        self.console_level: float = cfg.console_level if cfg.console else math.inf
        self.console = flusher.console
        self.hash_fields = frozenset(cfg.hash_fields) if cfg.hash_fields else None
        self.hash_key = cfg.hash_key
        # counters (this process's log calls)
        self.truncated = 0
        self.internal_errors = 0
        self.native = self._native()
        # Records neither the ring nor a spill file took (a full disk), held
        # in memory until one does; while any is, every call queues behind.
        self.holding = False
        self.retired = False  # shutdown() is done with it: the C path stays closed
        self.held = (
            _overflow.MemoryOverflow(cfg.hold_max_bytes, self._store_held, self._set_holding)
            if flusher.spill is not None and cfg.hold_max_bytes > 0
            else None
        )

    def _native(self) -> Any:
        """The C encoder for this setup, or None where only the Python path applies."""
        if not native_enabled() or self.hash_fields is not None:  # hashing fields is Python's
            return None
        ring, push, suspect = self.ring.native()
        return speedups.Emitter(
            ring, push, suspect, self.ring, self.redact, _pid,
            min(self.max_chars, sys.maxsize), min(self.console_level, sys.maxsize),
            _listeners, _context, format_message, _thread_name, _tls,
            **self.ring.native_prefilter(),
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
        self.emit_record((FORMAT, ts, level, name, message, fields, exc, _pid, thread))

    def emit_record(self, record: tuple[Any, ...], notify: bool = True) -> None:
        """Truncate, hash, encode and push *record*; redact, wait or count as the push asks.

        *notify* False: the record listeners (the janus_logs fixture) have it already.
        """
        _, ts, level, name, message, fields, exc, pid, thread = record
        if len(message) > self.max_chars:
            message = self.truncate(message)
            record = (FORMAT, ts, level, name, message, fields, exc, pid, thread)
        if self.hash_fields is not None and fields:
            record = (FORMAT, ts, level, name, message, self.hash(fields), exc, pid, thread)
        try:
            data = dumps(record)
        except Exception:
            record, data = self.safe_encode(record)
        if self.holding:  # records are held in memory (_overflow): queue behind them
            record = self.queue_behind(record, data)
        else:
            rc = self.push_fn(self.ptr, data, len(data))
            if rc:
                record = self.slow(rc, record)
        if level >= self.console_level or _listeners:
            self.after(record, notify)

    def finish(self, result: tuple[bool, tuple[Any, ...]]) -> None:
        """Complete a call the C encoder handed back (see ``speedups.Emitter.push``)."""
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
        self.truncated += 1
        return message[: self.max_chars] + TRUNCATED.format(total - self.max_chars)

    @staticmethod
    def safe_encode(record: tuple[Any, ...]) -> tuple[tuple[Any, ...], bytes]:
        """Encode a record whose fields marshal refused (objects, cycles, deep nesting)."""
        fmt, ts, level, name, message, fields, exc, pid, thread = record
        fields = safe_value(fields) if fields else None
        record = (fmt, ts, level, name, message, fields, exc, pid, thread)
        return record, dumps(record)

    def hash(self, fields: dict[str, Any]) -> dict[str, Any]:
        if self.hash_fields.isdisjoint(fields):  # type: ignore[union-attr]
            return fields
        out = dict(fields)
        for key in self.hash_fields.intersection(fields):  # type: ignore[union-attr]
            if out[key] is not None:
                out[key] = security.hash_identifier(safe_str(out[key]), self.hash_key)  # type: ignore[arg-type]
        return out

    def queue_behind(self, record: tuple[Any, ...], data: bytes) -> tuple[Any, ...]:
        """Redact and cut *record* as a push would, then hold it behind the records held."""
        if self.redact and self.ring.suspect_record(data):
            rc = _ring.SUSPECT
        elif len(data) > self.ring.max_record:
            rc = _ring.TOO_LARGE
        else:
            rc = _ring.FULL
        return self.slow(rc, record, queued=True)

    def push_or_hold(self, data: bytes) -> int:
        """``push_plain``, unless records are held: then FULL at once (the record queues),
        or TOO_LARGE as the push would say (no record too large for the ring is held)."""
        if not self.holding:
            return self.push_plain(data)
        return _ring.TOO_LARGE if len(data) > self.ring.max_record else _ring.FULL

    def slow(self, rc: int, record: tuple[Any, ...], queued: bool = False) -> tuple[Any, ...]:
        """The push did not go through at once: redact, wait, truncate or count.

        *queued*: records are held, and this one has not waited for room yet.
        """
        if rc == _ring.SUSPECT:
            _, ts, level, name, message, fields, exc, pid, thread = record
            red = self.redactor
            message = red.redact_text(message)
            # safe_value first: bytes become text the redactor can read.
            fields = red.redact_value(safe_value(fields)) if fields else fields
            exc = red.redact_text(exc) if exc else exc
            name = red.redact_text(name)
            thread = red.redact_text(thread)
            record = (FORMAT, ts, level, name, message, fields, exc, pid, thread)
            try:
                data = dumps(record)
            except Exception:
                record, data = self.safe_encode(record)
            rc = self.push_or_hold(data)
        if rc == _ring.TOO_LARGE:
            # Only records far beyond max_message_chars get here (huge fields or
            # tracebacks): keep the record, cut what made it too big.  The cut
            # counts characters and a character takes up to 4 bytes: a record
            # still too big is cut again, shorter, down to _MIN_CUT.
            self.truncated += 1
            whole = record
            budget = max(self.ring.max_record // 8, 1024)
            while rc == _ring.TOO_LARGE:
                record = _cut_record(whole, budget)
                rc = self.push_or_hold(dumps(record))
                if budget == _MIN_CUT:
                    break
                budget = max(budget // 4, _MIN_CUT)
            if rc == _ring.TOO_LARGE:  # a ring too small for even that: counted, never silent
                self.ring.count_drop()
                self.flusher.warn_dropped()
                return record
        if rc == _ring.FULL and not self.overflow(record, waited=not queued):
            self.flusher.warn_dropped()
        return record

    def overflow(self, record: tuple[Any, ...], waited: bool = True) -> bool:
        """The ring stayed full for block_timeout: spill *record* to disk, else hold
        it in memory.  False: dropped.

        With on_full="drop" (or no spill) the ring has counted the drop itself.
        Not *waited*: records are held, and this one waits its turn behind them.
        """
        flusher, spill = self.flusher, self.flusher.spill
        if spill is None:
            return False
        data = dumps(record)
        if self.holding:  # behind the held records, never past them
            return self.hold(data, wait=not waited)
        tail = self.ring.stats().tail
        if spill.active and tail != spill.tail_at_start:
            # The flusher has moved since this process began to spill: the
            # ring frees up again, so wait for room as usual.
            spill.close()
            self.ring.set_policy("spill", flusher.cfg.block_timeout)
            if self.push_plain(data) == _ring.OK:
                return True
            tail = self.ring.stats().tail
        first = not spill.active
        if spill.write(data, tail):
            if first:
                # While nothing moves, later calls spill at once: no second wait.
                self.ring.set_policy("spill", 0.0)
                flusher.warn_spilling()
            return True
        if self.held is not None:
            return self.hold(data, wait=False)
        self.ring.count_drop()
        return False

    def hold(self, data: bytes, wait: bool) -> bool:
        """Hold *data* in memory behind the records held; False (counted) past hold_max_bytes.

        With *wait*, wait up to block_timeout for it to be moved on, as a push
        into a full ring would wait.
        """
        held = self.held
        seq = held.hold(data) if held is not None else 0
        if not seq:
            self.ring.count_drop()
            return False
        if wait:
            held.wait(seq, self.flusher.cfg.block_timeout)  # type: ignore[union-attr]
        return True

    def _store_held(self, data: bytes) -> bool:
        """Move one held record on (never waiting): into the ring if it has room, else a spill file."""
        if self.ring.push_now(data):
            return True
        flusher, spill = self.flusher, self.flusher.spill
        assert spill is not None
        tail = self.ring.stats().tail
        if spill.active and tail != spill.tail_at_start:
            # The flusher moves again: the ring frees up, wait for it rather
            # than spill.
            spill.close()
            self.ring.set_policy("spill", flusher.cfg.block_timeout)
            return False
        first = not spill.active
        if not spill.write(data, tail):
            return False
        if first:
            self.ring.set_policy("spill", 0.0)
            flusher.warn_spilling()
        return True

    def _set_holding(self, on: bool) -> None:
        """From the held records, under their lock: while any is held, calls take the Python path."""
        self.holding = on
        if self.native is not None and not self.retired:
            self.native.closed = on  # the C encoder hands every call back

    def retire(self) -> None:
        """shutdown(): every later call is handed back by the C encoder, for good."""
        with self.held.cond if self.held is not None else contextlib.nullcontext():
            self.retired = True
            if self.native is not None:
                self.native.closed = True  # a call in C hands its record back

    def after(self, record: tuple[Any, ...], notify: bool = True) -> None:
        if record[2] >= self.console_level:
            self.console.put(record)
        if not notify:
            return
        for listener in tuple(_listeners):
            try:
                listener(record_dict(record))
            except Exception:
                pass


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
    pending = _pending
    if pending is not None:
        pending.not_stored += 1
    if level >= WARNING:
        text = f"{level_name(level)} {name}: {message}" + (f" | {exc}" if exc else "")
        print(security.sanitize(security.redact_text(text)), file=sys.stderr)


def _split_special(fields: dict[str, Any]) -> str | None:
    """Take stdlib's exc_info/stack_info/stacklevel out of the fields.

    The returned text is the traceback, then the caller's stack for
    ``stack_info=True``, as stdlib's Formatter joins them.
    """
    exc = exception_text(fields.pop("exc_info", None))
    stack_info = fields.pop("stack_info", None)
    stacklevel = fields.pop("stacklevel", 1)
    if stack_info:
        stack = _stack_text(stacklevel)
        exc = f"{exc}\n{stack}" if exc else stack
    return exc


def _stack_text(stacklevel: object) -> str:
    """The caller's stack as stdlib prints it for ``stack_info=True``."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back  # type: ignore[assignment]
    skip = stacklevel - 1 if type(stacklevel) is int and stacklevel > 1 else 0
    while skip and frame is not None and frame.f_back is not None:
        frame, skip = frame.f_back, skip - 1
    return "Stack (most recent call last):\n" + "".join(traceback.format_stack(frame)).rstrip("\n")


def _call(
    self: Logger, level: int, exception: bool, msg: object, args: tuple[Any, ...], fields: dict[str, Any], fast: Any
) -> None:
    """A log call whose level check passed: the C encoder (*fast*) first, else the Python path.

    Calls the C encoder does not take (odd arguments, stdlib's exc_info,
    ``exception()``, no C module) are formatted and merged here and encoded
    by ``_Emitter.emit_record``, the same code that finishes what C hands back.
    """
    try:
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
                    message = format_message(msg, args)
            else:
                message = format_message(msg, args)
        elif type(msg) is str:
            message = msg
        else:
            message = safe_str(msg)
        ctx = _ctx_get()
        bound = self._bound
        if _trace_ids is not None:
            _add_trace_ids(fields, bound, ctx)
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
        em.emit_record((FORMAT, _time_ns(), level, self.name, message, fields or None, exc, _pid, thread))
    except Exception as err:  # a logging call must never break the application
        _report_internal_error(err)


def _make_level_method(level: int, *, exception: bool = False) -> Any:
    """One logging method of the pure-Python Logger: the level check, then ``_call``."""

    def method(self: Logger, msg: object, /, *args: Any, **fields: Any) -> None:
        if self._level > level:
            return
        if level >= _source_level:
            _source.add_caller(fields, fields.get("stacklevel", 1))
        _call(self, level, exception, msg, args, fields, _fast)

    method.__name__ = "exception" if exception else level_name(level).lower()
    method.__doc__ = (
        "Record at ERROR with the traceback of the exception being handled."
        if exception
        else f"Record at {level_name(level)}: printf-style *args, keywords are fields."
    )
    return method


def _log_level(fields: dict[str, Any], level: object) -> int:
    """log()'s *level* as a number; an unknown one is ERROR, named in the field invalid_level."""
    if type(level) is int:
        return level
    try:
        return parse_level(int(level) if isinstance(level, float) else level)  # type: ignore[arg-type]
    except (ValueError, TypeError, OverflowError):
        fields["invalid_level"] = safe_str(level)
        return ERROR


# The Python side of the C level methods (_speedups.Logger): what they hand
# over, their level checked already.  Calls at the level given to
# _speedups.set_python_from() and above come here whole, the caller's frame
# right above (sys._getframe(1) here: the C method adds no frame).


def _python_call(self: Logger, level: int, msg: object, /, *args: Any, **fields: Any) -> None:
    fast = None  # below set_python_from's level: C handed the call back
    if level >= _source_level:
        # Where it was logged (configure(source_location=...)), then the C
        # encoder takes the three fields like any others.
        _source.add_caller(fields, fields.get("stacklevel", 1))
        fast = _fast
    _call(self, level, False, msg, args, fields, fast)


def _python_exception(self: Logger, msg: object, /, *args: Any, **fields: Any) -> None:
    if ERROR >= _source_level:
        _source.add_caller(fields, fields.get("stacklevel", 1))
    _call(self, ERROR, True, msg, args, fields, None)


def _python_log(self: Logger, level: object, msg: object, /, *args: Any, **fields: Any) -> None:
    lv = _log_level(fields, level)
    if lv >= self._level:
        if lv >= _source_level:
            _source.add_caller(fields, fields.get("stacklevel", 1))
        _call(self, lv, False, msg, args, fields, _fast)


_SPECIAL = frozenset(("exc_info", "stack_info", "stacklevel"))
_NO_SOURCE = 1 << 62  # above every level: no record looks up its caller
_source_level = _NO_SOURCE  # configure(source_location=...)

# OpenTelemetry: set by configure() when opentelemetry-api is installed (see _otel).
_trace_ids: _otel.TraceIds | None = None


def _add_trace_ids(fields: dict[str, Any], bound: Mapping[str, Any], ctx: Mapping[str, Any]) -> None:
    """Add the active span's trace_id/span_id to *fields*, unless the call already has a trace_id.

    Both paths add them to the call's own fields before merging, so the C
    and the Python path encode the same bytes.
    """
    ids = _trace_ids() if _trace_ids is not None else None
    if ids is not None and "trace_id" not in fields and "trace_id" not in bound and "trace_id" not in ctx:
        fields.update(ids)


def _traced(push: Any, current: Any) -> Any:
    """The C push with the active span's ids added first (only when OpenTelemetry is installed).

    *current* reads OpenTelemetry's context, which is empty (falsy) while no
    span is active: then the call costs one more frame and one ContextVar read.
    """

    def fast(level: int, name: str, bound: dict[str, Any], msg: object, args: tuple[Any, ...], fields: dict[str, Any]) -> Any:
        if current():
            _add_trace_ids(fields, bound, _ctx_get())
        return push(level, name, bound, msg, args, fields)

    return fast


def _report_internal_error(err: BaseException) -> None:
    em = _emitter
    if em is not None:
        em.flusher._report(f"log call failed: {type(err).__name__}: {err}", echo=False)
        em.internal_errors += 1


# --------------------------------------------------------------------------
# the public logger


class _PyLevels:
    """The level methods in Python, for a build without ``_speedups`` or with it switched off.

    ``_speedups.Logger`` has the same methods in C.
    """

    __slots__ = ("name", "_level", "_bound", "__weakref__")

    name: str
    _level: int
    _bound: dict[str, Any]

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
        lv = _log_level(fields, level)
        if lv >= self._level:
            _call(self, lv, False, msg, args, fields, _fast)


def _levels_base() -> type:
    """_speedups.Logger when the C module is in use at import, else _PyLevels.

    JANUS_UTILS_NO_SPEEDUPS=1 set after import still turns the C encoder off at
    configure(): the C level methods then hand every call to the Python path.
    """
    # The C methods hold the level table's numbers as constants.
    same_levels = (TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL) == (5, 10, 20, 30, 40, 50)
    if native_enabled() and hasattr(speedups, "Logger") and same_levels:
        speedups.set_python_path(_python_call, _python_exception, _python_log, _finish, _report_internal_error)
        return speedups.Logger  # type: ignore[no-any-return]
    return _PyLevels


class Logger(_levels_base()):  # type: ignore[misc]
    """A named logger; ``bind()`` gives one that adds fields to every record.

    Its level methods (``debug`` ... ``critical``, ``exception``, ``log``) take
    a printf-style template, its arguments, and fields as keywords.
    """

    __slots__ = ()

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

_STORED = "_janus_stored"  # set on a LogRecord once a JanusHandler has pushed it
# Not fields: a LogRecord's own attributes, and uvicorn's color_message (the
# message again with ANSI colours, an extra= meant only for its own formatter).
_STD_ATTRS = frozenset(
    vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))
) | {"message", "asctime", "taskName", "color_message", _STORED, "_janus_listened"}
_stdlib_duplicates = 0


class JanusHandler(logging.Handler):
    """A ``logging.Handler`` that sends stdlib records through janus_utils.

    ``extra=`` keys become fields; ``exc_info`` and ``stack_info`` become the
    exception text.  Usable alone in ``logging.config.dictConfig``::

        "handlers": {"janus": {"class": "janus_utils.JanusHandler",
                               "db_path": "app-logs.db", "level": "INFO"}}

    *db_path* and the other keywords are ``configure()``'s: when janus_utils
    is not configured yet, the handler configures it with them; when it is,
    they are ignored (the explicit ``configure()`` call wins).  Records below
    the configured level for their logger (``level``, ``levels``) are not
    stored.  A record that reaches several JanusHandlers (one from
    ``capture_stdlib=True`` on the root logger and one from dictConfig, say)
    is stored once; ``stats()["stdlib_duplicates"]`` counts the extra copies.
    """

    def __init__(
        self,
        level: int | str = logging.NOTSET,
        *,
        db_path: str | os.PathLike[str] | None = None,
        **configure_options: Any,
    ) -> None:
        super().__init__(level)
        if not is_configured():
            configure(db_path, **configure_options)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            name = record.name
            log = _named.get(name)
            if record.levelno < (log._level if log is not None else _effective_level(name)):
                return
            if record.__dict__.get(_STORED):
                _count_duplicate()
                return
            rec = stdlib_record(record)
            em = _emitter
            if em is None:
                _last_resort(rec[2], rec[3], rec[4], rec[6])
                return
            record.__dict__[_STORED] = True
            # A record the janus_logs fixture saw first is not handed to it again.
            em.emit_record(rec, notify=not record.__dict__.get(LISTENED))
        except Exception as err:
            _report_internal_error(err)


LISTENED = "_janus_listened"  # set on a LogRecord the janus_logs fixture captured itself


def stdlib_record(record: logging.LogRecord) -> tuple[Any, ...]:
    """The janus record tuple for a stdlib ``LogRecord`` (before redaction), as JanusHandler pushes it."""
    try:
        message = record.getMessage()
    except Exception:
        message = format_message(record.msg, ())
        message += f" [bad format args: {safe_str(safe_value(record.args))}]"
    fields = {k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS}
    _source.add_stdlib(fields, record.pathname, record.lineno, record.funcName)
    ctx = _ctx_get()
    if _trace_ids is not None:
        _add_trace_ids(fields, {}, ctx)
    if ctx:
        fields = {**ctx, **fields}
    exc = exception_text(record.exc_info) if record.exc_info else None
    if exc is None and record.exc_text:
        exc = record.exc_text
    if record.stack_info:
        exc = f"{exc}\n{record.stack_info}" if exc else record.stack_info
    return (
        FORMAT,
        int(record.created * 1e9),
        record.levelno,
        record.name,
        message,
        fields or None,
        exc,
        _pid,
        record.threadName or _current_thread().name,
    )


def _count_duplicate() -> None:
    global _stdlib_duplicates
    _stdlib_duplicates += 1
    if _stdlib_duplicates == 1:
        with contextlib.suppress(Exception):
            print(
                "janus_utils: a stdlib record reached a second JanusHandler (capture_stdlib=True "
                "and a JanusHandler in dictConfig, or JanusHandlers on a logger and its parent); "
                "it is stored once. Keep one of them to save the work.",
                file=sys.stderr,
            )


# --------------------------------------------------------------------------
# module-level API

_flusher: Flusher | None = None
_alerts: Any = None  # the AlertEngine, when configure() was given alerts
_shippers: list[Any] = []  # janus_utils.ship.Shipper, one per configured sink
_config_lock = threading.RLock()
_stdlib_handler: JanusHandler | None = None


def configure(db_path: str | os.PathLike[str] | None = None, **options: Any) -> Config:
    """Set up logging into *db_path* for this process; call once per process.

    Every worker process of a server may call it with the same path: one of
    them becomes the flusher, the others push into the shared ring.  Calling it
    again reconfigures (after flushing what the old setup held).

    Options: ``level``, ``levels`` ({"dotted.prefix": level}), ``console``,
    ``console_level``, ``console_format`` ("logfmt" | "json"), ``console_stream``,
    ``console_tracebacks`` ("5xx" | "all" | "none"),
    ``capture_stdlib``, ``source_location`` (a level, default WARNING: records from it up carry the caller's file, line and function; None for none), ``ring_size``, ``on_full`` ("block" | "drop"),
    ``block_timeout``, ``spill_max_bytes``, ``spill_reserve_bytes``, ``hold_max_bytes``
    (a full ring's records: spill files, the disk set aside for them, memory),
    ``batch_size``, ``commit_interval`` (seconds),
    ``takeover_after`` (seconds), ``synchronous`` ("NORMAL" | "FULL"),
    ``exit_timeout`` (seconds), ``max_message_chars``, ``redact``, ``redact_keys``, ``redact_pii``, ``hash_fields``,
    ``hash_key``, ``retention``, ``archive_dir``, ``service`` (default
    ``$OTEL_SERVICE_NAME``), ``host`` (default: the hostname), ``alerts`` (a
    list of ``Alert`` rules, see ``janus_utils.alerts``), ``ship``
    (exporters from janus_utils.ship: committed records are shipped to them
    from threads of their own; see ``stats()["ship"]``), ``seal_key_file``
    (seal every committed batch with the key ``janus-logs seal init`` wrote;
    see ``janus_utils.seal``), ``flusher``
    ("thread", the default, or "process": a flusher process commits, runs
    retention and ships, off this process's GIL; default
    ``$JANUS_LOG_FLUSHER``).

    A database that is locked or on a full disk does not make it raise: the
    flusher retries in the background while records wait in the ring.  If the
    ring file itself cannot be created for want of space, it returns all the
    same: records at WARNING and above go to stderr, ``stats()`` says why,
    and the setup completes by itself once there is room.
    """
    cfg = _check_config(db_path, **options)
    with _config_lock:
        try:
            _install(cfg)
        except RingError as err:
            if err.details.get("errno") not in NO_ROOM:
                raise
            _wait_for_room(cfg, err)
    return cfg


_ROOM_RETRY = 1.0  # seconds between tries to create the ring on a full disk


def _install(cfg: Config) -> None:
    """Replace the current setup (if any) by one for *cfg*; under _config_lock."""
    global _flusher, _emitter, _fast, _trace_ids, _alerts, _shippers, _source_level
    # Everything that can fail on bad settings happens before the old
    # setup is stopped; only the database itself can still fail after.
    if cfg.flusher == "process":
        from ._flusher_process import RemoteFlusher

        flusher: Flusher = RemoteFlusher(cfg)
    else:
        flusher = Flusher(cfg)
    emitter = _Emitter(flusher)
    if _flusher is not None or _pending is not None:
        shutdown()
    _set_levels(cfg)
    flusher.start()
    _announce(emitter)
    _flusher = flusher
    _emitter = emitter
    _trace_ids = _otel.trace_ids_reader()
    _source_level = _NO_SOURCE if cfg.source_location is None else cfg.source_location
    _fast = None
    if emitter.native is not None:
        _fast = (
            emitter.native.push
            if _trace_ids is None
            else _traced(emitter.native.push, _trace_ids.current)  # type: ignore[attr-defined]
        )
    _set_c_path(emitter)
    _set_stdlib_capture(cfg.capture_stdlib, cfg.level)
    if cfg.alerts:
        from .alerts import AlertEngine

        _alerts = AlertEngine(cfg.db_path, cfg.alerts)
        _alerts.start()
    if cfg.ship and cfg.flusher == "thread":  # else the flusher process ships
        from .ship import Shipper

        _shippers = [Shipper(cfg.db_path, exporter).start() for exporter in cfg.ship]


def _set_c_path(emitter: _Emitter | None) -> None:
    """Point the C level methods at *emitter*'s encoder (None: every call is the Python path's)."""
    if speedups is None or not hasattr(speedups, "set_emitter"):
        return
    native = emitter.native if emitter is not None else None
    # Records that carry their source location need the caller's frame: Python's.
    speedups.set_python_from(min(_source_level, sys.maxsize))
    if native is None or _trace_ids is None:
        speedups.set_emitter(native, None, None)
    else:
        # OpenTelemetry's context variable itself where it has one: C reads it directly.
        current = getattr(_trace_ids, "var", None) or _trace_ids.current  # type: ignore[attr-defined]
        speedups.set_emitter(native, current, _trace_ids)


def _announce(emitter: _Emitter) -> None:
    """Tell the flusher this process's service and host, before any record of its own."""
    cfg = emitter.flusher.cfg
    with contextlib.suppress(Exception):
        emitter.push_plain(_resource.announcement(_pid, cfg.service, cfg.host))


def _set_levels(cfg: Config) -> None:
    global _level_default, _level_overrides
    _level_default = cfg.level
    _level_overrides = dict(cfg.levels)
    for log in _loggers_snapshot():
        log._level = _effective_level(log.name)


class _Pending:
    """A configure() that waits for room on a full disk to create the ring file.

    Meanwhile log calls take the path they take before configure(): WARNING
    and above go to stderr, the rest are counted in ``not_stored``.
    """

    def __init__(self, cfg: Config, err: RingError) -> None:
        self.cfg = cfg
        self.error = (
            f"{err.message}: records at WARNING and above go to stderr, others are not "
            f"kept, until there is room for the ring ({cfg.ring_size} bytes); retrying "
            f"every {_ROOM_RETRY:g} s"
        )
        self.since = time.time()
        self.not_stored = 0
        self.cancelled = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._retry, name="janus-configure", daemon=True).start()

    def _retry(self) -> None:
        global _pending
        while not self.cancelled.wait(_ROOM_RETRY):
            with _config_lock:
                if _pending is not self or self.cancelled.is_set():
                    return
                try:
                    _install(self.cfg)
                except RingError as err:
                    if err.details.get("errno") in NO_ROOM:
                        continue
                    self._give_up(err)
                    return
                except Exception as err:
                    self._give_up(err)
                    return
                _pending = None
                _say(f"ring {self.cfg.db_path}-ring created; logging to the database "
                     f"({self.not_stored} records were not kept meanwhile)")
                return

    def _give_up(self, err: BaseException) -> None:
        self.error = f"configure() gave up: {type(err).__name__}: {err}"
        _say(self.error)


_pending: _Pending | None = None


def _wait_for_room(cfg: Config, err: RingError) -> None:
    global _pending
    if _flusher is not None or _pending is not None:
        shutdown()
    _set_levels(cfg)
    _set_stdlib_capture(cfg.capture_stdlib, cfg.level)
    _pending = _Pending(cfg, err)
    _say(_pending.error)
    _pending.start()


def _say(message: str) -> None:
    with contextlib.suppress(Exception):
        print(f"janus_utils: {security.sanitize(message)}", file=sys.stderr)


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
        # First among the root's handlers: a handler added later (the
        # janus_logs fixture's) sees the record already stored.
        root.handlers.insert(0, _stdlib_handler)
        if root.level > level or root.level == logging.NOTSET:
            root.setLevel(level)


def is_configured() -> bool:
    """True between configure() and shutdown()."""
    return _flusher is not None or _pending is not None


def flush(timeout: float | None = None) -> bool:
    """Wait until everything logged before the call is committed; True if it was.

    Works in every process sharing the database: it waits for the flusher,
    whichever process runs it.  False if *timeout* seconds passed first, and
    at once while configure() waits for room to create the ring file.
    """
    p = _flusher
    if p is None:
        return _pending is None  # waiting for room for the ring: nothing is stored
    target = p.ring.stats().head
    spilled = p.end_spill()  # this process's spill files, until they are committed
    deadline = None if timeout is None else time.monotonic() + timeout
    em = _emitter
    held = em.held if em is not None and em.flusher is p else None
    if held is not None and held.count:
        # Records held in memory (a full disk) first go into the ring or a
        # spill file; then those are waited for like the rest.
        p.wake.set()
        if not held.wait(held.added, _remaining(deadline)):
            return False
        target = p.ring.stats().head
        spilled = p.end_spill() or spilled
    delay = 0.0005
    while p.ring.stats().tail < target or (spilled and p.spill is not None and p.spill.waiting()):
        p.wake.set()
        # The consumer commits now, whichever process it is in (a flusher
        # process, or another process's thread), not when its interval ends.
        p.ring.wake_consumer()
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if p.ring.stats().tail < target:
            # Woken by the release that passes the target; looked at again
            # every 20 ms at most (the spill, the deadline, a flusher gone).
            p.ring.wait_tail(target, 0.02 if deadline is None else min(deadline - time.monotonic(), 0.02))
        else:
            time.sleep(delay)  # spilled records: the spill file is polled
            delay = min(delay * 2, 0.02)
    p.wait_stats(target, deadline)  # a stats() after this call counts what it waited for
    p.console.write()
    return True


def shutdown(timeout: float | None = 10.0) -> None:
    """Flush and stop the flusher; later log calls go to stderr (WARNING+) only.

    Waits at most *timeout* seconds in all (None: as long as it takes), and
    only for records logged before the call: threads that go on logging do
    not make it wait longer.  Records it could not commit in time stay in the
    ring file, and are committed by the next process that configures the
    database; stderr says how many.  Shippers this process runs get a moment
    (at most 2 s, within *timeout*) to send what was committed; what they
    leave is shipped by the next shipper of the database.
    """
    global _flusher, _emitter, _fast, _pending, _alerts, _shippers
    with _config_lock:
        if _pending is not None:
            _pending.cancelled.set()
            _pending = None
        p = _flusher
        if p is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        target = p.ring.stats().head
        p.set_deadline(deadline)  # a commit waiting for a lock gives up in time
        # Flush while the flusher thread still runs: in a process that is not
        # the flusher it may still take over if the flusher's process is gone.
        flush(timeout)
        shippers, _shippers = _shippers, []
        for shipper in shippers:
            left_s = _remaining(deadline)
            shipper.drain(2.0 if left_s is None else min(2.0, left_s))
        for shipper in shippers:
            shipper.stop(_remaining(deadline))
        if _alerts is not None:
            # After the flush: the last records are evaluated, and what they
            # fire gets up to *timeout* to be delivered.
            engine, _alerts = _alerts, None
            engine.stop(_remaining(deadline))
        em = _emitter
        if em is not None:
            em.retire()
        _set_c_path(None)
        _fast = None
        _emitter = None
        _flusher = None
        _set_stdlib_capture(False, 0)
        left = p.stop(_remaining(deadline), target=target)
        if left:
            _say_left(p, target, left)
        if em is not None and em.held is not None:
            _give_up_held(p, em.held)
        if p.spill is not None:
            p.spill.drop_reserve()  # give the room set aside back to the disk
        waiting = p.spill.waiting() if p.spill is not None else []
        if waiting:
            _say(
                f"records this process spilled while the ring was full are not committed yet; "
                f"they stay in {', '.join(waiting)} and the next flusher of {p.cfg.db_path} "
                "commits them"
            )


def _give_up_held(p: Flusher, held: _overflow.MemoryOverflow) -> None:
    """Records still held in memory at shutdown (the disk stayed full): counted as dropped."""
    lost = held.give_up()  # a last try to put them into the ring or a spill file first
    if lost:
        for _ in range(lost):
            p.ring.count_drop()
        what = "1 record" if lost == 1 else f"{lost:,} records"
        _say(
            f"{what} held in memory while the ring and the spill files were full "
            f"(no room on the disk of {p.cfg.db_path}) could not be stored before shutdown: "
            "lost (counted as dropped)"
        )


def _say_left(p: Flusher, target: int, left: int) -> None:
    count = p.records_left(target)
    what = f"{left:,} bytes of records" if count is None else f"{count:,} records ({left:,} bytes)"
    why = p.last_error or "no time left"
    _say(
        f"{what} logged before shutdown are not committed yet ({why}); they stay in "
        f"{p.ring_path} and the next process that configures {p.cfg.db_path} commits them"
    )


def _at_exit() -> None:
    """Interpreter exit: shutdown(), bounded by configure(exit_timeout=...)."""
    p = _flusher
    shutdown(p.cfg.exit_timeout if p is not None else 0.0)


def stats() -> dict[str, Any]:
    """Counters: committed, dropped, torn, retries, last error, ring fill, and more."""
    p, em, pending = _flusher, _emitter, _pending
    if p is None:
        if pending is not None:
            return {
                "configured": False,
                "pending": True,
                "db_path": pending.cfg.db_path,
                "last_error": pending.error,
                "last_error_at": pending.since,
                "not_stored": pending.not_stored,
            }
        return {"configured": False}
    r = p.ring.stats()
    return {
        "configured": True,
        "db_path": p.cfg.db_path,
        "leader": p.leader,
        "committed": p.committed,
        "batches": p.batches,
        "dropped": r.dropped,
        # Records that found the ring full for block_timeout and went to a
        # spill file instead (committed when the flusher moves again).
        "spilled": p.spill.records if p.spill is not None else 0,
        # Records neither the ring nor a spill file could take (a full disk),
        # held in this process's memory until one can (see _overflow).
        "held": em.held.count if em is not None and em.held is not None else 0,
        "held_bytes": em.held.bytes if em is not None and em.held is not None else 0,
        "torn": r.torn,
        "torn_bytes": r.torn_bytes,
        "retries": p.retries,
        "truncated": em.truncated if em is not None else 0,
        "console_dropped": p.console.dropped,
        "stdlib_duplicates": _stdlib_duplicates,
        "internal_errors": em.internal_errors if em is not None else 0,
        "unstorable": p.unstorable,
        "last_error": p.last_error,
        "last_error_at": p.last_error_at,
        "errors": p.errors,
        "recent_errors": list(p.recent_errors),
        "speedups": _fast is not None,  # log calls of plain data go through C
        "ring_capacity": r.capacity,
        "ring_used": r.used,
        "ring_fill": r.used / r.capacity,
        "ring_high_water": r.high_water,
        # Log calls (any process) that found the ring full and waited for the
        # flusher to free room, and their time waiting: the backpressure callers felt.
        "ring_full_waits": r.full_waits,
        "ring_full_wait_s": r.full_wait_ns / 1e9,
        "ring_full_wait_max_s": r.full_wait_max_ns / 1e9,
        **({"alerts": _alerts.stats()} if _alerts is not None else {}),
        # Per sink: shipped id, lag in rows and seconds, state, last error, retries.
        "ship": {shipper.sink: shipper.stats() for shipper in _shippers},
        # Rows retention would have removed but kept, not yet shipped (ship_wait).
        "retention_held": p.pruner.held_back if p.pruner is not None else 0,
        # flusher="process": which process commits, how often this one started one.
        **(p.process_stats() if hasattr(p, "process_stats") else {"flusher": "thread"}),
    }


_forking: Flusher | None = None  # the flusher before_fork locked


def _before_fork() -> None:
    global _forking
    p = _forking = _flusher
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
    if em is not None and em.held is not None:
        em.held.after_fork_child()  # the parent's held records stay the parent's
        em.holding = False
        if em.native is not None and not em.retired:
            em.native.closed = False
    # Another thread of the parent may have held these at fork(): in the
    # child that thread does not exist and would never release them.
    _config_lock = threading.RLock()
    _named_lock = threading.Lock()
    p, _forking = _forking, None
    if p is not None:
        p.after_fork_child()
    if em is not None:
        _announce(em)
    if _pending is not None:
        _pending.start()  # the child has no retry thread of its own


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child
)
atexit.register(_at_exit)
