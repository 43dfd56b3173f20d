"""Errors a backend's API layer raises: the request was bad, unauthorised, refused or too frequent.

Each class fixes the status a client sees; the message and ``details`` of
these 4xx errors are shown to the client (after redaction), so write them for
the caller: what was wrong and what to do instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .._base import JanusError

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "RateLimited",
    "Unauthorized",
    "UpstreamError",
    "ValidationError",
]


class BadRequest(JanusError):
    """The request cannot be understood: malformed syntax, a missing parameter."""

    code = "bad_request"
    http_status = 400
    title = "Bad request"


class Unauthorized(JanusError):
    """The caller is not authenticated; *www_authenticate* names the scheme to use."""

    code = "unauthorized"
    http_status = 401
    title = "Authentication required"

    def __init__(
        self,
        message: str | None = None,
        *,
        www_authenticate: str | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        http_status: int | None = None,
    ) -> None:
        self.www_authenticate = www_authenticate
        super().__init__(message, code=code, details=details, http_status=http_status)

    @property
    def headers(self) -> dict[str, str]:
        # RFC 9110 15.5.2: a 401 tells the client how to authenticate.
        return {"WWW-Authenticate": self.www_authenticate} if self.www_authenticate else {}


class Forbidden(JanusError):
    """The caller is known but may not do this."""

    code = "forbidden"
    http_status = 403
    title = "Forbidden"


class NotFound(JanusError):
    """The thing asked for does not exist (or the caller may not know it does)."""

    code = "not_found"
    http_status = 404
    title = "Not found"


class Conflict(JanusError):
    """The request conflicts with the current state: a duplicate, a stale version."""

    code = "conflict"
    http_status = 409
    title = "Conflict"


class RateLimited(JanusError):
    """Too many requests; *retry_after* is the number of seconds to wait, if known."""

    code = "rate_limited"
    http_status = 429
    title = "Too many requests"

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        http_status: int | None = None,
    ) -> None:
        if retry_after is not None and (isinstance(retry_after, bool) or retry_after < 0):
            raise ValueError(f"retry_after must be a number of seconds >= 0, got {retry_after!r}")
        # Retry-After takes whole seconds; rounding up never invites an early retry.
        self.retry_after = None if retry_after is None else math.ceil(retry_after)
        super().__init__(message, code=code, details=details, http_status=http_status)

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def problem_members(self) -> dict[str, Any]:
        return {} if self.retry_after is None else {"retry_after": self.retry_after}


class UpstreamError(JanusError):
    """A service this backend depends on failed or answered nonsense; *service* names it."""

    code = "upstream_error"
    http_status = 502
    title = "Upstream service failed"

    def __init__(
        self,
        message: str | None = None,
        *,
        service: str | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        http_status: int | None = None,
    ) -> None:
        self.service = service
        merged = dict(details) if details else {}
        if service is not None:
            merged.setdefault("service", service)
        super().__init__(message, code=code, details=merged, http_status=http_status)


class ValidationError(BadRequest):
    """A value sent by the caller is not acceptable; *field* says which, *reason* says why.

    ``errors`` holds one ``{"field": ..., "reason": ...}`` dict per rejected field so
    that a response can report every problem at once; a single-field error has one.
    The problem body carries them as its ``errors`` member.
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
        errors: Iterable[Mapping[str, Any]] | None = None,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
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

    def problem_members(self) -> dict[str, Any]:
        return {"errors": [dict(error) for error in self.errors]}
