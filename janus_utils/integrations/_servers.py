"""The servers' own access records: fields for the ones no integration logged, none twice.

gunicorn and uvicorn log each request on their access logger
(``gunicorn.access``, ``uvicorn.access``).  When a framework integration
handled the request it has logged the access record already (it knows the
request id, the user and the duration), so the server's record is left out;
otherwise the server's record is kept, with its parts as fields:
``http_method``, ``http_path``, ``http_status``, ``remote_addr`` and, from
gunicorn, ``duration_ms`` and the ``X-Request-ID`` header as ``request_id``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ._request import ENVIRON_KEY, current_request

__all__ = ["ServerAccessFilter"]

_HANDLED = "{%s}e" % ENVIRON_KEY  # gunicorn's atom for the environ key an integration sets


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class ServerAccessFilter(logging.Filter):
    """A logging filter for the servers' access loggers (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping):  # gunicorn: the access-log atoms
            if _HANDLED in args:
                return False
            fields = {
                "http_method": args.get("m"),
                "http_path": args.get("U"),
                "http_status": _int(args.get("s")),
                "remote_addr": args.get("h"),
            }
            micros = _int(args.get("D"))
            if micros is not None:
                fields["duration_ms"] = micros / 1000
            rid = args.get("{x-request-id}o") or args.get("{x-request-id}i")
            if rid and rid != "-":
                fields["request_id"] = rid
        elif isinstance(args, tuple) and len(args) == 5:  # uvicorn: client, method, path, version, status
            if current_request() is not None:
                return False
            client, method, path, _, status = args
            fields = {"http_method": method, "http_path": path, "http_status": _int(status), "remote_addr": client}
        else:
            return True
        for key, value in fields.items():
            if value is not None and key not in record.__dict__:
                record.__dict__[key] = value
        return True
