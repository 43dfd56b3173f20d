"""Flask: ``init_app(app)`` wires request ids, log context, problem+json errors and access records.

    from flask import Flask
    from janus_utils.integrations.flask import init_app

    app = Flask(__name__)
    init_app(app)

What one call gives:

- every request gets an id (the client's ``X-Request-ID`` when it is a plain
  token, else a new one), echoed in the response's ``X-Request-ID``;
- every record logged while the request is handled carries ``request_id``,
  ``http_method``, ``http_path``, ``remote_addr`` and, once known,
  ``user_id`` (from the *user_id* hook, or ``bind_request(user_id=...)``);
- every error, janus errors and werkzeug's own 404/405/500 alike, answers
  ``application/problem+json`` with an ``error_id`` and is logged once, with
  the request's context;
- one INFO record on ``janus.access`` per request, with status and duration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..error_handling._handling import DEFAULT, Translator
from ..error_handling.routes.middleware import register_error_handlers
from ._request import bind_request, current_request
from .wsgi import RequestMiddleware

__all__ = ["init_app"]


def init_app(
    app: Any,
    *,
    user_id: Callable[[], Any] | None = None,
    access_log: bool = True,
    logger: Any = None,
    translate: Translator | None = DEFAULT,
) -> Any:
    """Wire janus_utils into the Flask *app*; returns *app*.

    *user_id*: a function called inside the request (``lambda:
    flask.g.get("user_id")``, ``lambda: current_user.get_id()``); its value,
    when not None, is added to the request's records.  It is asked before
    the view runs and again at the end if it had no answer then.
    *logger*, *translate*: as for ``handle_errors``.
    """
    if app.extensions.get("janus_utils"):
        return app  # already wired: a second call must not log everything twice
    register_error_handlers(app, logger=logger, translate=translate)
    app.wsgi_app = RequestMiddleware(app.wsgi_app, access_log=access_log)
    if user_id is not None:

        def find_user() -> None:
            request = current_request()
            if request is not None and request.fields.get("user_id") is None:
                value = user_id()
                if value is not None:
                    bind_request(user_id=value)

        app.before_request(find_user)
        app.after_request(lambda response: (find_user(), response)[1])
    app.extensions["janus_utils"] = {"user_id": user_id, "access_log": access_log}
    return app
