"""OpenTelemetry trace context: the trace and span ids of the active span, for each record.

Used only when ``opentelemetry-api`` is installed: ``configure()`` asks
:func:`trace_ids_reader` once, and a log call pays for this module only
then.  The reader looks at OpenTelemetry's context variable directly (one
``ContextVar.get``) and works out the ids once per context: a span's
context object is immutable and is replaced, not changed, when another span
becomes current, so the last answer stays right for as long as the same
object is current.
"""

from __future__ import annotations

import contextvars
import importlib.util
from collections.abc import Callable
from typing import Any

__all__ = ["TraceIds", "trace_ids_reader"]

TraceIds = Callable[[], "dict[str, str] | None"]
"""Returns ``{"trace_id": 32 hex, "span_id": 16 hex}`` for the active span, or None."""


def trace_ids_reader() -> TraceIds | None:
    """A reader of the active span's ids, or None when OpenTelemetry is not installed."""
    try:
        if importlib.util.find_spec("opentelemetry") is None:
            return None
        from opentelemetry import context as otel_context
        from opentelemetry import trace
    except Exception:  # a broken or partial installation: logging goes on without it
        return None
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    # The contextvars runtime (the default) keeps the context in one
    # ContextVar; any other runtime is read through the public call.
    current: Callable[[], Any] = (
        var.get if isinstance(var, contextvars.ContextVar) else otel_context.get_current
    )
    get_current_span = trace.get_current_span
    cache: tuple[Any, dict[str, str] | None] = (None, None)

    def trace_ids() -> dict[str, str] | None:
        """The ids of the active span, or None (no span, or an invalid one)."""
        nonlocal cache
        ctx = current()
        if not ctx:  # the empty context: no span, no baggage
            return None
        last = cache
        if last[0] is ctx:
            return last[1]
        try:
            span_context = get_current_span(ctx).get_span_context()
            ids = (
                {
                    "trace_id": format(span_context.trace_id, "032x"),
                    "span_id": format(span_context.span_id, "016x"),
                }
                if span_context.is_valid
                else None
            )
        except Exception:
            ids = None
        cache = (ctx, ids)  # one assignment: a thread reads the old pair or the new
        return ids

    trace_ids.current = current  # type: ignore[attr-defined]  # falsy: no span, nothing to add
    # The variable itself, for the C level methods to read without a call.
    trace_ids.var = var if isinstance(var, contextvars.ContextVar) else None  # type: ignore[attr-defined]
    return trace_ids
