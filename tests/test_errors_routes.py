"""The HTTP layer: WSGI through a real server, ASGI through a hand-driven protocol, Flask if installed.

Every error response is application/problem+json; a 500 tells the client
nothing but an error id, which is also a field of the one log record that
holds the traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import apsw
import pytest

from janus_utils.error_handling import (
    PROBLEM_CONTENT_TYPE,
    ASGIErrorMiddleware,
    ExtensionLoadError,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    RouteNotFound,
    WSGIErrorMiddleware,
    handle_errors,
    register_error_handlers,
)

# The janus_logs fixture, until the package's pytest11 entry point loads it everywhere.
from janus_utils.error_handling.tests.plugin import JanusLogs

SECRET = "sk_live_internal_detail"  # must never reach a client


def duplicate_insert() -> None:
    """Raise a real apsw.ConstraintError."""
    db = apsw.Connection(":memory:")
    try:
        db.execute('CREATE TABLE "users" ("email" TEXT UNIQUE)')
        db.execute('INSERT INTO "users" VALUES (\'a@x.io\')')
        db.execute('INSERT INTO "users" VALUES (\'a@x.io\')')
    finally:
        db.close()


@handle_errors
def create_user_view() -> bytes:
    """A view whose own handle_errors layer logs first."""
    duplicate_insert()
    return b"created"


class TestRouteErrors:
    def test_method_not_allowed_lists_methods(self) -> None:
        """allowed becomes the Allow header and an 'allowed' member, upper-cased and sorted."""
        err = MethodNotAllowed(allowed=["post", "GET"])
        body = err.to_dict()
        assert ({"Allow": "GET, POST"}, ["GET", "POST"], 405) == (
            err.headers,
            body["allowed"],
            body["status"],
        )
        assert "Use one of: GET, POST." == body["detail"]

    def test_method_not_allowed_takes_a_header_string(self) -> None:
        """An Allow-style string is split."""
        assert ["GET", "HEAD"] == MethodNotAllowed(allowed="GET, HEAD").allowed

    def test_route_not_found_is_a_not_found(self) -> None:
        """RouteNotFound is a 404 NotFound with its own code."""
        err = RouteNotFound()
        assert (404, "route_not_found", True) == (err.http_status, err.code, isinstance(err, NotFound))


# --------------------------------------------------------------------------
# WSGI


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    """A small WSGI app with one route per failure."""
    path = environ["PATH_INFO"]
    if path == "/ok":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fine"]
    if path == "/users/7":
        raise NotFound("No user 7.", details={"user_id": 7, "password": "hunter2"})
    if path == "/boom":
        raise KeyError(SECRET)
    if path == "/users":
        if environ["REQUEST_METHOD"] != "POST":
            raise MethodNotAllowed(allowed=["POST"])
        body = create_user_view()
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [body]
    if path == "/slow-down":
        raise RateLimited("Too many logins.", retry_after=30)
    if path == "/stream":
        return broken_stream(start_response)
    raise RouteNotFound(f"No route for {path}.")


def broken_stream(start_response: Callable[..., Any]) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise RuntimeError(SECRET)
    yield b"never"


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        pass


@pytest.fixture
def wsgi_server() -> Iterator[str]:
    """The middleware-wrapped app behind wsgiref on 127.0.0.1, an ephemeral port; yields the base URL."""
    server: WSGIServer = make_server(
        "127.0.0.1", 0, WSGIErrorMiddleware(wsgi_app), handler_class=QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


class TestWSGIServer:
    def test_janus_error_becomes_its_problem(self, wsgi_server: str, janus_logs: JanusLogs) -> None:
        """A NotFound answers 404 problem+json with its body, the password redacted, logged once."""
        status, headers, raw = fetch(wsgi_server + "/users/7")
        body = json.loads(raw)
        assert (404, PROBLEM_CONTENT_TYPE) == (status, headers["Content-Type"])
        record = janus_logs.assert_logged_once(level="WARNING", logger="janus.errors")
        assert {
            "type": "urn:janus:error:not_found",
            "title": "Not found",
            "status": 404,
            "detail": "No user 7.",
            "instance": "/users/7",
            "code": "not_found",
            "details": {"user_id": 7, "password": "[REDACTED:password]"},
            "error_id": record["fields"]["error_id"],
        } == body
        assert "hunter2" not in json.dumps(record)
        assert ("GET", "/users/7") == (record["fields"]["http_method"], record["fields"]["http_path"])

    def test_unknown_exception_is_a_bare_500(self, wsgi_server: str, janus_logs: JanusLogs) -> None:
        """A KeyError answers 500 with no message and no traceback; the log has both and the id."""
        status, headers, raw = fetch(wsgi_server + "/boom")
        body = json.loads(raw)
        assert (500, PROBLEM_CONTENT_TYPE) == (status, headers["Content-Type"])
        assert SECRET not in raw.decode() and "Traceback" not in raw.decode()
        assert "KeyError" not in raw.decode()
        assert ("internal_error", "/boom") == (body["code"], body["instance"])
        record = janus_logs.assert_logged_once(level="ERROR", error_id=body["error_id"])
        assert SECRET in record["message"]
        assert record["exception"].startswith("Traceback") and "in wsgi_app" in record["exception"]

    def test_error_inside_a_handled_view_is_logged_once(
        self, wsgi_server: str, janus_logs: JanusLogs
    ) -> None:
        """The view's handle_errors logs and translates; the middleware answers 409 and logs nothing more."""
        status, _, raw = fetch(wsgi_server + "/users", method="POST")
        body = json.loads(raw)
        assert (409, "integrity_error") == (status, body["code"])
        assert 1 == len(janus_logs.records)
        assert body["error_id"] == janus_logs.records[0]["fields"]["error_id"]
        # Logged by the view's layer, before the middleware saw it: the request is in the context.
        fields = janus_logs.records[0]["fields"]
        assert ("POST", "/users") == (fields["http_method"], fields["http_path"])

    def test_headers_of_the_error_are_sent(self, wsgi_server: str, janus_logs: JanusLogs) -> None:
        """Allow on a 405 and Retry-After on a 429 reach the client."""
        status, headers, _ = fetch(wsgi_server + "/users")
        assert (405, "POST") == (status, headers["Allow"])
        status, headers, _ = fetch(wsgi_server + "/slow-down")
        assert (429, "30") == (status, headers["Retry-After"])

    def test_error_while_the_body_is_iterated(self, wsgi_server: str, janus_logs: JanusLogs) -> None:
        """An app that fails on its first chunk, after start_response, still answers a problem."""
        status, _, raw = fetch(wsgi_server + "/stream")
        assert (500, "internal_error") == (status, json.loads(raw)["code"])
        assert SECRET not in raw.decode()
        janus_logs.assert_logged_once(level="ERROR", error_type="RuntimeError")

    def test_success_passes_through(self, wsgi_server: str, janus_logs: JanusLogs) -> None:
        """A working route is untouched and nothing is logged."""
        assert (200, b"fine") == fetch(wsgi_server + "/ok")[::2]
        janus_logs.assert_not_logged(logger="janus.errors")


class TestWSGIProtocol:
    def test_after_headers_are_sent_the_original_is_reraised(self, janus_logs: JanusLogs) -> None:
        """With headers gone, start_response re-raises the app's exception, as PEP 3333 says."""
        sent: list[str] = []
        closed: list[bool] = []

        class Body:
            def __iter__(self) -> Iterator[bytes]:
                yield b"partial"
                raise RuntimeError("disk vanished")

            def close(self) -> None:
                closed.append(True)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Body:
            start_response("200 OK", [])
            return Body()

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            if exc_info is not None and sent:
                raise exc_info[1].with_traceback(exc_info[2])
            sent.append(status)

        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "SCRIPT_NAME": ""}
        body = WSGIErrorMiddleware(app)(environ, start_response)
        with pytest.raises(RuntimeError, match="disk vanished"):
            for _ in body:
                pass
        assert [True] == closed
        janus_logs.assert_logged_once(level="ERROR", error_type="RuntimeError")


# --------------------------------------------------------------------------
# ASGI


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A small ASGI app: lifespan, a websocket echo, and one HTTP route per failure."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        raise ConnectionResetError("websocket errors are the server's business")
    path = scope["path"]
    await receive()
    if path == "/ok":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"fine"})
    elif path == "/users/7":
        raise NotFound("No user 7.")
    elif path == "/boom":
        raise ZeroDivisionError(SECRET)
    elif path == "/users":
        await create_user_async()
    elif path == "/half-sent":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError(SECRET)
    elif path == "/after-done":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        raise RuntimeError("cleanup failed")
    else:
        raise RouteNotFound()


@handle_errors
async def create_user_async() -> None:
    await asyncio.sleep(0)
    duplicate_insert()


def http_scope(path: str, method: str = "GET") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


async def drive(app: Any, scope: dict[str, Any], incoming: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one ASGI connection: feed *incoming*, then wait as a server would; return what was sent."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in incoming:
        queue.put_nowait(message)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, queue.get, send), timeout=10)
    return sent


def request(path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One HTTP request through the middleware-wrapped ASGI app."""
    incoming = [{"type": "http.request", "body": b"", "more_body": False}]
    sent = asyncio.run(drive(ASGIErrorMiddleware(asgi_app), http_scope(path, method), incoming))
    start, *bodies = sent
    assert "http.response.start" == start["type"]
    assert not bodies[-1].get("more_body", False)
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    return start["status"], headers, b"".join(b["body"] for b in bodies)


class TestASGI:
    def test_janus_error_becomes_its_problem(self, janus_logs: JanusLogs) -> None:
        """A NotFound answers 404 problem+json, logged once."""
        status, headers, raw = request("/users/7")
        body = json.loads(raw)
        assert (404, PROBLEM_CONTENT_TYPE, str(len(raw))) == (
            status,
            headers["content-type"],
            headers["content-length"],
        )
        assert ("No user 7.", "/users/7") == (body["detail"], body["instance"])
        janus_logs.assert_logged_once(level="WARNING", error_id=body["error_id"])

    def test_unknown_exception_is_a_bare_500(self, janus_logs: JanusLogs) -> None:
        """ZeroDivisionError answers 500 with only its id; the record has the traceback."""
        status, _, raw = request("/boom")
        body = json.loads(raw)
        assert 500 == status and SECRET not in raw.decode() and "Traceback" not in raw.decode()
        record = janus_logs.assert_logged_once(level="ERROR", error_id=body["error_id"])
        assert "ZeroDivisionError" in record["exception"] and "in asgi_app" in record["exception"]

    def test_error_inside_a_handled_view_is_logged_once(self, janus_logs: JanusLogs) -> None:
        """The async view's handle_errors logs; the middleware answers 409 without a second record."""
        status, _, raw = request("/users", "POST")
        assert (409, "integrity_error") == (status, json.loads(raw)["code"])
        assert 1 == len(janus_logs.records)
        fields = janus_logs.records[0]["fields"]
        assert ("POST", "/users") == (fields["http_method"], fields["http_path"])

    def test_success_passes_through(self, janus_logs: JanusLogs) -> None:
        """A working route is untouched and nothing is logged."""
        assert (200, b"fine") == request("/ok")[::2]
        janus_logs.assert_not_logged()

    def test_error_after_the_response_started_is_reraised(self, janus_logs: JanusLogs) -> None:
        """Half a body cannot be turned into a problem: logged once, re-raised for the server."""
        incoming = [{"type": "http.request", "body": b""}]
        with pytest.raises(RuntimeError, match=SECRET):
            asyncio.run(drive(ASGIErrorMiddleware(asgi_app), http_scope("/half-sent"), incoming))
        janus_logs.assert_logged_once(level="ERROR", error_type="RuntimeError")

    def test_error_after_the_response_completed_is_only_logged(self, janus_logs: JanusLogs) -> None:
        """The client has its whole response: the late error is logged, no second response sent."""
        incoming = [{"type": "http.request", "body": b""}]
        sent = asyncio.run(drive(ASGIErrorMiddleware(asgi_app), http_scope("/after-done"), incoming))
        assert [204] == [m["status"] for m in sent if m["type"] == "http.response.start"]
        janus_logs.assert_logged_once(level="ERROR", contains="cleanup failed")

    def test_lifespan_passes_through(self, janus_logs: JanusLogs) -> None:
        """Startup and shutdown messages reach the app and its answers reach the server."""
        incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent = asyncio.run(
            drive(ASGIErrorMiddleware(asgi_app), {"type": "lifespan", "asgi": {"version": "3.0"}}, incoming)
        )
        assert ["lifespan.startup.complete", "lifespan.shutdown.complete"] == [m["type"] for m in sent]

    def test_websocket_passes_through(self, janus_logs: JanusLogs) -> None:
        """A websocket scope is not wrapped: its exception reaches the server, unlogged."""
        scope = {"type": "websocket", "path": "/ws", "headers": []}
        with pytest.raises(ConnectionResetError):
            asyncio.run(drive(ASGIErrorMiddleware(asgi_app), scope, [{"type": "websocket.connect"}]))
        janus_logs.assert_not_logged()


# --------------------------------------------------------------------------
# Flask


@pytest.fixture
def flask_client() -> Any:
    flask = pytest.importorskip("flask")
    app = flask.Flask("errors_test")

    @app.get("/boom")
    def boom() -> str:
        raise KeyError(SECRET)

    @app.post("/users")
    def users() -> bytes:
        return create_user_view()

    @app.get("/old")
    def old() -> Any:
        return flask.redirect("/new")

    @app.get("/forbidden")
    def forbidden() -> Any:
        flask.abort(403)

    register_error_handlers(app)
    return app.test_client()


class TestFlask:
    def test_unknown_exception_is_a_bare_500(self, flask_client: Any, janus_logs: JanusLogs) -> None:
        """An exception in a view answers 500 problem+json without internals, logged once."""
        response = flask_client.get("/boom")
        assert (500, PROBLEM_CONTENT_TYPE) == (response.status_code, response.content_type)
        assert SECRET not in response.get_data(as_text=True)
        janus_logs.assert_logged_once(level="ERROR", error_id=response.get_json()["error_id"])

    def test_routing_errors_become_janus_errors(self, flask_client: Any, janus_logs: JanusLogs) -> None:
        """werkzeug's 404 and 405 become RouteNotFound and MethodNotAllowed with Allow."""
        missing = flask_client.get("/nowhere")
        assert (404, "route_not_found", "/nowhere") == (
            missing.status_code,
            missing.get_json()["code"],
            missing.get_json()["instance"],
        )
        wrong = flask_client.delete("/users")
        assert (405, "method_not_allowed") == (wrong.status_code, wrong.get_json()["code"])
        assert "POST" in wrong.headers["Allow"]
        assert 2 == len(janus_logs.find(level="WARNING"))

    def test_abort_status_is_kept(self, flask_client: Any, janus_logs: JanusLogs) -> None:
        """abort(403) answers a 'forbidden' problem."""
        response = flask_client.get("/forbidden")
        assert (403, "forbidden") == (response.status_code, response.get_json()["code"])

    def test_handled_view_is_logged_once(self, flask_client: Any, janus_logs: JanusLogs) -> None:
        """A view's own handle_errors logs the IntegrityError; the Flask handler does not again."""
        response = flask_client.post("/users")
        assert (409, "integrity_error") == (response.status_code, response.get_json()["code"])
        assert 1 == len(janus_logs.records)
        fields = janus_logs.records[0]["fields"]
        assert ("POST", "/users") == (fields["http_method"], fields["http_path"])

    def test_redirects_pass_through(self, flask_client: Any, janus_logs: JanusLogs) -> None:
        """A redirect is a response, not an error."""
        assert 302 == flask_client.get("/old").status_code
        janus_logs.assert_not_logged()

    def test_without_flask_the_error_says_what_to_do(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Flask missing: ExtensionLoadError naming the install and the WSGI alternative."""
        monkeypatch.setitem(sys.modules, "flask", None)
        with pytest.raises(ExtensionLoadError, match="pip install flask.*WSGIErrorMiddleware"):
            register_error_handlers(object())
