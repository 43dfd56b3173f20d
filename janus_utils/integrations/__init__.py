"""Wiring for the web frameworks and servers backend teams use.

- ``janus_utils.integrations.flask``: ``init_app(app)``;
- ``janus_utils.integrations.starlette``: ``install(app)`` for Starlette and FastAPI;
- ``janus_utils.integrations.django``: ``JanusMiddleware`` and error views;
- ``janus_utils.integrations.wsgi``: ``RequestMiddleware`` for any WSGI app;
- ``janus_utils.integrations.gunicorn_conf``: a gunicorn config (``-c python:...``);
- :data:`UVICORN_LOG_CONFIG`: a file for ``uvicorn --log-config``.

Each framework integration gives every request an id (``X-Request-ID`` in and
out), puts the request's fields into every record logged while it is
handled, answers errors with ``application/problem+json`` (logged once) and
logs one access record per request on ``janus.access``.  The server recipes
capture the servers' own records (their loggers do not propagate to the root
logger) in the master and the workers.
"""

from __future__ import annotations

import os

from ._request import ACCESS_LOGGER, REQUEST_ID_HEADER, bind_request, current_request, request_id_from
from ._servers import ServerAccessFilter

__all__ = [
    "ACCESS_LOGGER",
    "REQUEST_ID_HEADER",
    "UVICORN_LOG_CONFIG",
    "ServerAccessFilter",
    "bind_request",
    "current_request",
    "request_id_from",
]

UVICORN_LOG_CONFIG = os.path.join(os.path.dirname(__file__), "uvicorn_log_config.json")
"""The path of the ``--log-config`` file for uvicorn shipped with the package."""
