"""One error hierarchy for the backend; every error is logged once through janus_utils' logger.

    from janus_utils.error_handling import NotFound, handle_errors

    @handle_errors
    def get_user(user_id):
        ...
        raise NotFound(f"No user {user_id}", details={"user_id": user_id})

Areas: ``api`` (400-429, 502), ``db`` (database errors and ``translate``
for apsw/sqlite3), ``extensions``, ``routes`` (404/405 and the WSGI, ASGI
and Flask layers), ``tests`` (the ``janus_logs`` fixture), ``utils``
(errors of janus_utils' own modules).  Every public name is re-exported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr

from ._base import InternalError, JanusError, cause_chain
from .api.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    UpstreamError,
    ValidationError,
)
from .db.errors import (
    DatabaseConnectionError,
    DatabaseError,
    DatabaseTimeout,
    IntegrityError,
    MigrationError,
    RecordNotFound,
)
from .db.errors import translate as translate_db_error
from .extensions.errors import ExtensionConfigError, ExtensionError, ExtensionLoadError
from .routes.errors import MethodNotAllowed, RouteNotFound
from .tests.errors import FixtureError, TestSetupError
from .utils.errors import (
    ConfigError,
    FileHandlerError,
    RecordTooLargeError,
    RingError,
    RingFormatError,
    RingFullError,
    SQLiteConflictError,
    SealError,
    SearchQueryError,
    SecurityError,
    ShipError,
)

__all__ = [
    "ASGIErrorMiddleware",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "DatabaseConnectionError",
    "DatabaseError",
    "DatabaseTimeout",
    "ErrorHandler",
    "ExtensionConfigError",
    "ExtensionError",
    "ExtensionLoadError",
    "FileHandlerError",
    "FixtureError",
    "Forbidden",
    "IntegrityError",
    "InternalError",
    "JanusError",
    "MethodNotAllowed",
    "MigrationError",
    "NotFound",
    "PROBLEM_CONTENT_TYPE",
    "RateLimited",
    "RecordNotFound",
    "RecordTooLargeError",
    "RingError",
    "RingFormatError",
    "RingFullError",
    "RouteNotFound",
    "SQLiteConflictError",
    "SealError",
    "SearchQueryError",
    "SecurityError",
    "ShipError",
    "TestSetupError",
    "Unauthorized",
    "UpstreamError",
    "ValidationError",
    "WSGIErrorMiddleware",
    "cause_chain",
    "error_id",
    "handle_errors",
    "is_logged",
    "log_error",
    "problem_response",
    "register_error_handlers",
    "translate_db_error",
]

# The handling and HTTP layers are imported on first use: janus_utils.security
# and the logger import this package for their errors alone.
_LAZY = {
    "ErrorHandler": "._handling",
    "error_id": "._handling",
    "handle_errors": "._handling",
    "is_logged": "._handling",
    "log_error": "._handling",
    "PROBLEM_CONTENT_TYPE": ".routes.middleware",
    "ASGIErrorMiddleware": ".routes.middleware",
    "WSGIErrorMiddleware": ".routes.middleware",
    "problem_response": ".routes.middleware",
    "register_error_handlers": ".routes.middleware",
}


__getattr__ = lazy_getattr(__name__, globals(), _LAZY)


if TYPE_CHECKING:  # pragma: no cover
    from ._handling import ErrorHandler, error_id, handle_errors, is_logged, log_error
    from .routes.middleware import (
        PROBLEM_CONTENT_TYPE,
        ASGIErrorMiddleware,
        WSGIErrorMiddleware,
        problem_response,
        register_error_handlers,
    )
