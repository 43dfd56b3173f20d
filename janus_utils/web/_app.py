"""The console's ASGI app: the page, its assets and a read-only JSON/SSE API over LogStore.

Routes (all GET; anything else is 405):

* ``/``: the page (``static/index.html``) with its first screen's data in it
  (the newest records and the histogram, as JSON); ``/static/...``: its
  script and style.
* ``/api/records``: the newest records of a selection (query + filters).
* ``/api/histogram``: the selection's counts per time bucket and level.
* ``/api/record/{id}``: one record whole, with its neighbours in time.
* ``/api/live``: server-sent events, the records committed after a cursor.
* ``/metrics``: the pipeline's figures for Prometheus (``janus_utils.metrics``).

Every record field is data to the page: it is sent as JSON (in the page, a
``<script type="application/json">`` block with ``<``, ``>`` and ``&``
escaped) and put in the page with ``textContent`` only (see ``static/console.js``); the Content-Security-
Policy allows no inline script and no origin but this one, and Trusted Types
make any HTML-parsing sink in the script throw.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._levels import level_name
from .._timeparse import format_ts, parse_duration
from ..error_handling import JanusError
from ..security import constant_time_equals
from ..store import LogStore, Record, _check_scope

__all__ = ["ConsoleSettings", "create_app"]

# Names a browser on this machine uses for a loopback server.  Without a token
# any other Host header is refused: a page elsewhere that rebinds its own DNS
# name to 127.0.0.1 must not read the logs through the visitor's browser.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

COOKIE = "janus_console_token"
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        # No string ever becomes HTML or script: innerHTML and friends throw.
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

LIST_LIMIT = 100  # records on the first screen
MAX_LIST_LIMIT = 1000
LIST_MESSAGE_CHARS = 2000  # a list row shows this much of a message; the record view all of it
NEIGHBOURS = 5  # records shown before and after an opened one
# Bucket widths the histogram picks from: the smallest that gives at most
# HISTOGRAM_BUCKETS buckets over the selection's time span.
BUCKETS = ("1s", "5s", "10s", "30s", "1m", "5m", "10m", "30m", "1h", "3h", "6h", "12h", "1d", "7d", "30d")
HISTOGRAM_BUCKETS = 60
# Without a since, the histogram covers the time of the newest this-many
# records of the database (whatever the filters): counting a 10,000,000-row
# selection takes seconds, this tens of milliseconds.
HISTOGRAM_RECENT_ROWS = 50_000
# The per-minute counts answer the whole selection only over a span this short:
# they hold a row per minute, level and logger, and weeks of them (a 10,000,000
# row database over a week: 680,000) take longer to add up than the newest rows.
HISTOGRAM_ROLLUP_SPAN_NS = 6 * 3600 * 1_000_000_000
_FILTER_PARAMS = {
    "level": "level",
    "logger": "logger",
    "user": "user_id",
    "agent": "agent_id",
    "request": "request_id",
    "trace": "trace_id",
    "since": "since",
    "until": "until",
}


@dataclass(frozen=True)
class ConsoleSettings:
    """How a console app serves one database."""

    db_path: str
    token: str | None = None  # when set, every request must carry it
    # Tokens that each read only within a LogStore scope: ((token, ((key, value), ...)), ...).
    token_scopes: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    allowed_hosts: frozenset[str] = LOOPBACK_HOSTS  # Host names accepted without a token
    live_interval: float = 0.1  # seconds between two looks for new records, per live view
    live_batch: int = 25  # at most this many records per look: a flood is sampled
    max_live_views: int = 32
    heartbeat: float = 15.0  # an SSE comment this often keeps proxies from closing the stream
    histogram_recent_rows: int = HISTOGRAM_RECENT_ROWS  # see HISTOGRAM_RECENT_ROWS
    metrics: bool = True


class _BadRequest(Exception):
    pass


# ---------------------------------------------------------------- records as JSON
def _ts_text(ts: int) -> str:
    """A ns timestamp as the exact decimal seconds LogStore's time parser reads."""
    sign = "-" if ts < 0 else ""
    seconds, ns = divmod(abs(ts), 1_000_000_000)
    return f"{sign}{seconds}.{ns:09d}"


def summary(record: Record) -> dict[str, Any]:
    """A record as a list row needs it: the message cut to LIST_MESSAGE_CHARS, no traceback."""
    message = record.message
    return {
        "id": record.id,
        "ts": record.ts,
        "time": format_ts(record.ts, digits=3),
        "level": record.level,
        "level_name": record.level_name,
        "logger": record.logger,
        "message": message[:LIST_MESSAGE_CHARS],
        "message_chars": len(message),
        "user_id": record.user_id,
        "agent_id": record.agent_id,
        "request_id": record.request_id,
        "trace_id": record.trace_id,
        "has_exception": bool(record.exception),
    }


def first_screen_block(data: Any) -> bytes:
    """*data* as a ``<script type="application/json" id="first-screen">`` block of the page.

    The browser never runs such a block, and the page's script reads it with
    JSON.parse.  Log text inside it is untrusted: ``<``, ``>`` and ``&`` travel
    as ``\\u`` escapes (and every non-ASCII character too), so no byte of a
    record can end the block (``</script>``), open a comment (``<!--``) or be
    read as markup by the HTML parser.
    """
    text = json.dumps(data, ensure_ascii=True, default=str, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="first-screen">{text}</script>\n'.encode("ascii")


def _json(data: Any, status: int = 200) -> Response:
    # ensure_ascii: every control and bidi character travels as an escape.
    body = json.dumps(data, ensure_ascii=True, default=str, separators=(",", ":"))
    return Response(body, status_code=status, media_type="application/json")


# ---------------------------------------------------------------- the store, per thread
class _Stores:
    """One LogStore per worker thread (a LogStore is for one thread at a time)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[LogStore] = []
        self._lock = threading.Lock()

    def get(self, scope: tuple[tuple[str, Any], ...] = ()) -> LogStore:
        """This thread's store for the request's token scope (() for the whole database)."""
        stores = getattr(self._local, "stores", None)
        if stores is None:
            stores = self._local.stores = {}
        store = stores.get(scope)
        if store is None:
            store = stores[scope] = LogStore(self.path, scope=dict(scope) or None)
            with self._lock:
                self._all.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            stores, self._all = self._all, []
        for store in stores:
            with contextlib.suppress(Exception):
                store.close()


def _filters(request: Request) -> tuple[str | None, dict[str, Any]]:
    params = request.query_params
    filters: dict[str, Any] = {}
    for param, name in _FILTER_PARAMS.items():
        value = params.get(param, "").strip()
        if value:
            filters[name] = value
    query = params.get("q", "").strip() or None
    return query, filters


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise _BadRequest(f"{name} must be a whole number, not {text!r}") from None
    if not low <= value <= high:
        raise _BadRequest(f"{name} must be between {low} and {high}, not {value}")
    return value


# ---------------------------------------------------------------- the app
class _Console:
    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.stores = _Stores(settings.db_path)
        self.live_views = 0
        folder = resources.files(__package__) / "static"
        # The assets are read once and served from memory under a name that
        # carries their hash, so a browser may keep them for good: an upgrade
        # changes the name the page asks for.
        self.assets: dict[str, tuple[bytes, str]] = {}
        # Each asset also gzipped once here, for browsers that accept it: a
        # third of the bytes over a network, no work per request.
        self.gzipped: dict[str, bytes] = {}
        index = (folder / "index.html").read_text(encoding="utf-8")
        for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
            body = (folder / name).read_bytes()
            self.assets[name] = (body, f"{kind}; charset=utf-8")
            self.gzipped[name] = gzip.compress(body, compresslevel=9, mtime=0)
            versioned = f"/static/{name}?v={hashlib.sha256(body).hexdigest()[:16]}"
            index = index.replace(f"/static/{name}", versioned)
        # The first screen's data goes between the two halves (see page()).
        head, marker, tail = index.partition("<!--first-screen-->\n")
        if not marker:
            raise RuntimeError("static/index.html has lost its <!--first-screen--> marker")
        self.head, self.tail = head.encode("utf-8"), tail.encode("utf-8")
        self.collector: Any = None

    # -- helpers -----------------------------------------------------
    async def _run(self, work: Callable[[LogStore], Any], request: Request) -> Response:
        """Run *work* with this thread's LogStore (in the token's scope) in a worker thread; errors become 400/503."""
        scope = _token_scope(request)

        def call() -> Any:
            return work(self.stores.get(scope))

        try:
            return _json(await anyio.to_thread.run_sync(call))
        except _BadRequest as exc:
            return _json({"error": str(exc)}, 400)
        except JanusError as exc:
            status = 400 if exc.http_status < 500 else 503
            return _json({"error": exc.message}, status)

    # -- pages -------------------------------------------------------
    async def page(self, request: Request) -> Response:
        """The page, with its first screen's data inside it.

        The part before the data goes out at once, so the browser fetches the
        script and style while the newest records and the histogram are
        looked up (side by side, in two threads); then the data follows as
        JSON in a ``<script type="application/json">`` block.  The page's
        script draws from it without asking the API: one round trip instead
        of three in a row.
        """
        headers = {"cache-control": "no-cache"}
        if request.method == "HEAD":
            return Response(self.head + self.tail, media_type="text/html; charset=utf-8", headers=headers)
        query, filters = _filters(request)
        selection = _form_encode((name, request.query_params.get(name, "").strip()) for name in ("q", *_FILTER_PARAMS))
        scope = _token_scope(request)

        async def body() -> AsyncIterator[bytes]:
            yield self.head
            first = await self._first_screen(query, filters, scope)
            if first:
                yield first_screen_block({"selection": selection, **first})
            yield self.tail

        return StreamingResponse(body(), media_type="text/html; charset=utf-8", headers=headers)

    async def _first_screen(
        self, query: str | None, filters: dict[str, Any], scope: tuple[tuple[str, Any], ...]
    ) -> dict[str, Any]:
        """The newest records and the histogram of the selection, each left out if it fails.

        A part left out is asked for by the page through the API, which
        answers a bad selection with its reason as it always does.
        """
        found: dict[str, Any] = {}

        async def one(name: str, work: Callable[[LogStore], dict[str, Any]]) -> None:
            with contextlib.suppress(Exception):
                found[name] = await anyio.to_thread.run_sync(lambda: work(self.stores.get(scope)))

        async with anyio.create_task_group() as group:
            group.start_soon(one, "records", lambda store: self._records(store, query, filters, LIST_LIMIT))
            group.start_soon(one, "histogram", lambda store: self._histogram(store, query, filters))
        return found

    async def asset(self, request: Request) -> Response:
        found = self.assets.get(request.path_params["name"])
        if found is None:
            return _plain(404, "no such file")
        body, kind = found
        headers = {"cache-control": "public, max-age=31536000, immutable", "vary": "accept-encoding"}
        if _accepts_gzip(request.headers.get("accept-encoding", "")):
            body = self.gzipped[request.path_params["name"]]
            headers["content-encoding"] = "gzip"
        return Response(body, media_type=kind, headers=headers)

    # -- the API -----------------------------------------------------
    async def records(self, request: Request) -> Response:
        query, filters = _filters(request)
        try:
            limit = _int_param(request, "limit", LIST_LIMIT, 1, MAX_LIST_LIMIT)
        except _BadRequest as exc:
            return _json({"error": str(exc)}, 400)
        return await self._run(lambda store: self._records(store, query, filters, limit), request)

    async def histogram(self, request: Request) -> Response:
        query, filters = _filters(request)
        return await self._run(lambda store: self._histogram(store, query, filters), request)

    def _records(self, store: LogStore, query: str | None, filters: dict[str, Any], limit: int) -> dict[str, Any]:
        """/api/records' answer: the newest *limit* records of the selection and the live view's cursor."""
        started = time.perf_counter()
        # The cursor is read first: a record committed during the search
        # is then after it, and the live view brings it (the page drops
        # the ones it has already).
        cursor = store.newest_id()
        found = store.search(query, limit=limit, **filters)
        return {
            "records": [summary(record) for record in found],
            "cursor": cursor,
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    def _histogram(self, store: LogStore, query: str | None, filters: dict[str, Any]) -> dict[str, Any]:
        """/api/histogram's answer: the selection's counts per bucket and level."""
        started = time.perf_counter()
        recent_since = after_id = None
        # A user, agent or request id is an index's few rows: counted whole.
        narrow = any(name in filters for name in ("user_id", "agent_id", "request_id"))
        # Counted per minute (the rollup), the whole selection costs little,
        # as long as it spans enough time for buckets of a minute or more.
        whole = None
        if "since" not in filters and not narrow and store.counts_indexed(query, **filters):
            # The selection's ends are two searches, and for a broad filter
            # (level ERROR on 10,000,000 rows) one of them can take a second.
            # The database's own ends are two lookups: a selection spans no
            # more than they do, so a database of a short span is the only
            # one where looking for the selection's ends can pay off.
            stored = _span(store, None, {})
            if stored is not None and stored[1] - stored[0] <= HISTOGRAM_ROLLUP_SPAN_NS:
                whole = _span(store, query, filters)
            if whole is not None and (
                _bucket(*whole) < 60_000_000_000 or whole[1] - whole[0] > HISTOGRAM_ROLLUP_SPAN_NS
            ):
                whole = None
        if "since" not in filters and not narrow and whole is None:
            newest = store.newest_id()
            # Ids follow commit order: the newest histogram_recent_rows
            # records are a primary-key range.  If the first of them was
            # pruned, so was everything older, and the rest is small.
            start = newest - self.settings.histogram_recent_rows
            first = store.get(start + 1) if start > 0 else None
            if first is not None:
                recent_since, after_id = first.ts, start
        if whole is not None:
            span: tuple[int, int] | None = whole
        elif recent_since is None:
            span = _span(store, query, filters)
        else:  # the buckets only need the span roughly: no search for it
            span = recent_since, max(store.newest_ts() or recent_since, recent_since)
        if span is None:
            return {"bucket": None, "buckets": [], "recent_since": recent_since, "took_ms": 0}
        low, high = span
        bucket = _bucket_name(low, high)
        counted = filters
        if (
            after_id is not None
            and parse_duration(bucket) >= 60_000_000_000
            and store.counts_indexed(query, **filters)
        ):
            # The same records by time: whole minutes of them are read from the
            # per-minute counts (tens of rows) instead of 50,000 rows.
            counted, after_id = {**filters, "since": _ts_text(recent_since)}, None  # type: ignore[arg-type]
        found = store.histogram(bucket, "level", query=query, top=10, after_id=after_id, **counted)
        return {
            "bucket": bucket,
            "bucket_ns": parse_duration(bucket),
            "buckets": [{"ts": int(start.timestamp()) * 1_000_000_000, "counts": counts} for start, counts in found],
            "recent_since": recent_since,
            "recent_rows": self.settings.histogram_recent_rows if recent_since is not None else None,
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    async def record(self, request: Request) -> Response:
        try:
            record_id = int(request.path_params["record_id"])
        except ValueError:
            return _json({"error": "a record id is a whole number"}, 400)

        def work(store: LogStore) -> dict[str, Any]:
            record = store.get(record_id)
            if record is None:
                raise _NotFound(f"no record {record_id}: it was never stored, or it was pruned")
            at = _ts_text(record.ts)
            before = store.search(until=at, limit=NEIGHBOURS, order="newest")
            after = [r for r in store.search(since=at, limit=2 * NEIGHBOURS + 1, order="oldest") if r.id != record.id]
            # Records of the same ts sort by id, as the flusher committed them.
            ordered = sorted(before + after, key=lambda r: (r.ts, r.id))
            earlier = [summary(r) for r in ordered if (r.ts, r.id) < (record.ts, record.id)][-NEIGHBOURS:]
            later = [summary(r) for r in ordered if (r.ts, r.id) > (record.ts, record.id)][:NEIGHBOURS]
            return {"record": record.to_dict(), "before": earlier, "after": later}

        try:
            return await self._run(work, request)
        except _NotFound as exc:
            return _json({"error": str(exc)}, 404)

    async def live(self, request: Request) -> Response:
        query, filters = _filters(request)
        try:
            cursor = _int_param(request, "cursor", -1, -1, 2**63 - 1)
        except _BadRequest as exc:
            return _json({"error": str(exc)}, 400)
        if self.live_views >= self.settings.max_live_views:
            return _json({"error": "too many live views are open: close one, or pause it"}, 503)
        try:
            # Check the selection now, so that a bad one is a 400, not a stream of errors.
            scope = _token_scope(request)
            cursor = await anyio.to_thread.run_sync(lambda: self._start_live(query, filters, cursor, scope))
        except JanusError as exc:
            return _json({"error": exc.message}, 400 if exc.http_status < 500 else 503)
        return StreamingResponse(
            self._live_events(request, query, filters, cursor, scope),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    def _start_live(
        self, query: str | None, filters: dict[str, Any], cursor: int, scope: tuple[tuple[str, Any], ...]
    ) -> int:
        store = self.stores.get(scope)
        store.search(query, limit=1, **filters)  # a bad query or filter raises here
        return store.newest_id() if cursor < 0 else cursor

    async def _live_events(
        self,
        request: Request,
        query: str | None,
        filters: dict[str, Any],
        cursor: int,
        scope: tuple[tuple[str, Any], ...] = (),
    ) -> AsyncIterator[bytes]:
        settings = self.settings
        self.live_views += 1
        store: LogStore | None = None
        try:
            store = await anyio.to_thread.run_sync(lambda: LogStore(settings.db_path, scope=dict(scope) or None))
            yield _event("hello", {"cursor": cursor})
            last_sent = time.monotonic()
            while not await request.is_disconnected():
                try:
                    found, matched, newest = await anyio.to_thread.run_sync(
                        lambda: store.after(cursor, query, limit=settings.live_batch, **filters)  # type: ignore[union-attr]
                    )
                except JanusError as exc:
                    yield _event("problem", {"error": exc.message})
                    await anyio.sleep(1.0)
                    continue
                if found or newest != cursor:
                    cursor = newest
                if found:
                    yield _event(
                        "records",
                        {
                            "records": [summary(r) for r in reversed(found)],
                            "matched": matched,
                            "cursor": cursor,
                        },
                    )
                    last_sent = time.monotonic()
                elif time.monotonic() - last_sent >= settings.heartbeat:
                    yield b": still here\n\n"
                    last_sent = time.monotonic()
                await anyio.sleep(settings.live_interval)
        finally:
            self.live_views -= 1
            if store is not None:
                store.close()

    async def metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        from ..metrics import JanusCollector

        if _token_scope(request):
            return _plain(403, "/metrics counts every record: a token with a scope cannot read it")
        if self.collector is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(JanusCollector(self.settings.db_path))
            self.collector = registry
        body = await anyio.to_thread.run_sync(lambda: generate_latest(self.collector))
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"cache-control": "no-store"})


class _NotFound(Exception):
    pass


def _token_scope(request: Request) -> tuple[tuple[str, Any], ...]:
    """The scope the gate found for the request's token (() reads everything)."""
    return request.scope.get("state", {}).get("janus_scope", ())  # type: ignore[no-any-return]


def _event(name: str, data: Any) -> bytes:
    body = json.dumps(data, ensure_ascii=True, default=str, separators=(",", ":"))
    return f"event: {name}\ndata: {body}\n\n".encode()


def _bucket_name(low: int, high: int) -> str:
    """The smallest bucket that gives at most HISTOGRAM_BUCKETS buckets from low to high (ns)."""
    return next((b for b in BUCKETS if (high - low) / parse_duration(b) <= HISTOGRAM_BUCKETS), BUCKETS[-1])


def _bucket(low: int, high: int) -> int:
    return parse_duration(_bucket_name(low, high))


def _span(store: LogStore, query: str | None, filters: dict[str, Any]) -> tuple[int, int] | None:
    """The ts of the selection's first and last record (two index lookups), or None if empty."""
    oldest = store.search(query, limit=1, order="oldest", **filters)
    if not oldest:
        return None
    newest = store.search(query, limit=1, order="newest", **filters)
    low = oldest[0].ts
    high = max(newest[0].ts if newest else low, low)
    return low, high


# ---------------------------------------------------------------- the gate
class _Gate:
    """Every request passes here: Host check, token, GET only, security headers."""

    def __init__(self, app: ASGIApp, settings: ConsoleSettings) -> None:
        self.app = app
        self.settings = settings
        self.token = settings.token.encode() if settings.token else None
        # Every token the console accepts, each with the scope it reads in.
        self.tokens: list[tuple[bytes, tuple[tuple[str, Any], ...]]] = [(self.token, ())] if self.token else []
        self.tokens += [(token.encode(), scope) for token, scope in settings.token_scopes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() not in dict(_SECURITY_HEADERS)]
                message = {**message, "headers": headers + _SECURITY_HEADERS}
            await send(message)

        refusal = self._refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send_secured)
            return
        # Set here, never from the request: the scope the token reads in.
        scope.setdefault("state", {})["janus_scope"] = (self._scope_of(request) or ()) if self.tokens else ()
        await self.app(scope, receive, send_secured)

    def _refusal(self, request: Request) -> Response | None:
        if request.method not in ("GET", "HEAD"):
            return _plain(405, "this console only reads: every endpoint is GET", {"allow": "GET, HEAD"})
        if not self.tokens:
            host = _host_name(request.headers.get("host", ""))
            if host not in self.settings.allowed_hosts:
                return _plain(
                    421,
                    "this console answers to its own loopback address only "
                    "(serve with --token-file to allow other host names)",
                )
            return None
        if self._authorised(request):
            if request.url.path == "/" and "token" in request.query_params:
                # The token came in the address: keep it in a cookie and take it
                # out of the address bar and the history.
                response = Response(status_code=303, headers={"location": "/"})
                response.set_cookie(
                    COOKIE, request.query_params["token"], httponly=True, samesite="strict", path="/"
                )
                return response
            return None
        return _plain(
            401,
            "this console needs its token: open /?token=<the token in the --token-file> once, "
            "or send 'Authorization: Bearer <token>'",
            {"www-authenticate": 'Bearer realm="janus-logs"'},
        )

    def _authorised(self, request: Request) -> bool:
        return self._scope_of(request) is not None

    def _scope_of(self, request: Request) -> tuple[tuple[str, Any], ...] | None:
        """The scope of the token the request carries; None without a valid one."""
        given: list[str] = []
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            given.append(auth[7:].strip())
        cookie = request.cookies.get(COOKIE)
        if cookie:
            given.append(cookie)
        if request.url.path == "/" and "token" in request.query_params:
            given.append(request.query_params["token"])
        found = None
        for token, scope in self.tokens:
            # Every pair is compared: the time taken does not say which token matched.
            if sum(constant_time_equals(value.encode(), token) for value in given) and found is None:
                found = scope
        return found


def _form_encode(pairs: Iterable[tuple[str, str]]) -> str:
    """What the page's URLSearchParams.toString() makes of *pairs* (empty values left out).

    Only letters, digits and ``*-._`` stay as they are, a space is ``+``: the
    result needs no HTML escaping in an attribute.
    """

    def encode(text: str) -> str:
        out = []
        for char in text:
            if char.isascii() and (char.isalnum() or char in "*-._"):
                out.append(char)
            elif char == " ":
                out.append("+")
            else:
                out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        return "".join(out)

    return "&".join(f"{encode(name)}={encode(value)}" for name, value in pairs if value)


def _accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header takes gzip (``gzip;q=0`` refuses it)."""
    for part in header.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            quality = params.strip()
            return not (quality.startswith("q=") and quality[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


def _plain(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain; charset=utf-8", headers=headers)


def _host_name(header: str) -> str:
    """The host part of a Host header: ``[::1]:8765`` is ``[::1]``, ``localhost:80`` ``localhost``."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[: end + 1] if end > 0 else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def create_app(
    db_path: str,
    *,
    token: str | None = None,
    allowed_hosts: Iterable[str] = (),
    token_scopes: Mapping[str, Mapping[str, Any]] | None = None,
    **options: Any,
) -> ASGIApp:
    """The console for *db_path* as an ASGI app.

    *token*: every request must carry it (``Authorization: Bearer``, or the
    cookie that ``/?token=...`` sets).  *token_scopes* maps more tokens to a
    LogStore scope each (``{"tok...": {"user_id": "42"}}``): such a token reads
    only within it (and not /metrics).  Without a token only requests for a
    loopback host name (plus *allowed_hosts*) are answered.  *options* are
    ConsoleSettings fields (``live_interval``, ``live_batch``, ...).
    """
    hosts = LOOPBACK_HOSTS | {h.lower() for h in allowed_hosts}
    scoped = tuple((t, tuple(sorted(_check_scope(sc).items()))) for t, sc in (token_scopes or {}).items())
    settings = ConsoleSettings(
        db_path=str(db_path), token=token or None, allowed_hosts=hosts, token_scopes=scoped, **options
    )
    console = _Console(settings)
    routes = [
        Route("/", console.page, methods=["GET", "HEAD"]),
        Route("/api/records", console.records, methods=["GET"]),
        Route("/api/histogram", console.histogram, methods=["GET"]),
        Route("/api/record/{record_id}", console.record, methods=["GET"]),
        Route("/api/live", console.live, methods=["GET"]),
        Route("/static/{name}", console.asset, methods=["GET", "HEAD"]),
    ]
    if settings.metrics:
        routes.append(Route("/metrics", console.metrics, methods=["GET"]))
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        console.stores.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    return _Gate(app, settings)
