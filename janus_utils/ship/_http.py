"""The one HTTP client the sinks use: keep-alive POSTs over http.client, TLS, auth headers, no logging.

Standard library only, on purpose: a shipper's own requests must never
produce log records (urllib3 and requests log through ``logging``, which an
application capturing stdlib logging would feed straight back into the
sink), and a sink needs nothing but POST with a body and a timeout.

Every failure is sorted into one of two kinds: :class:`Retry` (the network,
a timeout, 429 or 5xx: try the same bytes again later) and
:class:`janus_utils.error_handling.ShipError` (raised by the sinks, for
answers that will never change).
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import socket
import ssl
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from ..error_handling.utils.errors import ConfigError

__all__ = ["Endpoint", "HTTPClient", "Response", "Retry", "is_loopback"]


class Retry(Exception):
    """A failure that may pass: the same request should be tried again after a pause."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def is_loopback(host: str) -> bool:
    """Whether *host* names this machine (localhost, 127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Endpoint:
    """One server: scheme, host, port and the path prefix requests go under."""

    scheme: str  # "http" or "https"
    host: str
    port: int
    path: str = ""

    @classmethod
    def parse(
        cls, url: str, *, default_port: int, what: str, tls_port: int | None = None
    ) -> tuple[Endpoint, str | None, str | None]:
        """(endpoint, user, password) from ``http(s)://[user:pass@]host[:port][/path]``.

        A URL without a port gets *default_port*, or *tls_port* for https.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{what} must be an http:// or https:// URL like http://127.0.0.1:{default_port}, not {url!r}")
        try:
            port = parts.port or (tls_port if parts.scheme == "https" and tls_port else default_port)
        except ValueError:
            raise ConfigError(f"{what} has a port that is not a number: {url!r}") from None
        user = urllib.parse.unquote(parts.username) if parts.username else None
        password = urllib.parse.unquote(parts.password) if parts.password else None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/")), user, password

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path}"


_warned_plain: set[str] = set()
_warned_lock = threading.Lock()


def warn_plain_http(endpoint: Endpoint, what: str) -> None:
    """Once per process and host: records are about to cross the network unencrypted."""
    if endpoint.scheme != "http" or is_loopback(endpoint.host):
        return
    with _warned_lock:
        if endpoint.host in _warned_plain:
            return
        _warned_plain.add(endpoint.host)
    print(
        f"janus_utils: warning: {what} {endpoint} is plain HTTP to another host: log records "
        "cross the network unencrypted; use https:// (TLS)",
        file=sys.stderr,
    )


def basic_auth(user: str | None, password: str | None) -> dict[str, str]:
    if user is None and password is None:
        return {}
    token = base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


@dataclass
class HTTPClient:
    """Keep-alive POSTs to one or more equivalent servers (replicas); fails over on network errors.

    Not thread-safe: one client per shipper thread.
    """

    endpoints: list[Endpoint]
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False  # skip certificate checks: tests with self-signed certificates only
    _conn: http.client.HTTPConnection | None = field(default=None, init=False, repr=False)
    _current: int = field(default=0, init=False)
    _ssl: ssl.SSLContext | None = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> Endpoint:
        return self.endpoints[self._current]

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
            if self.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._ssl = context
        return self._ssl

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            ep = self.endpoint
            if ep.scheme == "https":
                self._conn = http.client.HTTPSConnection(ep.host, ep.port, timeout=self.timeout, context=self._context())
            else:
                self._conn = http.client.HTTPConnection(ep.host, ep.port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _fail_over(self) -> None:
        self.close()
        self._current = (self._current + 1) % len(self.endpoints)

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> Response:
        """POST *body* to *path* (with its query) on the current server; network trouble raises Retry."""
        return self.request("POST", path, body, headers)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Response:
        all_headers = {**self.headers, **(headers or {})}
        ep = self.endpoint
        try:
            conn = self._connect()
            conn.request(method, ep.path + path, body=body, headers=all_headers)
            answer = conn.getresponse()
            data = answer.read()
            response = Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, data)
            if answer.will_close:
                self.close()
            return response
        except (OSError, http.client.HTTPException) as err:
            # Refused, reset, timed out, TLS failed, a half answer: the next
            # try goes to the next replica, on a new connection.
            self._fail_over()
            raise Retry(f"{ep}: {_describe(err)}") from None


def _describe(err: BaseException) -> str:
    if isinstance(err, socket.timeout):
        return "no answer in time (timeout)"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {err.verify_message}"
    if isinstance(err, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(err, ConnectionResetError):
        return "connection reset by the server"
    return f"{type(err).__name__}: {err}"


def retry_after(headers: dict[str, Any]) -> float | None:
    """Seconds from a Retry-After header given in seconds (HTTP dates are ignored)."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
