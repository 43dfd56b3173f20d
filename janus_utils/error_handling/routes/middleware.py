"""Turn any exception into an ``application/problem+json`` response: WSGI, ASGI and Flask.

A JanusError answers with its own status, headers and :meth:`~JanusError.to_dict`
body.  Any other exception answers 500 with a body that says nothing about
it: no message, no traceback, only its kind and an ``error_id``.  The same id
is a field of the log record, which holds the traceback.  Each error is
logged once, even when a ``handle_errors`` layer inside the app logged it
first.  Every problem body's ``instance`` is the request path.

Each layer puts ``http_method`` and ``http_path`` into the log context
before the app runs, so an error logged by a ``handle_errors`` layer inside
the app (which logs before the middleware sees it) carries them too.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from .._base import InternalError, JanusError
from .._handling import DEFAULT, ErrorHandler, Translator, error_id
from ..api.errors import BadRequest, Conflict, Forbidden, RateLimited, Unauthorized
from ..extensions.errors import ExtensionLoadError
from .errors import MethodNotAllowed, RouteNotFound

__all__ = [
    "ASGIErrorMiddleware",
    "PROBLEM_CONTENT_TYPE",
    "WSGIErrorMiddleware",
    "problem_response",
    "register_error_handlers",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"

# Characters left as they are when a request path becomes the "instance" URI.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Loose on purpose: apps annotate scope as dict, Scope, or not at all.
ASGIApp = Callable[..., Awaitable[None]]
StartResponse = Callable[..., Any]
WSGIApp = Callable[..., Iterable[bytes]]


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


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


def _path_uri(path: str) -> str:
    return quote(path, safe=_PATH_SAFE)


@contextlib.contextmanager
def _request_context(method: str | None, path: str) -> Iterator[None]:
    """http_method and http_path on every record logged while the request is handled."""
    from ...logger import log_context  # the logger module imports this package

    with log_context(http_method=method, http_path=path):
        yield


# --------------------------------------------------------------------------
# WSGI


class WSGIErrorMiddleware:
    """Wrap a WSGI app so that every exception becomes a problem response, logged once.

    Errors raised while the app's body is iterated are caught too; if the
    server has already sent the headers by then, the original exception is
    passed back through ``start_response`` as PEP 3333 prescribes, and the
    server closes the connection.
    """

    def __init__(
        self, app: WSGIApp, *, logger: Any = None, translate: Translator | None = DEFAULT
    ) -> None:
        self.app = app
        self.handler = ErrorHandler(translate=translate, logger=logger)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            with _request_context(environ.get("REQUEST_METHOD"), _environ_path(environ)):
                result = self.app(environ, start_response)
        except Exception as exc:
            return self._error(environ, start_response, exc)
        if isinstance(result, (list, tuple)):
            return result  # already complete: nothing left that could raise
        return self._guard(environ, start_response, result)

    def _guard(
        self, environ: dict[str, Any], start_response: StartResponse, result: Iterable[bytes]
    ) -> Iterator[bytes]:
        try:
            iterator = iter(result)
            while True:
                try:
                    chunk = next(iterator)
                except StopIteration:
                    return
                except Exception as exc:
                    yield from self._error(environ, start_response, exc)
                    return
                yield chunk
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _error(
        self, environ: dict[str, Any], start_response: StartResponse, exc: Exception
    ) -> list[bytes]:
        path = _environ_path(environ)
        error = self.handler.process(
            exc, http_method=environ.get("REQUEST_METHOD"), http_path=path
        )
        status, headers, body = problem_response(error, instance=path)
        # With exc_info, start_response replaces headers not yet sent, or
        # re-raises the original exception if they are gone already.
        start_response(_status_line(status), headers, (type(exc), exc, exc.__traceback__))
        return [body]


def _environ_path(environ: dict[str, Any]) -> str:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    # PATH_INFO holds the raw bytes decoded as latin-1 (PEP 3333).
    return _path_uri(path.encode("latin-1", "replace").decode("utf-8", "replace"))


# --------------------------------------------------------------------------
# ASGI


class ASGIErrorMiddleware:
    """Wrap an ASGI app so that every exception in an ``http`` request becomes a problem response.

    ``lifespan`` and ``websocket`` scopes pass through untouched.  If the app
    raises after it started its response, no second response can be sent: the
    exception is logged and re-raised so the server drops the connection
    rather than present a cut body as complete.  If the response was already
    complete, it is only logged.

    Given a Starlette or FastAPI app, it installs itself inside the app (outside
    it, Starlette's own error layer would answer a plain-text 500 first) and
    registers exception handlers for HTTPException, route misses, 405 and
    FastAPI's validation errors; in ``app.add_middleware(ASGIErrorMiddleware)``
    it registers them on Starlette's exception layer below it.  Both forms
    then answer the same (see ``janus_utils.integrations.starlette``).
    """

    def __init__(
        self, app: ASGIApp, *, logger: Any = None, translate: Translator | None = DEFAULT
    ) -> None:
        self.app = app
        self.handler = ErrorHandler(translate=translate, logger=logger)
        self.passthrough = False
        if "starlette" in sys.modules:  # only a Starlette app can need it, and it imported starlette
            from ...integrations.starlette import adopt

            self.passthrough = adopt(app, ASGIErrorMiddleware, logger=logger, translate=translate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.passthrough or scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        state = {"started": False, "complete": False}

        async def watched_send(message: Message) -> None:
            if message.get("type") == "http.response.start":
                state["started"] = True
            elif message.get("type") == "http.response.body" and not message.get("more_body"):
                state["complete"] = True
            await send(message)

        path = _path_uri(scope.get("root_path", "") + scope.get("path", ""))
        try:
            with _request_context(scope.get("method"), path):
                await self.app(scope, receive, watched_send)
        except Exception as exc:
            error = self.handler.process(exc, http_method=scope.get("method"), http_path=path)
            if state["complete"]:
                return
            if state["started"]:
                raise
            status, headers, body = problem_response(error, instance=path)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (name.lower().encode("latin-1"), value.encode("latin-1"))
                        for name, value in headers
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})


# --------------------------------------------------------------------------
# Flask

# werkzeug status -> the janus error it becomes
_WERKZEUG_ERRORS: dict[int, type[JanusError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: RouteNotFound,
    405: MethodNotAllowed,
    409: Conflict,
    429: RateLimited,
}


def _from_werkzeug(exc: Any) -> JanusError:
    """The janus error for a werkzeug HTTPException (a routing miss, an abort(4xx))."""
    status = int(exc.code)
    cls = _WERKZEUG_ERRORS.get(status)
    if cls is MethodNotAllowed:
        error: JanusError = MethodNotAllowed(allowed=getattr(exc, "valid_methods", None) or ())
    elif cls is not None:
        error = cls(exc.description)
    else:
        error = JanusError(exc.description, code=f"http_{status}", http_status=status)
    error.__cause__ = exc
    return error


def register_error_handlers(
    app: Any, *, logger: Any = None, translate: Translator | None = DEFAULT
) -> Any:
    """Make a Flask *app* answer every error with a problem response, logged once; returns *app*.

    werkzeug's own HTTP errors become janus errors (404 -> RouteNotFound,
    405 -> MethodNotAllowed with its Allow header, ...); redirects pass
    through.  Needs Flask; without it, use ``WSGIErrorMiddleware``.
    """
    try:
        import flask
        from werkzeug.exceptions import HTTPException
    except ImportError as exc:
        raise ExtensionLoadError(
            "register_error_handlers needs Flask, which is not installed: "
            "pip install flask, or wrap any WSGI app in WSGIErrorMiddleware instead",
            extension="flask",
        ) from exc
    handler = ErrorHandler(translate=translate, logger=logger)

    def handle(exc: Exception) -> Any:
        if isinstance(exc, HTTPException):
            if exc.code is None or exc.code < 400:
                return exc  # a redirect is a response, not an error
            exc = _from_werkzeug(exc)
        path = _path_uri(flask.request.path)
        error = handler.process(exc, http_method=flask.request.method, http_path=path)
        status, headers, body = problem_response(error, instance=path)
        return flask.Response(body, status=status, headers=headers)

    app.register_error_handler(Exception, handle)

    def enter_context() -> None:
        from ...logger import _context

        flask.g._janus_context = _context.set(
            {**_context.get(), "http_method": flask.request.method, "http_path": _path_uri(flask.request.path)}
        )

    def exit_context(exc: BaseException | None) -> None:
        from ...logger import _context

        token = flask.g.pop("_janus_context", None)
        if token is not None:
            with contextlib.suppress(ValueError):
                _context.reset(token)

    # First: the request's records carry method and path from the first hook on.
    app.before_request_funcs.setdefault(None, []).insert(0, enter_context)
    app.teardown_request(exit_context)
    return app
