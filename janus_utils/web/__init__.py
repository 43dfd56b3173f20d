"""The log console: a read-only web page over a janus log database, and its HTTP API.

    janus-logs serve --db app.db          # http://127.0.0.1:8765

or from Python::

    from janus_utils.web import create_app, serve
    app = create_app("app.db")            # an ASGI app (Starlette): mount it or run it
    serve("app.db", port=8765)            # run it with uvicorn

Needs the ``web`` extra (``pip install 'janus_utils[web]'``: Starlette, uvicorn,
prometheus-client).  Everything is read through :class:`janus_utils.LogStore`,
whose connections are read-only: no endpoint writes or deletes, and readers
never block the flusher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._lazy import lazy_getattr

__all__ = ["ConsoleSettings", "check_bind", "create_app", "read_token", "serve"]

_exported = lazy_getattr(
    __name__,
    globals(),
    {
        "ConsoleSettings": "._app",
        "check_bind": "._server",
        "create_app": "._app",
        "read_token": "._server",
        "serve": "._server",
    },
)


def __getattr__(name: str) -> Any:
    return _exported(name)


if TYPE_CHECKING:  # pragma: no cover
    from ._app import ConsoleSettings, create_app
    from ._server import check_bind, read_token, serve
