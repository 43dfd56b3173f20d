"""One HTTP request as the integrations see it: its id, its log context and its access record.

Framework-neutral: the WSGI, Flask, Starlette and Django integrations each
make a :class:`Request` when a request comes in, enter it (every record
logged while it is handled carries ``request_id``, ``http_method``,
``http_path`` and ``remote_addr``), and log one access record when the
response is done.
"""

from __future__ import annotations

import contextvars
import re
import time
import uuid
from typing import Any

from ..error_handling._base import JanusError
from ..error_handling.routes.errors import MethodNotAllowed
from ..error_handling.routes.middleware import _WERKZEUG_ERRORS, _path_uri
from ..logger import _context, get_logger

__all__ = [
    "ACCESS_LOGGER",
    "REQUEST_ID_HEADER",
    "Request",
    "bind_request",
    "current_request",
    "error_for_status",
    "request_id_from",
]

REQUEST_ID_HEADER = "X-Request-ID"
ACCESS_LOGGER = "janus.access"
ENVIRON_KEY = "janus.request"  # where WSGI integrations leave the Request in the environ

# An incoming id is kept only if it is short and plain: it lands in every
# record and in a response header, so anything else is replaced.
_GOOD_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")

_current: contextvars.ContextVar[Request | None] = contextvars.ContextVar("janus_request", default=None)


def request_id_from(incoming: object) -> str:
    """The client's ``X-Request-ID`` when it is a plain token of at most 128 characters, else a new id."""
    if isinstance(incoming, bytes):
        incoming = incoming.decode("latin-1")
    if isinstance(incoming, str) and _GOOD_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class Request:
    """The request being handled: what its records carry and what its access record says."""

    __slots__ = ("fields", "method", "path", "remote_addr", "request_id", "started", "_token")

    def __init__(self, request_id: str, method: str | None, path: str, remote_addr: str | None) -> None:
        self.request_id = request_id
        self.method = method or "-"
        self.path = _path_uri(path)
        self.remote_addr = remote_addr
        self.started = time.perf_counter()
        self.fields: dict[str, Any] = {}  # added by bind_request(): user_id and the like
        self._token: contextvars.Token[dict[str, Any]] | None = None

    def context(self) -> dict[str, Any]:
        fields = {
            "request_id": self.request_id,
            "http_method": self.method,
            "http_path": self.path,
        }
        if self.remote_addr:
            fields["remote_addr"] = self.remote_addr
        fields.update(self.fields)
        return fields

    def enter(self) -> None:
        """Make this request's fields part of every record logged in this context."""
        self._token = _context.set({**_context.get(), **self.context()})
        _current.set(self)

    def exit(self) -> None:
        if self._token is not None:
            token, self._token = self._token, None
            try:
                _context.reset(token)
            except ValueError:  # entered in another context (a framework copied it): leave it
                pass
        _current.set(None)

    def bind(self, **fields: Any) -> None:
        self.fields.update(fields)
        if _current.get() is self:
            _context.set({**_context.get(), **fields})

    def log_access(self, status: int) -> None:
        """One INFO record on ``janus.access``: method, path, status, duration, request id."""
        ms = (time.perf_counter() - self.started) * 1000
        fields = {
            **self.fields,
            "request_id": self.request_id,
            "http_method": self.method,
            "http_path": self.path,
            "http_status": status,
            "duration_ms": round(ms, 3),
        }
        if self.remote_addr:
            fields["remote_addr"] = self.remote_addr
        get_logger(ACCESS_LOGGER).info("%s %s %s %.1fms", self.method, self.path, status, ms, **fields)


def current_request() -> Request | None:
    """The request an integration is handling in this context, or None."""
    return _current.get()


def bind_request(**fields: Any) -> None:
    """Add *fields* (``user_id=...``) to the current request's records and its access record.

    Call it once the application knows them, e.g. after authentication.
    Outside a request handled by an integration it does nothing.
    """
    request = _current.get()
    if request is not None:
        request.bind(**fields)


def error_for_status(status: int, detail: str | None = None, headers: Any = None) -> JanusError:
    """The janus error for a framework's own HTTP error (a route miss, a 405, an abort(4xx))."""
    cls = _WERKZEUG_ERRORS.get(status)
    if cls is MethodNotAllowed:
        allow = ""
        if headers:
            allow = next((v for k, v in dict(headers).items() if str(k).lower() == "allow"), "")
        return MethodNotAllowed(allowed=[m.strip() for m in allow.split(",") if m.strip()])
    if cls is not None:
        return cls(detail) if detail else cls()
    return JanusError(detail or f"HTTP {status}", code=f"http_{status}", http_status=status)
