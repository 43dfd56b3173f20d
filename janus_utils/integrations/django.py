"""Django: a middleware, error views for ``handler404``/``handler500``, and a LOGGING snippet.

In ``settings.py``::

    MIDDLEWARE = ["janus_utils.integrations.django.JanusMiddleware", *MIDDLEWARE]
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"janus": {"class": "janus_utils.JanusHandler", "db_path": "app-logs.db"}},
        "root": {"handlers": ["janus"], "level": "INFO"},
        # janus logs 4xx/5xx responses itself, with their error_id
        "loggers": {"django.request": {"level": "ERROR"}},
    }

In the root URLconf::

    handler400 = "janus_utils.integrations.django.handler400"
    handler403 = "janus_utils.integrations.django.handler403"
    handler404 = "janus_utils.integrations.django.handler404"
    handler500 = "janus_utils.integrations.django.handler500"

The middleware gives each request an id (``X-Request-ID`` in and out), puts
``request_id``, ``http_method``, ``http_path``, ``remote_addr`` and the user's
id into every record logged while it is handled, turns exceptions raised by
views (janus errors, ``Http404``, ``PermissionDenied``, anything else) and
405 answers into ``application/problem+json`` responses with an
``error_id``, each logged once, and logs one INFO record on ``janus.access``
per request.  The handler views do the same for what Django answers outside
the views: unknown URLs (404) and errors in other middleware (500); they
take effect with ``DEBUG = False``, as every Django error view does.
The middleware is synchronous (WSGI servers such as gunicorn).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ..error_handling._base import JanusError
from ..error_handling._handling import DEFAULT, ErrorHandler
from ..error_handling.api.errors import BadRequest, Forbidden, NotFound
from ..error_handling.routes.errors import MethodNotAllowed, RouteNotFound
from ..error_handling.routes.middleware import PROBLEM_CONTENT_TYPE, problem_response
from ._request import current_request
from .wsgi import start_request

__all__ = ["JanusMiddleware", "handler400", "handler403", "handler404", "handler500"]

_handler = ErrorHandler(translate=DEFAULT)


def _janus_error(exc: BaseException) -> BaseException:
    """The janus error for one of Django's own exceptions; anything else as it is."""
    from django.core.exceptions import BadRequest as DjangoBadRequest
    from django.core.exceptions import PermissionDenied, SuspiciousOperation
    from django.http import Http404
    from django.urls import Resolver404

    if isinstance(exc, JanusError):
        return exc
    error: JanusError
    if isinstance(exc, Resolver404):
        error = RouteNotFound()
    elif isinstance(exc, Http404):
        error = NotFound(str(exc) or None)
    elif isinstance(exc, PermissionDenied):
        error = Forbidden(str(exc) or None)
    elif isinstance(exc, (DjangoBadRequest, SuspiciousOperation)):
        error = BadRequest()  # the text may come from an attacker's input: not echoed
    else:
        return exc
    error.__cause__ = exc
    return error


def _problem(request: Any, exc: BaseException) -> Any:
    """The problem+json response for *exc*, logged once with the request's context."""
    from django.http import HttpResponse

    state = current_request()
    path = state.path if state is not None else request.path
    error = _handler.process(_janus_error(exc), http_method=request.method, http_path=path)
    status, headers, body = problem_response(error, instance=path)
    response = HttpResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in headers:
        if name.lower() not in ("content-type", "content-length"):
            response[name] = value
    response._has_been_logged = True  # django.request does not log it a second time
    return response


def _user_id(request: Any) -> Any:
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return getattr(user, "pk", None)
    return None


class JanusMiddleware:
    """Request id, log context, problem+json errors and an access record for each request."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        state = start_request(request.META)
        state.enter()
        try:
            response = self.get_response(request)
            if response.status_code == 405 and response.get("Content-Type") != PROBLEM_CONTENT_TYPE:
                response = _problem(request, MethodNotAllowed(allowed=response.get("Allow", "")))
        finally:
            state.exit()
        response["X-Request-ID"] = state.request_id
        if "user_id" not in state.fields:
            user = _user_id(request)
            if user is not None:
                state.fields["user_id"] = user
        state.log_access(response.status_code)
        return response

    def process_view(self, request: Any, view: Any, args: Any, kwargs: Any) -> None:
        # Authentication middleware has run by now: the user is known.
        state = current_request()
        user = _user_id(request)
        if state is not None and user is not None:
            state.bind(user_id=user)

    def process_exception(self, request: Any, exception: Exception) -> Any:
        return _problem(request, exception)


def handler400(request: Any, exception: BaseException | None = None) -> Any:
    """``handler400``: a bad request Django refused outside the views, as problem+json."""
    return _problem(request, exception if exception is not None else BadRequest())


def handler403(request: Any, exception: BaseException | None = None) -> Any:
    """``handler403``: PermissionDenied outside the views, as problem+json."""
    return _problem(request, exception if exception is not None else Forbidden())


def handler404(request: Any, exception: BaseException | None = None) -> Any:
    """``handler404``: no URL matched (or Http404 outside the views), as problem+json."""
    return _problem(request, exception if exception is not None else RouteNotFound())


def handler500(request: Any) -> Any:
    """``handler500``: an error outside the views (another middleware), as problem+json, logged once."""
    exc = sys.exc_info()[1]
    return _problem(request, exc if exc is not None else RuntimeError("internal error"))
