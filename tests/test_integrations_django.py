"""Django: the middleware and error views, through Django's test client."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import janus_utils as ju
from janus_utils.error_handling import NotFound, handle_errors

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402
from django.core.exceptions import PermissionDenied  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views import View  # noqa: E402


def ok(request: object) -> HttpResponse:
    ju.get_logger("site.views").info("hello")
    return HttpResponse("ok")


@handle_errors
def order(request: object, n: int) -> HttpResponse:
    raise NotFound("no such order", details={"order_id": n})


def boom(request: object) -> HttpResponse:
    raise RuntimeError("secret internals")


def denied(request: object) -> HttpResponse:
    raise PermissionDenied("no")


class OnlyGet(View):
    def get(self, request: object) -> JsonResponse:
        return JsonResponse({"ok": True})


urlpatterns = [
    path("ok", ok),
    path("orders/<int:n>", order),
    path("boom", boom),
    path("denied", denied),
    path("only-get", OnlyGet.as_view()),
]
handler404 = "janus_utils.integrations.django.handler404"
handler500 = "janus_utils.integrations.django.handler500"


@pytest.fixture(scope="module")
def django_settings() -> None:
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=["janus_utils.integrations.django.JanusMiddleware"],
            INSTALLED_APPS=[],
            LOGGING_CONFIG=None,
        )
        django.setup()
    sys.modules.setdefault(__name__, sys.modules[__name__])


@pytest.fixture
def client(django_settings: None, tmp_path: Path) -> Iterator[object]:
    from django.test import Client

    ju.configure(tmp_path / "d.db", console=False)
    try:
        yield Client(raise_request_exception=False)
    finally:
        ju.shutdown()


def rows(tmp_path: Path, **filters: object) -> list[ju.Record]:
    ju.flush()
    with ju.LogStore(tmp_path / "d.db") as store:
        return store.search(limit=None, order="oldest", **filters)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "url", "status", "code"),
    [
        ("get", "/orders/5", 404, "not_found"),
        ("get", "/no-such-url", 404, "route_not_found"),
        ("post", "/only-get", 405, "method_not_allowed"),
        ("get", "/denied", 403, "forbidden"),
        ("get", "/boom", 500, "internal_error"),
    ],
)
def test_errors_are_problem_json_logged_once(
    client: object, tmp_path: Path, method: str, url: str, status: int, code: str
) -> None:
    """View errors, unknown URLs and 405s answer problem+json; the error_id is stored once with the request."""
    response = getattr(client, method)(url)
    assert status == response.status_code
    assert "application/problem+json" == response["Content-Type"]
    body = response.json()
    assert code == body["code"]
    assert "secret internals" not in response.content.decode()
    (rec,) = rows(tmp_path, fields={"error_id": body["error_id"]})
    assert (method.upper(), url, status) == (rec.fields["http_method"], rec.fields["http_path"], rec.fields["http_status"])
    assert response["X-Request-ID"] == rec.request_id
    (access,) = rows(tmp_path, logger="janus.access")
    assert status == access.fields["http_status"]


def test_request_id_and_context(client: object, tmp_path: Path) -> None:
    """The client's id is echoed and carried by the view's records and the access record."""
    response = client.get("/ok", HTTP_X_REQUEST_ID="dj-1")  # type: ignore[attr-defined]
    assert "dj-1" == response["X-Request-ID"]
    (hello,) = rows(tmp_path, logger="site.views")
    assert ("dj-1", "GET", "/ok") == (hello.request_id, hello.fields["http_method"], hello.fields["http_path"])
    (access,) = rows(tmp_path, logger="janus.access")
    assert ("dj-1", 200) == (access.request_id, access.fields["http_status"])
