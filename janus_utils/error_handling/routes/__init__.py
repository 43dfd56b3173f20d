"""Routing errors and the HTTP layer that turns errors into problem responses."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

_MIDDLEWARE = frozenset(__all__) - {"MethodNotAllowed", "RouteNotFound"}


def __getattr__(name: str) -> Any:
    # The middleware is imported on first use, as in the parent package.
    if name not in _MIDDLEWARE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".middleware", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover
    from .middleware import (
        PROBLEM_CONTENT_TYPE,
        ASGIErrorMiddleware,
        WSGIErrorMiddleware,
        problem_response,
        register_error_handlers,
    )
