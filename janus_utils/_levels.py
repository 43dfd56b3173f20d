"""The level table: names, stdlib numbers and OpenTelemetry severities, defined once."""

from __future__ import annotations

__all__ = ["LEVELS", "LEVEL_NAMES", "OTEL_SEVERITY", "level_name", "parse_level"]

# name -> stdlib number.  TRACE sits below DEBUG as in OpenTelemetry.
LEVELS: dict[str, int] = {
    "TRACE": 5,
    "DEBUG": 10,
    "INFO": 20,
    "WARNING": 30,
    "ERROR": 40,
    "CRITICAL": 50,
}
LEVEL_NAMES: dict[int, str] = {number: name for name, number in LEVELS.items()}

# stdlib number -> OpenTelemetry SeverityNumber (log data model, "SeverityNumber").
# Each stdlib level maps onto the first number of its OTel range, so that the
# mapping is one-to-one and shipping records off-host is a lookup.
OTEL_SEVERITY: dict[int, int] = {5: 1, 10: 5, 20: 9, 30: 13, 40: 17, 50: 21}

_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL", "ERR": "ERROR", "CRIT": "CRITICAL"}


def level_name(level: int) -> str:
    """The name of *level*; levels between the named ones read like ``LEVEL25``."""
    name = LEVEL_NAMES.get(level)
    if name is not None:
        return name
    return f"LEVEL{level}"


def parse_level(level: int | str) -> int:
    """Turn ``"info"``, ``"WARN"``, ``20`` or ``"20"`` into a stdlib level number."""
    if isinstance(level, bool):
        raise ValueError(f"level must be a name like 'INFO' or a number, not {level!r}")
    if isinstance(level, int):
        if level < 0:
            raise ValueError(f"level must not be negative, got {level}")
        return level
    if isinstance(level, str):
        text = level.strip().upper()
        if text.isdigit():
            return int(text)
        text = _ALIASES.get(text, text)
        if text in LEVELS:
            return LEVELS[text]
    choices = ", ".join(LEVELS)
    raise ValueError(f"unknown level {level!r}: use one of {choices} or a number")
