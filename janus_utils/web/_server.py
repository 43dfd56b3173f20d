"""Run the console with uvicorn: the bind rules, the token file, one line saying where it is."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import sys
from typing import IO, Any

from ..error_handling.utils.errors import ConfigError

__all__ = ["check_bind", "is_loopback", "read_token", "read_token_scopes", "serve"]

MIN_TOKEN_CHARS = 16
_MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > token && chmod 600 token"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": addresses only this machine can reach."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve the logs beyond this machine without a token (ConfigError says why)."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without --token-file: anyone who can reach that "
            "address could read every log record. Create a token "
            f"({_MAKE_TOKEN}) and pass --token-file token, or bind 127.0.0.1"
        )


def read_token(path: str | os.PathLike[str], warn: IO[str] | None = None) -> str:
    """The token in *path* (surrounding whitespace ignored); ConfigError if unusable."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as stream:
            token = stream.read(4096).strip()
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the token file {path} is not text: put a random token in it ({_MAKE_TOKEN})") from None
    if len(token) < MIN_TOKEN_CHARS or any(char.isspace() for char in token):
        raise ConfigError(
            f"the token in {path} must be one word of at least {MIN_TOKEN_CHARS} characters: "
            f"make one with {_MAKE_TOKEN}"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and warn is not None:
        warn.write(f"janus-logs: warning: {path} can be read by other users: chmod 600 {path}\n")
    return token


def read_token_scopes(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """A JSON file mapping each token to the LogStore scope it reads in; ConfigError if unusable.

    ``{"<token>": {"user_id": "42"}, "<another>": {"agent_id": "bot", "level": "WARNING"}}``
    """
    import json

    from ..store import _check_scope

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.loads(stream.read(1 << 20))
    except OSError as exc:
        raise ConfigError(f"cannot read the token scopes file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"the token scopes file {path} is not JSON ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f'{path} must be a JSON object of tokens and scopes: {{"<token>": {{"user_id": "42"}}}}')
    scopes: dict[str, dict[str, Any]] = {}
    for token, scope in data.items():
        if len(token) < MIN_TOKEN_CHARS or any(char.isspace() for char in token):
            raise ConfigError(f"every token in {path} must be one word of at least {MIN_TOKEN_CHARS} characters")
        if not isinstance(scope, dict) or not scope:
            raise ConfigError(f"each token in {path} needs a scope such as {{\"user_id\": \"42\"}} (use --token-file for full access)")
        try:
            scopes[token] = _check_scope(scope)
        except Exception as exc:  # SearchQueryError: say which file
            raise ConfigError(f"{path}: {exc}") from None
    return scopes


def serve(
    db_path: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    out: IO[str] | None = None,
    token_scopes: dict[str, dict[str, Any]] | None = None,
    **options: Any,
) -> None:
    """Serve the console for *db_path* until interrupted (Ctrl-C).

    *port* 0 picks a free port; the line printed to *out* (stdout) names the
    address actually bound.
    """
    import uvicorn

    from ..store import LogStore
    from ._app import create_app

    check_bind(host, token or ("scoped" if token_scopes else None))
    LogStore(db_path).close()  # a missing or foreign database is an error now, not per request
    app = create_app(db_path, token=token, allowed_hosts=(host,), token_scopes=token_scopes, **options)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: without it a keep-alive response
    # written in two parts waits ~40 ms for the browser's delayed ACK (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    out = out or sys.stdout
    note = " (token required)" if token or token_scopes else ""
    out.write(f"janus-logs: serving {db_path} read-only at http://{shown}:{bound}/{note}; Ctrl-C stops\n")
    out.flush()
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # The live view is a long request: at shutdown, wait this long for it.
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
