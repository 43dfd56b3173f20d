"""Starlette/FastAPI install(app): every form answers problem+json, logs once, one access record per request."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import janus_utils as ju
from janus_utils.error_handling import ASGIErrorMiddleware, NotFound, handle_errors

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

fastapi = pytest.importorskip("fastapi")
pydantic = pytest.importorskip("pydantic")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette asks for httpx2; httpx is what FastAPI's docs install
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from janus_utils.integrations import bind_request  # noqa: E402
from janus_utils.integrations.starlette import JanusMiddleware, install  # noqa: E402


class Login(pydantic.BaseModel):
    username: str = pydantic.Field(max_length=5)
    password: str = pydantic.Field(min_length=12)


def make_app() -> fastapi.FastAPI:
    app = fastapi.FastAPI()
    log = ju.get_logger("api.views")

    @app.post("/login")
    async def login(body: Login) -> dict:
        return {"ok": True}

    @app.get("/ok")
    async def ok() -> dict:
        log.info("hello")
        return {"ok": True}

    @app.get("/sync")
    def sync_view() -> dict:
        bind_request(user_id=7)
        log.info("in a thread")
        return {"ok": True}

    @app.get("/items/{n}")
    async def item(n: int) -> dict:
        if n == 0:
            raise fastapi.HTTPException(status_code=404, detail="no item 0")
        return {"n": n}

    @app.get("/orders/{n}")
    @handle_errors
    async def order(n: int) -> dict:
        raise NotFound("no such order", details={"order_id": n})

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("secret internals")

    return app


FORMS: dict[str, Callable[[fastapi.FastAPI], object]] = {
    "install": install,
    "add_middleware": lambda app: (app.add_middleware(JanusMiddleware), app)[1],
    "wrapped": JanusMiddleware,
}


@pytest.fixture(params=list(FORMS))
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    ju.configure(tmp_path / "s.db", console=False)
    try:
        app = FORMS[request.param](make_app())
        with TestClient(app, raise_server_exceptions=False) as test_client:  # type: ignore[arg-type]
            yield test_client
    finally:
        ju.shutdown()


def rows(tmp_path: Path, **filters: object) -> list[ju.Record]:
    ju.flush()
    with ju.LogStore(tmp_path / "s.db") as store:
        return store.search(limit=None, order="oldest", **filters)  # type: ignore[arg-type]


CASES = [
    ("GET", "/items/0", 404, "not_found"),
    ("GET", "/no-such-route", 404, "route_not_found"),
    ("POST", "/ok", 405, "method_not_allowed"),
    ("GET", "/items/abc", 422, "validation_error"),
    ("GET", "/orders/5", 404, "not_found"),
    ("GET", "/boom", 500, "internal_error"),
]


class TestEveryForm:
    @pytest.mark.parametrize(("method", "path", "status", "code"), CASES)
    def test_error_is_problem_json_logged_once(
        self, client: TestClient, tmp_path: Path, method: str, path: str, status: int, code: str
    ) -> None:
        """HTTPException, route miss, 405, 422, janus and unhandled errors: problem+json, one record, one access record."""
        response = client.request(method, path)
        assert status == response.status_code
        assert "application/problem+json" == response.headers["content-type"]
        body = response.json()
        assert code == body["code"]
        assert "secret internals" not in response.text
        (rec,) = rows(tmp_path, fields={"error_id": body["error_id"]})
        assert (method, path, status) == (rec.fields["http_method"], rec.fields["http_path"], rec.fields["http_status"])
        assert response.headers["x-request-id"] == rec.request_id
        (access,) = rows(tmp_path, logger="janus.access")
        assert (status, rec.request_id) == (access.fields["http_status"], access.request_id)
        if status == 405:
            assert "GET" in response.headers["allow"]
        if status == 422:
            assert [{"field": "path.n", "reason": body["errors"][0]["reason"]}] == body["errors"]
        assert [] == rows(tmp_path, logger="uvicorn.error")

    def test_a_refused_password_is_not_logged(self, client: TestClient, tmp_path: Path) -> None:
        """A 422 for a too short password: the record's cause chain and traceback keep type, loc and
        msg with the input redacted; a plain field's input stays; the answer echoes no value."""
        response = client.post("/login", json={"username": "bobby-the-user", "password": "hunter2xyz"})
        assert 422 == response.status_code
        assert "hunter2xyz" not in response.text and "bobby-the-user" not in response.text
        (rec,) = rows(tmp_path, fields={"error_id": response.json()["error_id"]})
        stored = repr((rec.message, rec.fields, rec.exception))
        assert "hunter2xyz" not in stored
        cause = rec.fields["cause_chain"][1]
        assert "fastapi.exceptions.RequestValidationError" == cause[0]
        assert "'loc': ('body', 'password'), 'msg': 'String should have at least 12 characters', " \
            "'input': '[REDACTED:password]'" in cause[1]
        assert "'input': 'bobby-the-user'" in cause[1]
        assert "'input': '[REDACTED:password]'" in rec.exception

    def test_the_integration_drops_the_password_itself(self, tmp_path: Path) -> None:
        """With redaction off in the logger, the 422's logged cause still holds no password: the
        integration chains a copy of the error with the input redacted, not the error itself."""
        ju.configure(tmp_path / "s.db", console=False, redact=False)
        try:
            with TestClient(install(make_app()), raise_server_exceptions=False) as test_client:
                response = test_client.post("/login", json={"username": "bob", "password": "hunter2xyz"})
            assert 422 == response.status_code
            (rec,) = rows(tmp_path, fields={"error_id": response.json()["error_id"]})
        finally:
            ju.shutdown()
        assert "hunter2xyz" not in repr((rec.message, rec.fields, rec.exception))
        assert "'input': '[REDACTED:password]'" in rec.exception
        assert "File " in rec.exception  # the traceback of where FastAPI raised it is kept

    def test_request_context_and_user(self, client: TestClient, tmp_path: Path) -> None:
        """Records in async and sync endpoints carry the request; bind_request adds the user to the access record."""
        rid = client.get("/ok", headers={"X-Request-ID": "r-1"}).headers["x-request-id"]
        assert "r-1" == rid
        client.get("/sync", headers={"X-Request-ID": "r-2"})
        hello, thread = rows(tmp_path, logger="api.views")
        assert ("r-1", "/ok") == (hello.request_id, hello.fields["http_path"])
        assert ("r-2", "/sync", "7") == (thread.request_id, thread.fields["http_path"], thread.user_id)
        first, second = rows(tmp_path, logger="janus.access")
        assert (200, None, "7") == (first.fields["http_status"], first.user_id, second.user_id)


class TestASGIErrorMiddleware:
    @pytest.mark.parametrize("form", ["wrapped", "add_middleware"])
    @pytest.mark.parametrize(("method", "path", "status", "code"), CASES)
    def test_both_forms_answer_the_same(
        self, tmp_path: Path, form: str, method: str, path: str, status: int, code: str
    ) -> None:
        """ASGIErrorMiddleware around a FastAPI app or added to it: problem+json, logged once."""
        ju.configure(tmp_path / "s.db", console=False)
        try:
            app: object = make_app()
            if form == "wrapped":
                app = ASGIErrorMiddleware(app)  # type: ignore[arg-type]
            else:
                app.add_middleware(ASGIErrorMiddleware)  # type: ignore[attr-defined]
            with TestClient(app, raise_server_exceptions=False) as test_client:  # type: ignore[arg-type]
                response = test_client.request(method, path)
            assert (status, code) == (response.status_code, response.json()["code"])
            assert 1 == len(rows(tmp_path, fields={"error_id": response.json()["error_id"]}))
        finally:
            ju.shutdown()


def test_install_refuses_other_apps() -> None:
    """install() on something that is not a Starlette app says what to use instead."""
    with pytest.raises(TypeError, match="JanusMiddleware"):
        install(object())
