"""The log record, defined once: how a call's record is encoded into the ring and decoded into a row.

A record travels through the ring as a ``marshal``'d 9-tuple
``(format, ts_ns, level, logger, message, fields | None, exception | None, pid, thread)``.
The caller's side builds it (``format_message``, ``safe_value``,
``exception_text``, ``dumps``); the flusher turns each payload into a row of
``_schema.DECODED_COLUMNS`` with ``decode_row``.  ``_speedups`` (when built) does the
common cases of both in C, byte for byte the same.
"""

from __future__ import annotations

import json
import marshal
import math
import os
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any

from ._levels import LEVELS, level_name

try:
    from . import _speedups as speedups
except ImportError:  # a build without the C module: the Python path does everything
    speedups = None  # type: ignore[assignment]

ERROR = LEVELS["ERROR"]


# The record as it travels through the ring: a marshal'd tuple, defined once.
# (format, ts_ns, level, logger, message, fields | None, exception | None, pid, thread)
FORMAT = 1
KNOWN_FIELDS = ("user_id", "agent_id", "request_id", "trace_id", "span_id")
TRUNCATED = "…[truncated {} chars]"
PRIMITIVES = (str, int, float, bool, type(None))

_MARSHAL_VERSION = 2  # no back-references: faster, and a cycle fails loudly


def dumps(record: tuple[Any, ...]) -> bytes:
    return marshal.dumps(record, _MARSHAL_VERSION)


def native_enabled() -> bool:
    """Whether log calls and the flusher use ``_speedups`` (JANUS_UTILS_NO_SPEEDUPS=1: no)."""
    return (
        speedups is not None
        and speedups.FORMAT == FORMAT
        and not os.environ.get("JANUS_UTILS_NO_SPEEDUPS")
    )


# Python refuses to write an int of more than sys.get_int_max_str_digits()
# decimal digits (4,300 by default): the conversion takes quadratic time.
# Such an int is stored as the text of its hexadecimal form, which takes
# linear time and is exact: "0x1f...", "-0x1f...".  At most INT_HEX_DIGITS
# hex digits are kept (about 5,000 decimal digits), the rest cut with the
# TRUNCATED marker, so one field cannot swell a row.  Below 2,100 bits an int
# is always printable: the limit cannot be set under 640 digits.
INT_HEX_DIGITS = 4300
_PRINTABLE_BITS = 2100


def int_text(n: int) -> str:
    """An int Python will not print in decimal, as bounded hexadecimal text."""
    text = hex(n)
    keep = INT_HEX_DIGITS + text.index("x") + 1
    if len(text) > keep:
        return text[:keep] + TRUNCATED.format(len(text) - keep)
    return text


def printable_int(n: int) -> int | str:
    """*n* itself, or int_text(n) when Python would refuse to write it in decimal."""
    if n.bit_length() <= _PRINTABLE_BITS:
        return n
    try:
        int.__repr__(n)
    except ValueError:
        return int_text(n)
    return n


def safe_str(obj: object) -> str:
    """str(obj), or a description of it when its __str__ and __repr__ raise."""
    try:
        return str(obj)
    except Exception:
        pass
    if isinstance(obj, int):  # past Python's int-to-text digit limit
        return int_text(obj)
    try:
        return repr(obj)
    except Exception:
        pass
    if isinstance(obj, (Mapping, list, tuple, set, frozenset)):
        try:  # a container of such ints
            return str(safe_value(obj))
        except Exception:
            pass
    return f"<unprintable {type(obj).__name__} object>"


def safe_value(obj: object, depth: int = 0, seen: set[int] | None = None) -> object:
    """A marshal-able, JSON-able copy of a field value: containers kept, other objects as text."""
    if type(obj) in PRIMITIVES:
        if type(obj) is float and not math.isfinite(obj):  # type: ignore[arg-type]
            return repr(obj)  # JSON has no NaN or Infinity
        if type(obj) is int:
            return printable_int(obj)  # type: ignore[arg-type]
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
            return safe_str(obj)
        return {safe_str(k): safe_value(v, depth + 1, seen) for k, v in items}
    if isinstance(obj, (list, tuple, set, frozenset)):
        seen = seen | {id(obj)}
        return [safe_value(v, depth + 1, seen) for v in obj]
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "backslashreplace")
    return safe_str(obj)


def format_message(msg: object, args: tuple[Any, ...]) -> str:
    if args:
        if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            args = args[0]  # type: ignore[assignment]  # "%(name)s" style, as stdlib
        try:
            return (msg if type(msg) is str else safe_str(msg)) % args
        except Exception:
            # As stdlib's "--- Logging error ---" case, but stored: the template
            # and its arguments, so nothing the caller meant to log is lost.
            return f"{safe_str(msg)} [bad format args: {safe_str(safe_value(args))}]"
    return msg if type(msg) is str else safe_str(msg)


def exception_text(exc_info: object) -> str | None:
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
        return safe_str(exc_info[1])  # type: ignore[index]


def record_dict(record: tuple[Any, ...]) -> dict[str, Any]:
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
    for key in KNOWN_FIELDS:
        out[key] = fields.pop(key, None)
    out["fields"] = fields
    return out


# A record too big for the ring is cut (logger._Emitter.slow), but its ids,
# the KNOWN_FIELDS the store keeps as columns, are kept: an audit search by
# user must not miss exactly the biggest records.  An id longer than ID_CHARS
# is cut too: far above any real id (a UUID is 36 characters, an email
# address at most 254), and small enough that the five of them cannot make
# the cut record too big again.
ID_CHARS = 256


def cut_text(text: str, keep: int) -> str:
    """*text* cut to *keep* characters with the TRUNCATED marker, or as it is when it fits."""
    if len(text) <= keep:
        return text
    return text[:keep] + TRUNCATED.format(len(text) - keep)


def _cut_id(value: object) -> object:
    """An id of a cut record: as it is (the row stores it as an uncut record's would), or
    its text cut to ID_CHARS."""
    if value is None:
        return None
    text = value if type(value) is str else safe_str(value)
    return value if len(text) <= ID_CHARS else cut_text(text, ID_CHARS)  # type: ignore[arg-type]


def cut_fields(fields: dict[str, Any] | None, budget: int) -> dict[str, Any] | None:
    """The fields of a record too big for the ring.

    As they are when their text fits *budget* characters; else the ids
    (``_cut_id``) and every other field as one text, ``_truncated_fields``,
    cut to *budget*.
    """
    text = safe_str(fields)
    if len(text) <= budget:
        return fields
    ids = {key: _cut_id(fields[key]) for key in KNOWN_FIELDS if key in fields} if type(fields) is dict else {}
    if ids:
        rest = {key: value for key, value in fields.items() if key not in ids}  # type: ignore[union-attr]
        text = safe_str(rest)
        if len(text) <= budget:  # only an id was too big
            return {**rest, **ids}
    return {"_truncated_fields": cut_text(text, budget), **ids}


def _clean_text(s: object) -> str | None:
    """Text SQLite and every reader can take: no lone surrogates, no NUL."""
    if s is None:
        return None
    if type(s) is not str:
        s = safe_str(s)
    if not s.isascii():  # type: ignore[union-attr]
        try:
            s.encode("utf-8")  # type: ignore[union-attr]
        except UnicodeEncodeError:
            s = s.encode("utf-8", "backslashreplace").decode("utf-8")  # type: ignore[union-attr]
    if "\0" in s:  # type: ignore[operator]
        s = s.replace("\0", "\\x00")  # type: ignore[union-attr]
    return s  # type: ignore[return-value]


def json_default(obj: object) -> object:
    return safe_str(obj)


# The C encoder, built once (json.dumps builds one per call, which costs more
# than the encoding of a small dict).  No cycle check: a cycle ends in
# RecursionError and takes the safe path; NaN is refused so the stored text is
# always valid JSON for json_extract().
_c_encoder = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, json_default, json.encoder.c_encode_basestring,  # type: ignore[attr-defined]
    None, ": ", ", ", False, False, False,
)


def fields_json(fields: dict[str, Any]) -> str:
    try:
        text = "".join(_c_encoder(fields, 0))
    except (ValueError, TypeError, RecursionError):  # cycles, NaN, odd keys
        text = "".join(_c_encoder(safe_value(fields), 0))
    return storable_text(text)  # type: ignore[return-value]


def storable_text(value: object) -> str | None:
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
    """One ring payload as a row of ``_schema.DECODED_COLUMNS``; never raises."""
    try:
        # A record is a 9-tuple; checking the head first keeps marshal from
        # sizing a damaged payload's first container by its garbage count.
        if payload[:5] != _PAYLOAD_HEAD:
            raise ValueError("not a record tuple")
        fmt, ts, level, name, message, fields, exc, pid, thread = marshal.loads(payload)
        if fmt != FORMAT:
            raise ValueError(f"record format {fmt}")
        if fields:
            pop = fields.pop  # a fresh dict from marshal: ours to change
            uid, aid, rid, tid, sid = (
                pop("user_id", None), pop("agent_id", None), pop("request_id", None),
                pop("trace_id", None), pop("span_id", None),
            )
            known = (storable_text(uid), storable_text(aid), storable_text(rid), storable_text(tid), storable_text(sid))
            fields_text = fields_json(fields) if fields else None
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
            storable_text(name) if name is not None else "root",
            storable_text(message) if message is not None else "",
            *known,
            pid if type(pid) is int and 0 <= pid <= _INT64_MAX else None,
            storable_text(thread),
            storable_text(exc),
            fields_text,
        )
    except Exception as err:
        return (
            time.time_ns(),
            ERROR,
            "janus.ring",
            f"undecodable log record ({len(payload)} bytes): {type(err).__name__}",
            None, None, None, None, None, None, None, None,
            fields_json({"raw": payload[:256].hex()}),
        )


def unstorable_row(row: tuple[Any, ...], err: BaseException) -> tuple[Any, ...]:
    """A storable stand-in for a row SQLite refused, keeping what can be kept."""
    ts, level, name, message, *_ = row
    fields = {"refused_by_sqlite": f"{type(err).__name__}: {err}", "original": safe_str(row)[:4096]}
    return (
        time.time_ns() if type(ts) is not int else ts,
        ERROR,
        storable_text(name) if isinstance(name, str) else "janus.flusher",
        storable_text(message) if isinstance(message, str) else "unstorable log record",
        None, None, None, None, None, None, None, None,
        fields_json(fields),
        *row[13:],  # service and host, when the flusher added them
    )

