"""Turn the times a user types for --since/--until into UTC nanoseconds since the epoch.

Accepted forms, all meaning a point in time:

* a ``datetime``: an aware one is converted to UTC; a naive one is taken as UTC,
  because every time janus stores and prints is UTC (what you read in the output
  you can paste back);
* a number (``int`` or ``float``, or text of digits): seconds since the epoch;
* ISO 8601 text: ``2024-05-01``, ``2024-05-01T12:30``, ``2024-05-01 12:30:05.123Z``,
  ``2024-05-01T12:30:00+02:00`` (no offset means UTC, as above);
* a duration meaning "that long before now": ``30s``, ``15m``, ``2h``, ``7d``,
  ``1w``, also ``1.5h``, ``15min``, ``2 hours``, ``3 days ago``;
* ``now``, ``today`` (00:00 UTC today) and ``yesterday`` (00:00 UTC the day before).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from .error_handling.utils.errors import SearchQueryError

__all__ = ["ACCEPTED_FORMS", "TimeSpec", "format_ts", "parse_duration", "parse_time", "ts_datetime"]

TimeSpec = datetime | int | float | str
"""What ``since``/``until`` accept: see the module docstring."""

ACCEPTED_FORMS = (
    "an ISO 8601 time (2024-05-01, 2024-05-01T12:30:00Z, 2024-05-01T12:30+02:00), "
    "epoch seconds (1714566600), a duration before now (30s, 15m, 2h, 7d, 1w), "
    "or now, today, yesterday"
)

_NS = 1_000_000_000
_MAX_NS = 2**63 - 1
_MIN_NS = -(2**63)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_UNITS: dict[str, int] = {}
for _names, _seconds in (
    (("s", "sec", "secs", "second", "seconds"), 1),
    (("m", "min", "mins", "minute", "minutes"), 60),
    (("h", "hr", "hrs", "hour", "hours"), 3600),
    (("d", "day", "days"), 86400),
    (("w", "wk", "wks", "week", "weeks"), 604800),
):
    for _name in _names:
        _UNITS[_name] = _seconds * _NS

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)(?:\s+ago)?")
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
# fromisoformat keeps microseconds only: split off the fraction to keep nanoseconds.
_FRACTION = re.compile(r"(\d{2}:\d{2}:\d{2})[.,](\d+)")


# The longest duration a 64-bit count of nanoseconds holds.
_MAX_DURATION = "106751d (292 years)"
_SHOWN_CHARS = 40  # a value echoed in a message is cut to this: one readable line


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}... ({len(text)} chars)"


def _bad(value: object, why: str = "") -> SearchQueryError:
    detail = f" ({why})" if why else ""
    return SearchQueryError(
        f"cannot read {_shown(value)} as a time{detail}: use {ACCEPTED_FORMS}",
        details={"value": _shown(value)},
    )


def _datetime_ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - _EPOCH  # exact integer arithmetic, unlike .timestamp()
    return (delta.days * 86400 + delta.seconds) * _NS + delta.microseconds * 1000


def _decimal_ns(text: str) -> int:
    return int((Decimal(text) * _NS).to_integral_value())


def _now_ns(now: datetime | None) -> int:
    return _datetime_ns(now if now is not None else datetime.now(timezone.utc))


def parse_duration(text: str) -> int:
    """``"15m"``, ``"2 hours"``, ``"1.5h"`` as nanoseconds; SearchQueryError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or match.group(2) not in _UNITS:
        raise SearchQueryError(
            f"cannot read {_shown(text)} as a duration: use a number and a unit, "
            "like 30s, 15m, 2h, 7d or 1w",
            details={"value": _shown(text)},
        )
    # float() reads any number of digits (400 nines is inf): check before rounding.
    ns = float(match.group(1)) * _UNITS[match.group(2)]
    if not ns <= _MAX_NS:
        raise SearchQueryError(
            f"the duration {_shown(text)} is too long: at most {_MAX_DURATION}",
            details={"value": _shown(text)},
        )
    return round(ns)


def _parse_iso(text: str) -> int:
    extra_ns = 0
    fraction = _FRACTION.search(text)
    if fraction is not None:
        digits = fraction.group(2)
        if len(digits) > 9:
            raise _bad(text, "more than 9 fractional digits")
        extra_ns = int(digits.ljust(9, "0"))
        text = text[: fraction.start(2) - 1] + text[fraction.end(2) :]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _bad(text) from exc
    return _datetime_ns(moment) + extra_ns


def parse_time(value: TimeSpec, *, now: datetime | None = None) -> int:
    """*value* (see the module docstring) as UTC nanoseconds; *now* fixes the clock."""
    result = _parse_time(value, now)
    if not _MIN_NS <= result <= _MAX_NS:
        # ts is a 64-bit integer column: nanoseconds reach only 1677..2262.
        raise _bad(value, "out of the range 1678-2261")
    return result


def _parse_time(value: TimeSpec, now: datetime | None) -> int:
    if isinstance(value, bool):
        raise _bad(value)
    if isinstance(value, datetime):
        return _datetime_ns(value)
    if isinstance(value, int):
        return value * _NS
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > _MAX_NS / _NS:
            raise _bad(value, "out of the range 1678-2261")
        # Through the shortest decimal text: 1714564800.25 is .25 exactly, which
        # value * 1e9 in binary floating point is not.
        return _decimal_ns(repr(value))
    if not isinstance(value, str):
        raise _bad(value, f"a {type(value).__name__}")
    text = value.strip()
    lowered = text.lower()
    if not text:
        raise _bad(value, "empty")
    if lowered == "now":
        return _now_ns(now)
    if lowered in ("today", "yesterday"):
        current = _now_ns(now)
        midnight = current - current % (86400 * _NS)
        return midnight if lowered == "today" else midnight - 86400 * _NS
    if _NUMBER.fullmatch(text):
        return _decimal_ns(text)
    duration = _DURATION.fullmatch(lowered)
    if duration is not None and duration.group(2) in _UNITS:
        return _now_ns(now) - parse_duration(lowered)
    if text[:1].isdigit():
        return _parse_iso(text)
    raise _bad(value)


def ts_datetime(ts: int) -> datetime:
    """A stored ``ts`` (UTC nanoseconds) as an aware UTC datetime, to the microsecond."""
    return _EPOCH + timedelta(microseconds=ts // 1000)


def format_ts(ts: int, *, digits: int = 6) -> str:
    """A stored ``ts`` as ISO 8601 UTC text: ``2024-05-01T12:30:05.123456Z``.

    *digits* is how many fractional digits to keep (0-9), truncated, not rounded,
    so that a time never reads later than the record.
    """
    seconds, nanos = divmod(ts, _NS)
    text = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if digits > 0:
        text += "." + f"{nanos:09d}"[:digits]
    return text + "Z"
