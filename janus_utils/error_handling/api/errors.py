"""Errors a backend's API layer raises for bad requests: validation of user input."""

from __future__ import annotations

from typing import Any

from .._base import JanusError

__all__ = ["ValidationError"]


class ValidationError(JanusError):
    """A value sent by the caller is not acceptable; *field* says which, *reason* says why.

    ``errors`` holds one ``{"field": ..., "reason": ...}`` dict per rejected field so
    that a response can report every problem at once; a single-field error has one.
    """

    code = "validation_error"
    http_status = 422
    title = "Validation failed"

    def __init__(
        self,
        message: str | None = None,
        *,
        field: str | None = None,
        reason: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        http_status: int | None = None,
    ) -> None:
        self.field = field
        self.reason = reason
        if errors is None:
            errors = []
            if field is not None or reason is not None:
                errors = [{"field": field, "reason": reason}]
        self.errors: list[dict[str, Any]] = [dict(error) for error in errors]
        merged: dict[str, Any] = dict(details) if details else {}
        if self.errors:
            merged.setdefault("errors", [dict(error) for error in self.errors])
        if message is None and reason is not None:
            message = f"{field}: {reason}" if field is not None else reason
        super().__init__(message, code=code, details=merged, http_status=http_status)
