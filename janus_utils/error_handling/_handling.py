"""Log every error exactly once, however many layers it passes, translating foreign ones on the way.

An exception object is marked when it is logged (``_janus_logged``) and given
an error id (``_janus_error_id``) that the HTTP layer returns to the client,
so the client's quote and the log record meet.  A layer that meets a marked
exception passes it on without logging it again; a layer that translates a
driver exception into a janus error marks both, so neither is logged twice.

Levels: a 4xx error is the client's mistake and is logged at WARNING; a 5xx
or an exception that is not a JanusError is logged at ERROR.  ``level=``
overrides both.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar, cast, overload

from .._levels import parse_level
from .._redact import DEFAULT_REDACTOR
from ._base import InternalError, JanusError, _safe_str, cause_chain, exception_name
from .db.errors import translate as translate_db_error

__all__ = ["ErrorHandler", "error_id", "handle_errors", "is_logged", "log_error"]

Translator = Callable[[BaseException], "BaseException | None"]
"""Maps a foreign exception onto a janus error, or returns None to leave it as it is."""

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_LOGGER = "janus.errors"

_LOGGED = "_janus_logged"
_ERROR_ID = "_janus_error_id"

# Keyword names a janus Logger call takes for itself; context fields so named get a "_".
_RESERVED_FIELDS = frozenset({"msg", "level", "exc_info", "stack_info", "stacklevel"})
# Names a stdlib LogRecord owns; extra= may not set them.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _UseDefault:
    """The default translate: the database translator."""

    def __repr__(self) -> str:
        return "<db.translate>"


DEFAULT: Any = _UseDefault()


def _set(exc: BaseException, name: str, value: object) -> None:
    # An exception type that refuses attributes is only logged, never marked.
    with contextlib.suppress(Exception):
        setattr(exc, name, value)


def is_logged(exc: BaseException) -> bool:
    """True once :func:`log_error` (or a layer using it) has logged *exc*."""
    return getattr(exc, _LOGGED, False) is True


def error_id(exc: BaseException) -> str:
    """The id a client can quote for *exc*: the same for the log record and the response.

    ``err_`` and 32 hex digits; the letters keep it clear of the redactor's
    card-number rule, which looks at runs of 13 or more digits.
    """
    value = getattr(exc, _ERROR_ID, None)
    if not isinstance(value, str):
        value = "err_" + uuid.uuid4().hex
        _set(exc, _ERROR_ID, value)
    return value


def _resolve_logger(logger: Any) -> Any:
    if logger is None or isinstance(logger, str):
        # On first use: the logger loads apsw and the ring, which a caller that
        # passes its own stdlib logger never needs.  (No cycle: the logger
        # imports this package's errors, never this module.)
        from .. import logger as janus_logger

        return janus_logger.get_logger(logger or DEFAULT_LOGGER)
    return logger


def log_error(
    exc: BaseException,
    *,
    logger: Any = None,
    level: int | str | None = None,
    **context: Any,
) -> bool:
    """Log *exc* once, with its code, status, details, cause chain and traceback.

    Returns True if it logged now, False if *exc* had been logged already.
    *logger* is a janus logger, a logger name, or a stdlib ``logging.Logger``
    (default: ``janus.errors``); *level* overrides WARNING-for-4xx,
    ERROR-otherwise; *context* adds fields (``http_path="/users"``).  Details,
    context and message pass through the redactor first.

    The record's fields: ``error_code``, ``http_status``, ``error_type``,
    ``error_id``, ``cause_chain`` (``[type, text]`` pairs), ``details`` when
    there are any, then *context*.
    """
    if is_logged(exc):
        return False
    if isinstance(exc, JanusError):
        status, code, text, details = exc.http_status, exc.code, exc.message, exc.details
        default_level = exc.log_level
    else:
        status, code, details = InternalError.http_status, InternalError.code, {}
        text = f"{exception_name(exc)}: {_safe_str(exc)}"
        default_level = "ERROR"
    fields: dict[str, Any] = {
        (key + "_" if key in _RESERVED_FIELDS else key): value for key, value in context.items()
    }
    fields.update(
        error_code=code,
        http_status=status,
        error_type=exception_name(exc),
        error_id=error_id(exc),
        cause_chain=[list(pair) for pair in cause_chain(exc)],
    )
    if details:
        fields["details"] = details
    fields = DEFAULT_REDACTOR.redact_value(fields)
    message = DEFAULT_REDACTOR.redact_text(f"{status} {code}: {text}")
    levelno = parse_level(level if level is not None else default_level)
    # Marked before the call: a logger that fails must not make every outer layer retry.
    _set(exc, _LOGGED, True)
    log = _resolve_logger(logger)
    if isinstance(log, logging.Logger):
        extra = {(key + "_" if key in _RECORD_ATTRS else key): value for key, value in fields.items()}
        log.log(levelno, message, exc_info=(type(exc), exc, exc.__traceback__), extra=extra)
    else:
        log.log(levelno, message, exc_info=exc, **fields)
    return True


class ErrorHandler:
    """What :func:`handle_errors` returns: a decorator, and a context manager (``with``, ``async with``)."""

    __slots__ = ("level", "logger", "reraise", "translate")

    def __init__(
        self,
        *,
        translate: Translator | None = DEFAULT,
        reraise: bool = True,
        logger: Any = None,
        level: int | str | None = None,
    ) -> None:
        if translate is DEFAULT:
            translate = translate_db_error
        if translate is not None and not callable(translate):
            raise TypeError(
                f"translate must be a function taking an exception, or None; got {translate!r}"
            )
        if level is not None:
            parse_level(level)  # a bad level fails here, not while an error is handled
        self.translate = translate
        self.reraise = reraise
        self.logger = logger
        self.level = level

    def __repr__(self) -> str:
        return (
            f"ErrorHandler(translate={self.translate!r}, reraise={self.reraise!r}, "
            f"logger={self.logger!r}, level={self.level!r})"
        )

    def process(self, exc: BaseException, **context: Any) -> BaseException:
        """Translate *exc*, log it unless logged already, and return what should propagate.

        That is the translated error (its ``__cause__`` is *exc*) or *exc* itself.
        Both end up marked as logged and share one error id.
        """
        error = exc
        if self.translate is not None and not isinstance(exc, JanusError):
            translated = self.translate(exc)
            if translated is not None and translated is not exc:
                if not isinstance(translated, BaseException):
                    raise TypeError(
                        f"translate returned {translated!r}; it must return an exception or None"
                    )
                if translated.__cause__ is None:
                    translated.__cause__ = exc
                error = translated
                if is_logged(exc):  # an inner layer logged it without translating
                    _set(error, _ERROR_ID, error_id(exc))
                    _set(error, _LOGGED, True)
        log_error(error, logger=self.logger, level=self.level, **context)
        if error is not exc:
            _set(exc, _ERROR_ID, error_id(error))
            _set(exc, _LOGGED, True)
        return error

    # -- context manager -----------------------------------------------------

    def __enter__(self) -> ErrorHandler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False  # KeyboardInterrupt, SystemExit, CancelledError pass untouched
        error = self.process(exc)
        if not self.reraise:
            return True
        if error is exc:
            return False
        raise error from exc

    async def __aenter__(self) -> ErrorHandler:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self.__exit__(exc_type, exc, tb)

    # -- decorator -------------------------------------------------------------

    def __call__(self, func: F) -> F:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(
                f"handle_errors cannot wrap the generator {func.__qualname__}: its body runs "
                "after the call returns; use 'with handle_errors():' inside it instead"
            )
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await func(*args, **kwargs)
                except Exception as exc:
                    error = self.process(exc)
                    if not self.reraise:
                        return None
                    if error is exc:
                        raise
                    raise error from exc

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                error = self.process(exc)
                if not self.reraise:
                    return None
                if error is exc:
                    raise
                raise error from exc

        return cast(F, wrapper)


@overload
def handle_errors(func: F, /) -> F: ...


@overload
def handle_errors(
    *,
    translate: Translator | None = ...,
    reraise: bool = ...,
    logger: Any = ...,
    level: int | str | None = ...,
) -> ErrorHandler: ...


def handle_errors(
    func: Callable[..., Any] | None = None,
    /,
    *,
    translate: Translator | None = DEFAULT,
    reraise: bool = True,
    logger: Any = None,
    level: int | str | None = None,
) -> Any:
    """Translate and log errors once: ``@handle_errors``, ``@handle_errors(...)`` or ``with handle_errors(...):``.

    Works on plain and ``async def`` functions, as ``with`` and ``async with``.
    An exception that is not a JanusError goes through *translate* first
    (default: the database translator, so an ``apsw.ConstraintError`` leaves
    as an ``IntegrityError`` with the original as ``__cause__``); pass your own
    callable, or None to translate nothing.  The error is then logged through
    *logger* (default ``janus.errors``) unless a layer below logged it
    already, and re-raised; with ``reraise=False`` it is swallowed and a
    decorated function returns None.  Only ``Exception`` is handled:
    KeyboardInterrupt, SystemExit and task cancellation pass untouched.
    """
    handler = ErrorHandler(translate=translate, reraise=reraise, logger=logger, level=level)
    if func is not None:
        return handler(func)
    return handler
