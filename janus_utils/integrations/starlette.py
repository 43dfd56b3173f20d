"""Starlette and FastAPI: ``install(app)`` wires request ids, log context, problem+json errors and access records.

    from fastapi import FastAPI
    from janus_utils.integrations.starlette import install

    app = FastAPI()
    install(app)

One call adds :class:`JanusMiddleware` and exception handlers, so that every
error answers ``application/problem+json`` with an ``error_id`` and is logged
once with the request's context: janus errors, ``HTTPException`` (FastAPI's
and Starlette's), unknown routes (404), wrong methods (405 with ``Allow``),
FastAPI's ``RequestValidationError`` (422, each error's field and reason in
``errors``, never the value sent; the logged cause keeps the errors with the
input of a sensitive field redacted) and unhandled exceptions (500, no
internals shown).  Each request
gets an id (``X-Request-ID`` in and out) and one INFO record on
``janus.access`` with status and duration.

The three ways of adding the middleware behave the same: ``install(app)``,
``app.add_middleware(JanusMiddleware)`` (it finds Starlette's exception
layer below it and registers the handlers there), and the wrapped form
``app = JanusMiddleware(app)`` (it installs itself inside the app, because
outside it Starlette's own error layer would answer first).
``ASGIErrorMiddleware`` from ``error_handling`` does the same when it is
given a Starlette app.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .._redact import DEFAULT_REDACTOR
from ..error_handling._base import JanusError
from ..error_handling._handling import DEFAULT, ErrorHandler, Translator
from ..error_handling.api.errors import NotFound, ValidationError
from ..error_handling.routes._problem import PROBLEM_CONTENT_TYPE, path_uri, problem_response
from ._request import REQUEST_ID_HEADER, Request, error_for_status, request_id_from

__all__ = ["JanusMiddleware", "install", "register_exception_handlers"]

_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")
_SCOPE_KEY = "janus.request"
_MAX_CHAIN = 32  # middleware layers searched for Starlette's exception layer


def _path(scope: dict[str, Any]) -> str:
    return scope.get("root_path", "") + scope.get("path", "")


def _is_starlette_app(app: object) -> bool:
    try:
        from starlette.applications import Starlette
    except ImportError:
        return False
    return isinstance(app, Starlette)


def _problem(error: BaseException, path: str) -> Any:
    from starlette.responses import Response

    status, headers, body = problem_response(error, instance=path)
    response = Response(body, status_code=status, media_type=PROBLEM_CONTENT_TYPE)
    for name, value in headers:
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response


def _handlers(handler: ErrorHandler) -> dict[Any, Callable[..., Any]]:
    """The exception handlers, by exception class, for Starlette's exception layer."""
    from starlette.exceptions import HTTPException

    def render(request: Any, error: BaseException) -> Any:
        path = path_uri(_path(request.scope))
        error = handler.process(error, http_method=request.method, http_path=path)
        return _problem(error, path)

    async def http_exception(request: Any, exc: HTTPException) -> Any:
        if exc.status_code < 400:  # a redirect or a 304 is a response, not an error
            from starlette.responses import Response

            return Response(status_code=exc.status_code, headers=exc.headers)
        if exc.status_code == 404 and "endpoint" in request.scope:
            # Raised by a matched route (the router sets "endpoint" when one matches): the
            # app's own "not found", not a route miss.
            error: JanusError = NotFound(_detail(exc.detail))
        else:
            error = error_for_status(exc.status_code, _detail(exc.detail), exc.headers)
        error.__cause__ = exc
        return render(request, error)

    async def janus_error(request: Any, exc: JanusError) -> Any:
        return render(request, exc)

    found: dict[Any, Callable[..., Any]] = {HTTPException: http_exception, JanusError: janus_error}
    try:
        from fastapi.exceptions import RequestValidationError
    except ImportError:
        return found

    async def validation_error(request: Any, exc: Any) -> Any:
        errors = [
            {
                "field": ".".join(str(part) for part in err.get("loc", ())),
                "reason": str(err.get("msg", "")),
            }
            for err in exc.errors()
        ]
        error = ValidationError("The request is not valid.", errors=errors or None)
        error.__cause__ = _without_secret_inputs(exc)
        return render(request, error)

    found[RequestValidationError] = validation_error
    return found


def _without_secret_inputs(exc: Any) -> BaseException:
    """FastAPI's validation error as the log keeps it: each error's input redacted, no body.

    The errors' type, loc and msg stay; an input under a sensitive field
    (``password``, ``token``, ...) becomes a marker, and other inputs pass
    through the redactor's rules as any logged value does: the rejected value
    of a plain field is what shows why a request was refused.  The raw body
    the error carries is left out: the errors hold what was wrong with it.
    """
    errors = DEFAULT_REDACTOR.redact_value(list(exc.errors()))
    try:
        cause = type(exc)(errors, endpoint_ctx=getattr(exc, "endpoint_ctx", None))
    except TypeError:  # an older FastAPI, without endpoint_ctx
        try:
            cause = type(exc)(errors)
        except Exception:
            return exc  # a subclass of its own making: its text still passes the redactor's rule
    return cause.with_traceback(exc.__traceback__)


def _detail(detail: Any) -> str | None:
    if detail is None or isinstance(detail, str):
        return detail or None
    try:
        return json.dumps(detail, default=str)
    except (TypeError, ValueError):
        return str(detail)


def register_exception_handlers(
    target: Any, *, logger: Any = None, translate: Translator | None = DEFAULT
) -> None:
    """Register the problem+json handlers on a Starlette/FastAPI app or Starlette's ExceptionMiddleware."""
    handler = ErrorHandler(translate=translate, logger=logger)
    for cls, function in _handlers(handler).items():
        target.add_exception_handler(cls, function)


def _exception_layer(app: Any) -> Any:
    """Starlette's ExceptionMiddleware somewhere below *app* in the middleware chain, or None."""
    try:
        from starlette.middleware.exceptions import ExceptionMiddleware
    except ImportError:
        return None
    layer = app
    for _ in range(_MAX_CHAIN):
        if isinstance(layer, ExceptionMiddleware):
            return layer
        layer = getattr(layer, "app", None)
        if layer is None:
            return None
    return None


def adopt(app: Any, cls: type, **options: Any) -> bool:
    """Make a middleware of class *cls*, given *app*, cover Starlette's own errors.

    A Starlette app (the wrapped form): a *cls* middleware is added inside it
    and the handlers registered; returns True (the outer wrapper then passes
    through).  A layer of a Starlette middleware stack (``add_middleware``):
    the handlers are registered on the exception layer below; returns False.
    """
    logger, translate = options.get("logger"), options.get("translate", DEFAULT)
    if _is_starlette_app(app):
        if not getattr(app.state, "janus_installed", False):
            app.add_middleware(cls, **options)
            register_exception_handlers(app, logger=logger, translate=translate)
            app.state.janus_installed = True
        return True
    layer = _exception_layer(app)
    if layer is not None and not getattr(layer, "_janus_handlers", False):
        register_exception_handlers(layer, logger=logger, translate=translate)
        layer._janus_handlers = True
    return False


class JanusMiddleware:
    """Pure ASGI middleware: request id, log context, unhandled errors as problem+json, access records."""

    def __init__(
        self,
        app: Any,
        *,
        access_log: bool = True,
        user_id: Callable[[dict[str, Any]], Any] | None = None,
        logger: Any = None,
        translate: Translator | None = DEFAULT,
    ) -> None:
        self.app = app
        self.access_log = access_log
        self.user_id = user_id
        self.handler = ErrorHandler(translate=translate, logger=logger)
        self.passthrough = adopt(
            app, JanusMiddleware, logger=logger, translate=translate, access_log=access_log, user_id=user_id
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.passthrough or scope.get("type") != "http" or _SCOPE_KEY in scope:
            await self.app(scope, receive, send)  # not HTTP, or an outer JanusMiddleware has it
            return
        incoming = next((v for k, v in scope.get("headers", ()) if k.lower() == _HEADER), None)
        client = scope.get("client")
        request = Request(request_id_from(incoming), scope.get("method"), _path(scope), client[0] if client else None)
        if self.user_id is not None:
            value = self.user_id(scope)
            if value is not None:
                request.fields["user_id"] = value
        scope[_SCOPE_KEY] = request
        state = {"status": 500, "started": False, "complete": False}
        rid = request.request_id.encode("latin-1")

        async def watched_send(message: Any) -> None:
            kind = message.get("type")
            if kind == "http.response.start":
                state["started"] = True
                state["status"] = message.get("status", 500)
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _HEADER]
                headers.append((_HEADER, rid))
                message = {**message, "headers": headers}
            elif kind == "http.response.body" and not message.get("more_body"):
                state["complete"] = True
            await send(message)

        request.enter()
        try:
            await self.app(scope, receive, watched_send)
        except Exception as exc:
            error = self.handler.process(exc, http_method=request.method, http_path=request.path)
            if state["started"]:
                if not state["complete"]:
                    raise  # a cut body must not pass as complete: the server drops the connection
            else:
                response = _problem(error, request.path)
                await response(scope, receive, watched_send)
        finally:
            request.exit()
            if self.access_log:
                request.log_access(int(state["status"]))


def install(
    app: Any,
    *,
    access_log: bool = True,
    user_id: Callable[[dict[str, Any]], Any] | None = None,
    logger: Any = None,
    translate: Translator | None = DEFAULT,
) -> Any:
    """Wire janus_utils into a Starlette or FastAPI *app*; returns *app*.

    Call it before the app serves its first request (Starlette refuses new
    middleware after that).  *user_id*: a function of the ASGI scope giving
    the user id, or None; ``bind_request(user_id=...)`` in an endpoint or a
    dependency does the same later.  *logger*, *translate*: as for
    ``handle_errors``.
    """
    if not _is_starlette_app(app):
        raise TypeError(
            f"install() takes a Starlette or FastAPI application, not {type(app).__name__}; "
            "wrap any other ASGI app in JanusMiddleware(app)"
        )
    adopt(app, JanusMiddleware, logger=logger, translate=translate, access_log=access_log, user_id=user_id)
    return app
