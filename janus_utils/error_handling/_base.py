"""The root of every janus_utils error: a stable code, a message, details and an HTTP status."""

from __future__ import annotations

from typing import Any

__all__ = ["JanusError"]


class JanusError(Exception):
    """Base class of every error janus_utils raises or a backend raises through it."""

    code: str = "janus_error"
    http_status: int = 500
    title: str = "Internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        http_status: int | None = None,
    ) -> None:
        self.message = message if message is not None else self.title
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        self.details: dict[str, Any] = dict(details) if details else {}
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"
