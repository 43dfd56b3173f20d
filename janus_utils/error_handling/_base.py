"""The root of every janus_utils error: a stable code, a message, details and an HTTP status.

A :class:`JanusError` is two things at once.  For the engineer reading the log
it carries everything needed to act: a machine code, the message, a ``details``
dict and the chain of exceptions that caused it.  For the client it renders as
an RFC 9457 problem-details body with :meth:`JanusError.to_dict`.

What reaches the client follows one rule: a 4xx is the client's problem, so
it learns the message and the details (after redaction); a 5xx is ours, so it
learns only the kind of failure (``code``, ``title``, ``status``) and, from the
HTTP layer, an error id to quote.  A class may override either half with
``expose_message`` / ``expose_details``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._redact import DEFAULT_REDACTOR

__all__ = ["InternalError", "JanusError", "cause_chain", "exception_name"]

# The problem "type" of every error: a URN built from its stable code, so that
# a client can switch on it without janus_utils serving documentation pages.
TYPE_PREFIX = "urn:janus:error:"

# The "detail" of a 5xx whose message stays private.
HIDDEN_DETAIL = "The server could not complete the request."


def _safe_str(obj: object) -> str:
    """str(obj), or a description of it when its __str__ raises."""
    try:
        return str(obj)
    except Exception:
        return f"<unprintable {type(obj).__name__} object>"


def exception_name(exc: BaseException | type[BaseException]) -> str:
    """The type of *exc* as a reader wants it: ``KeyError``, ``apsw.ConstraintError``, ``NotFound``.

    Built-in and janus_utils types go by their bare name (janus errors also
    carry a unique code); any other type is prefixed with its module.
    """
    cls = exc if isinstance(exc, type) else type(exc)
    module = cls.__module__
    if module in ("builtins", "__main__") or module.startswith("janus_utils."):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def cause_chain(exc: BaseException) -> list[tuple[str, str]]:
    """``(type name, text)`` for *exc* and each exception that caused it, outermost first.

    Follows ``__cause__`` and, unless suppressed with ``raise ... from None``,
    ``__context__``, as a printed traceback does.
    """
    chain: list[tuple[str, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((exception_name(current), _safe_str(current)))
        if current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            current = None
    return chain


class JanusError(Exception):
    """Base class of every error janus_utils raises or a backend raises through it.

    ``code`` is a stable snake_case string clients and dashboards may switch on;
    ``http_status`` is what a client should see; ``details`` is a dict for the
    engineer (redacted before it is logged or sent); ``title`` names the kind of
    problem.  ``str(err)`` reads ``[code] message``.
    """

    code: str = "janus_error"
    http_status: int = 500
    title: str = "Internal error"
    # None: decided by the status (shown for 4xx, hidden for 5xx); see the module docstring.
    expose_message: bool | None = None
    expose_details: bool | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
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

    def __repr__(self) -> str:
        extra = f", details={self.details!r}" if self.details else ""
        return (
            f"{type(self).__name__}({self.message!r}, code={self.code!r}, "
            f"http_status={self.http_status!r}{extra})"
        )

    # -- what a client sees ------------------------------------------------

    @property
    def type_uri(self) -> str:
        """The problem ``type``: ``urn:janus:error:<code>``."""
        return TYPE_PREFIX + self.code

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the response must carry (``Allow``, ``Retry-After``, ...)."""
        return {}

    @property
    def log_level(self) -> str:
        """WARNING for a client error (4xx), ERROR for everything else."""
        return "WARNING" if 400 <= self.http_status < 500 else "ERROR"

    def _shows(self, flag: bool | None) -> bool:
        return flag if flag is not None else self.http_status < 500

    def problem_members(self) -> dict[str, Any]:
        """Extension members this kind of error adds to its problem body (``errors``, ...)."""
        return {}

    def to_dict(self, instance: str | None = None, **members: Any) -> dict[str, Any]:
        """The RFC 9457 problem-details body for a response, secrets redacted.

        *instance* names this occurrence (a request path, say); *members* are
        further extension members, such as the ``error_id`` the HTTP layer adds.
        """
        extras = self.problem_members()
        if self._shows(self.expose_message):
            detail = self.message
        else:
            detail = HIDDEN_DETAIL
            if members.get("error_id"):
                detail += f" Quote error id {members['error_id']} when reporting it."
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.http_status,
            "detail": DEFAULT_REDACTOR.redact_text(detail),
        }
        if instance is not None:
            body["instance"] = DEFAULT_REDACTOR.redact_text(instance)
        body["code"] = self.code
        body.update(DEFAULT_REDACTOR.redact_value(extras))
        details = {k: v for k, v in self.details.items() if k not in extras}
        if details and self._shows(self.expose_details):
            body["details"] = DEFAULT_REDACTOR.redact_value(details)
        for key, value in members.items():
            body.setdefault(key, DEFAULT_REDACTOR.redact_value(value))
        return body

    # -- what an engineer sees ----------------------------------------------

    def cause_chain(self) -> list[tuple[str, str]]:
        """``(type name, text)`` for this error and each exception that caused it."""
        return cause_chain(self)


class InternalError(JanusError):
    """An unexpected failure: what a client is told about an exception that is not a JanusError."""

    code = "internal_error"
    http_status = 500
    title = "Internal error"
