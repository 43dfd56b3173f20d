"""Flask init_app: request ids, context on every record, problem+json errors logged once, access records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import janus_utils as ju
from janus_utils.error_handling import NotFound, handle_errors

flask = pytest.importorskip("flask")

from janus_utils.integrations.flask import init_app  # noqa: E402


def make_app() -> object:
    app = flask.Flask("shop")
    init_app(app, user_id=lambda: flask.request.headers.get("X-User"))
    log = ju.get_logger("shop.views")

    @app.get("/ok")
    def ok() -> str:
        log.info("hello")
        return "ok"

    @app.get("/orders/<int:n>")
    @handle_errors
    def order(n: int) -> str:
        raise NotFound("no such order", details={"order_id": n})

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    @app.get("/abort")
    def abort() -> str:
        flask.abort(409)

    return app


class Client:
    """Flask's test client, closing each response as a WSGI server does (the access record is logged then)."""

    def __init__(self, app: object) -> None:
        self.client = app.test_client()  # type: ignore[attr-defined]

    def open(self, path: str, method: str = "GET", **kw: object) -> object:
        response = self.client.open(path, method=method, **kw)
        response.get_data()
        response.close()
        return response

    def get(self, path: str, **kw: object) -> object:
        return self.open(path, "GET", **kw)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    ju.configure(tmp_path / "f.db", console=False)
    try:
        yield Client(make_app())
    finally:
        ju.shutdown()


def rows(tmp_path: Path, **filters: object) -> list[ju.Record]:
    ju.flush()
    with ju.LogStore(tmp_path / "f.db") as store:
        return store.search(limit=None, order="oldest", **filters)  # type: ignore[arg-type]


class TestRequests:
    def test_request_id_minted_echoed_and_on_every_record(self, client: object, tmp_path: Path) -> None:
        """A new id is echoed in X-Request-ID; the view's record and the access record carry it."""
        response = client.get("/ok", headers={"X-User": "42"})  # type: ignore[attr-defined]
        rid = response.headers["X-Request-ID"]
        assert 32 == len(rid)
        (hello,) = rows(tmp_path, logger="shop.views")
        assert (rid, "GET", "/ok", "42") == (
            hello.request_id, hello.fields["http_method"], hello.fields["http_path"], hello.user_id
        )
        (access,) = rows(tmp_path, logger="janus.access")
        assert (rid, 200, "42") == (access.request_id, access.fields["http_status"], access.user_id)
        assert access.fields["duration_ms"] >= 0

    def test_client_request_id_is_kept_when_plain(self, client: object, tmp_path: Path) -> None:
        """A plain incoming X-Request-ID is used; one with spaces or too long is replaced."""
        assert "abc-123" == client.get("/ok", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"]  # type: ignore[attr-defined]
        assert "a b" != client.get("/ok", headers={"X-Request-ID": "a b"}).headers["X-Request-ID"]  # type: ignore[attr-defined]
        assert "x" * 200 != client.get("/ok", headers={"X-Request-ID": "x" * 200}).headers["X-Request-ID"]  # type: ignore[attr-defined]


class TestErrors:
    @pytest.mark.parametrize(
        ("method", "path", "status", "code"),
        [
            ("GET", "/orders/5", 404, "not_found"),
            ("GET", "/no-such-route", 404, "route_not_found"),
            ("POST", "/ok", 405, "method_not_allowed"),
            ("GET", "/abort", 409, "conflict"),
            ("GET", "/boom", 500, "internal_error"),
        ],
    )
    def test_error_is_problem_json_logged_once_with_the_request(
        self, client: object, tmp_path: Path, method: str, path: str, status: int, code: str
    ) -> None:
        """Each error answers problem+json with an error_id found once in the database, with method and path."""
        response = client.open(path, method=method)  # type: ignore[attr-defined]
        assert status == response.status_code
        assert "application/problem+json" == response.headers["Content-Type"]
        body = response.get_json()
        assert code == body["code"]
        assert "secret internals" not in response.get_data(as_text=True)
        (rec,) = rows(tmp_path, fields={"error_id": body["error_id"]})
        assert (method, path, status) == (rec.fields["http_method"], rec.fields["http_path"], rec.fields["http_status"])
        assert response.headers["X-Request-ID"] == rec.request_id
        assert ("ERROR" if status >= 500 else "WARNING") == rec.level_name
        if status == 405:
            assert "GET" in response.headers["Allow"]
        (access,) = rows(tmp_path, logger="janus.access")
        assert status == access.fields["http_status"]

    def test_handle_errors_record_carries_the_request(self, client: object, tmp_path: Path) -> None:
        """An error logged by @handle_errors inside the view has http_method, http_path and request_id."""
        response = client.get("/orders/7", headers={"X-Request-ID": "r-7"})  # type: ignore[attr-defined]
        (rec,) = rows(tmp_path, level="WARNING")
        assert ("GET", "/orders/7", "r-7", {"order_id": 7}) == (
            rec.fields["http_method"], rec.fields["http_path"], rec.request_id, rec.fields["details"]
        )
        assert response.get_json()["error_id"] == rec.fields["error_id"]

    def test_init_app_twice_logs_once(self, tmp_path: Path) -> None:
        """Calling init_app a second time does not double the access records."""
        ju.configure(tmp_path / "f.db", console=False)
        try:
            app = make_app()
            init_app(app)
            Client(app).get("/ok")
            assert 1 == len(rows(tmp_path, logger="janus.access"))
        finally:
            ju.shutdown()
