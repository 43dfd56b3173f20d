"""Errors of request routing: no route for the path, or not for this method."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .._base import JanusError
from ..api.errors import NotFound

__all__ = ["MethodNotAllowed", "RouteNotFound"]


class RouteNotFound(NotFound):
    """No route matches the request's path."""

    code = "route_not_found"
    title = "No such route"


class MethodNotAllowed(JanusError):
    """The route exists but not for this method; *allowed* becomes the ``Allow`` header."""

    code = "method_not_allowed"
    http_status = 405
    title = "Method not allowed"

    def __init__(
        self,
        message: str | None = None,
        *,
        allowed: Iterable[str] = (),
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        http_status: int | None = None,
    ) -> None:
        if isinstance(allowed, str):
            allowed = allowed.replace(",", " ").split()
        self.allowed: list[str] = sorted({method.upper() for method in allowed})
        if message is None and self.allowed:
            message = f"Use one of: {', '.join(self.allowed)}."
        super().__init__(message, code=code, details=details, http_status=http_status)

    @property
    def headers(self) -> dict[str, str]:
        # RFC 9110 15.5.6: a 405 must list the methods the resource supports.
        return {"Allow": ", ".join(self.allowed)}

    def problem_members(self) -> dict[str, Any]:
        return {"allowed": list(self.allowed)}
