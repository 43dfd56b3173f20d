"""Request ids, per-request log context and one access record per request, for any WSGI app.

    from janus_utils.integrations.wsgi import RequestMiddleware
    app = RequestMiddleware(app)

Each request gets the client's ``X-Request-ID`` (when it is a plain token)
or a new id, echoed in the response.  Records logged while the app handles
the request carry ``request_id``, ``http_method``, ``http_path`` and
``remote_addr``; when the server closes the response, one INFO record on
``janus.access`` says the status and the duration.  Errors are not handled
here: combine it with ``WSGIErrorMiddleware`` (inside it), or use the Flask
integration, which does both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._request import ENVIRON_KEY, REQUEST_ID_HEADER, Request, request_id_from

__all__ = ["RequestMiddleware"]

_HEADER_LOWER = REQUEST_ID_HEADER.lower()


def _path(environ: dict[str, Any]) -> str:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    # PEP 3333: PATH_INFO holds the raw bytes decoded as latin-1.
    return path.encode("latin-1", "replace").decode("utf-8", "replace")


def start_request(environ: dict[str, Any]) -> Request:
    """The Request for a WSGI *environ*, left in it under ``janus.request``."""
    request = Request(
        request_id_from(environ.get("HTTP_X_REQUEST_ID")),
        environ.get("REQUEST_METHOD"),
        _path(environ),
        environ.get("REMOTE_ADDR"),
    )
    environ[ENVIRON_KEY] = request
    return request


class RequestMiddleware:
    """Wrap a WSGI app: request id in and out, log context, one access record per request."""

    def __init__(self, app: Callable[..., Iterable[bytes]], *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = start_request(environ)
        status = [500]

        def start(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            try:
                status[0] = int(status_line.split(None, 1)[0])
            except ValueError:
                pass
            headers = [(k, v) for k, v in headers if k.lower() != _HEADER_LOWER]
            headers.append((REQUEST_ID_HEADER, request.request_id))
            if exc_info is None:
                return start_response(status_line, headers)
            return start_response(status_line, headers, exc_info)

        request.enter()
        try:
            result = self.app(environ, start)
        except BaseException:
            request.exit()
            if self.access_log:
                request.log_access(500)
            raise
        request.exit()
        return _Closing(result, lambda: self.access_log and request.log_access(status[0]))


class _Closing:
    """The app's response iterable; the access record is logged when the server closes it."""

    def __init__(self, result: Iterable[bytes], done: Callable[[], Any]) -> None:
        self.result = result
        self.done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.result)

    def close(self) -> None:
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            done, self.done = self.done, lambda: None
            done()
