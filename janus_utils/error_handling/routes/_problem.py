"""The problem response for an exception: what every HTTP layer answers, defined once.

Below the middleware and the framework integrations, which both import it.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from .._base import InternalError, JanusError
from .._handling import error_id
from ..api.errors import BadRequest, Conflict, Forbidden, RateLimited, Unauthorized
from .errors import MethodNotAllowed, RouteNotFound

__all__ = ["PROBLEM_CONTENT_TYPE", "STATUS_ERRORS", "path_uri", "problem_response"]

PROBLEM_CONTENT_TYPE = "application/problem+json"

# A framework's HTTP error status -> the janus error it becomes.
STATUS_ERRORS: dict[int, type[JanusError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: RouteNotFound,
    405: MethodNotAllowed,
    409: Conflict,
    429: RateLimited,
}

# Characters left as they are when a request path becomes the "instance" URI.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


def path_uri(path: str) -> str:
    """*path* as the problem body's ``instance`` URI."""
    return quote(path, safe=_PATH_SAFE)


def problem_response(
    exc: BaseException, *, instance: str | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    """``(status, headers, body)`` of the problem response for *exc*.

    A JanusError gives its own; anything else a generic 500 that names only
    the error id.  The body is ASCII JSON.
    """
    public = exc if isinstance(exc, JanusError) else InternalError()
    body = public.to_dict(instance=instance, error_id=error_id(exc))
    data = json.dumps(body, ensure_ascii=True, separators=(",", ":"), default=str).encode("ascii")
    headers = [("Content-Type", PROBLEM_CONTENT_TYPE), ("Content-Length", str(len(data)))]
    headers.extend(public.headers.items())
    return public.http_status, headers, data
