"""Routing errors and the HTTP layer that turns errors into problem responses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_getattr

from .errors import MethodNotAllowed, RouteNotFound

__all__ = [
    "ASGIErrorMiddleware",
    "MethodNotAllowed",
    "PROBLEM_CONTENT_TYPE",
    "RouteNotFound",
    "WSGIErrorMiddleware",
    "problem_response",
    "register_error_handlers",
]

# The middleware is imported on first use, as in the parent package.
__getattr__ = lazy_getattr(
    __name__, globals(),
    {name: ".middleware" for name in __all__ if name not in ("MethodNotAllowed", "RouteNotFound")},
)


if TYPE_CHECKING:  # pragma: no cover
    from .middleware import (
        PROBLEM_CONTENT_TYPE,
        ASGIErrorMiddleware,
        WSGIErrorMiddleware,
        problem_response,
        register_error_handlers,
    )
