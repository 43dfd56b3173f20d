"""A gunicorn config that stores gunicorn's own records through janus_utils, master and workers.

    gunicorn -c python:janus_utils.integrations.gunicorn_conf -w 4 app:app

or, in your own ``gunicorn.conf.py``::

    from janus_utils.integrations.gunicorn_conf import janus_logconfig

    logconfig_dict = janus_logconfig(db_path="/var/log/app/logs.db")

gunicorn's loggers do not propagate to the root logger, so ``capture_stdlib``
never sees them.  This config hands ``gunicorn.error`` (boot, worker
timeouts and kills, errors) and ``gunicorn.access`` to ``JanusHandler``, and
the root logger too (the application's stdlib logging).  The master applies
it when it starts, which configures janus_utils there (with the database of
``db_path``, ``$JANUS_LOG_DB`` or ``janus-logs.db``); the workers it forks
inherit it.  An access record of a request that a framework integration
logged already is not stored twice (see ``ServerAccessFilter``); the others
carry method, path, status, duration and the ``X-Request-ID`` header.
"""

from __future__ import annotations

from typing import Any

__all__ = ["janus_logconfig", "logconfig_dict"]


def janus_logconfig(**configure_options: Any) -> dict[str, Any]:
    """A gunicorn ``logconfig_dict``; *configure_options* go to ``configure()`` (``db_path=...``)."""
    janus = {"class": "janus_utils.JanusHandler", **configure_options}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"server_access": {"()": "janus_utils.integrations.ServerAccessFilter"}},
        "handlers": {
            "janus": janus,
            "janus_access": {**janus, "filters": ["server_access"]},
        },
        "root": {"level": "INFO", "handlers": ["janus"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["janus"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["janus_access"], "propagate": False},
        },
    }


logconfig_dict = janus_logconfig()
